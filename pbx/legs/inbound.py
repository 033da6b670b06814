"""The caller's leg: we are the UAS of its INVITE (RFC 3261 §13.3)."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from pbx.callcontrol import (
    LegInput,
    LegMediaChanged,
    LegState,
)
from pbx.legs.sdp import (
    choose_sdes,
    is_sdp,
    offered_crypto,
)
from pbx.legs.sip import ALLOW, SipLeg
from sipcore.dialog import Dialog
from sipcore.errors import ParseError
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
        self.delayed_offer = False
        self.transition(LegInput.START)

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
            self.delayed_offer = True
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
        if 100 < resp.status < 300:
            if self.dialog is None:
                self._bind_dialog(Dialog.from_uas(self.invite, resp, local_contact=self.contact))
            else:
                self.dialog.send_response(resp)
        elif self.dialog is not None:
            self.dialog.send_response(resp)
            self.b2bua.dialogs.remove(self.dialog)
        self.b2bua.sip_send_response(resp, self.transaction_id)

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
        extra = self._session_timer_headers(self.invite, uas=True)
        extra.append(("Supported", "timer"))
        resp = self._response(200, sdp=True, extra=extra)
        self._send(resp)
        self.transition(LegInput.ANSWER)

    def on_ack(self, request: Request) -> None:
        """The ACK for our 2xx: the leg is up (a delayed offer's answer comes in it)."""
        if self.state is not LegState.ANSWERING:
            super().on_ack(request)
            return
        if self.delayed_offer and is_sdp(request) and self.session is not None:
            self.delayed_offer = False
            with contextlib.suppress(ParseError):
                self._apply_remote(parse_sdp(request.body))
                # codec and telephone-event are known only now: bridges must follow
                self.post(LegMediaChanged(self))
        self._arm_se_timer()
        self.transition(LegInput.CONFIRM)

    def on_ack_timeout(self) -> None:
        """No ACK for our 2xx (§13.3.1.4): send BYE and end."""
        if self.state is not LegState.ANSWERING:
            return
        self._send_bye()
        self._ended("ack-timeout", remote=False)

    def on_cancelled(self) -> None:
        """The caller's CANCEL (the endpoint has answered 200 + 487)."""
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
        """BYE when up (or when our 2xx is awaiting its ACK), else a final error response."""
        if self.state is LegState.ANSWERED or self.state is LegState.ANSWERING:
            super().hangup(cause)
        elif not self.ended:
            self.reject(500 if cause == "error" else 480)

