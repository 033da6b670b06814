"""The caller's leg: we are the UAS of its INVITE (RFC 3261 §13.3)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pbx.callcontrol import (
    LegInput,
    LegState,
)
from pbx.legs.sdp import (
    choose_sdes,
    is_sdp,
    offered_crypto,
)
from pbx.legs.sip import ALLOW, SipLeg
from sipcore.dialog import Dialog
from sipcore.invite_session import SessionAction
from sipcore.message import Request, Response, make_response, new_tag
from sipcore.sdp import (
    parse_sdp,
)
from sipcore.transport import Peer
from sipcore.uri import SipURI

if TYPE_CHECKING:
    from pbx.b2bua import B2bua


class InboundLeg(SipLeg):
    """The caller's leg: we are the UAS of its INVITE."""

    direction = "inbound"

    def __init__(self, b2bua: B2bua, request: Request, peer: Peer, transaction_id: str) -> None:
        from_uri = request.from_.uri
        super().__init__(b2bua, None, peer,
                         party=(from_uri.user or "") if isinstance(from_uri, SipURI) else "")
        self.invite = request
        self.transaction_id = transaction_id
        self.to_tag = new_tag()
        self.transition(LegInput.START)

    @property
    def delayed_offer(self) -> bool:
        """The caller's INVITE had no offer: ours goes in the 2xx, its answer in the ACK (so
        no SDP may go in an unreliable 18x)."""
        return not is_sdp(self.invite)

    def prepare_media(self) -> None:
        """Allocate the RTP session and answer the caller's offer (or make ours when the INVITE
        had none). Raises ParseError(488) when nothing acceptable is offered."""
        if is_sdp(self.invite):
            offer = parse_sdp(self.invite.body)
            crypto = offered_crypto(offer)
            self._new_session(sdes=choose_sdes(crypto) if crypto is not None else None)
            ans = self._answer_offer(offer)
            self._apply_remote(offer, local=ans)
        else:
            self._new_session()
            self._offer()

    def _response(self, status: int, reason: str | None = None, *, sdp: bool = False,
                  extra: list[tuple[str, str]] | None = None) -> Response:
        resp = make_response(self.invite, status, reason, to_tag=self.to_tag)
        for rr in self.invite.headers.get_all("Record-Route"):
            resp.headers.add("Record-Route", rr)
        if 100 < status < 300:
            resp.headers.add("Contact", self.contact)
            resp.headers.add("Allow", ALLOW)
        for name, value in extra or ():
            resp.headers.add(name, value)
        if sdp and self.local_sdp is not None:
            resp.body = self._local_sdp_body(self.local_sdp)
            resp.headers.set("Content-Type", "application/sdp")
            resp.headers.set("Content-Length", str(len(resp.body)))
        return resp

    def _send(self, resp: Response) -> None:
        now = self.clock()
        dialog = self.dialog
        if 100 < resp.status < 300 and dialog is None:
            dialog = Dialog.from_uas(self.invite, resp, local_contact=self.contact)
        # the usage first: it refuses a response the rules forbid before anything changes
        self.invite_session.send_response(resp, now, dialog)
        if 100 < resp.status < 300:
            if self.dialog is None:
                assert dialog is not None
                self._bind_dialog(dialog)
            else:
                self.dialog.send_response(resp)
        elif self.dialog is not None:
            self.dialog.send_response(resp)
            self.b2bua.dialogs.remove(self.dialog)
        self.b2bua.sip_send_response(resp, self.transaction_id)
        self._drain(now)

    def progress(self, *, early_media: bool) -> None:
        """180 Ringing, or 183 Session Progress with our SDP (we play ringback or relay)."""
        if not self.unanswered:
            return
        self._send(self._response(183 if early_media else 180, sdp=early_media))
        # the LegProgressed this posts reaches the call that asked for it; its operations
        # only act on a caller leg's failure or end
        self.transition(LegInput.PROGRESS)

    def answer(self) -> None:
        """200 OK with our SDP; the ACK makes the leg ANSWERED."""
        if not self.unanswered:
            return
        extra = self.invite_session.response_headers()  # RFC 4028 §9
        extra.append(("Supported", "timer"))
        resp = self._response(200, sdp=True, extra=extra)
        self._send(resp)
        self.transition(LegInput.ANSWER)

    def on_ack_timeout(self) -> None:
        """The endpoint gave up retransmitting our 2xx (§13.3.1.4): the usage sends BYE."""
        now = self.clock()
        self.invite_session.ack_timed_out(now)
        self._drain(now)

    def on_cancelled(self) -> None:
        """The caller's CANCEL (the endpoint has answered 200 + 487)."""
        now = self.clock()
        self.invite_session.cancelled(now)
        self._drain(now)
        if self.unanswered:
            self.final_status = 487
            if self.dialog is not None:
                self.b2bua.dialogs.remove(self.dialog)
            self.transition(LegInput.FAIL, status=487, reason="cancelled")

    def reject(self, status: int, reason: str | None = None, *,
               retry_after: int | None = None) -> None:
        """A final error response to the caller (with ``Retry-After`` seconds when given)."""
        if not self.unanswered:
            return
        self.final_status = status
        extra = [("Retry-After", str(retry_after))] if retry_after is not None else None
        self._send(self._response(status, reason, extra=extra))
        self.transition(LegInput.ABANDON)

    def cancel(self, reason: str | None = None) -> None:
        """Not applicable to an inbound leg: reject with 487."""
        self.reject(487)

    def hangup(self, cause: str = "normal") -> None:
        """BYE when up (after the ACK when our 2xx is still awaiting it, §15), else a final
        error response."""
        if self.state is LegState.ANSWERED or self.state is LegState.ANSWERING:
            super().hangup(cause)
        elif not self.ended and \
                self.invite_session.hangup(self.clock()) is SessionAction.REJECT:
            self.reject(500 if cause == "error" else 480)

