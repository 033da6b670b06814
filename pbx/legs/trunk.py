"""A leg toward a carrier trunk (digest answered only for that trunk's own challenge)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pbx.callcontrol import (
    Call,
    LegInput,
    Target,
)
from pbx.legs.diversion import diversion_headers
from pbx.legs.outbound import OutboundLeg
from pbx.legs.sip import ALLOW
from pbx.trunks import TrunkConfig, build_outbound_request
from sipcore.endpoint import (
    Event,
    ResponseReceived,
)
from sipcore.transport import Peer

if TYPE_CHECKING:
    from pbx.b2bua import B2bua


class TrunkLeg(OutboundLeg):
    """A leg toward a carrier trunk: the INVITE comes from :func:`pbx.trunks.build_outbound_request`
    (Request-URI ``+E164@trunk``, From = the caller's DID, P-Asserted-Identity only to trusted
    trunks). A 401/407 is answered once with the trunk's credentials — only on this INVITE
    transaction, which went to that trunk, and only in the trunk's realm (no digest leak).

    The call's :class:`~pbx.callcontrol.Presentation` decides what the carrier sees: a chosen
    number replaces ``caller_did`` (the routing default: the DID of the user the call goes out
    for) unless the call was redirected on its way (then the redirecting user's DID goes out,
    with a Diversion naming them); a withheld caller goes out as ``anonymous`` with
    ``Privacy: id`` — with the real number in P-Asserted-Identity to a trusted trunk only."""

    def __init__(self, b2bua: B2bua, call: Call, target: Target, *, trunk: TrunkConfig,
                 caller_did: str | None, caller_name: str = "") -> None:
        shown = call.presentation
        if shown.number and not call.diversions:
            caller_did = shown.number
        if shown.name is not None:
            caller_name = shown.name
        super().__init__(b2bua, call, target, request_uri="", peer=trunk.peer,
                         caller_user=caller_did or "", callee_user=target.user)
        assert b2bua.trunks is not None
        self.trunk = trunk
        self.caller_did = caller_did
        self.caller_name = caller_name
        self.withheld = shown.withheld
        # a withheld caller's number is not in our Contact either (the trunk's account is)
        self._contact_uri = b2bua.trunks.contact_for(
            trunk, user=None if self.withheld else caller_did or None)
        self.contact = f"<{self._contact_uri}>"
        self._challenged = False

    def start(self) -> None:
        """Send the INVITE with our offer to the trunk."""
        offer = self._caller_codec_offer()
        request = build_outbound_request(
            self.trunk, number=self.callee_user, caller_did=self.caller_did,
            contact=self._contact_uri, caller_name=self.caller_name or None,
            anonymous=self.withheld, body=offer.serialize(), content_type="application/sdp")
        request.headers.add("Allow", ALLOW)
        request.headers.add("Supported", "timer")
        if self.call is not None:
            domain = self.trunk.aor_domain
            for name, value in diversion_headers(self.call.diversions, self.callee_user,
                                                 lambda n: f"sip:{n}@{domain}"):
                request.headers.add(name, value)
        self.transition(LegInput.START)
        self._send_invite(request)

    def _on_invite_event(self, event: Event) -> None:
        if (isinstance(event, ResponseReceived) and event.response.status in (401, 407)
                and not self._challenged and not self.cancelled and self.invite is not None
                and self.unanswered
                and self.b2bua.trunks is not None):
            self._challenged = True  # once: a second challenge means wrong credentials
            source = getattr(event, "peer", None)
            again = self.b2bua.trunks.answer_challenge(
                self.trunk.key, self.invite, event.response, sent_to=self.peer,
                source=source if isinstance(source, Peer) else None)
            if again is not None:
                self._send_invite(again)  # a new INVITE transaction: a new usage
                return
        super()._on_invite_event(event)
