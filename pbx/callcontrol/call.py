"""The call-control API: :class:`Call`, :class:`Leg`, :class:`Bridge` and the per-call supervisor.

Theory of operation
-------------------
A *call* is what a user experiences as one call: a caller leg (the INVITE we received) and the
legs we create towards the targets (the INVITEs we send). Every leg terminates in our media core
(a media port, usually an :class:`media.aio.RtpSession`), so the legs never see each other's SDP:
features connect, disconnect, hold and play to legs by rewiring the media graph, never by
renegotiating the other side.

Legs are signalling-agnostic here. :mod:`pbx.b2bua` implements them over SIP (a browser or trunk
leg is another subclass); this module only knows the :class:`Leg` contract:

* commands (verbs): :meth:`Leg.start` (send the INVITE), :meth:`Leg.progress` (180/183),
  :meth:`Leg.answer`, :meth:`Leg.reject`, :meth:`Leg.cancel`, :meth:`Leg.hangup`,
  :meth:`Leg.send_dtmf`;
* events (past tense): :class:`LegProgressed`, :class:`LegAnswered`, :class:`LegFailed`,
  :class:`LegEnded`, :class:`LegHeld`, :class:`LegResumed`, :class:`LegMediaChanged`,
  :class:`DtmfReceived` — all posted into the owning call's queue, in order.

A leg's life is the state table :data:`LEG_TABLE` (``(state, input) → next state``); an input
that does not apply in a state is ignored (a late 180 after the 200, a second BYE).

A call's *script* (the feature chain, see :mod:`pbx.b2bua`) runs as one task under
:func:`supervise`: a :class:`asyncio.TaskGroup` owns every helper task of the call (ring timers,
players), and whatever the script raises ends in :meth:`Call.release` — every leg gets the
answer its state needs (5xx to an unanswered caller, CANCEL to a ringing target, BYE to an
answered leg), every media object is closed and the call-record hook fires. No other call is
touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from media.port import MediaPort
from pbx.callcontrol.context import Diversion
from pbx.callcontrol.events import (
    CallEvent,
    DtmfReceived,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegHeld,
    LegMediaChanged,
    LegProgressed,
    LegResumed,
    PickedUp,
)
from pbx.callcontrol.legs import Leg, LegInput, LegState, Target
from pbx.callcontrol.media import Bridge, Conference, MediaGraph, Playback
from pbx.callcontrol.presentation import Presentation
from pbx.callcontrol.records import CallRecord, RingOutcome, RingResult, tell_outcome
from sipcore.enums import FastEnum

log = structlog.get_logger("pbx.callcontrol")

#: RFC 3326 Reason for the targets that lose a parallel ring.
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


# -------------------------------------------------------------------------------------- calls

_call_ids = itertools.count(1)

LegFactory = Callable[["Call", Target], Leg]


class Intercept(FastEnum):
    """What an :attr:`Call.intercept` hook made of an event of the connected call."""

    PASS = "pass"  # not mine: the connected loop handles it as usual
    TAKEN = "taken"  # handled (a conference member left, a participant answered)
    END = "end"  # handled, and the call is over (fewer than two remain in a conference)


class Call:
    """One call: the caller leg, the legs created for it, its media and its events.

    ``caller`` is None for a call the PBX places itself (:meth:`originate`, e.g. call-back):
    the first party to answer becomes its caller leg.

    ``graph`` is the media engine, ``leg_factory(call, target)`` makes an outbound leg (the
    B2BUA's), ``hold_source(rate)`` the music-on-hold port, ``ringback_source(rate)`` our own
    ringback tone. ``on_record`` is the call-history hook: called with the :class:`CallRecord`
    when the call starts, is answered and ends.
    """

    def __init__(
        self,
        caller: Leg | None,
        *,
        graph: MediaGraph,
        leg_factory: LegFactory,
        record: CallRecord,
        hold_source: Callable[[int], MediaPort] | None = None,
        ringback_source: Callable[[int], MediaPort] | None = None,
        busy_source: Callable[[int], MediaPort] | None = None,
        on_record: Callable[[CallRecord], None] | None = None,
    ) -> None:
        self.id = f"C{next(_call_ids)}"
        self.caller = caller
        self.legs: list[Leg] = []
        if caller is not None:
            caller.call = self
            self.legs.append(caller)
        self.graph = graph
        self.leg_factory = leg_factory
        self.record = record
        self.hold_source = hold_source
        self.ringback_source = ringback_source
        self.busy_source = busy_source
        self.on_record = on_record
        #: Posted events not yet read (one reader: the call's script, see next_event).
        self.events: deque[CallEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        #: Events an operation read but left for the next one (read first, in order).
        self._backlog: deque[CallEvent] = deque()
        self.bridges: list[Bridge] = []
        self.playbacks: list[Playback] = []
        self.recordings: list[Any] = []
        self.tasks: asyncio.TaskGroup | None = None
        #: what per-call codes chose for this call (``*67`` suppress the number, ``*70`` no
        #: call waiting …): feature name -> value, read by that feature's hooks
        self.per_call: dict[str, Any] = {}
        self.released = False
        #: Called for each digit while the call is connected (the script's on_dtmf delivery).
        self.on_digit: Callable[[Leg, str], None] | None = None
        #: The redirections the call went through (legs announce them: Diversion headers).
        self.diversions: list[Diversion] = []
        self.conferences: list[Conference] = []
        #: Sees each event of the connected call first (:meth:`wait_hangup`): a conference
        #: (features/conference.py) takes its members' events here.
        self.intercept: Callable[[CallEvent], Intercept] | None = None
        #: Called for each digit of a connected call before it is relayed; True: it took the
        #: digit and passes on what should reach the other party itself (the in-call code
        #: dispatcher, :mod:`pbx.callcontrol.incall`).
        self.digit_guard: Callable[[Leg, str], bool] | None = None
        #: Legs whose DTMF only the digit guard passes on: their bridges never forward their
        #: digits (RFC 4733 events dropped by the relay, tones muted where audio is decoded).
        self.dtmf_guarded: set[Leg] = set()
        #: How the outgoing legs present the caller (CLIR, displayed number; see
        #: :mod:`pbx.callcontrol.presentation`).
        self.presentation = Presentation()

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.record.call_id} {self.record.caller}->{self.record.callee}>"

    # -- events ------------------------------------------------------------------------------------

    def post(self, event: CallEvent) -> None:
        """Queue an event for the call's script (legs call this)."""
        if not self.released:
            self.events.append(event)
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def next_event(self, timeout: float | None = None) -> CallEvent | None:
        """The next event, or None after ``timeout`` seconds."""
        if self._backlog:
            return self._backlog.popleft()
        if not self.events:
            # One future and one timer handle per wait: asyncio.wait_for would wrap the wait
            # in a new Task each time (several per call, on the per-call hot path).
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = (loop.call_later(timeout, _wake, waiter) if timeout is not None else None)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return self.events.popleft() if self.events else None

    def _notify_record(self) -> None:
        if self.on_record is not None:
            try:
                self.on_record(self.record)
            except Exception:
                log.exception("call.record_hook_failed", call_id=self.record.call_id)

    # -- operations ------------------------------------------------------------------------------

    def add_leg(self, target: Target) -> Leg:
        """Create (but do not start) an outbound leg towards ``target``."""
        leg = self.leg_factory(self, target)
        leg.call = self
        self.legs.append(leg)
        return leg

    def _start_legs(self, targets: Sequence[Target]) -> list[Leg]:
        """A leg per target, its INVITE sent; a leg that cannot start is abandoned (500) and
        left out."""
        legs: list[Leg] = []
        for t in targets:
            leg = self.add_leg(t)
            try:
                leg.start()
            except Exception:
                log.exception("call.leg_start_failed", call_id=self.record.call_id, target=t.label)
                leg.final_status = 500
                leg.transition(LegInput.ABANDON)
                continue
            legs.append(leg)
        return legs

    async def ring(
        self,
        targets: Sequence[Target],
        timeout: float,
        *,
        early_media: bool = True,
    ) -> RingResult:
        """Ring ``targets`` in parallel for ``timeout`` seconds; the first to answer wins.

        The losers get CANCEL with ``Reason: SIP;cause=200;text="Call completed elsewhere"``.
        While ringing, the caller hears the first target's early media when it sends some,
        otherwise our ringback tone (``early_media``: the caller gets a 183 with our SDP; else a
        plain 180). The caller is answered as soon as a target answers (the legs are not yet
        bridged: call :meth:`connect`). Ends early when the caller goes away.
        """
        caller = self.caller
        legs = self._start_legs(targets)
        if not legs:
            return RingResult(RingOutcome.UNREACHABLE, status=480)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        early: Bridge | None = None
        ringback: Playback | None = None
        caller_progressed = False
        statuses: list[int] = []

        # Legs whose outcome event has not been read yet. Not the legs' states: a 180 and a 200
        # can arrive in one batch, and the 200's state change must not end the loop before
        # its LegAnswered is read.
        outstanding = set(legs)

        def pending() -> list[Leg]:
            return [leg for leg in legs if not leg.ended and not leg.answered]

        try:
            while outstanding:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    for leg in pending():
                        leg.cancel()
                    outcome, status = tell_outcome(statuses, timed_out=True)
                    return RingResult(outcome, status=status, statuses=statuses)
                event = await self.next_event(remaining)
                if event is None:
                    continue
                if caller is not None and event.leg is caller:
                    if isinstance(event, LegFailed | LegEnded):
                        for leg in pending():
                            leg.cancel()
                        return RingResult(RingOutcome.CALLER_GONE, status=487, statuses=statuses)
                    continue  # a caller's digit or hold while ringing: nothing to act on
                if isinstance(event, PickedUp):
                    for leg in pending():
                        leg.cancel()
                    return RingResult(RingOutcome.ANSWERED, leg=event.leg, status=200,
                                      statuses=statuses)
                if event.leg not in outstanding:
                    continue
                if isinstance(event, LegProgressed):
                    if caller is None:
                        continue
                    if event.early_media and early is None and caller.media is not None:
                        if ringback is not None:
                            ringback.stop()
                            ringback = None
                        early = Bridge(self.graph, caller, event.leg)
                    if not caller_progressed:
                        caller_progressed = True
                        # an answered caller (a call-back's first party) hears our ringback
                        # in its call; an unanswered one gets it as early media
                        if caller.state is not LegState.ANSWERED:
                            caller.progress(early_media=early_media or early is not None)
                        if early is None and early_media and caller.media is not None and \
                                self.ringback_source is not None:
                            ringback = Playback(self.graph,
                                                self.ringback_source(caller.media.sample_rate),
                                                caller.media)
                elif isinstance(event, LegAnswered):
                    winner = event.leg
                    for leg in pending():
                        leg.cancel(COMPLETED_ELSEWHERE)
                    return RingResult(RingOutcome.ANSWERED, leg=winner, status=200,
                                      statuses=statuses)
                elif isinstance(event, LegFailed):
                    outstanding.discard(event.leg)
                    statuses.append(event.status)
                    if event.status >= 600:
                        # a global failure (603 Decline: the user pressed "reject") ends the
                        # whole ring (RFC 3261 §16.7: a 6xx cancels the other branches)
                        for leg in pending():
                            leg.cancel()
                        break
                elif isinstance(event, LegEnded):
                    outstanding.discard(event.leg)
                    statuses.append(480)
            outcome, status = tell_outcome(statuses, timed_out=False)
            return RingResult(outcome, status=status, statuses=statuses)
        finally:
            if ringback is not None:
                ringback.stop()
            if early is not None:
                early.close()

    def _defer(self, events: list[CallEvent]) -> None:
        """Give events an operation did not consume back to the next one, in order."""
        self._backlog.extendleft(reversed(events))

    async def answer(self, leg: Leg | None = None) -> bool:
        """Answer ``leg`` (default: the caller) and wait for its ACK; False when it went away."""
        leg = leg or self.caller
        if leg is None:
            return False
        if leg.answered:
            return True
        leg.answer()
        deferred: list[CallEvent] = []
        try:
            while True:
                event = await self.next_event()
                if event is None:  # pragma: no cover - no timeout given
                    continue
                if event.leg is leg and isinstance(event, LegAnswered):
                    return True
                if event.leg is leg and isinstance(event, LegFailed | LegEnded):
                    return False
                deferred.append(event)
        finally:
            self._defer(deferred)

    def mark_answered(self, by: Leg) -> None:
        """Record the answer time (call history) and log it."""
        if self.record.answered is None:
            self.record.answered = time.time()
            self.record.status = 200
            self.record.answered_by = by.party
            self._notify_record()

    def reject(self, status: int, reason: str | None = None) -> None:
        """Reject the unanswered caller with ``status`` (e.g. 486, 480, 404, 603)."""
        self.record.status = status
        if self.caller is not None and self.caller.unanswered:
            self.caller.reject(status, reason)

    def bridge(self, a: Leg, b: Leg) -> Bridge:
        """Connect two answered legs' media (relay or transcoding, music on hold while held)."""
        br = Bridge(self.graph, a, b, hold_source=self.hold_source,
                    guarded=self.dtmf_guarded)
        self.bridges.append(br)
        return br

    def unbridge(self, bridge: Bridge) -> None:
        """Disconnect a bridge made by :meth:`bridge`."""
        bridge.close()
        if bridge in self.bridges:
            self.bridges.remove(bridge)

    def hold(self, leg: Leg) -> None:
        """Put ``leg``'s far end on hold from our side: it hears music on hold, the other party
        of its bridge hears nothing from it (media-only; no renegotiation needed, the media is
        anchored here)."""
        for br in self.bridges:
            if leg in (br.a, br.b):
                other = br.other(leg)
                other.held = True  # as if the other side held: ``leg`` gets MOH
                br.rebuild()

    def resume(self, leg: Leg) -> None:
        """Undo :meth:`hold`."""
        for br in self.bridges:
            if leg in (br.a, br.b):
                br.other(leg).held = False
                br.rebuild()

    def ring_burst(self, targets: Sequence[Target], seconds: float) -> None:
        """Let ``targets`` ring for ``seconds`` as a reminder (forwarding immediate, DND): no
        one is meant to answer; an answer is hung up, the rest cancelled."""
        if self.tasks is None or not targets:
            return
        legs = self._start_legs(targets)

        async def stop() -> None:
            await asyncio.sleep(seconds)
            for leg in legs:
                if leg.answered:
                    leg.hangup()
                elif not leg.ended:
                    leg.cancel()

        self.tasks.create_task(stop())

    def interrupt(self, leg: Leg, source: MediaPort) -> bool:
        """``leg`` hears ``source`` instead of its bridged party (the other party still hears
        ``leg``) until :meth:`resume_audio`; False when ``leg`` is in no bridge."""
        for br in self.bridges:
            if leg in (br.a, br.b) and not br.closed:
                br.interrupt(leg, source)
                return True
        return False

    def resume_audio(self, leg: Leg) -> None:
        """Undo :meth:`interrupt`."""
        for br in self.bridges:
            if leg in (br.a, br.b):
                br.resume_audio(leg)

    def play(self, leg: Leg, source: MediaPort) -> Playback:
        """Play a media port (player, tone generator) to ``leg``; ``await p.done`` waits for its
        end, ``p.stop()`` stops it."""
        if leg.media is None:
            raise RuntimeError(f"{leg} has no media")
        p = Playback(self.graph, source, leg.media)
        self.playbacks.append(p)
        return p

    def record_leg(self, leg: Leg, path: str | Path, **kwargs: Any) -> Any:
        """Record what ``leg`` sends into ``path`` (``media.recorder.Recorder`` arguments in
        ``kwargs``); returns the recorder, closed when the call is released."""
        from media.recorder import Recorder

        if leg.media is None:
            raise RuntimeError(f"{leg} has no media")
        rec = Recorder(path, leg.media.sample_rate, **kwargs)
        link = self.graph.link(leg.media, rec, fill_silence=True)
        self.recordings.append((link, rec))
        return rec

    async def collect_dtmf(
        self, leg: Leg, *, max_digits: int = 1, timeout: float = 5.0, terminators: str = "#",
        inter_digit: float | None = None,
    ) -> str:
        """Collect up to ``max_digits`` digits from ``leg`` (stops at a terminator, which is not
        returned, after ``timeout`` for the first digit and ``inter_digit`` (default
        ``timeout``) between digits). Returns what was collected ('' when nothing came)."""
        loop = asyncio.get_running_loop()
        digits = ""
        deadline = loop.time() + timeout
        deferred: list[CallEvent] = []
        try:
            while len(digits) < max_digits:
                event = await self.next_event(max(0.0, deadline - loop.time()))
                if event is None:
                    break
                if isinstance(event, DtmfReceived) and event.leg is leg:
                    if event.digit in terminators:
                        break
                    digits += event.digit
                    deadline = loop.time() + (inter_digit if inter_digit is not None else timeout)
                    continue
                deferred.append(event)
                if event.leg is leg and isinstance(event, LegFailed | LegEnded):
                    break
        finally:
            self._defer(deferred)
        return digits

    async def wait_hangup(self, bridge: Bridge | None = None) -> Leg | None:
        """Run a connected call until one of its legs ends; follows hold/resume and codec
        changes on the way and relays digits between the bridged legs. Returns the leg that
        ended (None when the call was released otherwise). With a ``bridge``, only its legs
        end the call (a ring reminder's leg that ends does not)."""
        while not self.released:
            event = await self.next_event()
            if event is None:  # pragma: no cover
                continue
            if self.intercept is not None:
                verdict = self.intercept(event)
                if verdict is Intercept.END:
                    return event.leg
                if verdict is Intercept.TAKEN:
                    continue
            while bridge is not None and bridge.replaced_by is not None:
                bridge = bridge.replaced_by  # a transfer, a call pull swapped one side
            if isinstance(event, PickedUp):  # came too late: the ring was over
                with contextlib.suppress(Exception):
                    event.leg.hangup()
                continue
            if isinstance(event, LegEnded | LegFailed):
                if bridge is not None and event.leg not in (bridge.a, bridge.b):
                    continue
                return event.leg
            if isinstance(event, LegHeld | LegResumed):
                event.leg.held = isinstance(event, LegHeld)
                for br in self.bridges:
                    if event.leg in (br.a, br.b):
                        br.rebuild()
            elif isinstance(event, LegMediaChanged):
                for br in self.bridges:
                    if event.leg in (br.a, br.b):
                        br.rebuild()
            elif isinstance(event, DtmfReceived):
                if self.on_digit is not None:
                    self.on_digit(event.leg, event.digit)
                if self.digit_guard is not None and self.digit_guard(event.leg, event.digit):
                    continue
                # RFC 4733 packets between same-codec legs are relayed by the media core
                if bridge is not None and not bridge.closed and \
                        event.leg in (bridge.a, bridge.b) and not (
                            bridge.relays_dtmf and event.source == "rfc4733"):
                    other = bridge.other(event.leg)
                    with contextlib.suppress(Exception):
                        other.send_dtmf(event.digit)
        return None

    async def originate(self, targets: Sequence[Target], timeout: float) -> Leg | None:
        """A call the PBX places itself: ring ``targets`` (no caller hears anything meanwhile);
        the leg that answers becomes :attr:`caller` and is returned (None: nobody answered —
        ``record.status`` says why)."""
        if self.caller is not None:
            raise RuntimeError(f"{self} already has a caller")
        result = await self.ring(targets, timeout, early_media=False)
        if result.outcome is not RingOutcome.ANSWERED or result.leg is None:
            self.record.status = result.status
            return None
        self.caller = result.leg
        return result.leg

    def conference(self, sample_rate: int = 8000) -> Conference:
        """A conference port of this call: legs joined into it hear each other (released with
        the call)."""
        conf = Conference(self.graph.conference(sample_rate))
        self.conferences.append(conf)
        return conf

    def join(self, conference: Conference, leg: Leg) -> None:
        """Move ``leg`` into ``conference``: its two-party bridges close first."""
        if leg.media is None:
            raise RuntimeError(f"{leg} has no media")
        for br in [br for br in self.bridges if leg in (br.a, br.b)]:
            self.unbridge(br)
        conference.add(leg)

    def replace(self, bridge: Bridge, old: Leg, new: Leg) -> Bridge:
        """Swap one side of ``bridge``: ``old`` leaves (it stays up; hang it up or reuse it),
        ``new`` talks to the other side (transfer, pickup, call pull)."""
        if old not in (bridge.a, bridge.b):
            raise ValueError(f"{old} is not in that bridge")
        other = bridge.other(old)
        self.unbridge(bridge)
        if new.call is not self:
            self.adopt(new)
        bridge.replaced_by = self.bridge(other, new)
        return bridge.replaced_by

    def adopt(self, leg: Leg) -> None:
        """Move ``leg`` from its call into this one (its events come here from now on)."""
        previous = leg.call
        if previous is not None and previous is not self:
            if leg in previous.legs:
                previous.legs.remove(leg)
            if previous.caller is leg:
                previous.caller = None
        leg.call = self
        if leg not in self.legs:
            self.legs.append(leg)

    def hangup(self, cause: str = "normal") -> None:
        """End every leg (BYE/CANCEL/reject as each needs); see :meth:`release`."""
        for leg in self.legs:
            if not leg.ended:
                with contextlib.suppress(Exception):
                    leg.hangup(cause)

    def release(self, cause: str = "normal") -> None:
        """Hang up every leg, free all media, write the call record (idempotent)."""
        if self.released:
            return
        self.hangup(cause)
        self.released = True
        for br in self.bridges:
            br.close()
        for conf in self.conferences:
            conf.close()
        for p in self.playbacks:
            p.stop()
        for link, rec in self.recordings:
            link.close()
            with contextlib.suppress(Exception):
                rec.close()
        for leg in self.legs:
            with contextlib.suppress(Exception):
                leg.close_media()
        self.record.ended = time.time()
        if self.record.status is None:
            self.record.status = 500 if cause == "error" else 487
        self.record.cause = self.record.cause or cause
        self._notify_record()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


