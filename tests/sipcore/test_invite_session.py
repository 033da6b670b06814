"""The INVITE usage (sipcore.invite_session): both state tables over every pair, every table entry
driven through the public API, every timer with a fake clock, offer/answer with 491/500 glare,
RFC 4028 negotiation with 422, the 2xx/ACK rules of §13 and the BYE rules of §15."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.dialog import Dialog, DialogSet, DialogState
from sipcore.errors import LocalProtocolError, RemoteProtocolError
from sipcore.invite_session import (
    OFFER_TABLE,
    SESSION_TABLE,
    AckToSend,
    ByeToSend,
    CancelToSend,
    InviteSession,
    OfferAction,
    OfferInput,
    OfferState,
    RefreshToSend,
    RequestRefused,
    ResponseToRetransmit,
    RetryToSend,
    Role,
    SdpRole,
    SessionAction,
    SessionConfig,
    SessionEnded,
    SessionEstablished,
    SessionEvent,
    SessionExpires,
    SessionInput,
    SessionState,
    negotiate,
    offer_lookup,
    option_tags,
    parse_min_se,
    parse_session_expires,
    session_lookup,
)
from sipcore.message import Request, Response, make_response, parse_message
from sipcore.transaction import TimerConfig

St, In, A = SessionState, SessionInput, SessionAction
M = TypeVar("M", Request, Response)
SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" \
      b"m=audio 4000 RTP/AVP 0\r\n"


# ------------------------------------------------------------------------------ messages
def invite(*, sdp: bool = True, extra: str = "", seq: int = 1) -> Request:
    msg = parse_message((
        "INVITE sip:bob@b.example SIP/2.0\r\n"
        "Via: SIP/2.0/UDP a.example;branch=z9hG4bK1\r\n"
        "From: Alice <sip:alice@a.example>;tag=atag\r\n"
        "To: <sip:bob@b.example>\r\n"
        "Call-ID: inv-1\r\n"
        f"CSeq: {seq} INVITE\r\n"
        "Contact: <sip:alice@192.0.2.1:5060>\r\n"
        "Supported: timer\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode())
    assert isinstance(msg, Request)
    return with_body(msg, sdp)


def with_body(msg: M, sdp: bool) -> M:
    if sdp:
        msg.body = SDP
        msg.headers.set("Content-Type", "application/sdp")
    return msg


def reply(request: Request, status: int, *, tag: str = "btag", sdp: bool = False,
          headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = ()) -> Response:
    resp = make_response(request, status, to_tag=tag)
    if 100 < status < 300:
        resp.headers.add("Contact", f"<sip:bob-{tag}@192.0.2.2:5060>")
    for name, value in headers:
        resp.headers.add(name, value)
    with_body(resp, sdp)
    return resp


def body(msg: Request, sdp: bool) -> Request:
    with_body(msg, sdp)
    return msg


@dataclass
class Call:
    """One session with the peer's side of the dialog, to build the peer's requests."""

    session: InviteSession
    invite: Request
    now: float = 0.0
    dialog_set: DialogSet | None = None
    dialog: Dialog | None = None  # ours
    peer: Dialog | None = None  # theirs
    last_2xx: Response | None = None
    log: list[SessionEvent] = field(default_factory=list)

    def drain(self) -> list[SessionEvent]:
        out = self.session.events()
        self.log += out
        return out

    def fire(self, timer: SessionInput) -> list[SessionEvent]:
        deadline = self.session.timers()[timer]
        self.now = deadline
        self.session.handle_timer(deadline)
        return self.drain()


def uac(*, sdp: bool = True, config: SessionConfig | None = None, extra: str = "",
        rng: Callable[[], float] = lambda: 0.5) -> Call:
    s = InviteSession(Role.UAC, config, rng=rng)
    inv = invite(sdp=sdp, extra=extra)
    s.send_request(inv, 0.0)
    return Call(s, inv, dialog_set=DialogSet(inv))


def uac_response(c: Call, status: int, *, tag: str = "btag", sdp: bool = False,
                 headers: tuple[tuple[str, str], ...] = ()) -> SdpRole:
    resp = reply(c.invite, status, tag=tag, sdp=sdp, headers=headers)
    assert c.dialog_set is not None
    dialog = c.dialog_set.receive_response(resp)
    if 200 <= status < 300:
        c.last_2xx = resp
        if c.dialog is None and dialog is not None:
            c.dialog = dialog
            c.peer = Dialog.from_uas(c.invite, resp)
    return c.session.receive_response(resp, c.now, dialog)


def uac_confirmed(*, se: str | None = None, config: SessionConfig | None = None,
                  rng: Callable[[], float] = lambda: 0.5) -> Call:
    c = uac(config=config, rng=rng)
    headers = (("Session-Expires", se), ("Require", "timer")) if se else ()
    uac_response(c, 200, sdp=True, headers=headers)
    c.drain()
    return c


def uas(*, sdp: bool = True, extra: str = "", config: SessionConfig | None = None,
        reliable: bool = False, rng: Callable[[], float] = lambda: 0.5) -> Call:
    s = InviteSession(Role.UAS, config, reliable=reliable, rng=rng)
    inv = invite(sdp=sdp, extra=extra)
    c = Call(s, inv)
    c.session.receive_request(inv, 0.0)
    return c


def uas_answer(c: Call, *, sdp: bool = True) -> Response:
    resp = reply(c.invite, 200, sdp=sdp, headers=c.session.response_headers())
    c.dialog = Dialog.from_uas(c.invite, resp)
    c.peer = Dialog.from_uac(c.invite, resp)
    c.last_2xx = resp
    c.session.send_response(resp, c.now, c.dialog)
    return resp


def uas_ack(c: Call, seq: int = 1, *, sdp: bool = False) -> SdpRole:
    assert c.peer is not None
    ack = c.peer.create_ack(seq, body=SDP if sdp else b"")
    return c.session.receive_request(ack, c.now).sdp


def uas_confirmed(*, extra: str = "", config: SessionConfig | None = None,
                  rng: Callable[[], float] = lambda: 0.5) -> Call:
    c = uas(extra=extra, config=config, rng=rng)
    uas_answer(c)
    uas_ack(c)
    c.drain()
    return c


def peer_request(c: Call, method: str, *, sdp: bool = False,
                 extra: list[tuple[str, str]] | None = None) -> Request:
    assert c.peer is not None
    return body(c.peer.create_request(method, extra=extra), sdp)


def our_request(c: Call, method: str, *, sdp: bool = False,
                extra: list[tuple[str, str]] | None = None) -> Request:
    assert c.dialog is not None
    request = body(c.dialog.create_request(method, extra=extra), sdp)
    c.session.send_request(request, c.now)
    return request


def state_of(c: Call) -> SessionState:
    """The state, read through a call (so that mypy does not narrow it across actions)."""
    return c.session.state


def offer_of(c: Call) -> OfferState:
    return c.session.offer_state


def of_type(events: list[SessionEvent], kind: type) -> list[SessionEvent]:
    return [e for e in events if isinstance(e, kind)]


# --------------------------------------------------------------------- the tables, all pairs
@pytest.mark.parametrize(("state", "event"), list(itertools.product(SessionState, SessionInput)))
def test_session_table_every_pair(state: SessionState, event: SessionInput) -> None:
    entry = SESSION_TABLE.get((state, event))
    if entry is not None:
        assert session_lookup(state, event) == entry
        # every action but IGNORE has its handler
        assert entry[0] is A.IGNORE or hasattr(InviteSession, "_" + entry[0].value)
    elif event in (In.SEND_2XX, In.SEND_FAILURE, In.HANGUP):
        with pytest.raises(LocalProtocolError):
            session_lookup(state, event)
    else:
        assert session_lookup(state, event) == (A.IGNORE, state)


def test_every_action_and_input_is_used() -> None:
    assert {a for a, _ in SESSION_TABLE.values()} == set(SessionAction)
    assert {i for _, i in SESSION_TABLE} == set(SessionInput)
    assert {a for a, _ in OFFER_TABLE.values()} == set(OfferAction) - {OfferAction.IGNORE}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(OfferState, OfferInput)))
def test_offer_table_every_pair(state: OfferState, event: OfferInput) -> None:
    entry = OFFER_TABLE.get((state, event))
    if entry is not None:
        assert offer_lookup(state, event) == entry
    elif event in (OfferInput.SEND_OFFER, OfferInput.SEND_ANSWER):
        with pytest.raises(LocalProtocolError):
            offer_lookup(state, event)
    else:
        assert offer_lookup(state, event) == (OfferAction.IGNORE, state)


def test_offer_table_semantics() -> None:
    # RFC 3264 / RFC 3311 §5.2: glare is 491, an offer on top of an unanswered one is 500
    assert OFFER_TABLE[(OfferState.OFFER_SENT, OfferInput.RECV_OFFER)][0] is OfferAction.GLARE
    assert OFFER_TABLE[(OfferState.OFFER_RECEIVED, OfferInput.RECV_OFFER)][0] is \
        OfferAction.PENDING
    for state in (OfferState.OFFER_SENT, OfferState.OFFER_RECEIVED):
        assert OFFER_TABLE[(state, OfferInput.OFFER_REJECTED)] == (OfferAction.ROLLBACK,
                                                                   OfferState.ANSWERED)


# ------------------------------------------------- every table entry through the public API
def reach(state: SessionState, role: Role, config: SessionConfig | None = None) -> Call:
    """A call in ``state`` (for ``role``), with a 90 s session timer that we refresh."""
    if role is Role.UAC:
        c = uac(config=config)
        if state is St.CALLING:
            return c
        if state is St.CANCELLING:
            c.session.hangup(0.0)
            c.drain()
            return c
        uac_response(c, 200, sdp=True, headers=(("Session-Expires", "90;refresher=uac"),))
        c.drain()
        if state is St.TERMINATED:
            c.session.hangup(0.0)
            c.drain()
        return c
    c = uas(extra="Session-Expires: 90;refresher=uas\r\n", config=config)
    if state is St.PROCEEDING:
        return c
    if state is St.TERMINATED:  # the caller's BYE on the early dialog
        feed(c, In.RECV_BYE)
        return c
    uas_answer(c)
    if state is St.ACCEPTED_HANGUP:
        c.session.hangup(0.0)
    if state is St.CONFIRMED:
        uas_ack(c)
    c.drain()
    return c


def feed(c: Call, event: SessionInput) -> None:
    """Cause ``event`` through the public API (with what it needs first)."""
    s = c.session
    if event is In.RECV_1XX:
        uac_response(c, 180)
    elif event is In.RECV_2XX:
        uac_response(c, 200, sdp=s.state is St.CALLING)
    elif event is In.RECV_STRAY_2XX:
        uac_response(c, 200, tag="other", sdp=True)
    elif event is In.RECV_FAILURE:
        uac_response(c, 486)
    elif event in (In.RECV_422, In.RECV_491, In.REQUEST_FAILED, In.TIMER_GLARE):
        status = {In.RECV_422: 422, In.RECV_491: 491, In.REQUEST_FAILED: 481,
                  In.TIMER_GLARE: 491}[event]
        headers = (("Min-SE", "3600"),) if status == 422 else ()
        if s.state in (St.CALLING, St.CANCELLING):
            uac_response(c, status, headers=headers)
        else:
            request = our_request(c, "INVITE", sdp=True, extra=s.request_headers())
            s.receive_response(reply(request, status, headers=headers), c.now, c.dialog)
        if event is In.TIMER_GLARE:
            c.fire(In.TIMER_GLARE)
    elif event in (In.SEND_2XX, In.TIMER_2XX, In.TIMER_ACK) and s.state is St.CONFIRMED:
        request = peer_request(c, "INVITE", sdp=True)
        s.receive_request(request, c.now)
        s.send_response(reply(request, 200, sdp=True), c.now, c.dialog)
        if event is not In.SEND_2XX:
            c.fire(event)
    elif event is In.SEND_2XX:
        uas_answer(c)
    elif event is In.SEND_FAILURE:
        s.send_response(reply(c.invite, 486), c.now)
    elif event is In.HANGUP:
        s.hangup(c.now)
    elif event is In.RECV_ACK and s.state is St.CONFIRMED:
        request = peer_request(c, "INVITE")
        s.receive_request(request, c.now)
        s.send_response(reply(request, 200, sdp=True), c.now, c.dialog)
        uas_ack(c, request.cseq.seq, sdp=True)
    elif event is In.RECV_ACK:
        uas_ack(c)
    elif event is In.RECV_BYE:
        if c.peer is None:  # an early dialog: the caller's BYE (UAS) or the callee's (UAC)
            resp = reply(c.invite, 180)
            c.peer = Dialog.from_uac(c.invite, resp) if s.role is Role.UAS else \
                Dialog.from_uas(c.invite, resp)
        s.receive_request(peer_request(c, "BYE"), c.now)
    elif event is In.RECV_CANCEL:
        s.cancelled(c.now)
    elif event is In.ACK_TIMED_OUT:
        s.ack_timed_out(c.now)
    else:
        c.fire(event)
    c.drain()


def _role(state: SessionState, event: SessionInput) -> Role:
    if state in (St.PROCEEDING, St.ACCEPTED, St.ACCEPTED_HANGUP):
        return Role.UAS
    if state is St.TERMINATED and event is In.SEND_FAILURE:
        return Role.UAS
    if state is St.CONFIRMED and event in (In.SEND_2XX, In.RECV_ACK, In.TIMER_2XX, In.TIMER_ACK,
                                           In.ACK_TIMED_OUT):
        return Role.UAS
    return Role.UAC


@pytest.mark.parametrize(("state", "event"), list(SESSION_TABLE))
def test_every_entry_through_the_api(state: SessionState, event: SessionInput) -> None:
    config = None
    if event is In.TIMER_EXPIRE and state in (St.ACCEPTED, St.ACCEPTED_HANGUP):
        # expiry (90 - 30 s) before the ACK give-up (64*T1): a slow network's T1
        config = SessionConfig(timers=TimerConfig(t1=1.0, t2=4.0))
    c = reach(state, _role(state, event), config)
    assert state_of(c) is state
    ended = len(of_type(c.log, SessionEnded))
    feed(c, event)
    assert state_of(c) is SESSION_TABLE[(state, event)][1]
    # one SessionEnded when (and only when) this transition ended the session
    new_end = SESSION_TABLE[(state, event)][1] is St.TERMINATED and state is not St.TERMINATED
    assert len(of_type(c.log, SessionEnded)) == ended + new_end


# ------------------------------------------------------------------- UAC: 2xx, ACK, forks
def test_uac_acks_the_2xx_and_every_retransmission_with_the_same_ack() -> None:
    c = uac()
    assert uac_response(c, 180, sdp=True) is SdpRole.ANSWER  # a preview of the answer
    assert offer_of(c) is OfferState.OFFER_SENT
    assert uac_response(c, 200, sdp=True) is SdpRole.ANSWER
    events = c.drain()
    assert [type(e) for e in events] == [AckToSend, SessionEstablished]
    ack = events[0].request  # type: ignore[union-attr]
    assert (ack.method, ack.cseq.seq, ack.cseq.method, ack.to_tag) == ("ACK", 1, "ACK", "btag")
    assert state_of(c) is St.CONFIRMED and offer_of(c) is OfferState.ANSWERED
    assert c.session.dialog is c.dialog
    for _ in range(3):  # §13.2.2.4: each retransmission of the 2xx is ACKed, same ACK
        c.session.receive_response(c.last_2xx, 1.0, c.dialog)  # type: ignore[arg-type]
        (again,) = c.drain()
        assert isinstance(again, AckToSend) and again.request is ack


def test_uac_early_answer_stands_when_the_2xx_has_no_sdp() -> None:
    c = uac()
    uac_response(c, 183, sdp=True)
    assert uac_response(c, 200) is SdpRole.ANSWER
    assert offer_of(c) is OfferState.ANSWERED


def test_uac_fork_second_2xx_is_acked_and_byed() -> None:
    c = uac()
    uac_response(c, 200, sdp=True)
    c.drain()
    assert c.dialog_set is not None
    other = reply(c.invite, 200, tag="fork2", sdp=True)
    fork = c.dialog_set.receive_response(other)
    assert fork is not None and fork is not c.dialog
    c.session.receive_response(other, 0.1, fork)
    ack, bye = c.drain()
    assert isinstance(ack, AckToSend) and ack.request.to_tag == "fork2"
    assert isinstance(bye, ByeToSend) and bye.request.method == "BYE"
    assert bye.request.to_tag == "fork2" and bye.cause == "unwanted-2xx"
    assert state_of(c) is St.CONFIRMED and c.session.dialog is c.dialog
    c.session.receive_response(other, 0.6, fork)  # its retransmission: the ACK only
    (again,) = c.drain()
    assert isinstance(again, AckToSend) and again.request is ack.request


def test_uac_hangup_before_final_is_cancel_and_a_crossing_2xx_is_acked_and_byed() -> None:
    c = uac()
    uac_response(c, 180)
    assert c.session.hangup(1.0, 'Q.850;cause=16') is A.CANCEL
    (cancel,) = c.drain()
    assert cancel == CancelToSend('Q.850;cause=16')
    assert state_of(c) is St.CANCELLING
    uac_response(c, 200, sdp=True)
    ack, bye, ended = c.drain()
    assert isinstance(ack, AckToSend) and isinstance(bye, ByeToSend)
    assert ended == SessionEnded("hangup", False, None)
    assert state_of(c) is St.TERMINATED and c.session.timers() == {}


def test_uac_cancelled_call_ends_on_487() -> None:
    c = uac()
    c.session.hangup(0.5)
    c.drain()
    uac_response(c, 487)
    assert c.drain() == [SessionEnded("hangup", False, None)]


def test_uac_failure_and_timeout() -> None:
    c = uac()
    uac_response(c, 486)
    assert c.drain() == [SessionEnded("failed", True, 486)]
    c = uac()
    c.session.request_failed("INVITE", 32.0)
    assert c.drain() == [SessionEnded("failed", False, 408)]


def test_uac_first_2xx_needs_its_dialog() -> None:
    c = uac()
    with pytest.raises(LocalProtocolError):
        c.session.receive_response(reply(c.invite, 200, sdp=True), 0.0, None)
    assert state_of(c) is St.CALLING


def test_uac_delayed_offer_answered_in_the_ack() -> None:
    c = uac(sdp=False)
    assert uac_response(c, 200, sdp=True) is SdpRole.OFFER
    assert offer_of(c) is OfferState.OFFER_RECEIVED
    assert [type(e) for e in c.drain()] == [SessionEstablished]  # no ACK without our answer
    c.session.answer_in_ack(SDP, 0.1)
    (ack,) = c.drain()
    assert isinstance(ack, AckToSend) and ack.request.body == SDP
    assert offer_of(c) is OfferState.ANSWERED
    c.session.receive_response(c.last_2xx, 0.6, c.dialog)  # type: ignore[arg-type]
    (again,) = c.drain()
    assert isinstance(again, AckToSend) and again.request is ack.request
    with pytest.raises(LocalProtocolError):
        c.session.answer_in_ack(SDP, 0.7)


# ------------------------------------------------------ UAS: the 2xx until the ACK, §13.3.1.4
def test_uas_retransmits_the_2xx_t1_doubling_to_t2_then_byes_at_64_t1() -> None:
    c = uas()
    resp = uas_answer(c)
    assert state_of(c) is St.ACCEPTED
    times = []
    while state_of(c) is St.ACCEPTED:
        deadline = c.session.next_deadline()
        assert deadline is not None
        c.session.handle_timer(deadline)
        for event in c.drain():
            if isinstance(event, ResponseToRetransmit):
                assert event.response is resp
                times.append(deadline)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    bye, ended = c.log[-2:]
    assert isinstance(bye, ByeToSend) and bye.cause == "ack-timeout"
    assert bye.request.method == "BYE" and bye.request.to_tag == "atag"
    assert ended == SessionEnded("ack-timeout", False, None)
    assert c.now == 0 and c.session.timers() == {}


def test_uas_ack_confirms_and_stops_the_retransmissions() -> None:
    c = uas()
    uas_answer(c)
    c.session.handle_timer(0.4)  # not yet due: nothing
    assert c.drain() == []
    assert set(c.session.timers()) == {In.TIMER_2XX, In.TIMER_ACK}
    assert c.peer is not None
    stray = c.peer.create_ack(7)  # another CSeq: not ours, ignored
    assert c.session.receive_request(stray, 0.6).sdp is SdpRole.NONE
    assert state_of(c) is St.ACCEPTED
    uas_ack(c)
    assert c.drain() == [SessionEstablished()]
    assert state_of(c) is St.CONFIRMED and c.session.timers() == {}


def test_uas_reliable_transport_only_the_give_up() -> None:
    c = uas(reliable=True)
    uas_answer(c)
    assert c.session.timers() == {In.TIMER_ACK: 32.0}


def test_uas_endpoint_retransmits_then_ack_timed_out_byes() -> None:
    c = uas(config=SessionConfig(retransmit_2xx=False))
    uas_answer(c)
    assert c.session.timers() == {}
    c.session.ack_timed_out(32.0)
    assert [type(e) for e in c.drain()] == [ByeToSend, SessionEnded]


def test_uas_no_bye_before_the_ack_then_bye() -> None:
    c = uas()
    uas_answer(c)
    assert c.session.hangup(1.0) is A.DEFER_BYE
    assert of_type(c.drain(), ByeToSend) == []  # §15: not before the ACK
    assert state_of(c) is St.ACCEPTED_HANGUP
    uas_ack(c)
    established, bye, ended = c.drain()
    assert established == SessionEstablished()
    assert isinstance(bye, ByeToSend) and bye.cause == "hangup"
    assert ended == SessionEnded("hangup", False, None)


def test_uas_hangup_before_answering_is_a_final_error_response() -> None:
    c = uas()
    assert c.session.hangup(1.0) is A.REJECT
    assert state_of(c) is St.PROCEEDING and c.drain() == []
    c.session.send_response(reply(c.invite, 480), 1.0)
    assert c.drain() == [SessionEnded("rejected", False, 480)]


def test_uas_cancel_and_early_bye() -> None:
    c = uas()
    c.session.cancelled(2.0)
    assert c.drain() == [SessionEnded("cancelled", True, 487)]
    c = uas()
    feed(c, In.RECV_BYE)  # the caller's BYE on the early dialog: the TU answers 487
    assert c.log == [SessionEnded("bye", True, None)]


def test_uas_2xx_rules() -> None:
    c = uas()  # an offer: the 2xx must answer it
    with pytest.raises(LocalProtocolError):
        c.session.send_response(reply(c.invite, 200), 0.0, Dialog.from_uas(
            c.invite, reply(c.invite, 200)))
    assert state_of(c) is St.PROCEEDING
    with pytest.raises(LocalProtocolError):  # the first 2xx needs its dialog
        c.session.send_response(reply(c.invite, 200, sdp=True), 0.0)
    uas_answer(c)
    with pytest.raises(LocalProtocolError):  # no second final response
        c.session.send_response(reply(c.invite, 486), 0.0)


def test_uas_delayed_offer_answer_in_the_ack() -> None:
    c = uas(sdp=False)
    with pytest.raises(LocalProtocolError):  # an offerless INVITE: the 2xx must offer
        c.session.send_response(reply(c.invite, 200), 0.0, Dialog.from_uas(
            c.invite, reply(c.invite, 200)))
    uas_answer(c, sdp=True)
    assert offer_of(c) is OfferState.OFFER_SENT
    assert uas_ack(c, sdp=True) is SdpRole.ANSWER
    assert offer_of(c) is OfferState.ANSWERED


def test_uas_delayed_offer_ack_without_answer_rolls_back() -> None:
    c = uas(sdp=False)
    uas_answer(c, sdp=True)
    assert uas_ack(c) is SdpRole.NONE
    assert offer_of(c) is OfferState.ANSWERED
    assert state_of(c) is St.CONFIRMED


def test_reinvite_2xx_is_retransmitted_until_its_ack_then_bye_on_give_up() -> None:
    c = uas_confirmed()
    reinvite = peer_request(c, "INVITE", sdp=True)
    assert c.session.receive_request(reinvite, 10.0).sdp is SdpRole.OFFER
    c.now = 10.0
    c.session.send_response(reply(reinvite, 200, sdp=True), 10.0)
    assert c.session.timers() == {In.TIMER_2XX: 10.5, In.TIMER_ACK: 42.0}
    c.fire(In.TIMER_ACK)
    assert [type(e) for e in c.log][-2:] == [ByeToSend, SessionEnded]
    assert c.session.end_cause == "ack-timeout"


# ------------------------------------------------------------ offer/answer, 491, 500, §14
def test_reinvite_glare_is_491_and_our_491_backs_off() -> None:
    c = uac_confirmed()
    ours = our_request(c, "INVITE", sdp=True)
    assert offer_of(c) is OfferState.OFFER_SENT
    for method, sdp in (("INVITE", True), ("INVITE", False), ("UPDATE", True)):
        with pytest.raises(RequestRefused) as info:
            c.session.receive_request(peer_request(c, method, sdp=sdp), 1.0)
        assert info.value.status_hint == 491 and isinstance(info.value, RemoteProtocolError)
    assert c.session.receive_request(peer_request(c, "UPDATE"), 1.0).sdp is SdpRole.NONE
    # the peer's 491 to ours: roll the offer back, retry after 2.1-4 s (we own the Call-ID)
    c.session.receive_response(reply(ours, 491), 1.0, c.dialog)
    assert offer_of(c) is OfferState.ANSWERED
    assert c.session.timers()[In.TIMER_GLARE] == pytest.approx(1.0 + 2.1 + 0.95)
    (retry,) = c.fire(In.TIMER_GLARE)
    assert isinstance(retry, RetryToSend) and (retry.method, retry.status) == ("INVITE", 491)
    our_request(c, "INVITE", sdp=True)  # the retry goes out: a new offer is allowed
    assert offer_of(c) is OfferState.OFFER_SENT


@pytest.mark.parametrize(("role", "rng", "delay"), [
    (Role.UAC, 0.0, 2.1), (Role.UAC, 1.0, 4.0), (Role.UAS, 0.0, 0.0), (Role.UAS, 1.0, 2.0)])
def test_491_back_off_ranges(role: Role, rng: float, delay: float) -> None:
    c = uac_confirmed(rng=lambda: rng) if role is Role.UAC else uas_confirmed(rng=lambda: rng)
    ours = our_request(c, "UPDATE", sdp=True)
    c.session.receive_response(reply(ours, 491), 5.0, c.dialog)
    assert c.session.timers()[In.TIMER_GLARE] == pytest.approx(5.0 + delay)
    (retry,) = c.fire(In.TIMER_GLARE)
    assert isinstance(retry, RetryToSend) and retry.method == "UPDATE"


def test_second_offer_while_theirs_is_unanswered_is_500_with_retry_after() -> None:
    c = uas_confirmed(rng=lambda: 0.99)
    first = peer_request(c, "INVITE", sdp=True)
    c.session.receive_request(first, 1.0)
    for method in ("INVITE", "UPDATE"):
        with pytest.raises(RequestRefused) as info:
            c.session.receive_request(peer_request(c, method, sdp=True), 1.0)
        assert info.value.status_hint == 500
        assert info.value.headers == (("Retry-After", "10"),)
    with pytest.raises(RequestRefused) as info:  # §14.2: an INVITE on an unanswered INVITE
        c.session.receive_request(peer_request(c, "INVITE"), 1.0)
    assert info.value.status_hint == 500
    # we reject their offer: rolled back, a new one is welcome
    c.session.send_response(reply(first, 488), 1.1)
    assert offer_of(c) is OfferState.ANSWERED
    assert c.session.receive_request(peer_request(c, "UPDATE", sdp=True), 1.2).sdp is \
        SdpRole.OFFER


def test_our_requests_follow_the_rules() -> None:
    c = uac_confirmed()
    our_request(c, "INVITE", sdp=True)
    with pytest.raises(LocalProtocolError):  # §14.1: one INVITE at a time
        our_request(c, "INVITE")
    with pytest.raises(LocalProtocolError):  # an offer on a pending offer
        our_request(c, "UPDATE", sdp=True)
    with pytest.raises(LocalProtocolError):
        c.session.send_request(peer_request(c, "BYE"), 0.0)
    c2 = uac()
    with pytest.raises(LocalProtocolError):  # no re-INVITE before the dialog is confirmed
        c2.session.send_request(invite(seq=2), 0.0)


def test_update_offer_answer_and_rejection() -> None:
    c = uac_confirmed()
    upd = our_request(c, "UPDATE", sdp=True)
    assert c.session.receive_response(reply(upd, 200, sdp=True), 1.0, c.dialog) is \
        SdpRole.ANSWER
    assert offer_of(c) is OfferState.ANSWERED
    upd = our_request(c, "UPDATE", sdp=True)
    assert c.session.receive_response(reply(upd, 488), 1.0, c.dialog) is SdpRole.NONE
    assert offer_of(c) is OfferState.ANSWERED
    assert c.drain() == []  # the UPDATE's answers need no ACK


def test_reinvite_answered_and_acked() -> None:
    c = uac_confirmed()
    reinvite = our_request(c, "INVITE", sdp=True)
    resp = reply(reinvite, 200, sdp=True)
    assert c.session.receive_response(resp, 1.0, c.dialog) is SdpRole.ANSWER
    (ack,) = c.drain()
    assert isinstance(ack, AckToSend) and ack.request.cseq.seq == reinvite.cseq.seq
    c.session.receive_response(resp, 1.5, c.dialog)
    assert c.drain() == [ack]


def test_reinvite_481_and_408_end_the_dialog_with_bye() -> None:
    c = uac_confirmed()
    reinvite = our_request(c, "INVITE", sdp=True)
    c.session.receive_response(reply(reinvite, 408), 1.0, c.dialog)
    bye, ended = c.drain()
    assert isinstance(bye, ByeToSend) and bye.cause == "dialog-failed"
    assert ended == SessionEnded("dialog-failed", False, 408)
    c = uac_confirmed()
    upd = our_request(c, "UPDATE")
    assert c.dialog is not None
    resp = reply(upd, 481)
    c.dialog.receive_response(resp)  # the dialog layer has ended the dialog: no BYE
    assert c.dialog.state is DialogState.TERMINATED
    c.session.receive_response(resp, 1.0, c.dialog)
    assert c.drain() == [SessionEnded("dialog-failed", False, 481)]
    c = uac_confirmed()
    our_request(c, "UPDATE")
    c.session.request_failed("UPDATE", 33.0)  # no answer at all
    assert state_of(c) is St.TERMINATED


def test_bye_received_and_sent() -> None:
    c = uac_confirmed()
    late = peer_request(c, "UPDATE")
    c.session.receive_request(peer_request(c, "BYE"), 5.0)
    assert c.drain() == [SessionEnded("bye", True, None)]
    assert c.session.hangup(6.0) is A.IGNORE  # already over
    with pytest.raises(RequestRefused) as info:  # a request after the end
        c.session.receive_request(late, 6.0)
    assert info.value.status_hint == 481
    with pytest.raises(LocalProtocolError):
        c.session.send_request(invite(seq=9), 6.0)
    c = uas_confirmed()
    c.session.hangup(5.0, 'SIP;cause=200;text="done"')
    bye, ended = c.drain()
    assert isinstance(bye, ByeToSend) and bye.request.headers.get("Reason") == \
        'SIP;cause=200;text="done"'
    assert ended == SessionEnded("hangup", False, None)


# ------------------------------------------------------------------ session timers, RFC 4028
@pytest.mark.parametrize(("header", "supported", "expected"), [
    ("1800", True, "1800;refresher=uac"),
    ("1800", False, "1800;refresher=uas"),
    ("1800;refresher=uac", False, "1800;refresher=uas"),  # cannot refresh without timer
    ("1800;refresher=uas", True, "1800;refresher=uas"),
    ("7200;refresher=uac", True, "3600;refresher=uac"),  # capped by ours
])
def test_uas_negotiation(header: str, supported: bool, expected: str) -> None:
    s = InviteSession(Role.UAS, SessionConfig(session_expires=3600))
    inv = invite(extra=f"Session-Expires: {header}\r\n")
    if not supported:
        inv.headers.remove("Supported")
    incoming = s.receive_request(inv, 0.0)
    assert incoming.sdp is SdpRole.OFFER
    wanted = [("Session-Expires", expected)] + ([("Require", "timer")] if supported else [])
    assert list(incoming.headers) == wanted == s.response_headers()


def test_uas_min_se_of_the_request_is_a_floor() -> None:
    s = InviteSession(Role.UAS, SessionConfig(session_expires=600))
    incoming = s.receive_request(invite(extra="Session-Expires: 1800\r\nMin-SE: 1200\r\n"), 0.0)
    assert incoming.headers[0] == ("Session-Expires", "1200;refresher=uac")


def test_uas_422_below_our_min_se() -> None:
    s = InviteSession(Role.UAS, SessionConfig(min_se=120))
    with pytest.raises(RequestRefused) as info:
        s.receive_request(invite(extra="Session-Expires: 100\r\n"), 0.0)
    assert (info.value.status_hint, info.value.headers) == (422, (("Min-SE", "120"),))
    assert s.invite_seq is None and s.offer_state is OfferState.NO_OFFER  # nothing taken
    s.send_response(reply(invite(), 422), 0.0)
    assert s.state is St.TERMINATED


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1800;refresher=proxy", "1" * 11])
def test_bad_session_expires_is_400(value: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        InviteSession(Role.UAS).receive_request(invite(extra=f"Session-Expires: {value}\r\n"),
                                                0.0)
    assert info.value.status_hint == 400


def test_header_parsers() -> None:
    assert parse_session_expires("1800;refresher=UAS") == SessionExpires(1800, "uas")
    assert parse_session_expires(" 90 ;x=1") == SessionExpires(90)
    assert parse_session_expires(None) is None
    assert str(SessionExpires(90, "uac")) == "90;refresher=uac" and str(SessionExpires(90)) == "90"
    assert parse_min_se("120;x") == 120 and parse_min_se(None) is None
    with pytest.raises(RemoteProtocolError):
        parse_min_se("x")
    inv = invite(extra="Require: 100rel, Timer\r\n")
    assert option_tags(inv, "Require") == {"100rel", "timer"}
    with pytest.raises(ValueError):
        SessionConfig(min_se=60)
    with pytest.raises(ValueError):
        SessionConfig(refresher="proxy")


def test_uac_requests_the_timer_and_follows_a_422() -> None:
    c = uac()
    assert c.session.request_headers() == [("Session-Expires", "1800")]
    uac_response(c, 422, headers=(("Min-SE", "3600"),))
    (retry,) = c.drain()
    assert retry == RetryToSend("INVITE", 422, (("Session-Expires", "3600"), ("Min-SE", "3600")))
    assert state_of(c) is St.CALLING and offer_of(c) is OfferState.NO_OFFER
    again = invite(seq=2, extra="Session-Expires: 3600\r\nMin-SE: 3600\r\n")
    c.session.send_request(again, 0.1)
    c.invite, c.dialog_set = again, DialogSet(again)
    uac_response(c, 200, sdp=True, headers=(("Session-Expires", "3600;refresher=uas"),))
    assert state_of(c) is St.CONFIRMED and c.session.interval == 3600
    assert not c.session.we_refresh


@pytest.mark.parametrize("min_se", [None, "100", "999999"])
def test_uac_unusable_422_fails_the_call(min_se: str | None) -> None:
    c = uac()
    uac_response(c, 422, headers=(("Min-SE", min_se),) if min_se else ())
    assert c.drain() == [SessionEnded("failed", True, 422)]


def test_refresher_refreshes_at_half_and_the_2xx_rearms() -> None:
    c = uac_confirmed(se="90;refresher=uac")
    s = c.session
    assert (s.interval, s.we_refresh) == (90, True)
    assert s.timers() == {In.TIMER_REFRESH: 45.0, In.TIMER_EXPIRE: 60.0}
    (refresh,) = c.fire(In.TIMER_REFRESH)
    assert refresh == RefreshToSend("INVITE", (("Session-Expires", "90;refresher=uac"),))
    reinvite = our_request(c, "INVITE", sdp=True, extra=list(refresh.headers))
    assert s.timers() == {In.TIMER_EXPIRE: 60.0}
    s.receive_response(reply(reinvite, 200, sdp=True,
                             headers=(("Session-Expires", "120;refresher=uac"),)), 46.0, c.dialog)
    assert s.timers() == {In.TIMER_REFRESH: 106.0, In.TIMER_EXPIRE: 46.0 + 120 - 32}
    assert [type(e) for e in c.drain()] == [AckToSend]


def test_refresh_waits_while_a_transaction_is_in_progress() -> None:
    c = uac_confirmed(se="90;refresher=uac")
    our_request(c, "UPDATE", sdp=True)
    assert c.fire(In.TIMER_REFRESH) == []
    assert c.session.timers()[In.TIMER_REFRESH] == 45.0 + 4.0


def test_refresh_with_update_when_allowed() -> None:
    c = uac(config=SessionConfig(refresh_with_update=True))
    uac_response(c, 200, sdp=True, headers=(("Session-Expires", "90;refresher=uac"),
                                            ("Allow", "INVITE, ACK, BYE, UPDATE")))
    c.drain()
    (refresh,) = c.fire(In.TIMER_REFRESH)
    assert isinstance(refresh, RefreshToSend) and refresh.method == "UPDATE"
    upd = our_request(c, "UPDATE", extra=list(refresh.headers))
    c.session.receive_response(reply(upd, 200, headers=(("Session-Expires", "90;refresher=uac"),)),
                               46.0, c.dialog)
    assert c.session.timers()[In.TIMER_REFRESH] == 46.0 + 45


def test_non_refresher_byes_before_expiry() -> None:
    c = uac_confirmed(se="1800;refresher=uas")
    assert c.session.timers() == {In.TIMER_EXPIRE: 1800 - 32}
    bye, ended = c.fire(In.TIMER_EXPIRE)
    assert isinstance(bye, ByeToSend) and bye.cause == "session-expired"
    assert bye.request.headers.get("Reason") == 'SIP;cause=408;text="Session timer expired"'
    assert ended == SessionEnded("session-expired", False, None)


def test_uas_non_refresher_rearms_on_the_peers_refresh() -> None:
    c = uas_confirmed(extra="Session-Expires: 90\r\n")  # the UAC supports timer: it refreshes
    s = c.session
    assert (s.interval, s.we_refresh) == (90, False)
    assert s.timers() == {In.TIMER_EXPIRE: 60.0}
    refresh = peer_request(c, "UPDATE", extra=[("Session-Expires", "90;refresher=uac"),
                                               ("Supported", "timer")])
    incoming = s.receive_request(refresh, 40.0)
    assert incoming.headers == (("Session-Expires", "90;refresher=uac"), ("Require", "timer"))
    s.send_response(reply(refresh, 200, headers=incoming.headers), 40.0)
    assert s.timers() == {In.TIMER_EXPIRE: 100.0}
    # a refresh without Session-Expires keeps the running timer, named from its side
    plain = peer_request(c, "UPDATE", extra=[("Supported", "timer")])
    assert s.receive_request(plain, 50.0).headers[0] == ("Session-Expires", "90;refresher=uac")


def test_2xx_without_session_expires_stops_the_timer() -> None:
    c = uac_confirmed(se="90;refresher=uac")
    reinvite = our_request(c, "INVITE", sdp=True)
    c.session.receive_response(reply(reinvite, 200, sdp=True), 10.0, c.dialog)
    assert c.session.interval is None and c.session.timers() == {}


def test_no_timer_without_session_expires() -> None:
    c = uas_confirmed()
    assert c.session.interval is None and c.session.timers() == {}
    assert c.session.response_headers() == []
    assert InviteSession(Role.UAC, SessionConfig(request_timer=False)).request_headers() == []


# ----------------------------------------------------- two sessions joined back to back
class Pair:
    """A UAC and a UAS session wired together: every event is carried to the other side the way
    a TU would (ACK/BYE requests delivered, refreshes and retries sent and answered)."""

    def __init__(self, uac_rng: float = 0.5, uas_rng: float = 0.5) -> None:
        self.now = 0.0
        self.a = InviteSession(Role.UAC, rng=lambda: uac_rng)
        self.b = InviteSession(Role.UAS, rng=lambda: uas_rng)
        inv = invite(extra="".join(f"{n}: {v}\r\n" for n, v in self.a.request_headers()))
        self.a.send_request(inv, 0.0)
        assert self.b.receive_request(inv, 0.0).sdp is SdpRole.OFFER
        ok = reply(inv, 200, sdp=True, headers=self.b.response_headers())
        self.a_dialog = DialogSet(inv).receive_response(ok)
        self.b_dialog = Dialog.from_uas(inv, ok)
        self.b.send_response(ok, 0.0, self.b_dialog)
        assert self.a.receive_response(ok, 0.0, self.a_dialog) is SdpRole.ANSWER
        self.ended: dict[str, SessionEnded] = {}
        self.pump()

    def side(self, s: InviteSession) -> tuple[InviteSession, Dialog, InviteSession]:
        if s is self.a:
            assert self.a_dialog is not None
            return self.a, self.a_dialog, self.b
        return self.b, self.b_dialog, self.a

    def pump(self) -> None:
        """Deliver events until both sides are quiet."""
        busy = True
        while busy:
            busy = False
            for s in (self.a, self.b):
                me, dialog, other = self.side(s)
                for ev in me.events():
                    busy = True
                    self.deliver(me, dialog, other, ev)

    def deliver(self, me: InviteSession, dialog: Dialog, other: InviteSession,
                ev: SessionEvent) -> None:
        if isinstance(ev, AckToSend | ByeToSend):
            other.receive_request(ev.request, self.now)
        elif isinstance(ev, RefreshToSend | RetryToSend):
            self.send(me, dialog, other, ev.method, list(ev.headers))
        elif isinstance(ev, SessionEnded):
            self.ended["a" if me is self.a else "b"] = ev

    def send(self, me: InviteSession, dialog: Dialog, other: InviteSession, method: str,
             headers: list[tuple[str, str]]) -> Request:
        """``me`` sends an offer in ``method``; ``other`` answers it (or refuses it)."""
        request = body(dialog.create_request(method, extra=[*headers, ("Supported", "timer")]),
                       True)
        me.send_request(request, self.now)
        try:
            incoming = other.receive_request(request, self.now)
        except RequestRefused as exc:
            me.receive_response(reply(request, exc.status_hint, headers=exc.headers), self.now,
                                dialog)
            return request
        ok = reply(request, 200, sdp=incoming.sdp is SdpRole.OFFER, headers=incoming.headers)
        other.send_response(ok, self.now, self.side(other)[1])
        me.receive_response(ok, self.now, dialog)
        return request

    def run_until(self, t: float) -> None:
        while True:
            due = [d for d in (self.a.next_deadline(), self.b.next_deadline()) if d is not None]
            if not due or min(due) > t:
                self.now = t
                return
            self.now = min(due)
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
            self.pump()


def test_pair_sets_up_refreshes_and_hangs_up() -> None:
    p = Pair()
    assert p.a.state is St.CONFIRMED and p.b.state is St.CONFIRMED
    assert p.a.offer_state is OfferState.ANSWERED and p.b.offer_state is OfferState.ANSWERED
    # the UAC asked for 1800 s, the UAS let the UAC (which supports timer) refresh
    assert (p.a.interval, p.a.we_refresh, p.b.interval, p.b.we_refresh) == (1800, True,
                                                                            1800, False)
    p.run_until(10_000.0)  # five refreshes: nobody expires
    assert p.ended == {}
    assert p.a.timers()[In.TIMER_REFRESH] == pytest.approx(10_800.0)  # refreshed at 9900
    assert p.b.timers()[In.TIMER_EXPIRE] == pytest.approx(9900 + 1800 - 32)
    p.a.hangup(p.now)
    p.pump()
    assert p.ended == {"a": SessionEnded("hangup", False), "b": SessionEnded("bye", True)}


def test_pair_glare_both_back_off_the_uas_retries_first() -> None:
    p = Pair(uac_rng=0.0, uas_rng=0.0)
    a_dialog = p.a_dialog
    assert a_dialog is not None
    a_inv = body(a_dialog.create_request("INVITE"), True)
    b_inv = body(p.b_dialog.create_request("INVITE"), True)
    p.a.send_request(a_inv, 1.0)
    p.b.send_request(b_inv, 1.0)
    for other, request in ((p.b, a_inv), (p.a, b_inv)):  # the INVITEs cross
        with pytest.raises(RequestRefused) as info:
            other.receive_request(request, 1.0)
        assert info.value.status_hint == 491
    p.a.receive_response(reply(a_inv, 491), 1.0, a_dialog)
    p.b.receive_response(reply(b_inv, 491), 1.0, p.b_dialog)
    assert p.a.timers()[In.TIMER_GLARE] == 3.1 and p.b.timers()[In.TIMER_GLARE] == 1.0
    p.run_until(5.0)  # the UAS's retry at 1.0 succeeds; the UAC's at 3.1 then goes through
    assert p.a.state is St.CONFIRMED and p.b.state is St.CONFIRMED
    assert p.a.offer_state is OfferState.ANSWERED and p.b.offer_state is OfferState.ANSWERED
    assert In.TIMER_GLARE not in p.a.timers() and In.TIMER_GLARE not in p.b.timers()
    assert p.a_dialog is not None and p.a_dialog.local_seq == 3  # INVITE, the glared, the retry
    assert p.b_dialog.local_seq == 2


def test_pair_uas_never_acked_byes_the_uac() -> None:
    a = InviteSession(Role.UAC)
    b = InviteSession(Role.UAS)
    inv = invite()
    a.send_request(inv, 0.0)
    b.receive_request(inv, 0.0)
    ok = reply(inv, 200, sdp=True)
    b.send_response(ok, 0.0, Dialog.from_uas(inv, ok))
    events: list[SessionEvent] = []
    while b.state is St.ACCEPTED:  # every 2xx is lost on the way: no ACK ever comes
        deadline = b.next_deadline()
        assert deadline is not None
        b.handle_timer(deadline)
        events += b.events()
    assert len(of_type(events, ResponseToRetransmit)) == 10
    bye, ended = events[-2:]
    assert isinstance(bye, ByeToSend) and ended == SessionEnded("ack-timeout", False)
    # the BYE reaches the UAC, which never saw the 2xx: its INVITE is still early
    assert a.state is St.CALLING
    a.receive_request(bye.request, 32.0)
    assert a.end_cause == "bye" and a.events() == [SessionEnded("bye", True)]


def test_cseq_spaces_do_not_mix() -> None:
    """The peer's CSeq numbers are not ours: a re-INVITE from the callee with CSeq 1 (the
    number of our own INVITE) is a re-INVITE, its ACK no second establishment."""
    c = uac_confirmed()
    reinvite = peer_request(c, "INVITE", sdp=True)
    assert reinvite.cseq.seq == 1
    c.session.receive_request(reinvite, 1.0)
    c.session.send_response(reply(reinvite, 200, sdp=True), 1.0)
    assert c.session.timers() == {In.TIMER_2XX: 1.5, In.TIMER_ACK: 33.0}
    assert c.peer is not None
    c.session.receive_request(c.peer.create_ack(1), 1.2)
    assert c.drain() == [] and c.session.timers() == {}
    # and the callee's own re-INVITE with CSeq 1 failing is not the call failing
    u = uas_confirmed()
    ours = our_request(u, "INVITE", sdp=True)
    assert ours.cseq.seq == 1
    u.session.receive_response(reply(ours, 180), 2.0, u.dialog)
    u.session.receive_response(reply(ours, 488), 2.0, u.dialog)
    assert state_of(u) is St.CONFIRMED and offer_of(u) is OfferState.ANSWERED and u.drain() == []


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["a_invite", "b_invite", "a_update", "b_update", "a_hangup",
                                 "b_hangup", "advance", "advance_long"]), max_size=25))
def test_pair_random_walk_keeps_the_invariants(steps: list[str]) -> None:
    p = Pair()
    for step in steps:
        if step.startswith("advance"):
            p.run_until(p.now + (2000.0 if step == "advance_long" else 300.0))
            continue
        who, what = step.split("_")
        me, dialog, other = p.side(p.a if who == "a" else p.b)
        if what == "hangup":
            me.hangup(p.now)
        elif me.state is St.CONFIRMED and other.state is St.CONFIRMED:
            p.send(me, dialog, other, what.upper(), me.request_headers())
        p.pump()
        for s in (p.a, p.b):
            if s.state is St.TERMINATED:
                assert s.timers() == {}
            else:  # every exchange completed: nothing left pending
                assert s.offer_state is OfferState.ANSWERED
                assert s.next_deadline() is not None  # the session timer runs
    # one hang-up ends both sides, each exactly once, whoever hung up
    if p.a.state is St.TERMINATED or p.b.state is St.TERMINATED:
        assert p.a.state is St.TERMINATED and p.b.state is St.TERMINATED
        assert {p.ended["a"].remote, p.ended["b"].remote} == {True, False}
    else:
        assert p.ended == {}


@pytest.mark.parametrize(("se", "supported", "their_min", "expected"), [
    (SessionExpires(1800), True, 0, SessionExpires(1800, "uac")),
    (SessionExpires(1800), False, 0, SessionExpires(1800, "uas")),
    (SessionExpires(1800, "uac"), False, 0, SessionExpires(1800, "uas")),
    (SessionExpires(1800, "uas"), True, 0, SessionExpires(1800, "uas")),
    (SessionExpires(7200, "uac"), True, 0, SessionExpires(3600, "uac")),
    (SessionExpires(30), True, 0, SessionExpires(90, "uac")),
    (SessionExpires(1800), True, 2400, SessionExpires(2400, "uac")),
])
def test_negotiate(se: SessionExpires, supported: bool, their_min: int,
                   expected: SessionExpires) -> None:
    assert negotiate(se, supported, min_se=90, session_expires=3600,
                     their_min_se=their_min) == expected
    assert negotiate(SessionExpires(1800), True, min_se=90, session_expires=3600,
                     prefer="uas") == SessionExpires(1800, "uas")


def test_offerless_reinvite_of_ours_is_answered_in_the_ack() -> None:
    c = uac_confirmed()
    reinvite = our_request(c, "INVITE")  # no SDP: the peer offers in its 2xx
    resp = reply(reinvite, 200, sdp=True)
    assert c.session.receive_response(resp, 1.0, c.dialog) is SdpRole.OFFER
    assert c.drain() == []  # the ACK waits for our answer
    c.session.answer_in_ack(SDP, 1.1)
    (ack,) = c.drain()
    assert isinstance(ack, AckToSend) and ack.request.body == SDP
    assert ack.request.cseq.seq == reinvite.cseq.seq and offer_of(c) is OfferState.ANSWERED
    # an INVITE of ours that offered: SDP in its 2xx is the answer, never a new offer
    reinvite = our_request(c, "INVITE", sdp=True)
    assert c.session.receive_response(reply(reinvite, 200, sdp=True), 2.0, c.dialog) is \
        SdpRole.ANSWER
