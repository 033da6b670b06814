"""Conference (FEATURES.md): "add participant" turns a two-party call into an N-party
conference in our mixer; each participant hears everyone but themselves.

Theory of operation
-------------------
A connected call runs :meth:`~pbx.callcontrol.Call.wait_hangup` on its bridge. Adding the first
participant (:func:`add_participant`: in-call ``*3`` + number from a user's own leg — the
``conference_add`` action of :mod:`pbx.callcontrol.incall` —, later the API) makes a :class:`ConferenceRoom`: the call's bridges close, every answered leg
joins one conference port of the media engine (:meth:`Call.conference`), and the room becomes
the call's :attr:`~pbx.callcontrol.Call.intercept` — it sees every event of the call first:

* a participant's leg that answers joins the mix (the other legs of its ring get CANCEL);
* a leg that fails before the answer is forgotten;
* a member that hangs up leaves; when fewer than two remain, the conference (and the call)
  ends — the last member gets BYE when the call is released;
* a member whose codec changes is re-added (the mixer's fused G.711 path or the resampled one).

Legs of any codec and rate meet in the mix: G.711 legs at 8 kHz take the kernel's fused path;
G.722 and Opus legs are resampled to the conference rate and back (:mod:`media.conference`).
The conference runs at 16 kHz when one of the first members is wideband, else at 8 kHz.

:func:`add_participant`, :meth:`ConferenceRoom.drop` and :meth:`ConferenceRoom.mute` are the
call-control functions the REST API calls; the barge-in of pickup (``*33``) joins an answered
leg with :meth:`ConferenceRoom.join`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import structlog

from pbx.callcontrol import (
    BaseFeature,
    Call,
    CallEvent,
    InCallContext,
    Intercept,
    Leg,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegMediaChanged,
    LegProgressed,
    Ring,
    Routed,
    ScriptHost,
    Setting,
    Target,
    UserView,
    register_incall_action,
)

__all__ = ["INCALL_ACTION", "ConferenceFeature", "ConferenceRoom", "RoomListener", "add_by_code",
           "add_participant", "room_of", "start_conference", "targets_for"]

log = structlog.get_logger("pbx.conference")

#: The in-call action of "add participant" (``[incall.conference_add]``: ``*3`` + number).
INCALL_ACTION = "conference_add"
#: How long an added participant rings.
ADD_RING_SECONDS = 30.0
#: Conferences of a call's legs: feature name in :attr:`Call.per_call`.
FEATURE = "conference"


#: Who hears of a room's changes: (change, room, leg) with change ``joined``, ``left``,
#: ``muted`` or ``unmuted`` (:class:`features.conference_control.ConferenceControl` puts them on
#: the event bus).
RoomListener = Callable[[str, "ConferenceRoom", Leg], None]


class ConferenceRoom:
    """An N-party conference of one call (see the module docstring)."""

    #: every room's listeners (the server's conference service subscribes once)
    listeners: ClassVar[list[RoomListener]] = []

    def __init__(self, call: Call) -> None:
        self.call = call
        rates = [leg.media.sample_rate for leg in call.legs
                 if leg.answered and leg.media is not None]
        self.sample_rate = 16000 if any(r > 8000 for r in rates) else 8000
        self.port = call.conference(self.sample_rate)
        #: ringing participant leg -> the legs rung with it (one target's devices)
        self.pending: dict[Leg, list[Leg]] = {}
        self.muted: set[Leg] = set()
        self.ended = False

    @property
    def members(self) -> list[Leg]:
        """The legs in the mix now."""
        return list(self.port.members)

    def join(self, leg: Leg) -> None:
        """Put an answered ``leg`` of the call into the mix (closing its two-party bridges)."""
        if leg.call is not self.call:
            self.call.adopt(leg)
        self.call.join(self.port, leg)
        log.info("conference.joined", call_id=self.call.record.call_id, leg=leg.id,
                 party=leg.party, members=len(self.port.members))
        self._tell("joined", leg)

    def _tell(self, change: str, leg: Leg) -> None:
        for listener in list(self.listeners):
            try:
                listener(change, self, leg)
            except Exception:
                log.exception("conference.listener_failed", change=change)

    def add(self, targets: Sequence[Target]) -> list[Leg]:
        """Ring ``targets`` (one participant: the first to answer joins, the others get
        CANCEL); returns the legs started."""
        legs: list[Leg] = []
        for target in targets:
            leg = self.call.add_leg(target)
            try:
                leg.start()
            except Exception:
                log.exception("conference.leg_start_failed", call_id=self.call.record.call_id,
                              target=target.label)
                continue
            legs.append(leg)
        for leg in legs:
            self.pending[leg] = legs
        return legs

    def drop(self, leg: Leg) -> None:
        """Hang up a participant (a ringing one gets CANCEL); the room ends the call when
        fewer than two remain."""
        if leg in self.pending:
            self._forget_pending(leg)
        leg.hangup()

    def mute(self, leg: Leg, muted: bool = True) -> None:
        """Stop (or resume) mixing what ``leg`` says; it keeps hearing the others."""
        if leg not in self.port.members:
            raise LookupError(f"{leg.id} is not in the conference")
        self.port.mute(leg, muted)
        if muted:
            self.muted.add(leg)
        else:
            self.muted.discard(leg)
        self._tell("muted" if muted else "unmuted", leg)

    def _forget_pending(self, leg: Leg) -> None:
        group = self.pending.pop(leg, [])
        if leg in group:
            group.remove(leg)

    def intercept(self, event: CallEvent) -> Intercept:
        """The call's events, seen first (:attr:`Call.intercept`)."""
        leg = event.leg
        if leg in self.pending:
            if isinstance(event, LegAnswered):
                for other in self.pending.pop(leg):
                    if other is not leg:
                        self.pending.pop(other, None)
                        other.cancel()
                self.join(leg)
            elif isinstance(event, LegFailed | LegEnded):
                self._forget_pending(leg)
                log.info("conference.not_reached", call_id=self.call.record.call_id,
                         leg=leg.id, status=getattr(event, "status", None))
            return Intercept.TAKEN
        if leg not in self.port.members:
            return Intercept.PASS
        if isinstance(event, LegEnded | LegFailed):
            self.port.remove(leg)
            self.muted.discard(leg)
            log.info("conference.left", call_id=self.call.record.call_id, leg=leg.id,
                     members=len(self.port.members))
            self._tell("left", leg)
            if len(self.port.members) < 2:
                return self._end()
            return Intercept.TAKEN
        if isinstance(event, LegMediaChanged):
            self.port.remove(leg)
            self.port.add(leg)
            if leg in self.muted:
                self.port.mute(leg, True)
            return Intercept.TAKEN
        if isinstance(event, LegProgressed):
            return Intercept.TAKEN
        return Intercept.PASS

    def _end(self) -> Intercept:
        self.ended = True
        for leg in list(self.pending):
            self.pending.pop(leg, None)
            if not leg.ended:
                leg.cancel()
        log.info("conference.ended", call_id=self.call.record.call_id)
        return Intercept.END


