"""Call legs as call control sees them: the :class:`Leg` contract, its state table, targets.

A leg's life is one table, :data:`LEG_TABLE`: ``(state, input) → (action, next state)``. The
signalling subclass (:mod:`pbx.legs`) only feeds inputs through :meth:`Leg.transition`; the
action says which call-control event the change produces, so a leg never writes its state or
posts a life-cycle event around the table. An input that does not apply in a state is ignored
(a late 180 after the 200, a second BYE) and produces nothing.

Both directions pass through ``ANSWERING`` (the 2xx exchanged, its ACK not yet): an inbound leg
rests there until the caller's ACK (RFC 3261 §13.3.1.4), an outbound leg leaves it at once when
it sends the ACK (§13.2.2.4). Only ``CONFIRM`` makes a leg ``ANSWERED`` and posts
:class:`~pbx.callcontrol.events.LegAnswered`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from media.port import MediaPort
from pbx.callcontrol.events import CallEvent, LegAnswered, LegEnded, LegFailed, LegProgressed
from sipcore.enums import FastEnum

if TYPE_CHECKING:
    from pbx.callcontrol.call import Call

__all__ = ["LEG_TABLE", "Leg", "LegAction", "LegInput", "LegState", "Target", "leg_transition"]


class LegState(FastEnum):
    """Where a leg is in its life."""

    IDLE = "idle"  # created, nothing sent or answered yet
    CALLING = "calling"  # INVITE sent (outbound) or received and not answered yet (inbound)
    EARLY = "early"  # a provisional response went/came (ringing or early media)
    ANSWERING = "answering"  # the 2xx went/came, its ACK not yet
    ANSWERED = "answered"  # the ACK went/came: the leg is up
    ENDED = "ended"  # failed, cancelled, rejected or hung up


class LegInput(FastEnum):
    """What moves a leg."""

    START = "start"  # INVITE sent or received
    PROGRESS = "progress"  # 18x sent/received
    ANSWER = "answer"  # 2xx sent/received
    CONFIRM = "confirm"  # the ACK for the 2xx received/sent
    FAIL = "fail"  # the far end ends an unanswered leg: final non-2xx, its CANCEL, a timeout
    ABANDON = "abandon"  # we end an unanswered leg: our CANCEL or final error response
    END = "end"  # an answered (or answering) leg ends: BYE either way, ACK timeout, release


class LegAction(FastEnum):
    """What a transition produces for the owning call."""

    NOTHING = "nothing"
    PROGRESSED = "progressed"  # post LegProgressed
    ANSWERED = "answered"  # post LegAnswered
    FAILED = "failed"  # post LegFailed
    ENDED = "ended"  # post LegEnded


LS, LI, LA = LegState, LegInput, LegAction
LEG_TABLE: dict[tuple[LegState, LegInput], tuple[LegAction, LegState]] = {
    (LS.IDLE, LI.START): (LA.NOTHING, LS.CALLING),
    (LS.IDLE, LI.FAIL): (LA.NOTHING, LS.ENDED),
    (LS.IDLE, LI.ABANDON): (LA.NOTHING, LS.ENDED),
    (LS.IDLE, LI.END): (LA.NOTHING, LS.ENDED),
    (LS.CALLING, LI.PROGRESS): (LA.PROGRESSED, LS.EARLY),
    (LS.CALLING, LI.ANSWER): (LA.NOTHING, LS.ANSWERING),
    (LS.CALLING, LI.FAIL): (LA.FAILED, LS.ENDED),
    (LS.CALLING, LI.ABANDON): (LA.NOTHING, LS.ENDED),
    (LS.EARLY, LI.PROGRESS): (LA.PROGRESSED, LS.EARLY),
    (LS.EARLY, LI.ANSWER): (LA.NOTHING, LS.ANSWERING),
    (LS.EARLY, LI.FAIL): (LA.FAILED, LS.ENDED),
    (LS.EARLY, LI.ABANDON): (LA.NOTHING, LS.ENDED),
    (LS.ANSWERING, LI.CONFIRM): (LA.ANSWERED, LS.ANSWERED),
    (LS.ANSWERING, LI.END): (LA.ENDED, LS.ENDED),
    (LS.ANSWERED, LI.END): (LA.ENDED, LS.ENDED),
}


def leg_transition(state: LegState, event: LegInput) -> tuple[LegAction, LegState] | None:
    """The (action, next state), or None when ``event`` does not apply in ``state``."""
    return LEG_TABLE.get((state, event))


@dataclass(frozen=True, slots=True)
class Target:
    """Something a leg can be created towards: a registered device (``contact`` is its opaque
    address, e.g. a SIP Contact URI), a user (all their devices), or an external number.

    ``kind`` is ``"device"``, ``"user"`` or ``"number"``; ``user`` the extension it belongs to
    (for a number: the number); ``label`` what appears in logs."""

    kind: str
    user: str = ""
    contact: str = ""
    label: str = ""


_leg_ids = itertools.count(1)


class Leg:
    """One party's connection to a call; subclasses implement the signalling.

    ``direction`` is ``"inbound"`` (the caller's INVITE) or ``"outbound"`` (an INVITE we sent).
    ``media`` is the leg's media port in our media core (None until negotiated). ``held`` is True
    while the far end has put us on hold.
    """

    direction: str = "outbound"

    def __init__(self, call: Call | None, *, party: str = "", target: Target | None = None) -> None:
        self.id = f"L{next(_leg_ids)}"
        self.call = call
        self.party = party
        self.target = target
        self.state = LegState.IDLE
        self.media: MediaPort | None = None
        self.held = False
        self.final_status: int | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.direction} {self.state.value} {self.party}>"

    # -- state -----------------------------------------------------------------------------------

    @property
    def answered(self) -> bool:
        """The leg is up."""
        return self.state is LegState.ANSWERED

    @property
    def ended(self) -> bool:
        """The leg is over."""
        return self.state is LegState.ENDED

    @property
    def unanswered(self) -> bool:
        """The leg is calling or ringing (no 2xx yet)."""
        return self.state is LegState.CALLING or self.state is LegState.EARLY

    def transition(self, event: LegInput, *, status: int = 0, reason: str = "",
                   cause: str = "", remote: bool = True, early_media: bool = False) -> bool:
        """Move along :data:`LEG_TABLE` and post the event its action names (with these
        details); False (nothing changed, nothing posted) when ``event`` does not apply."""
        step = LEG_TABLE.get((self.state, event))
        if step is None:
            return False
        action, self.state = step
        if action is LegAction.NOTHING:
            return True
        if action is LegAction.PROGRESSED:
            self.post(LegProgressed(self, status, early_media))
        elif action is LegAction.ANSWERED:
            self.post(LegAnswered(self))
        elif action is LegAction.FAILED:
            self.post(LegFailed(self, status, reason))
        else:
            self.post(LegEnded(self, cause, remote))
        return True

    def post(self, event: CallEvent) -> None:
        """Hand an event to the owning call (dropped when the leg has no call any more)."""
        if self.call is not None:
            self.call.post(event)

    # -- commands (signalling subclasses override) -----------------------------------------------

    def start(self) -> None:
        """Outbound: send the INVITE."""
        raise NotImplementedError

    def progress(self, *, early_media: bool) -> None:
        """Inbound: send 180 (no media) or 183 with our SDP (``early_media``)."""
        raise NotImplementedError

    def answer(self) -> None:
        """Inbound: send 2xx with our SDP; :class:`LegAnswered` follows on the ACK."""
        raise NotImplementedError

    def reject(self, status: int, reason: str | None = None) -> None:
        """Inbound, unanswered: send a final error response."""
        raise NotImplementedError

    def cancel(self, reason: str | None = None) -> None:
        """Outbound, unanswered: CANCEL (``reason`` becomes an RFC 3326 Reason header)."""
        raise NotImplementedError

    def hangup(self, cause: str = "normal") -> None:
        """End the leg whatever its state: BYE when answered, else CANCEL/reject (500 for
        ``cause="error"``, 480 otherwise)."""
        raise NotImplementedError

    def send_dtmf(self, digits: str) -> None:
        """Send digits the way this leg negotiated (RFC 4733 or SIP INFO)."""
        raise NotImplementedError

    def signal_hold(self, held: bool) -> bool:
        """Tell the far end it is on hold from our side (or back): a SIP leg re-INVITEs with
        ``sendonly`` (``sendrecv``), RFC 3264 §8.4. The hold itself is in the media graph
        (:meth:`pbx.callcontrol.Call.hold`); this only signals it. False: not signalled."""
        return False

    def close_media(self) -> None:
        """Free the leg's media resources (ports)."""
