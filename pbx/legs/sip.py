"""A SIP leg: one dialog plus one RTP session (the base of the inbound, outbound and trunk legs)."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from media.aio import RtpSession, payload_format
from media.codecs import UnsupportedCodec
from media.srtp import (
    CryptoAttribute,
    SrtpSession,
)
from pbx.callcontrol import (
    Call,
    DtmfReceived,
    Leg,
    LegHeld,
    LegInput,
    LegMediaChanged,
    LegResumed,
    LegState,
    Target,
)
from pbx.legs.sdp import (
    ALL_CODECS,
    choose_sdes,
    leg_answer,
    offered_crypto,
)
from sipcore.dialog import Dialog, DialogId, DialogState
from sipcore.endpoint import (
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportErrored,
)
from sipcore.errors import LocalProtocolError, ParseError, RemoteProtocolError
from sipcore.invite_session import (
    AckToSend,
    ByeToSend,
    CancelToSend,
    InviteSession,
    RefreshToSend,
    RequestRefused,
    RetryToSend,
    Role,
    SdpRole,
    SessionConfig,
    SessionEnded,
    SessionEstablished,
    SessionEvent,
    SessionState,
)
from sipcore.message import Request, Response
from sipcore.sdp import (
    SessionDescription,
    create_offer,
    negotiated_codecs,
    parse_sdp,
    with_direction,
)
from sipcore.transport import Peer

if TYPE_CHECKING:
    from pbx.b2bua import B2bua

#: Methods handled inside a dialog.
ALLOW = ("INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, MESSAGE, SUBSCRIBE, REFER, "
         "NOTIFY")


def dtmf_from_info(body: bytes) -> str | None:
    """The digit of an ``application/dtmf-relay`` body (``Signal=5``)."""
    for line in body.decode("latin-1").splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "signal":
            digit = value.strip().upper()
            if len(digit) == 1 and digit in "0123456789*#ABCD":
                return digit
            if digit == "10":
                return "*"
            if digit == "11":
                return "#"
    return None


def refusal_headers(exc: RemoteProtocolError) -> list[tuple[str, str]]:
    """The headers the usage's refusal of a request needs (Min-SE for 422, Retry-After for
    500); none for a malformed Session-Expires/Min-SE (400)."""
    return list(exc.headers) if isinstance(exc, RequestRefused) else []


def _dialog_of(request: Request) -> DialogId:
    """The id of the dialog an in-dialog request of ours belongs to."""
    return (request.call_id, request.from_tag or "", request.to_tag or "")


class SipLeg(Leg):
    """A SIP leg: one dialog plus one RTP session. Subclassed for the two directions."""

    def __init__(self, b2bua: B2bua, call: Call | None, peer: Peer, *, party: str = "",
                 target: Target | None = None) -> None:
        super().__init__(call, party=party, target=target)
        self.b2bua = b2bua
        self.peer = peer
        self.dialog: Dialog | None = None
        self.session: RtpSession | None = None
        self.local_sdp: SessionDescription | None = None
        #: (local_sdp, its wire form): the 183 and the 200 of a call carry the same answer.
        #: A new SDP is always a new object (local_sdp is assigned, never changed in place).
        self._local_sdp_wire: tuple[SessionDescription, bytes] | None = None
        self.remote_sdp: SessionDescription | None = None
        self.session_id = random.getrandbits(31)  # o= sess-id: unique, not secret (RFC 4566)
        self.session_version = 0
        self.contact = b2bua.contact_for(peer)
        #: The INVITE usage of the leg's dialog (the subclass makes it for its role).
        self.invite_session = self._new_invite_session()
        self._session_timer: asyncio.TimerHandle | None = None
        self._hangup_cause: str | None = None
        self._media_closed = False
        #: SDES keys ``(remote, local)`` while this leg runs SRTP (RFC 4568).
        self.sdes: tuple[CryptoAttribute, CryptoAttribute] | None = None

    # -- media -----------------------------------------------------------------------------------

    def _new_session(self, codec: str = "PCMU", pt: int = 0,
                     sdes: tuple[CryptoAttribute, CryptoAttribute] | None = None) -> RtpSession:
        srtp = SrtpSession(sdes[1], sdes[0]) if sdes is not None else None
        session = self.b2bua.engine.create_session(codec=codec, payload_type=pt,
                                                   telephone_event_pt=None, srtp=srtp)
        self.sdes = sdes
        session.on_dtmf = self._on_rtp_dtmf
        self.session = session
        self.media = session
        return session

    def _on_rtp_dtmf(self, digit: str) -> None:
        self.post(DtmfReceived(self, digit))

    def _apply_remote(self, sdp: SessionDescription, *, local: SessionDescription | None = None
                      ) -> tuple[bool, bool]:
        """Use the negotiated codec and address; returns (codec changed, far end holds).

        ``local`` is the answer we gave to ``sdp`` (an offer), whose codec order wins;
        without it ``sdp`` is the answer to our offer."""
        session = self.session
        assert session is not None
        index = next((i for i, m in enumerate(sdp.media) if m.media == "audio" and m.port != 0),
                     None)
        if index is None:
            raise ParseError("No acceptable media", 488)
        m = sdp.media[index]
        chosen = negotiated_codecs(local.media[index] if local is not None else m)
        voice = next((rm for rm in chosen if rm.encoding.lower() != "telephone-event"), None)
        if voice is None:
            raise ParseError("No acceptable media", 488)
        try:
            fmt = payload_format(voice.encoding, voice.payload_type)
        except UnsupportedCodec:
            raise ParseError("No acceptable media", 488) from None
        changed = (session.format.name, session.payload_type) != (fmt.name, fmt.payload_type)
        if changed:
            session.set_format(fmt)
        te = next((rm for rm in chosen if rm.encoding.lower() == "telephone-event"
                   and rm.clock_rate == fmt.clock_rate), None)
        session.telephone_event_pt = te.payload_type if te else None
        conn = sdp.media_connection(index)
        direction = sdp.media_direction(index)
        holding = direction in ("sendonly", "inactive") or (
            conn is not None and conn.address in ("0.0.0.0", "::"))
        if conn is not None and not holding:
            session.set_remote(conn.address, m.port)
        # Our own direction mirrors theirs (we never hold by SIP: our hold is in the media graph).
        session.set_direction({"sendonly": "recvonly", "recvonly": "sendonly",
                               "inactive": "inactive"}.get(direction, "sendrecv"))
        self.remote_sdp = sdp
        return changed, holding

    def _answer_offer(self, offer: SessionDescription) -> SessionDescription:
        """Our answer to ``offer`` on this leg's session (same port; new version)."""
        session = self.session
        assert session is not None
        # SRTP is fixed per leg when its session is made (the socket is then a raw slot): a
        # re-offer may change keys but not switch between RTP and SRTP (488).
        crypto = offered_crypto(offer)
        sdes = None
        if session.srtp is not None:
            if crypto is None:
                raise ParseError("This leg needs SRTP", 488)
            sdes = choose_sdes(crypto, self.sdes)
        self.session_version += 1
        ans = leg_answer(offer, current=session.format.name, sdes=sdes,
                         address=self.b2bua.sdp_address, port=session.local_port,
                         session_id=self.session_id, session_version=self.session_version)
        if sdes is not None and sdes != self.sdes:
            session.srtp = SrtpSession(sdes[1], sdes[0])
            self.sdes = sdes
        self.local_sdp = ans
        return ans

    def _offer(self, first: str | None = None,
               crypto: list[CryptoAttribute] | None = None) -> SessionDescription:
        """Our offer on this leg's session; RTP/SAVP with ``crypto`` as ``a=crypto`` lines
        (SDES, RFC 4568) when given, else plain RTP/AVP."""
        assert self.session is not None
        codecs = list(ALL_CODECS)
        if first:
            codecs.sort(key=lambda c: c.name.upper() != first.upper())
        offer = create_offer(codecs, address=self.b2bua.sdp_address, port=self.session.local_port,
                             session_id=self.session_id, session_version=self.session_version,
                             username="asyncpbx", proto="RTP/SAVP" if crypto else "RTP/AVP",
                             extra_attributes=[("crypto", c.to_sdp()) for c in crypto or ()])
        self.local_sdp = offer
        return offer

    def signal_hold(self, held: bool) -> bool:
        """A re-INVITE offering our SDP with ``sendonly`` (held: the far end hears our music
        on hold and need not send) or ``sendrecv`` (resumed), RFC 3264 §8.4; the answer
        changes nothing here (our media never stops: hold is in the media graph). False when
        the dialog cannot take a re-INVITE now (not answered, an INVITE in progress)."""
        dialog = self.dialog
        if self.state is not LegState.ANSWERED or self.local_sdp is None or dialog is None \
                or dialog.state is DialogState.TERMINATED or self.session is None:
            return False
        previous = self.local_sdp
        self.session_version += 1
        offer = with_direction(previous, "sendonly" if held else "sendrecv")
        offer.origin.session_version = self.session_version
        self.local_sdp = offer
        try:
            self._send_session_request("INVITE", (), self.clock())
        except LocalProtocolError:
            self.local_sdp = previous
            self.b2bua.log.info("call.hold_not_signalled", leg=self.id, held=held)
            return False
        return True

    def _local_sdp_body(self, sdp: SessionDescription) -> bytes:
        """``sdp.serialize()`` for our current SDP, serialized once per SDP object."""
        wire = self._local_sdp_wire
        if wire is None or wire[0] is not sdp:
            wire = self._local_sdp_wire = (sdp, sdp.serialize())
        return wire[1]

    def close_media(self) -> None:
        """Release the RTP ports and timers.  A callee's BYE that waits for the caller's ACK
        (RFC 3261 §15) keeps the dialog until it went."""
        self._media_closed = True
        if self.session is not None:
            self.session.on_dtmf = None
            self.session.close()
        if self.invite_session.state is SessionState.ACCEPTED_HANGUP:
            return
        self._cancel_session_timer()
        self.b2bua.forget(self)

    # -- dialog plumbing -------------------------------------------------------------------------

    def _bind_dialog(self, dialog: Dialog) -> None:
        self.dialog = dialog
        self.b2bua.dialogs.add(dialog)
        self.b2bua.dialog_legs[dialog.id] = self

    def send_in_dialog(self, method: str, *, body: bytes = b"", content_type: str | None = None,
                       extra: list[tuple[str, str]] | None = None,
                       on_response: Callable[[Event], None] | None = None) -> str | None:
        """Send an in-dialog request; ``on_response`` gets its responses/timeout."""
        dialog = self.dialog
        if dialog is None or dialog.state is DialogState.TERMINATED:
            return None
        request = dialog.create_request(method, body=body, content_type=content_type,
                                        extra=extra)
        return self.b2bua.send_request(request, self.peer, on_response)

    def _ended(self, cause: str, remote: bool) -> None:
        self.transition(LegInput.END, cause=cause, remote=remote)

    def hangup(self, cause: str = "normal") -> None:
        """BYE when answered (the usage holds it until the caller's ACK when our 2xx has not
        been ACKed yet, §15), otherwise what the subclass does for an unanswered leg."""
        if self.state is LegState.ANSWERED or self.state is LegState.ANSWERING:
            now = self.clock()
            self._hangup_cause = cause
            self.invite_session.hangup(
                now, 'SIP;cause=500;text="Server Internal Error"' if cause == "error" else None)
            self._drain(now)
            self._ended(cause, remote=False)

    def send_dtmf(self, digits: str) -> None:
        """RFC 4733 when negotiated, SIP INFO (application/dtmf-relay) otherwise."""
        session = self.session
        if session is not None and session.telephone_event_pt is not None:
            session.send_dtmf(digits)
            return
        for digit in digits:
            self.send_in_dialog("INFO", body=f"Signal={digit}\r\nDuration=160\r\n".encode(),
                                content_type="application/dtmf-relay",
                                on_response=lambda ev: None)

    # -- the INVITE usage (sipcore.invite_session) -----------------------------------------------
    # RFC 4028 session timers, the 2xx/ACK rules, 491/422 and when a BYE may go are the usage's;
    # the leg feeds it every INVITE/UPDATE/ACK/BYE of its dialog and carries out its events.

    def _new_invite_session(self) -> InviteSession:
        """The usage for this leg's role (UAS here; the outbound leg is the UAC)."""
        return InviteSession(Role.UAS, self._session_config())

    def _session_config(self, **overrides: Any) -> SessionConfig:
        """Our session-timer preferences; the endpoint retransmits our 2xx itself."""
        settings = self.b2bua.settings
        return SessionConfig(retransmit_2xx=False, session_expires=settings.session_expires,
                             min_se=settings.min_se, **overrides)

    @staticmethod
    def clock() -> float:
        """The usage's clock: the event loop's (its timers are armed with ``call_at``)."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    def _drain(self, now: float) -> None:
        """Carry out what the usage asks for, then arm its next deadline."""
        while True:
            events = self.invite_session.events()
            if not events:
                break
            for event in events:
                self._on_session_event(event, now)
        self._arm_session_timer()

    def _on_session_event(self, event: SessionEvent, now: float) -> None:
        b2b = self.b2bua
        if isinstance(event, AckToSend):
            b2b.send_request(event.request.copy(), self.peer, None)  # the endpoint adds a Via
        elif isinstance(event, ByeToSend):
            b2b.send_request(event.request, self.peer, None)
            dialog = self.dialog
            if dialog is not None and _dialog_of(event.request) == dialog.id:
                b2b.dialogs.remove(dialog)
        elif isinstance(event, CancelToSend):
            self._send_cancel(event.reason)
        elif isinstance(event, RefreshToSend):
            self._send_session_request(event.method, event.headers, now)
        elif isinstance(event, RetryToSend):
            self._retry_request(event, now)
        elif isinstance(event, SessionEstablished):
            self._on_established(now)
        elif isinstance(event, SessionEnded):
            self._on_session_ended(event)

    def _on_established(self, now: float) -> None:
        """The dialog-creating INVITE's 2xx was ACKed."""
        self.transition(LegInput.CONFIRM)

    def _on_session_ended(self, event: SessionEnded) -> None:
        if event.cause == "session-expired":
            self.b2bua.log.info("call.session_expired", leg=self.id, call_id=self._call_id())
        if self.unanswered:
            if event.cause == "bye":  # BYE on an early dialog (the caller gave up after our 18x)
                self.transition(LegInput.FAIL, status=487, reason="bye")
            return  # an unanswered leg's failure is its final response's or CANCEL's business
        cause = self._hangup_cause if event.cause == "hangup" and self._hangup_cause else \
            event.cause
        self._ended(cause, remote=event.remote)
        if self._media_closed:
            self.b2bua.forget(self)

    def _send_cancel(self, reason: str | None) -> None:
        """CANCEL our dialog-creating INVITE (outbound legs)."""

    def _retry_request(self, event: RetryToSend, now: float) -> None:
        """A 422/491 to our request: send it again (in-dialog here; the INVITE that creates the
        dialog is the outbound leg's)."""
        if self.invite_session.state is SessionState.CONFIRMED:
            self._send_session_request(event.method, event.headers, now)

    def _send_session_request(self, method: str, headers: tuple[tuple[str, str], ...],
                              now: float) -> None:
        """A session refresh or retry: a re-INVITE with our current SDP, or an UPDATE without
        (RFC 4028 §7.4/§8)."""
        dialog = self.dialog
        if self.state is not LegState.ANSWERED or dialog is None or \
                dialog.state is DialogState.TERMINATED:
            return
        body = b""
        content_type = None
        if method == "INVITE":
            if self.local_sdp is None:
                return
            body = self._local_sdp_body(self.local_sdp)
            content_type = "application/sdp"
        extra = [*headers, ("Supported", "timer"), ("Allow", ALLOW)]
        request = dialog.create_request(method, body=body, content_type=content_type,
                                        extra=extra)
        self.invite_session.send_request(request, now)
        self.b2bua.send_request(request, self.peer,
                                functools.partial(self._on_session_response, method))

    def _on_session_response(self, method: str, event: Event) -> None:
        """A response to our refresh (or its timeout)."""
        now = self.clock()
        if isinstance(event, ResponseReceived):
            response = event.response
            if 200 <= response.status < 300 and self.dialog is not None:
                with contextlib.suppress(RemoteProtocolError):
                    self.dialog.receive_response(response)
            self.invite_session.receive_response(response, now, self.dialog)
        elif isinstance(event, TransactionTimedOut | TransportErrored):
            self.invite_session.request_failed(method, now)
        self._drain(now)

    def _arm_session_timer(self) -> None:
        """One loop timer at the usage's next deadline."""
        deadline = self.invite_session.next_deadline()
        handle = self._session_timer
        if handle is not None:
            if deadline is not None and handle.when() == deadline:
                return
            handle.cancel()
            self._session_timer = None
        if deadline is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test driving the leg by hand): nothing fires
        self._session_timer = loop.call_at(deadline, self._on_session_timer, deadline)

    def _cancel_session_timer(self) -> None:
        if self._session_timer is not None:
            self._session_timer.cancel()
            self._session_timer = None

    def _on_session_timer(self, deadline: float) -> None:
        self._session_timer = None
        now = max(self.clock(), deadline)  # the loop may run a timer a hair early
        self.invite_session.handle_timer(now)
        self._drain(now)

    # -- in-dialog requests ----------------------------------------------------------------------

    def on_request(self, event: RequestReceived) -> None:
        """An in-dialog request for this leg (the dialog table has checked CSeq)."""
        request = event.request
        method = request.method
        b2b = self.b2bua
        tx = event.transaction_id
        if method == "BYE":
            b2b.respond(request, 200, tx=tx)
            if self.dialog is not None:
                b2b.dialogs.remove(self.dialog)
            now = self.clock()
            self.invite_session.receive_request(request, now)
            self._drain(now)
            return
        if method in ("INVITE", "UPDATE"):
            self._on_offer_request(request, tx)
            return
        if method == "INFO":
            digit = None
            if (request.content_type or "") == "application/dtmf-relay":
                digit = dtmf_from_info(request.body)
            b2b.respond(request, 200, tx=tx)
            if digit is not None:
                self.post(DtmfReceived(self, digit, "info"))
            return
        if method == "OPTIONS":
            b2b.respond(request, 200, tx=tx, extra=[("Allow", ALLOW)])
            return
        if method == "REFER":  # the PBX transfers itself (pbx.legs.refer)
            from pbx.legs.refer import on_refer

            on_refer(self, event)
            return
        if method == "NOTIFY":  # a phone's REFER progress of a transfer we did not ask for
            b2b.respond(request, 200, tx=tx)
            return
        b2b.respond(request, 501, tx=tx)

    def _on_offer_request(self, request: Request, tx: str) -> None:
        """re-INVITE or UPDATE: answered locally on this leg (RFC 3261 §14.2, RFC 3311); the
        usage refuses glare (491), an overlapping request (500) and too short a session
        interval (422)."""
        b2b = self.b2bua
        now = self.clock()
        try:
            incoming = self.invite_session.receive_request(request, now)
        except RemoteProtocolError as exc:  # RequestRefused, or a malformed header (400)
            b2b.respond(request, exc.status_hint, tx=tx, extra=refusal_headers(exc))
            return
        body = b""
        events: list[Any] = []
        if incoming.sdp is SdpRole.OFFER:
            try:
                offer = parse_sdp(request.body)
                ans = self._answer_offer(offer)
                changed, holding = self._apply_remote(offer, local=ans)
            except ParseError as exc:
                self._reply(request, tx, exc.status_hint if exc.status_hint >= 400 else 488, now)
                return
            body = ans.serialize()
            if changed:
                events.append(LegMediaChanged(self))
            if holding != self.held:
                events.append(LegHeld(self) if holding else LegResumed(self))
        elif request.method == "INVITE" and self.local_sdp is not None:
            body = self._local_sdp_body(self.local_sdp)  # offerless re-INVITE: our offer in the 2xx
        extra = [("Contact", self.contact), ("Allow", ALLOW), ("Supported", "timer"),
                 *incoming.headers]
        self._reply(request, tx, 200, now, body=body, extra=extra)
        for ev in events:
            self.post(ev)

    def _reply(self, request: Request, tx: str, status: int, now: float, *, body: bytes = b"",
               extra: list[tuple[str, str]] | None = None) -> None:
        """Answer an INVITE/UPDATE of the usage: the usage learns the response first (it
        refuses what the rules forbid before anything goes out)."""
        response: Response = self.b2bua.response_for(request, status, body=body, extra=extra)
        self.invite_session.send_response(response, now, self.dialog)
        self.b2bua.sip_send_response(response, tx)
        self._drain(now)

    def on_ack(self, request: Request) -> None:
        """ACK in this dialog (for our 2xx to the INVITE or a re-INVITE): the usage says
        whether it carries an answer (to the offer in our 2xx to an offerless INVITE)."""
        now = self.clock()
        answering = self.state is LegState.ANSWERING
        incoming = self.invite_session.receive_request(request, now)
        session = self.session
        if incoming.sdp is SdpRole.ANSWER and session is not None and not session.closed:
            with contextlib.suppress(ParseError):
                changed, _ = self._apply_remote(parse_sdp(request.body))
                # after a delayed offer codec and telephone-event are known only now: bridges
                # must follow
                if changed or answering:
                    self.post(LegMediaChanged(self))
        self._drain(now)

    def _call_id(self) -> str:
        return self.call.record.call_id if self.call is not None else ""