def room_of(call: Call) -> ConferenceRoom | None:
    """The conference ``call`` is, if it is one."""
    room = call.per_call.get(FEATURE)
    return room if isinstance(room, ConferenceRoom) else None


def start_conference(call: Call) -> ConferenceRoom:
    """Turn ``call`` into a conference of its answered legs (idempotent: returns the room it
    already is)."""
    room = room_of(call)
    if room is not None:
        return room
    room = ConferenceRoom(call)
    for leg in list(call.legs):
        if leg.answered and leg.media is not None:
            room.join(leg)
    call.per_call[FEATURE] = room
    call.intercept = room.intercept
    log.info("conference.started", call_id=call.record.call_id, members=len(room.members),
             rate=room.sample_rate)
    return room


def add_participant(call: Call, targets: Sequence[Target]) -> list[Leg]:
    """Add a participant to ``call`` (its first makes it a conference): ring ``targets``; the
    first to answer joins the mix. Returns the legs started (empty: nothing to ring)."""
    if not targets or call.released:
        return []
    return start_conference(call).add(targets)


class ConferenceFeature(BaseFeature):
    """In-call ``*3`` + number (+ ``#``): add the number to the call as a participant (the
    in-call action ``conference_add``, :mod:`pbx.callcontrol.incall`)."""

    name = FEATURE
    priority = 900
    settings_schema: Mapping[str, Setting] = {}

    def __init__(self) -> None:
        register_incall_action(INCALL_ACTION, add_by_code)


async def add_by_code(ctx: InCallContext, number: str) -> None:
    """``*3`` + ``number`` typed on ``ctx.leg``: ring what ``number`` routes to for the user
    (no feature of the target runs: a participant is rung, not called); nothing without a
    number or a route."""
    call = ctx.call
    targets = targets_for(ctx.host, call, ctx.user, number) if number else ()
    legs = add_participant(call, targets)
    log.info("conference.add", call_id=call.record.call_id, by=ctx.user.key, number=number,
             legs=len(legs))


def targets_for(host: ScriptHost | None, call: Call, user: UserView,
                number: str) -> tuple[Target, ...]:
    """What ringing ``number`` for ``user`` rings: the devices of the user it routes to, or
    the trunk leg of an external number; empty when it routes nowhere."""
    if host is None:
        return ()
    routed = host.route(call, number, user)
    if isinstance(routed, Routed):
        return tuple(host.devices(routed.user))
    if isinstance(routed, Ring):
        return routed.targets
    return ()
