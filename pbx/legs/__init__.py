"""SIP call legs: one dialog and one RTP session each, every call's media anchored in our core.

Theory of operation
-------------------
Each call is two (or more) independent SIP dialogs: the caller's INVITE is answered by an
:class:`InboundLeg` (UAS, RFC 3261 §13.3), and for every registered device of the callee an
:class:`OutboundLeg` sends its own INVITE (UAC, §13.2) — parallel ringing is one INVITE per
binding, sent to the address the REGISTER came from (``Binding.received``) so phones behind NAT
are reached; a :class:`TrunkLeg` is an outbound leg toward a carrier. Every leg negotiates its own
SDP (RFC 3264) against its own RTP session (policy in :mod:`pbx.legs.sdp`), so re-INVITEs and
UPDATEs (RFC 3311) are answered locally by the leg that received them; hold
(``sendonly``/``inactive``, RFC 3264 §8.4) rewires the media graph so the held party hears music
on hold; nothing is renegotiated on the other leg. The SIP rules of each dialog's INVITE usage (session
timers, 2xx/ACK, glare, when a BYE may go) are :class:`sipcore.invite_session.InviteSession`'s;
the leg feeds it its messages and sends what it asks for. Legs turn SIP into call-control events
(:mod:`pbx.callcontrol`); they never see each other. A browser's legs
(:class:`WebRtcInboundLeg`, :class:`WebRtcOutboundLeg`, :mod:`pbx.legs.webrtc`) are the same SIP
legs over WS/WSS with an aiortc peer connection as their media port.
"""

from pbx.legs.inbound import InboundLeg
from pbx.legs.outbound import OutboundLeg
from pbx.legs.sip import ALLOW, SipLeg, dtmf_from_info
from pbx.legs.trunk import TrunkLeg
from pbx.legs.webrtc import WebRtcInboundLeg, WebRtcOutboundLeg

__all__ = ["ALLOW", "InboundLeg", "OutboundLeg", "SipLeg", "TrunkLeg", "WebRtcInboundLeg",
           "WebRtcOutboundLeg", "dtmf_from_info"]
