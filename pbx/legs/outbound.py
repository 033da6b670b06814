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
from pbx.legs.timer import parse_session_expires
from sipcore.dialog import Dialog, DialogSet
from sipcore.endpoint import (
    Event,
    ResponseReceived,
    TransactionTimedOut,
    TransportErrored,
)
from sipcore.errors import ParseError, RemoteProtocolError
from sipcore.headers import Headers
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
        again = self.invite.copy()
        again.headers.remove("Via")  # the endpoint adds one with a fresh branch
        again.headers.set("CSeq", f"{self.invite.cseq.seq + 1} INVITE")
        again.body = body
        again.headers.set("Content-Length", str(len(body)))
        self.b2bua.log.info("call.offer_retry", call_id=self._call_id(), leg=self.id,
                            status=status, profile="RTP/SAVP" if srtp else "RTP/AVP")
        self.b2bua.forget_tx(self.invite_tx)
        self.invite = again
        self.dialog_set = DialogSet(again, None, local_contact=self.contact)
        self.invite_tx = self.b2bua.send_request(again, self.peer, self._on_invite_event,
                                                 keep=True)
        return True

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
        b2b = self.b2bua
        offer = self._caller_codec_offer()
        display = self.caller_display.replace('"', "")
        # AORs, not user@our-domain: a user of another tenant is ext@tenant-domain
        caller_aor = b2b.aor(self.caller_user)
        body = self._local_sdp_body(offer)
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
        if self.call is not None:
            for name, value in diversion_headers(self.call.diversions, self.callee_user,
                                                 b2b.aor):
                h.add(name, value)
        request = Request("INVITE", parse_uri(self.request_uri), h, body)
        self.invite = request
        self.dialog_set = DialogSet(request, None, local_contact=self.contact)
        self.transition(LegInput.START)
        self.invite_tx = b2b.send_request(request, self.peer, self._on_invite_event,
                                          keep=True)

    def _on_invite_event(self, event: Event) -> None:
        if isinstance(event, TransactionTimedOut | TransportErrored):
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
        if status < 200:
            if status == 100 or not self.unanswered:
                return
            early = False
            if is_sdp(response):
                with contextlib.suppress(ParseError):
                    early_sdp = parse_sdp(response.body)
                    self._use_answer_keys(early_sdp)
                    self._apply_remote(early_sdp)
                    early = True
            self.transition(LegInput.PROGRESS, status=status, early_media=early)
            return
        if status < 300:
            self._on_2xx(response, dialog)
            return
        if self._retry_other_profile(status):
            return
        if self.unanswered:
            self.final_status = status
            self.transition(LegInput.FAIL, status=status, reason=response.reason or "")
        self.b2bua.forget_tx(self.invite_tx)
        self.close_media()

    def _on_2xx(self, response: Response, dialog: Dialog | None) -> None:
        if dialog is None:
            return
        seq = response.cseq.seq
        ack = self._acks.get(id(dialog))
        if ack is not None:  # a retransmitted 2xx: ACK again (§13.2.2.4)
            self.b2bua.send_request(ack.copy(), self.peer, None)
            return
        ack = dialog.create_ack(seq)
        self._acks[id(dialog)] = ack
        self.b2bua.send_request(ack.copy(), self.peer, None)
        if self.dialog is not None or self.ended or self.cancelled:
            # a second branch answered, or the answer crossed our CANCEL: hang that one up
            self.b2bua.send_request(dialog.create_request("BYE"), self.peer, None)
            return
        self._bind_dialog(dialog)
        if is_sdp(response):
            try:
                answer_sdp = parse_sdp(response.body)
                self._use_answer_keys(answer_sdp)
                self._apply_remote(answer_sdp)
            except ParseError:
                self.b2bua.send_request(dialog.create_request("BYE"), self.peer, None)
                self.final_status = 488
                self.transition(LegInput.FAIL, status=488, reason="bad answer SDP")
                return
        if self.target is not None and self._profile_retried:
            self.b2bua.learn_srtp(self.target, self.session is not None
                                  and self.session.srtp is not None)
        se = parse_session_expires(response.headers.get("Session-Expires"))
        if se is not None:
            self.se_interval = max(se[0], self.b2bua.settings.min_se)
            self.se_we_refresh = se[1] != "uas"
        # the 2xx came and its ACK went (above): answered and confirmed in one step
        self.transition(LegInput.ANSWER)
        self._arm_se_timer()
        self.transition(LegInput.CONFIRM)

    def cancel(self, reason: str | None = None) -> None:
        """CANCEL the INVITE (a 2xx that crosses it is ACKed and BYEd)."""
        if not self.unanswered or self.cancelled:
            return
        self.cancelled = True
        if self.invite_tx is not None:
            self.b2bua.sip_cancel(self.invite_tx, reason)
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


