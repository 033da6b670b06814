"""A leg we call: one INVITE to one device (UAC, RFC 3261 §13.2), with the SRTP profile retry."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from media.aio import RtpSession
from media.srtp import (
    CryptoAttribute,
    SrtpSession,
)
from pbx.callcontrol import (
    Call,
    LegInput,
    LegState,
    Target,
)
from pbx.legs.diversion import diversion_headers
from pbx.legs.sdp import (
    MEDIA_REJECTED,
    is_sdp,
    offer_keys,
    offered_crypto,
)
from pbx.legs.sip import ALLOW, SipLeg
from pbx.trunks import ANONYMOUS_URI
from sipcore.dialog import DialogSet
from sipcore.endpoint import (
    Event,
    ResponseReceived,
    TransactionTimedOut,
    TransportErrored,
)
from sipcore.errors import ParseError, RemoteProtocolError
from sipcore.headers import Headers
from sipcore.invite_session import (
    InviteSession,
    RetryToSend,
    Role,
    SdpRole,
    SessionState,
)
from sipcore.message import Request, Response, new_call_id, new_tag
from sipcore.sdp import (
    SessionDescription,
    parse_sdp,
)
from sipcore.transport import Peer
from sipcore.uri import parse_uri

if TYPE_CHECKING:
    from pbx.b2bua import B2bua


class OutboundLeg(SipLeg):
    """A leg we call: one INVITE to one device (it may fork further downstream)."""

    direction = "outbound"

    def __init__(self, b2bua: B2bua, call: Call, target: Target, *, request_uri: str,
                 peer: Peer, route: tuple[str, ...] = (), caller_display: str = "",
                 caller_user: str = "", callee_user: str = "") -> None:
        super().__init__(b2bua, call, peer, party=target.user or target.label, target=target)
        self.request_uri = request_uri
        self.route = route
        self.caller_display = caller_display
        self.caller_user = caller_user
        self.callee_user = callee_user
        self.invite: Request | None = None
        self.invite_tx: str | None = None
        self.dialog_set: DialogSet | None = None
        self.cancelled = False
        #: Our SDES keys while the offer is RTP/SAVP (one per suite, tags 1, 2…); None: plain.
        self.offer_crypto: list[CryptoAttribute] | None = None
        self._first_codec: str | None = None
        self._profile_retried = False
        #: The 2xx being handled and what its body is to the usage (for SessionEstablished).
        self._answer: tuple[Response, SdpRole] | None = None

    def _new_invite_session(self) -> InviteSession:
        """We are the UAC; our INVITE carries no Session-Expires (only ``Supported: timer``):
        a callee that wants timers names them in its 2xx."""
        return InviteSession(Role.UAC, self._session_config(request_timer=False))

    def _send_invite(self, request: Request, *, new_session: bool = True) -> None:
        """Send the dialog-creating INVITE (a first one, or a new transaction after a
        415/488/606, a 401/407 or a 422), told to the usage first."""
        now = self.clock()
        self.invite = request
        self.dialog_set = DialogSet(request, None, local_contact=self.contact)
        if new_session:
            self.invite_session = self._new_invite_session()
        self.invite_session.send_request(request, now)
        self.invite_tx = self.b2bua.send_request(request, self.peer, self._on_invite_event)
        self._drain(now)

    @staticmethod
    def _next_invite(invite: Request, body: bytes | None = None,
                     headers: tuple[tuple[str, str], ...] = ()) -> Request:
        """``invite`` as a new transaction: same dialog identifiers, CSeq + 1, no Via (the
        endpoint adds one with a fresh branch)."""
        again = invite.copy()
        again.headers.remove("Via")
        again.headers.set("CSeq", f"{invite.cseq.seq + 1} INVITE")
        for name, value in headers:
            again.headers.set(name, value)
        if body is not None:
            again.body = body
            again.headers.set("Content-Length", str(len(body)))
        return again

    def _initial_offer(self, first: str | None) -> SessionDescription:
        """Make the leg's session and the INVITE's offer: RTP/SAVP with fresh SDES keys when
        the device is known to want SRTP (:meth:`B2bua.wants_srtp`), plain RTP/AVP otherwise."""
        self._first_codec = first
        self._new_session()
        if self.target is not None and self.b2bua.wants_srtp(self.target):
            self.offer_crypto = offer_keys()
        return self._offer(first, self.offer_crypto)

    def _retry_other_profile(self, status: int) -> bool:
        """A final 415/488/606 to our INVITE rejected its media (RFC 3261 §21.4.13/§21.4.26,
        §21.6.4): once per leg, send a new INVITE (same dialog identifiers, CSeq + 1, new
        transaction) offering the other RTP profile — SAVP with fresh keys after a plain offer,
        plain after a SAVP one. Returns True when the retry went out."""
        if (status not in MEDIA_REJECTED or self._profile_retried or self.cancelled
                or self.invite is None or self.session is None
                or not self.unanswered):
            return False
        self._profile_retried = True
        srtp = self.offer_crypto is None
        if self.target is not None:
            self.b2bua.learn_srtp(self.target, False)  # what we assumed was wrong
        self.offer_crypto = offer_keys() if srtp else None
        self.session.set_srtp(None)
        self.sdes = None
        self.session_version += 1
        body = self._offer(self._first_codec, self.offer_crypto).serialize()
        again = self._next_invite(self.invite, body)
        self.b2bua.log.info("call.offer_retry", call_id=self._call_id(), leg=self.id,
                            status=status, profile="RTP/SAVP" if srtp else "RTP/AVP")
        self._send_invite(again)
        return True

    def _retry_request(self, event: RetryToSend, now: float) -> None:
        """A 422 to our INVITE (RFC 4028 §7.4): send it again with the raised interval."""
        if self.invite_session.state is not SessionState.CALLING:
            super()._retry_request(event, now)
            return
        if self.invite is None or self.cancelled or not self.unanswered:
            return
        self._send_invite(self._next_invite(self.invite, headers=event.headers),
                          new_session=False)

    def _send_cancel(self, reason: str | None) -> None:
        if self.invite_tx is not None:
            self.b2bua.sip_cancel(self.invite_tx, reason)

    def _use_answer_keys(self, sdp: SessionDescription) -> None:
        """Key this leg's SRTP from the answer to our SAVP offer: the answer's ``a=crypto``
        names one of our tags (RFC 4568 §7.1.2); ParseError(488) when it names none. A plain
        answer to a SAVP offer leaves the leg on plain RTP."""
        session = self.session
        if self.offer_crypto is None or session is None:
            return
        answered = offered_crypto(sdp)
        if answered is None:
            session.set_srtp(None)
            self.sdes = None
            return
        ours = {(c.tag, c.suite): c for c in self.offer_crypto}
        for remote in answered:
            local = ours.get((remote.tag, remote.suite))
            if local is not None and remote.mki is None and not remote.session_params:
                if self.sdes is None or self.sdes[0].key != remote.key:
                    session.set_srtp(SrtpSession(local, remote))
                    self.sdes = (remote, local)
                return
        raise ParseError("No acceptable SRTP crypto in the answer", 488)

    def _caller_codec_offer(self) -> SessionDescription:
        """Our first offer on this leg, the caller's codec first (a relay is then likely)."""
        caller = self.call.caller if self.call is not None else None
        caller_media = caller.media if caller is not None else None
        first = caller_media.format.name if isinstance(caller_media, RtpSession) else None
        return self._initial_offer(first)

    def start(self) -> None:
        """Send the INVITE with our offer (the caller's codec first: a relay is then likely)."""
        offer = self._caller_codec_offer()
        self._send_initial_invite(self._local_sdp_body(offer), transition=True)

    def _send_initial_invite(self, body: bytes, *, transition: bool = False) -> None:
        """Build and send the dialog-creating INVITE carrying ``body`` (our SDP offer); with
        ``transition`` the leg starts (LegInput.START) just before it goes."""
        b2b = self.b2bua
        display = self.caller_display.replace('"', "")
        # AORs, not user@our-domain: a user of another tenant is ext@tenant-domain
        caller_aor = b2b.aor(self.caller_user)
        withheld = self.call is not None and self.call.presentation.withheld
        if withheld:  # CLIR (RFC 3323 §4.1.1.3): nothing in From names the caller
            display, caller_aor = "Anonymous", ANONYMOUS_URI
        h = Headers([
            *(("Route", r) for r in self.route),
            ("From", f'"{display}" <{caller_aor}>;tag={new_tag()}'
             if display else f"<{caller_aor}>;tag={new_tag()}"),
            ("To", f"<{b2b.aor(self.callee_user)}>"),
            ("Call-ID", new_call_id()),
            ("CSeq", "1 INVITE"),
            ("Contact", self.contact),
            ("Allow", ALLOW),
            ("Supported", "timer"),
            ("Content-Type", "application/sdp"),
            ("Content-Length", str(len(body))),
        ])
        if withheld:
            h.add("Privacy", "id")  # and no P-Asserted-Identity: a device is not trusted
        if self.call is not None:
            for name, value in diversion_headers(self.call.diversions, self.callee_user,
                                                 b2b.aor):
                h.add(name, value)
        request = Request("INVITE", parse_uri(self.request_uri), h, body)
        if transition:
            self.transition(LegInput.START)
        self._send_invite(request)

    def _on_invite_event(self, event: Event) -> None:
        now = self.clock()
        if isinstance(event, TransactionTimedOut | TransportErrored):
            self.invite_session.request_failed("INVITE", now)
            self._drain(now)
            if self.unanswered:
                self.final_status = 408 if isinstance(event, TransactionTimedOut) else 503
                self.transition(LegInput.FAIL, status=self.final_status, reason="timeout")
                self.close_media()
            return
        if not isinstance(event, ResponseReceived):
            return
        response = event.response
        status = response.status
        assert self.dialog_set is not None
        try:
            dialog = self.dialog_set.receive_response(response)
        except RemoteProtocolError:
            return
        if 200 <= status < 300 and dialog is None:
            return  # a 2xx without a To tag: nothing to ACK
        # the usage ACKs every 2xx (again for a retransmission), BYEs those of other forks or
        # that crossed our CANCEL, and confirms the first (SessionEstablished: _on_established)
        role = self.invite_session.receive_response(response, now, dialog)
        if 200 <= status < 300:
            self._answer = (response, role)
            self._drain(now)
            self._answer = None
            return
        self._drain(now)
        if status < 200:
            if status == 100 or not self.unanswered:
                return
            early = False
            if role is SdpRole.ANSWER:
                with contextlib.suppress(ParseError):
                    early_sdp = parse_sdp(response.body)
                    self._use_answer_keys(early_sdp)
                    self._apply_remote(early_sdp)
                    early = True
            self.transition(LegInput.PROGRESS, status=status, early_media=early)
            return
        if self.invite_session.state is not SessionState.TERMINATED:
            return  # the usage asked for the INVITE again (422) and it went
        if self._retry_other_profile(status):
            return
        if self.unanswered:
            self.final_status = status
            self.transition(LegInput.FAIL, status=status, reason=response.reason or "")
        self.close_media()

    def _on_established(self, now: float) -> None:
        """Our first 2xx, ACKed by the usage: bind the dialog, take the answer."""
        answer = self._answer
        dialog = self.invite_session.dialog
        if answer is None or dialog is None:
            return
        response, role = answer
        self._bind_dialog(dialog)
        if role is SdpRole.ANSWER and is_sdp(response):
            try:
                answer_sdp = parse_sdp(response.body)
                self._use_answer_keys(answer_sdp)
                self._apply_remote(answer_sdp)
            except ParseError:
                self.final_status = 488
                self.transition(LegInput.FAIL, status=488, reason="bad answer SDP")
                self.invite_session.hangup(now)  # BYE (drained by the caller)
                return
        if self.target is not None and self._profile_retried:
            self.b2bua.learn_srtp(self.target, self.session is not None
                                  and self.session.srtp is not None)
        # the 2xx came and its ACK went (above): answered and confirmed in one step
        self.transition(LegInput.ANSWER)
        self.transition(LegInput.CONFIRM)

    def cancel(self, reason: str | None = None) -> None:
        """CANCEL the INVITE (the usage ACKs and BYEs a 2xx that crosses it)."""
        if not self.unanswered or self.cancelled:
            return
        self.cancelled = True
        now = self.clock()
        self.invite_session.hangup(now, reason)  # CancelToSend
        self._drain(now)
        self.final_status = 487
        self.transition(LegInput.ABANDON)
        if self.session is not None:
            self.session.close()

    def reject(self, status: int, reason: str | None = None) -> None:
        """Not applicable to an outbound leg: CANCEL."""
        self.cancel()

    def hangup(self, cause: str = "normal") -> None:
        """BYE when answered, CANCEL while ringing."""
        if self.state is LegState.ANSWERED:
            super().hangup(cause)
        else:
            self.cancel()


