"""What a call leaves behind: its record for the call history, and the outcome of a ring."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sipcore.enums import FastEnum

if TYPE_CHECKING:
    from pbx.callcontrol.legs import Leg


@dataclass
class CallRecord:
    """What call history needs: times are wall-clock (``time.time()``); ``answered`` and
    ``ended`` stay None until they happen. ``status`` is the final SIP status towards the
    caller (200 when answered)."""

    call_id: str
    direction: str  # "internal", "inbound", "outbound"
    caller: str
    callee: str
    started: float
    answered: float | None = None
    ended: float | None = None
    status: int | None = None
    cause: str = ""
    answered_by: str = ""
    #: the tenant whose users ``caller``/``callee`` name (None: the default tenant)
    tenant_id: int | None = None

    @property
    def missed(self) -> bool:
        """True when the call was never answered."""
        return self.answered is None


class RingOutcome(FastEnum):
    """How :meth:`Call.ring` ended."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"  # the ring timeout passed
    UNREACHABLE = "unreachable"  # no target could be reached / all failed otherwise
    REJECTED = "rejected"  # a target declined (603): the caller gets busy (486)
    CALLER_GONE = "caller_gone"  # the caller cancelled or hung up


@dataclass
class RingResult:
    """Result of :meth:`Call.ring`: the winning leg when answered, else the outcome and the most
    telling final status of the targets."""

    outcome: RingOutcome
    leg: Leg | None = None
    status: int = 0
    statuses: list[int] = field(default_factory=list)


#: Final statuses that mean "the callee is busy" (RFC 3261 §21.4.25, §21.6.1).
_BUSY = frozenset({486, 600})
_DECLINED = frozenset({603, 607})


def tell_outcome(statuses: list[int], timed_out: bool) -> tuple[RingOutcome, int]:
    """The outcome of a ring from the targets' final statuses (busy beats no answer beats
    declined; otherwise the most specific failure). A decline — what a phone's "reject" key
    sends — tells the caller busy (FEATURES.md "Reject gives the caller busy")."""
    if any(s in _BUSY for s in statuses):
        return RingOutcome.BUSY, 486
    if timed_out:
        return RingOutcome.NO_ANSWER, 480
    if any(s in _DECLINED for s in statuses):
        return RingOutcome.REJECTED, 486
    # the lowest class is the most specific (RFC 3261 §16.7 picks a 4xx over 5xx/6xx)
    best = min(statuses, default=480, key=lambda s: (s // 100 if s != 408 else 4.9, s))
    return RingOutcome.UNREACHABLE, 480 if best in (408, 487) else best

