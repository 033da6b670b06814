"""Dialogs (RFC 3261 §12): the state table, route sets, remote target, CSeq rules, target
refresh, in-dialog request building, forking, and the 481 lookup."""

from __future__ import annotations

import pytest

from sipcore.dialog import (
    DIALOG_TABLE,
    Dialog,
    DialogAction,
    DialogInput,
    DialogSet,
    DialogState,
    DialogTable,
    dialog_transition,
)
from sipcore.errors import LocalProtocolError, RemoteProtocolError
from sipcore.message import Request, Response, make_response, parse_message


def invite(
    extra: str = "", method: str = "INVITE", seq: int = 1, to_tag: str | None = None
) -> Request:
    to = "<sip:bob@b.example>" + (f";tag={to_tag}" if to_tag else "")
    msg = parse_message((
        f"{method} sip:bob@b.example SIP/2.0\r\n"
        "Via: SIP/2.0/UDP a.example;branch=z9hG4bK1\r\n"
        "From: Alice <sip:alice@a.example>;tag=atag\r\n"
        f"To: {to}\r\n"
        "Call-ID: dlg-1\r\n"
        f"CSeq: {seq} {method}\r\n"
        "Contact: <sip:alice@192.0.2.1:5060>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode())
    assert isinstance(msg, Request)
    return msg


RR = "Record-Route: <sip:p1.example;lr>\r\nRecord-Route: <sip:p2.example;lr>\r\n"


def answer(req: Request, status: int, tag: str = "btag", contact: str = "<sip:bob@192.0.2.2>",
           rr: list[str] | None = None) -> Response:  # fmt: skip
    resp = make_response(req, status, to_tag=tag)
    for value in rr if rr is not None else req.headers.get_all("Record-Route"):
        resp.headers.add("Record-Route", value)
    resp.headers.add("Contact", contact)
    return resp


PAIRS = [(s, i) for s in DialogState for i in DialogInput]


@pytest.mark.parametrize(("state", "event"), PAIRS, ids=[f"{s.name}-{i.name}" for s, i in PAIRS])
def test_every_dialog_pair(state: DialogState, event: DialogInput) -> None:
    expected = DIALOG_TABLE.get((state, event), (DialogAction.IGNORE, state))
    assert dialog_transition(state, event) == expected
    if state is DialogState.TERMINATED:
        assert expected == (DialogAction.IGNORE, DialogState.TERMINATED)


def test_uac_dialog_from_2xx() -> None:
    req = invite(RR)
    d = Dialog.from_uac(req, answer(req, 200))
    assert d.state is DialogState.CONFIRMED and d.is_uac
    assert d.id == ("dlg-1", "atag", "btag")
    assert d.route_set == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]  # reversed (§12.1.2)
    assert str(d.remote_target) == "sip:bob@192.0.2.2"
    assert d.local_seq == 1 and d.remote_seq is None
    bye = d.create_request("BYE")
    assert bye.cseq.seq == 2 and bye.method == "BYE"
    assert str(bye.uri) == "sip:bob@192.0.2.2"  # loose routing: remote target stays
    assert bye.headers.get_all("Route") == d.route_set
    assert bye.from_tag == "atag" and bye.to_tag == "btag" and bye.call_id == "dlg-1"
    assert d.state.value == "terminated"  # BYE ends it (§15)
    with pytest.raises(LocalProtocolError):
        d.create_request("INFO")


def test_uas_dialog_and_cseq_rules() -> None:
    req = invite(RR)
    d = Dialog.from_uas(req, answer(req, 180))
    assert d.state is DialogState.EARLY and not d.is_uac
    assert d.route_set == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]  # as received
    assert str(d.remote_target) == "sip:alice@192.0.2.1:5060"
    assert d.send_response(answer(req, 200)) is DialogAction.CONFIRM
    assert d.state.value == "confirmed"
    info = invite(method="INFO", seq=5, to_tag="btag")
    assert d.receive_request(info) is DialogAction.IGNORE and d.remote_seq == 5
    with pytest.raises(RemoteProtocolError) as err:
        d.receive_request(invite(method="INFO", seq=4, to_tag="btag"))
    assert err.value.status_hint == 500  # §12.2.2 lower CSeq
    # ACK keeps the INVITE's CSeq and is exempt
    assert d.receive_request(invite(method="ACK", seq=1, to_tag="btag")) is DialogAction.IGNORE
    # our first request picks a local CSeq; the UAS had none
    notify = d.create_request("NOTIFY")
    assert notify.cseq.seq == 1 and notify.to_tag == "atag" and notify.from_tag == "btag"


