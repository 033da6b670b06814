"""What legs tell their call: events in the past tense, posted into the call's queue in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pbx.callcontrol.legs import Leg

__all__ = [
    "CallEvent",
    "DtmfReceived",
    "LegAnswered",
    "LegEnded",
    "LegFailed",
    "LegHeld",
    "LegMediaChanged",
    "LegProgressed",
    "LegResumed",
    "PickedUp",
]


@dataclass(frozen=True, slots=True)
class LegProgressed:
    """An outbound leg got a provisional response (``early_media``: it came with SDP)."""

    leg: Leg
    status: int
    early_media: bool


@dataclass(frozen=True, slots=True)
class LegAnswered:
    """A leg was answered (outbound: 2xx received; inbound: our 2xx was ACKed)."""

    leg: Leg


@dataclass(frozen=True, slots=True)
class LegFailed:
    """A leg ended before it was answered: a final non-2xx, a timeout, or the caller's CANCEL
    (status 487)."""

    leg: Leg
    status: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LegEnded:
    """An answered leg ended (``remote``: the far end hung up; else we did, or it died)."""

    leg: Leg
    cause: str
    remote: bool = True


@dataclass(frozen=True, slots=True)
class LegHeld:
    """The far end of the leg put us on hold (it sends ``sendonly``/``inactive``)."""

    leg: Leg


@dataclass(frozen=True, slots=True)
class LegResumed:
    """The far end took the call off hold."""

    leg: Leg


@dataclass(frozen=True, slots=True)
class LegMediaChanged:
    """The leg renegotiated its codec (re-INVITE/UPDATE): bridges must be rebuilt."""

    leg: Leg


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """A digit arrived on the leg; ``source`` is ``"rfc4733"``, ``"info"`` or ``"inband"``."""

    leg: Leg
    digit: str
    source: str = "rfc4733"


@dataclass(frozen=True, slots=True)
class PickedUp:
    """Someone else's answered leg takes the ringing call (pickup ``*97``/``*98``): the ring
    ends as if ``leg`` had answered it, the ringing targets get CANCEL."""

    leg: Leg


CallEvent = (
    LegProgressed | LegAnswered | LegFailed | LegEnded | LegHeld | LegResumed | LegMediaChanged
    | DtmfReceived | PickedUp
)
