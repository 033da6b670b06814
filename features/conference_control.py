"""Conference operations on live calls, for the REST API and anything else that is not a
phone: list a call's conference, add a participant (ring a number), drop one, mute one.

The operations are the ones the in-call code ``*3`` uses (:mod:`features.conference`): adding
a participant to a two-party call turns it into a conference exactly as ``*3`` does, and a
participant dropped here leaves through the same :class:`~features.conference.ConferenceRoom`
path as one who hangs up (the conference ends when fewer than two remain).

It implements :class:`pbx.callcontrol.ConferenceOperations` (what the API sees). The service
also puts the rooms' changes on the event bus as ``conference.joined``,
``conference.left``, ``conference.muted`` and ``conference.unmuted``, with the call's
``tenant_id`` and ``user_ids`` so the event filter shows them to whom may see the call.

Calls are named by the caller's SIP Call-ID (as GET /calls does), participants by their leg id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from features.conference import (
    ConferenceRoom,
    add_participant,
    room_of,
    start_conference,
    targets_for,
)
from pbx.callcontrol import (
    Call,
    ConferenceError,
    ConferenceView,
    Leg,
    ParticipantView,
    ScriptHost,
    bridge_of,
    is_held,
    set_hold,
    users_of,
)

__all__ = ["ConferenceControl"]

#: the event bus's publish (kind, data)
Publish = Callable[[str, Mapping[str, Any]], object]

log = structlog.get_logger("pbx.conference")

#: (tenant_id, user_ids) of a call, as the event filter and GET /calls need them
Parties = Callable[[Call], tuple[int, Sequence[int]]]


def _no_parties(call: Call) -> tuple[int, Sequence[int]]:
    return 0, ()


class ConferenceControl:
    """Conference operations on the calls ``calls()`` yields (the B2BUA's); ``host()`` is the
    calls' script host (routes the numbers added; None while calls do not run)."""

    def __init__(self, calls: Callable[[], Iterable[Call]],
                 host: Callable[[], ScriptHost | None],
                 publish: Publish | None = None, parties: Parties = _no_parties) -> None:
        self.calls = calls
        self.host = host
        self.publish = publish
        self.parties = parties
        if publish is not None:
            ConferenceRoom.listeners.append(self._changed)

    def close(self) -> None:
        """Stop publishing the rooms' changes (idempotent)."""
        if self._changed in ConferenceRoom.listeners:
            ConferenceRoom.listeners.remove(self._changed)

    # -- lookups ------------------------------------------------------------------------------

    def call(self, call_id: str) -> Call:
        """The live call named ``call_id`` (ConferenceError ``no_call``)."""
        for call in list(self.calls()):
            if call.record.call_id == call_id and not call.released:
                return call
        raise ConferenceError("no_call", f"no call {call_id[:80]}")

    def room(self, call_id: str) -> ConferenceRoom:
        """The conference of the call ``call_id`` (ConferenceError ``no_conference``)."""
        room = room_of(self.call(call_id))
        if room is None or room.ended:
            raise ConferenceError("no_conference", f"call {call_id[:80]} is no conference")
        return room

    def is_conference(self, call: Call) -> bool:
        """True when ``call`` is a conference now (GET /calls shows it)."""
        room = room_of(call)
        return room is not None and not room.ended

    def view(self, call_id: str) -> ConferenceView:
        """The conference of ``call_id``: its members, then the participants still ringing."""
        room = self.room(call_id)
        joined = [ParticipantView(leg.id, leg.party, "joined", leg in room.muted)
                  for leg in room.members]
        ringing = [ParticipantView(leg.id, leg.party, "ringing", False)
                   for leg in room.pending if not leg.ended]
        return ConferenceView(room.call.record.call_id, room.sample_rate,
                              tuple(joined + ringing))

    def _participant(self, room: ConferenceRoom, leg_id: str) -> Leg:
        for leg in [*room.members, *room.pending]:
            if leg.id == leg_id:
                return leg
        raise ConferenceError("no_participant", f"no participant {leg_id[:40]}")

    # -- operations ---------------------------------------------------------------------------

    def add(self, call_id: str, number: str) -> list[str]:
        """Ring ``number`` (routed as the call's originator dials it) and join it to the
        conference when it answers; a two-party call becomes a conference first, as with
        ``*3``. Returns the ids of the legs rung (one participant's devices)."""
        call = self.call(call_id)
        if not any(leg.answered for leg in call.legs):
            raise ConferenceError("not_answered", "the call is not answered yet")
        host = self.host()
        user = host.originator(call) if host is not None else None
        if user is None and host is not None:
            user = host.digits_only(call)
        targets = targets_for(host, call, user, number) if user is not None else ()
        legs = add_participant(call, targets)
        if not legs:
            raise ConferenceError("no_route", f"{number[:40]} reaches nobody")
        log.info("conference.add_api", call_id=call_id, number=number, legs=len(legs))
        return [leg.id for leg in legs]

    def merge(self, call_id: str, other_call_id: str, user_id: int) -> list[str]:
        """Add another call of the same user: the other party of ``user_id``'s call
        ``other_call_id`` joins the conference of ``call_id`` (a two-party call becomes one
        first) — the three-way call a user makes from a held call and a second one. Parties
        on hold are taken back first (re-INVITE ``sendrecv``); the user's leg in the other
        call ends (BYE) and with it that call. Returns the id of the joined leg."""
        if other_call_id == call_id:
            raise ConferenceError("same_call", "a call cannot be added to itself")
        first, second = self.call(call_id), self.call(other_call_id)
        own, other_own = _user_leg(first, user_id), _user_leg(second, user_id)
        bridge = bridge_of(second, other_own)
        if bridge is None:
            raise ConferenceError("not_answered", "the other call is not connected")
        party = bridge.other(other_own)
        for call, leg in ((first, own), (second, other_own)):
            if is_held(call) and room_of(call) is None:
                set_hold(call, leg, False)
        second.unbridge(bridge)
        second.record.cause = second.record.cause or "conferenced"
        start_conference(first).join(party)
        other_own.hangup()
        log.info("conference.merged", call_id=call_id, other_call_id=other_call_id,
                 leg=party.id)
        return [party.id]

    def drop(self, call_id: str, leg_id: str) -> None:
        """Hang up a participant (BYE; CANCEL while it rings)."""
        room = self.room(call_id)
        leg = self._participant(room, leg_id)
        log.info("conference.drop_api", call_id=call_id, leg=leg_id)
        room.drop(leg)

    def mute(self, call_id: str, leg_id: str, muted: bool) -> None:
        """Stop (or resume) mixing what a joined participant says."""
        room = self.room(call_id)
        leg = self._participant(room, leg_id)
        if leg not in room.members:
            raise ConferenceError("no_participant", f"{leg_id[:40]} has not joined yet")
        room.mute(leg, muted)

    # -- events -------------------------------------------------------------------------------

    def _changed(self, change: str, room: ConferenceRoom, leg: Leg) -> None:
        if change == "joined":
            self._publish_room("conference.joined", room, leg)
        elif change == "left":
            self._publish_room("conference.left", room, leg)
        elif change == "muted":
            self._publish_room("conference.muted", room, leg)
        elif change == "unmuted":
            self._publish_room("conference.unmuted", room, leg)

    def _publish_room(self, kind: str, room: ConferenceRoom, leg: Leg) -> None:
        if self.publish is None:
            return
        tenant_id, user_ids = self.parties(room.call)
        self.publish(kind, {
            "call_id": room.call.record.call_id, "leg_id": leg.id, "party": leg.party,
            "members": len(room.members), "tenant_id": tenant_id,
            "user_ids": list(user_ids)})


def _user_leg(call: Call, user_id: int) -> Leg:
    """``user_id``'s connected leg in ``call`` (ConferenceError ``not_in_call``: none)."""
    for leg, user in users_of(call).items():
        if user.id == user_id and leg.answered and not leg.ended:
            return leg
    raise ConferenceError("not_in_call", "the user has no connected leg in that call")
