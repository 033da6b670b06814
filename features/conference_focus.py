"""A phone's own conference (RFC 4579 §5.4–5.7): the PBX is the conference focus.

A phone that makes its "network conference" does it in the ad-hoc SIP way:

1. it calls the **conference factory URI** (``sip:conference@our-domain``, :data:`FACTORY`):
   the PBX answers as the focus — its Contact is the conference URI
   ``<sip:conf-EXT@…>;isfocus`` (one per user: ``EXT`` is the caller's extension) — and the
   call becomes a conference with the phone as its first member;
2. it brings its other calls in with **REFER to the conference URI**: a REFER in the dialog
   of one of its calls, ``Refer-To: <sip:conf-EXT@…>``, moves that call's other party into
   the conference (in a B2BUA that needs no new INVITE toward the party: its leg changes
   from the two-party bridge to the mix); the REFER's NOTIFY says ``200 OK`` and the phone
   hangs its own leg of that call up (§5.6);
3. or with a **REFER to the focus** (in the focus dialog, §5.5): ``Refer-To: <sip:102@…>``
   rings 102 and joins it when it answers (NOTIFY ``200`` then, or the failure); with
   ``?Replaces=`` naming another dialog of the phone's, that call's other party joins at
   once and the replaced dialog ends (the PBX's BYE, as the replaced party's would be).

The conference then behaves as one made by ``*3`` (:mod:`features.conference`): everyone hears
everyone else, the API lists, mutes and drops participants, and it ends when fewer than two
remain. Only the user whose conference it is may refer calls into it (403 otherwise).

The SIP side (the factory INVITE, the REFER, its NOTIFYs, the focus Contact) is the B2BUA's
(:mod:`pbx.legs.refer`); this module is the call-control part, reached by name through the
feature registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import ClassVar

import structlog

from features.conference import ConferenceRoom, add_participant, start_conference, targets_for
from pbx.callcontrol import BaseFeature, Call, Leg, ScriptHost, Setting, bridge_of

__all__ = ["FACTORY", "FOCUS_PREFIX", "ConferenceFocus"]

log = structlog.get_logger("pbx.conference")

#: The user part of the conference factory URI.
FACTORY = "conference"
#: The user part of a conference URI: this prefix and the owner's extension.
FOCUS_PREFIX = "conf-"
#: How long a participant invited by REFER rings (as one added by ``*3``).
RING_SECONDS = 30.0


class ConferenceFocus(BaseFeature):
    """The focus of every user's ad-hoc conference (see the module docstring)."""

    name = "conference_focus"
    priority = 905
    settings_schema: Mapping[str, Setting] = {}
    factory: ClassVar[str] = FACTORY

    def __init__(self) -> None:
        #: owner's user key → the call that is their conference
        self.rooms: dict[str, Call] = {}
        #: owner's user key → the user part of their conference URI
        self.uris: dict[str, str] = {}

    @staticmethod
    def conference_user(extension: str) -> str:
        """The user part of ``extension``'s conference URI (``conf-100``)."""
        return FOCUS_PREFIX + extension

    def is_factory(self, dialled: str) -> bool:
        """Whether ``dialled`` (a Request-URI's user part) is the factory URI."""
        return dialled == self.factory

    def uri_of(self, owner: str) -> str | None:
        """The user part of ``owner``'s conference URI while their conference runs."""
        return self.uris.get(owner) if self.room_of(owner) is not None else None

    async def run(self, call: Call, owner: str, uri_user: str) -> None:
        """The script of a call to the factory from ``owner`` (a user key): answer it (the
        B2BUA has set the focus Contact), make it a conference of that one leg, and keep it
        until the conference ends. A second factory call of the same user replaces the first
        as the one REFERs go to."""
        if not await call.answer():
            return
        room = start_conference(call)
        self.rooms[owner] = call
        self.uris[owner] = uri_user
        log.info("conference.focus_started", call_id=call.record.call_id, owner=owner)
        try:
            await call.wait_hangup()
        finally:
            if self.rooms.get(owner) is call:
                del self.rooms[owner]
                self.uris.pop(owner, None)
            log.info("conference.focus_ended", call_id=call.record.call_id, owner=owner,
                     members=len(room.members))

    def room_of(self, owner: str) -> Call | None:
        """``owner``'s conference call, while it runs."""
        call = self.rooms.get(owner)
        return call if call is not None and not call.released else None

    def is_focus(self, owner: str, call: Call | None) -> bool:
        """Whether ``call`` is ``owner``'s conference (a REFER in it is one to the focus)."""
        return call is not None and self.room_of(owner) is call

    def invite(self, owner: str, number: str, host: ScriptHost,
               done: Callable[[int, str], None]) -> list[Leg]:
        """Ring ``number`` for ``owner``'s conference and join it when it answers; ``done``
        hears the outcome once (200 joined, 480 not reached in time or nothing to ring).
        Returns the legs rung."""
        focus = self.room_of(owner)
        if focus is None:
            raise LookupError(f"{owner} has no conference")
        user = host.originator(focus)
        targets = targets_for(host, focus, user, number) if user is not None else ()
        legs = add_participant(focus, targets)
        if not legs:
            done(480, "Temporarily Unavailable")
            return []
        pending = set(legs)
        told = False

        def tell(status: int, reason: str) -> None:
            nonlocal told
            if not told:
                told = True
                if joined in ConferenceRoom.listeners:
                    ConferenceRoom.listeners.remove(joined)
                done(status, reason)

        def joined(change: str, room: ConferenceRoom, leg: Leg) -> None:
            if change == "joined" and leg in pending:
                tell(200, "OK")

        ConferenceRoom.listeners.append(joined)

        def give_up() -> None:
            if not any(leg.answered for leg in legs):
                tell(480, "Temporarily Unavailable")
            else:
                tell(200, "OK")

        asyncio.get_running_loop().call_later(RING_SECONDS + 1.0, give_up)
        log.info("conference.invited", call_id=focus.record.call_id, number=number,
                 legs=len(legs))
        return legs

    def bring(self, owner: str, call: Call, leg: Leg) -> Leg:
        """Move the other party of ``leg`` (``owner``'s leg in ``call``) into ``owner``'s
        conference; returns the party's leg. LookupError when ``owner`` has no conference,
        ValueError when ``leg`` talks to nobody (not in a bridge) or is the focus call."""
        focus = self.room_of(owner)
        if focus is None:
            raise LookupError(f"{owner} has no conference")
        if call is focus:
            raise ValueError("the conference cannot be referred into itself")
        bridge = bridge_of(call, leg)
        if bridge is None:
            raise ValueError("the call is not connected")
        party = bridge.other(leg)
        call.unbridge(bridge)
        call.record.cause = call.record.cause or "conferenced"
        start_conference(focus).join(party)
        log.info("conference.referred", call_id=focus.record.call_id,
                 from_call=call.record.call_id, leg=party.id)
        return party