def test_target_refresh_both_sides() -> None:
    req = invite()
    uas = Dialog.from_uas(req, answer(req, 200))
    reinvite = invite(seq=2, to_tag="btag")
    reinvite.headers.set("Contact", "<sip:alice@198.51.100.7:5070>")
    assert uas.receive_request(reinvite) is DialogAction.UPDATE
    assert str(uas.remote_target) == "sip:alice@198.51.100.7:5070"
    uac = Dialog.from_uac(req, answer(req, 200))
    update = uac.create_request("UPDATE")
    ok = answer(update, 200, contact="<sip:bob@203.0.113.9>")
    assert uac.receive_response(ok) is DialogAction.UPDATE
    assert str(uac.remote_target) == "sip:bob@203.0.113.9"
    # §12.2.1.2: 481 to an in-dialog request ends the dialog
    info = uac.create_request("INFO")
    assert uac.receive_response(make_response(info, 481)) is DialogAction.TERMINATE
    assert uac.state is DialogState.TERMINATED


def test_strict_route_goes_into_request_uri() -> None:
    req = invite("Record-Route: <sip:strict.example>\r\n")
    d = Dialog.from_uac(req, answer(req, 200))
    bye = d.create_request("BYE")
    assert str(bye.uri) == "sip:strict.example"
    assert bye.headers.get_all("Route") == ["<sip:bob@192.0.2.2>"]


def test_create_ack_uses_invite_cseq() -> None:
    req = invite(RR, seq=7)
    d = Dialog.from_uac(req, answer(req, 200))
    ack = d.create_ack()
    assert ack.method == "ACK" and ack.cseq.seq == 7 and ack.cseq.method == "ACK"
    assert ack.headers.get_all("Route") == d.route_set
    with pytest.raises(LocalProtocolError):
        d.create_request("ACK")


def test_forking_dialog_set() -> None:
    req = invite()
    table = DialogTable()
    dset = DialogSet(req, table)
    assert dset.receive_response(make_response(req, 100)) is None
    d1 = dset.receive_response(answer(req, 180, tag="b1", contact="<sip:bob@192.0.2.11>"))
    d2 = dset.receive_response(answer(req, 183, tag="b2", contact="<sip:bob@192.0.2.12>"))
    assert d1 is not None and d2 is not None and d1 is not d2
    assert len(dset.early) == 2 and len(table) == 2
    assert dset.receive_response(answer(req, 180, tag="b1")) is d1  # same branch again
    confirmed = dset.receive_response(answer(req, 200, tag="b2", contact="<sip:bob@192.0.2.22>"))
    assert confirmed is d2 and d2.state is DialogState.CONFIRMED
    assert str(d2.remote_target) == "sip:bob@192.0.2.22"
    assert dset.confirmed == [d2] and dset.early == [d1]


def test_non_2xx_ends_all_early_dialogs() -> None:
    req = invite()
    table = DialogTable()
    dset = DialogSet(req, table)
    dset.receive_response(answer(req, 180, tag="b1"))
    dset.receive_response(answer(req, 180, tag="b2"))
    assert dset.receive_response(answer(req, 486, tag="b2")) is None
    assert dset.failed and dset.early == [] and len(table) == 0


def test_table_lookup_and_481() -> None:
    req = invite()
    table = DialogTable()
    d = Dialog.from_uas(req, answer(req, 200))
    table.add(d)
    bye = invite(method="BYE", seq=2, to_tag="btag")
    assert table.match_request(bye) is d
    assert table.match_request(invite()) is None  # no To tag: not in a dialog
    with pytest.raises(RemoteProtocolError) as err:
        table.match_request(invite(method="BYE", seq=2, to_tag="nosuch"))
    assert err.value.status_hint == 481
    assert table.match_request(invite(method="ACK", to_tag="nosuch")) is None
    assert table.dispatch_request(bye) is d and len(table) == 0
    assert d.state is DialogState.TERMINATED
    resp_side = DialogTable()
    uac = Dialog.from_uac(req, answer(req, 200))
    resp_side.add(uac)
    assert resp_side.match_response(answer(req, 200)) is uac


def test_dialog_needs_a_tagged_response() -> None:
    req = invite()
    with pytest.raises(LocalProtocolError):
        Dialog.from_uac(req, make_response(req, 180))
    with pytest.raises(LocalProtocolError):
        Dialog.from_uas(req, answer(req, 486))
