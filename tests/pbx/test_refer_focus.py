"""A REFER to a conference URI (pbx.legs.refer, RFC 4579 §5.6) from somebody whose
conference it is not is refused 403 and moves nobody; the owner's is taken (202, NOTIFY 100
then 200); a failure to join is told in the final NOTIFY. The call-control side
(features.conference_focus) is faked here: tests/interop/test_conference_sipp.py runs it for
real with SIPp phones."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pbx.legs import refer
from sipcore.message import Request, parse_message


class _B2bua:
    def __init__(self, focus: Any) -> None:
        self.responses: list[int] = []
        self.focus = focus
        self.origins: dict[int, Any] = {}

    def respond(self, request: Any, status: int, **kwargs: Any) -> None:
        self.responses.append(status)


class _Focus:
    def __init__(self, fail: bool = False, focus_call: Any = None) -> None:
        self.brought: list[str] = []
        self.invited: list[str] = []
        self.fail = fail
        self.focus_call = focus_call

    def is_focus(self, owner: str, call: Any) -> bool:
        return owner == "100@t" and call is not None and call is self.focus_call

    def invite(self, owner: str, number: str, host: Any, done: Any) -> list[Any]:
        self.invited.append(number)
        done(200, "OK")
        return []

    @staticmethod
    def conference_user(ext: str) -> str:
        return "conf-" + ext

    def uri_of(self, owner: str) -> str | None:
        return "conf-100" if owner == "100@t" else None

    def bring(self, owner: str, call: Any, leg: Any) -> Any:
        if self.fail:
            raise ValueError("the call is not connected")
        self.brought.append(owner)
        return leg


def _refer(user: str, refer_to: str, focus: _Focus, monkeypatch: pytest.MonkeyPatch, *,
           call: Any = None, dialogs: dict[Any, Any] | None = None
           ) -> tuple[_B2bua, list[tuple[int, bool]]]:
    b2b = _B2bua(focus)
    b2b.dialog_legs = dialogs or {}  # type: ignore[attr-defined]
    notes: list[tuple[int, bool]] = []
    monkeypatch.setattr(refer, "send_notify",
                        lambda leg, status, reason, *, final: notes.append((status, final)))
    monkeypatch.setattr(refer, "_drop_later", lambda leg: None)
    leg = SimpleNamespace(b2bua=b2b, id="L1", answered=True, contact="<sip:asyncpbx@h>",
                          call=call or SimpleNamespace(id=1),
                          target=SimpleNamespace(kind="device", user=user), ended=False)
    raw = (f"REFER sip:asyncpbx@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;"
           f"branch=z9hG4bK1\r\nFrom: <sip:{user}@t>;tag=a\r\nTo: <sip:x@t>;tag=b\r\n"
           f"Call-ID: c1\r\nCSeq: 3 REFER\r\nRefer-To: <sip:{refer_to}>\r\n"
           "Content-Length: 0\r\n\r\n").encode()
    request = parse_message(raw)
    assert isinstance(request, Request)
    event = SimpleNamespace(request=request, transaction_id="tx1")
    refer.on_refer(leg, event)  # type: ignore[arg-type]
    return b2b, notes


def test_somebody_elses_conference_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    focus = _Focus()
    b2b, notes = _refer("101@t", "conf-100@127.0.0.1", focus, monkeypatch)
    assert b2b.responses == [403] and notes == [] and focus.brought == []


def test_the_owners_refer_brings_the_party(monkeypatch: pytest.MonkeyPatch) -> None:
    focus = _Focus()
    b2b, notes = _refer("100@t", "conf-100@127.0.0.1", focus, monkeypatch)
    assert b2b.responses == [202] and notes == [(100, False), (200, True)]
    assert focus.brought == ["100@t"]


def test_a_party_that_cannot_join_is_told_in_the_notify(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    b2b, notes = _refer("100@t", "conf-100@127.0.0.1", _Focus(fail=True), monkeypatch)
    assert b2b.responses == [202] and notes == [(100, False), (480, True)]


def test_a_refer_to_the_focus_rings_the_number(monkeypatch: pytest.MonkeyPatch) -> None:
    focus_call = SimpleNamespace(id=9)
    focus = _Focus(focus_call=focus_call)
    b2b, notes = _refer("100@t", "102@127.0.0.1", focus, monkeypatch, call=focus_call)
    assert b2b.responses == [202] and notes == [(100, False), (200, True)]
    assert focus.invited == ["102"] and focus.brought == []


def test_replaces_must_name_a_dialog_of_the_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    focus_call = SimpleNamespace(id=9)
    focus = _Focus(focus_call=focus_call)
    theirs = SimpleNamespace(call=SimpleNamespace(id=2), target=SimpleNamespace(
        kind="device", user="101@t"))
    b2b, notes = _refer("100@t", "101@127.0.0.1?Replaces=c2%3Bto-tag%3Dx%3Bfrom-tag%3Dy",
                        focus, monkeypatch, call=focus_call,
                        dialogs={("c2", "x", "y"): theirs})
    assert b2b.responses == [403] and notes == [] and focus.brought == []


def test_replaces_brings_the_party_and_ends_the_replaced_dialog(
        monkeypatch: pytest.MonkeyPatch) -> None:
    focus_call = SimpleNamespace(id=9)
    focus = _Focus(focus_call=focus_call)
    hung: list[str] = []
    mine = SimpleNamespace(call=SimpleNamespace(id=2), target=SimpleNamespace(
        kind="device", user="100@t"), hangup=lambda: hung.append("old"))
    b2b, notes = _refer("100@t", "101@127.0.0.1?Replaces=c2%3Bto-tag%3Dx%3Bfrom-tag%3Dy",
                        focus, monkeypatch, call=focus_call,
                        dialogs={("c2", "y", "x"): mine})
    assert b2b.responses == [202] and notes == [(100, False), (200, True)]
    assert focus.brought == ["100@t"] and hung == ["old"]
