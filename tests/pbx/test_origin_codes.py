"""Feature codes arriving from a trunk (:func:`pbx.origin.find_origin`): a ``*``/``#`` string is
refused with 404 before anything is looked up; a digits-only code from a user's own registered
mobile number (as the carrier writes it) is that user's feature-code call; anything else from
that number follows the DID as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from features import default_features
from pbx.callcontrol import FeatureRegistry
from pbx.directory import Directory
from pbx.origin import CallOrigin, find_origin
from pbx.routing.router import Router
from pbx.store import Store
from sipcore.endpoint import RequestReceived
from sipcore.message import Request, parse_message
from sipcore.transport import Peer

CARRIER = Peer("udp", "127.0.0.3", 5060)
MOBILE_101 = "+4917011111"


class FakeB2bua(SimpleNamespace):
    """What find_origin reads of the B2BUA for a trunk's call."""

    def respond(self, request: Request, status: int, **kwargs: Any) -> None:
        self.responses.append(status)


@pytest.fixture
def b2b(tmp_path: Path) -> Iterator[FakeB2bua]:
    store = Store(tmp_path)
    store.ensure_default_tenant("pbx.example.com", "asyncpbx")
    store.add_user("101", "pw-101", "asyncpbx", "Ben", mobile_number="0170 11111")
    store.add_user("102", "pw-102", "asyncpbx", "Clara")
    store.add_number("+4930555101", user="101")
    tenant_id = store.tenants()[0].id
    # a trusted trunk (the carrier vouches for the caller number); see the untrusted test
    trunk = SimpleNamespace(key="default/carrier", tenant_id=tenant_id, trusted=True)
    directory = Directory(store)
    lines: list[tuple[str, dict[str, Any]]] = []
    yield FakeB2bua(
        trunks=SimpleNamespace(inbound=lambda request, peer: trunk),
        router=Router(directory), features=FeatureRegistry(default_features()),
        log=SimpleNamespace(info=lambda event, **kw: lines.append((event, kw))),
        responses=[], lines=lines)
    store.close()


def invite(called: str, caller: str, extra: str = "") -> RequestReceived:
    text = (f"INVITE sip:{called}@127.0.0.1 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK-1\r\n"
            f"From: <sip:{caller}@127.0.0.3>;tag=c1\r\nTo: <sip:{called}@127.0.0.1>\r\n"
            "Call-ID: origin-test\r\nCSeq: 1 INVITE\r\nContact: <sip:c@127.0.0.3>\r\n"
            f"{extra}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return RequestReceived(request, CARRIER, "tx-1")


def origin(b2b: FakeB2bua, called: str, caller: str) -> CallOrigin | None:
    return find_origin(b2b, invite(called, caller), 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("caller", [MOBILE_101, "017011111", "4917011111"])
def test_a_digits_only_code_from_the_users_mobile_is_theirs(b2b: FakeB2bua,
                                                            caller: str) -> None:
    found = origin(b2b, "78878", caller)
    assert found is not None and found.code_user is not None
    assert found.code_user.extension == "101" and found.user is None
    assert (found.direction, found.callee, found.caller) == ("inbound", "78878", caller)
    assert b2b.responses == []


@pytest.mark.parametrize(("called", "caller"), [
    ("*78", MOBILE_101),        # the * form never comes in from a trunk
    ("#43", MOBILE_101),
    ("78878", "+4917099999"),   # not a user's mobile number
    ("78878", "anonymous"),     # no caller number at all
    ("78951", MOBILE_101),      # #51 (hunt busy): no feature implements it (yet): no code
    ("7887", MOBILE_101),
])
def test_refused_with_404(b2b: FakeB2bua, called: str, caller: str) -> None:
    assert origin(b2b, called, caller) is None
    assert b2b.responses == [404]


def test_the_star_form_is_refused_before_any_lookup(b2b: FakeB2bua) -> None:
    origin(b2b, "*78", MOBILE_101)
    assert [event for event, _ in b2b.lines] == ["call.inbound.feature_code_refused"]


def test_a_did_call_from_the_mobile_number_is_an_ordinary_inbound_call(b2b: FakeB2bua) -> None:
    found = origin(b2b, "+4930555101", MOBILE_101)
    assert found is not None and found.code_user is None and found.callee == "+4930555101"


def test_an_untrusted_trunk_cannot_speak_for_a_users_mobile(b2b: FakeB2bua) -> None:
    """Anyone can write a user's mobile number into a From through an untrusted trunk: a code
    from there would let them forward the user's calls (toll fraud)."""
    b2b.trunks.inbound(None, None).trusted = False
    assert origin(b2b, "78878", MOBILE_101) is None
    assert b2b.responses == [404]


def test_a_trusted_carriers_asserted_number_is_the_mobile_that_dials(b2b: FakeB2bua) -> None:
    """A withheld caller (anonymous From) whose carrier asserts the user's mobile number."""
    found = find_origin(b2b, invite(  # type: ignore[arg-type]
        "78878", "anonymous", f"P-Asserted-Identity: <sip:{MOBILE_101}@carrier.test>\r\n"
                              "Privacy: id\r\n"), 0.0)
    assert found is not None and found.code_user is not None
    assert found.code_user.extension == "101" and found.caller == MOBILE_101
