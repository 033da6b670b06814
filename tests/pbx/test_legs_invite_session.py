"""The SIP legs over the sans-IO INVITE usage (:mod:`sipcore.invite_session`): the B2BUA with a
fake endpoint (records what would be sent) and a real media engine on loopback.

What the usage decides shows up on the wire here: the BYE of a caller leg hung up before the
ACK waits for it (RFC 3261 §15), session timers are granted, refreshed and expire (RFC 4028),
glare gets 491, a 422 to our INVITE is retried, and a 2xx of a second fork is ACKed and BYEd.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from features import default_features
from media.aio import MediaEngine
from pbx.b2bua import B2bua
from pbx.callcontrol import FeatureRegistry, LegState, Target
from pbx.legs import InboundLeg, OutboundLeg
from sipcore.digest import DigestClient, DigestServer
from sipcore.message import Request, Response, make_response, parse_message
from sipcore.transaction import AckReceived, AckTimedOut, RequestReceived, ResponseReceived
from sipcore.transport import Peer
from tests.pbx.test_b2bua_trunk_unresolved import (
    PHONE,
    REALM,
    FakeSip,
    LogRecorder,
    invite,
    pbx_with_trunk,
)

CALLEE = Peer("udp", "127.0.0.1", 5098)
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")


@pytest.fixture
async def pbx() -> AsyncIterator[tuple[B2bua, FakeSip, LogRecorder]]:
    sip, log = FakeSip(), LogRecorder()
    engine = MediaEngine("127.0.0.1", (48000, 48999))
    await engine.start()
    b2b = B2bua(sip, engine, digest=DigestServer(REALM, b"n" * 32, proxy=True,
                                                 algorithms=("MD5",)),
                lookup=lambda username: None,
                registrar=SimpleNamespace(bindings=lambda aor, now: []),  # type: ignore[arg-type]
                domain="127.0.0.1", user_exists=lambda ext: False, log=log, seclog=log,
                features=FeatureRegistry(default_features()))
    try:
        yield b2b, sip, log
    finally:
        await b2b.close()
        await engine.close()


def with_headers(request: Request, *headers: tuple[str, str]) -> Request:
    for name, value in headers:
        request.headers.add(name, value)
    return request


def answered_caller(b2b: B2bua, sip: FakeSip, request: Request) -> tuple[InboundLeg, Response]:
    """A caller leg that took ``request`` and sent its 200 (not ACKed yet)."""
    leg = InboundLeg(b2b, request, PHONE, "tx-invite")
    leg.invite_session.receive_request(request, leg.clock())
    leg.prepare_media()
    sip.set_owner("tx-invite", leg)
    leg.answer()
    (ok,) = [r for r, tx in sip.responses if tx == "tx-invite" and r.status == 200]
    assert leg.state is LegState.ANSWERING
    return leg, ok


def ack_for(ok: Response, *, body: str = "") -> Request:
    """The caller's ACK for our 200 (§13.2.2.4: To with our tag, the INVITE's CSeq number)."""
    text = (f"ACK sip:asyncpbx@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-ack-{ok.call_id}\r\n"
            f"From: {ok.headers.get('From')}\r\nTo: {ok.headers.get('To')}\r\n"
            f"Call-ID: {ok.call_id}\r\nCSeq: {ok.cseq.seq} ACK\r\nMax-Forwards: 70\r\n")
    if body:
        text += f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    else:
        text += "Content-Length: 0\r\n\r\n"
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def in_dialog(ok: Response, method: str, seq: int, *headers: tuple[str, str],
              body: str = SDP) -> Request:
    """A request of the caller in the dialog our 200 made."""
    text = (f"{method} sip:asyncpbx@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-{method}-{seq}\r\n"
            f"From: {ok.headers.get('From')}\r\nTo: {ok.headers.get('To')}\r\n"
            f"Call-ID: {ok.call_id}\r\nCSeq: {seq} {method}\r\n"
            "Contact: <sip:100@127.0.0.1:5099>\r\nMax-Forwards: 70\r\n"
            + "".join(f"{n}: {v}\r\n" for n, v in headers)
            + f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}")
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def _request_event(request: Request) -> RequestReceived:
    return RequestReceived(request, PHONE, f"tx-{request.method}-{request.cseq.seq}")


def sent(sip: FakeSip, method: str) -> list[Request]:
    return [r for r, _ in sip.requests if r.method == method]


# ------------------------------------------------------------------------ §15: BYE after ACK
async def test_a_caller_hung_up_before_its_ack_gets_the_bye_once_the_ack_came(
        pbx: tuple[B2bua, FakeSip, LogRecorder]) -> None:
    b2b, sip, _ = pbx
    leg, ok = answered_caller(b2b, sip, invite("early-hangup"))
    leg.hangup()
    leg.close_media()  # what Call.release does next
    assert leg.ended  # for call control the leg is over at once …
    assert sent(sip, "BYE") == []  # … but the callee must not BYE before the ACK (§15)
    assert leg.dialog is not None and b2b.dialogs.get(leg.dialog.id) is leg.dialog
    b2b.handle_event(AckReceived(ack_for(ok), PHONE))
    (bye,) = sent(sip, "BYE")
    assert bye.to_tag == "caller1" and bye.from_tag == ok.to_tag
    assert b2b.dialogs.get(leg.dialog.id) is None and leg.dialog.id not in b2b.dialog_legs


async def test_without_the_ack_the_bye_goes_when_the_endpoint_gives_up(
        pbx: tuple[B2bua, FakeSip, LogRecorder]) -> None:
    b2b, sip, _ = pbx
    leg, _ = answered_caller(b2b, sip, invite("no-ack"))
    leg.hangup("error")
    assert sent(sip, "BYE") == []
    b2b.handle_event(AckTimedOut("tx-invite", leg))
    (bye,) = sent(sip, "BYE")
    assert bye.headers.get("Reason") == 'SIP;cause=500;text="Server Internal Error"'


async def test_a_hangup_after_the_ack_sends_bye_at_once(
        pbx: tuple[B2bua, FakeSip, LogRecorder]) -> None:
    b2b, sip, _ = pbx
    leg, ok = answered_caller(b2b, sip, invite("after-ack"))
    b2b.handle_event(AckReceived(ack_for(ok), PHONE))
    assert leg.state is LegState.ANSWERED
    leg.hangup()
    assert len(sent(sip, "BYE")) == 1 and leg.ended


# ------------------------------------------------------------------------- RFC 4028 timers
async def test_the_caller_asks_us_to_refresh_and_we_do(
        pbx: tuple[B2bua, FakeSip, LogRecorder]) -> None:
    b2b, sip, _ = pbx
    request = with_headers(invite("refresh"), ("Session-Expires", "90;refresher=uas"),
                           ("Supported", "timer"))
    leg, ok = answered_caller(b2b, sip, request)
    assert ok.headers.get("Session-Expires") == "90;refresher=uas"
    assert ok.headers.get("Require") == "timer"
    b2b.handle_event(AckReceived(ack_for(ok), PHONE))
    deadline = leg.invite_session.next_deadline()
    assert deadline is not None and leg._session_timer is not None
    assert leg._session_timer.when() == deadline  # one loop timer at the usage's deadline
    leg._on_session_timer(deadline)  # half the interval is over
    (refresh,) = sent(sip, "INVITE")
    assert refresh.headers.get("Session-Expires") == "90;refresher=uac"
    assert refresh.body and refresh.headers.get("Supported") == "timer"
    # their re-INVITE with an offer while ours is pending: glare
    b2b.handle_event(_request_event(in_dialog(ok, "INVITE", 2)))
    assert sip.responses[-1][0].status == 491
    # the 200 to our refresh is ACKed (through the transaction's owner)
    owner = sip.owners[sip.requests.index((refresh, PHONE))]
    reply = make_response(refresh, 200, to_tag=None)
    reply.headers.add("Contact", "<sip:100@127.0.0.1:5099>")
    reply.headers.add("Session-Expires", "90;refresher=uac")
    b2b.handle_event(ResponseReceived(reply, "tx-refresh", PHONE, owner))
    (ack,) = sent(sip, "ACK")
    assert ack.cseq.seq == refresh.cseq.seq and leg.state is LegState.ANSWERED


async def test_an_unrefreshed_session_ends_with_bye(
        pbx: tuple[B2bua, FakeSip, LogRecorder]) -> None:
    b2b, sip, log = pbx
    request = with_headers(invite("expire"), ("Session-Expires", "90;refresher=uac"),
                           ("Supported", "timer"))
    leg, ok = answered_caller(b2b, sip, request)
    b2b.handle_event(AckReceived(ack_for(ok), PHONE))
    deadline = leg.invite_session.next_deadline()
    assert deadline is not None
    leg._on_session_timer(deadline)  # 90 - 30 s without a refresh
    (bye,) = sent(sip, "BYE")
    assert bye.headers.get("Reason") == 'SIP;cause=408;text="Session timer expired"'
    assert leg.ended and log.events("call.session_expired")


async def test_a_reinvite_refresh_is_granted_and_below_min_se_refused(
        pbx: tuple[B2bua, FakeSip, LogRecorder]) -> None:
    b2b, sip, _ = pbx
    leg, ok = answered_caller(b2b, sip, invite("reinvite"))
    b2b.handle_event(AckReceived(ack_for(ok), PHONE))
    b2b.handle_event(_request_event(in_dialog(ok, "INVITE", 2, ("Session-Expires", "30"))))
    refused = sip.responses[-1][0]
    assert refused.status == 422 and refused.headers.get("Min-SE") == "90"
    b2b.handle_event(_request_event(in_dialog(ok, "INVITE", 3, ("Session-Expires", "120"),
                                              ("Supported", "timer"))))
    granted = sip.responses[-1][0]
    assert granted.status == 200 and granted.headers.get("Session-Expires") == \
        "120;refresher=uac"
    assert leg.invite_session.interval == 120 and not leg.invite_session.we_refresh


async def test_a_garbled_session_expires_in_a_reinvite_gets_400(
        pbx: tuple[B2bua, FakeSip, LogRecorder]) -> None:
    b2b, sip, _ = pbx
    leg, ok = answered_caller(b2b, sip, invite("garbled"))
    b2b.handle_event(AckReceived(ack_for(ok), PHONE))
    b2b.handle_event(_request_event(in_dialog(ok, "INVITE", 2, ("Session-Expires", "soon"))))
    assert sip.responses[-1][0].status == 400
    assert leg.state is LegState.ANSWERED and not sent(sip, "BYE")


# ------------------------------------------------------------------------------- UAC legs
def callee_leg(b2b: B2bua) -> OutboundLeg:
    target = Target("device", user="101", contact="sip:101@127.0.0.1:5098", label="101")
    return OutboundLeg(b2b, None, target, request_uri="sip:101@127.0.0.1:5098",  # type: ignore[arg-type]
                       peer=CALLEE, caller_user="100", callee_user="101")


def reply_to(request: Request, status: int, to_tag: str | None, **headers: str) -> Response:
    response = make_response(request, status, to_tag=to_tag)
    if 100 < status < 300:
        response.headers.add("Contact", "<sip:101@127.0.0.1:5098>")
    for name, value in headers.items():
        response.headers.add(name.replace("_", "-"), value)
    if status == 200:
        response.body = SDP.encode()
        response.headers.set("Content-Type", "application/sdp")
        response.headers.set("Content-Length", str(len(response.body)))
    return response


async def test_a_422_to_our_invite_is_retried_with_the_peers_min_se(
        pbx: tuple[B2bua, FakeSip, LogRecorder]) -> None:
    b2b, sip, _ = pbx
    leg = callee_leg(b2b)
    leg.start()
    (first,) = sent(sip, "INVITE")
    assert first.headers.get("Session-Expires") is None  # today's wire form: timer supported
    owner = sip.owners[0]
    b2b.handle_event(ResponseReceived(reply_to(first, 422, "t422", Min_SE="1900"), "client-1",
                                      CALLEE, owner))
    assert leg.unanswered
    (_, again) = sent(sip, "INVITE")
    assert again.cseq.seq == first.cseq.seq + 1 and again.call_id == first.call_id
    # RFC 4028 §7.4: Min-SE as the 422 asked (no Session-Expires of ours: the INVITE names no
    # interval, the callee puts its own in the 2xx)
    assert again.headers.get("Min-SE") == "1900"
    b2b.handle_event(ResponseReceived(reply_to(again, 200, "callee1",
                                               Session_Expires="1900;refresher=uac"),
                                      "client-2", CALLEE, sip.owners[1]))
    assert leg.state is LegState.ANSWERED and leg.dialog is not None
    assert leg.invite_session.we_refresh and leg.invite_session.interval == 1900
    (ack,) = sent(sip, "ACK")
    assert ack.to_tag == "callee1" and ack.cseq.seq == again.cseq.seq


async def test_a_second_forks_2xx_is_acked_and_byed_and_retransmissions_acked_again(
        pbx: tuple[B2bua, FakeSip, LogRecorder]) -> None:
    b2b, sip, _ = pbx
    leg = callee_leg(b2b)
    leg.start()
    (request,) = sent(sip, "INVITE")
    owner = sip.owners[0]

    def deliver(response: Response) -> None:
        b2b.handle_event(ResponseReceived(response, "client-1", CALLEE, owner))

    deliver(reply_to(request, 200, "fork1"))
    deliver(reply_to(request, 200, "fork1"))  # a retransmission
    deliver(reply_to(request, 200, "fork2"))  # another branch answered too
    assert leg.state is LegState.ANSWERED and leg.dialog is not None
    assert leg.dialog.remote_tag == "fork1"
    assert [a.to_tag for a in sent(sip, "ACK")] == ["fork1", "fork1", "fork2"]
    (bye,) = sent(sip, "BYE")
    assert bye.to_tag == "fork2"
    leg.hangup()
    assert [b.to_tag for b in sent(sip, "BYE")] == ["fork2", "fork1"]


async def test_cancel_then_a_crossing_2xx_is_acked_and_byed(
        pbx: tuple[B2bua, FakeSip, LogRecorder]) -> None:
    b2b, sip, _ = pbx
    leg = callee_leg(b2b)
    leg.start()
    (request,) = sent(sip, "INVITE")
    leg.hangup()
    assert sip.cancelled == ["client-1"] and leg.ended
    b2b.handle_event(ResponseReceived(reply_to(request, 200, "late"), "client-1", CALLEE,
                                      sip.owners[0]))
    assert [a.to_tag for a in sent(sip, "ACK")] == ["late"]
    assert [b.to_tag for b in sent(sip, "BYE")] == ["late"]
    assert leg.dialog is None


# ------------------------------------------------------------------ a new call's INVITE
@pytest.mark.parametrize(("session_expires", "status", "min_se"),
                         [("30", 422, "90"), ("soon", 400, None)])
async def test_a_new_invite_the_usage_refuses_gets_its_status(
        tmp_path: Path, session_expires: str, status: int, min_se: str | None) -> None:
    async with pbx_with_trunk(tmp_path, resolved=True) as (b2b, sip, log, _):
        first = with_headers(invite("refused"), ("Session-Expires", session_expires))
        b2b.handle_event(RequestReceived(first, PHONE, "refused-tx1"))
        (challenge,) = sip.finals("refused-tx1")
        again = DigestClient().authorize(first, challenge, "100", "pw100", realm=REALM)
        b2b.handle_event(RequestReceived(again, PHONE, "refused-tx2"))
        (final,) = sip.finals("refused-tx2")
        assert final.status == status and final.headers.get("Min-SE") == min_se
        assert not b2b.calls and not log.events("sip.request.failed")
