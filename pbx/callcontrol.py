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
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from media.aio import Bridge as TranscodingBridge
from media.aio import RelayBridge
from media.dtmf import DtmfDetector
from media.port import Frame, MediaPort
from sipcore.enums import FastEnum

log = logging.getLogger("pbx.callcontrol")

__all__ = [
    "LEG_TABLE",
    "Bridge",
    "Call",
    "CallEvent",
    "CallRecord",
    "DtmfReceived",
    "InbandDtmf",
    "Leg",
    "LegAnswered",
    "LegEnded",
    "LegFailed",
    "LegHeld",
    "LegInput",
    "LegMediaChanged",
    "LegProgressed",
    "LegResumed",
    "LegState",
    "MediaGraph",
    "Playback",
    "RingOutcome",
    "RingResult",
    "Target",
    "needs_inband_detection",
    "supervise",
]

#: RFC 3326 Reason for the targets that lose a parallel ring.
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


# ------------------------------------------------------------------------------- leg state table


class LegState(FastEnum):
    """Where a leg is in its life."""

    IDLE = "idle"  # created, nothing sent or answered yet
    CALLING = "calling"  # INVITE sent (outbound) or received and not answered yet (inbound)
    EARLY = "early"  # a provisional response went/came (ringing or early media)
    ANSWERED = "answered"  # 2xx: the leg is up
    ENDED = "ended"  # failed, cancelled, rejected or hung up


class LegInput(FastEnum):
    """What moves a leg."""

    START = "start"  # INVITE sent or received
    PROGRESS = "progress"  # 18x sent/received
    ANSWER = "answer"  # 2xx sent/received
    FAIL = "fail"  # a final non-2xx, CANCEL, timeout
    END = "end"  # BYE (either way) or a local release


LS, LI = LegState, LegInput
LEG_TABLE: dict[tuple[LegState, LegInput], LegState] = {
    (LS.IDLE, LI.START): LS.CALLING,
    (LS.IDLE, LI.FAIL): LS.ENDED,
    (LS.IDLE, LI.END): LS.ENDED,
    (LS.CALLING, LI.PROGRESS): LS.EARLY,
    (LS.CALLING, LI.ANSWER): LS.ANSWERED,
    (LS.CALLING, LI.FAIL): LS.ENDED,
    (LS.CALLING, LI.END): LS.ENDED,
    (LS.EARLY, LI.PROGRESS): LS.EARLY,
    (LS.EARLY, LI.ANSWER): LS.ANSWERED,
    (LS.EARLY, LI.FAIL): LS.ENDED,
    (LS.EARLY, LI.END): LS.ENDED,
    (LS.ANSWERED, LI.END): LS.ENDED,
}


def leg_transition(state: LegState, event: LegInput) -> LegState | None:
    """The next state, or None when ``event`` does not apply in ``state`` (it is ignored)."""
    return LEG_TABLE.get((state, event))


# -------------------------------------------------------------------------------------- events


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


CallEvent = (
    LegProgressed | LegAnswered | LegFailed | LegEnded | LegHeld | LegResumed | LegMediaChanged
    | DtmfReceived
)


# ------------------------------------------------------------------------------------ targets


@dataclass(frozen=True, slots=True)
class Target:
    """Something a leg can be created towards: a registered device (``contact`` is its opaque
    address, e.g. a SIP Contact URI), a user (all their devices), or an external number.

    ``kind`` is ``"device"``, ``"user"`` or ``"number"``; ``user`` the extension it belongs to;
    ``label`` what appears in logs."""

    kind: str
    user: str = ""
    contact: str = ""
    label: str = ""


# --------------------------------------------------------------------------------------- legs


class MediaGraph(Protocol):
    """What call control needs of the media engine (:class:`media.aio.MediaEngine` fits)."""

    def bridge(self, a: MediaPort, b: MediaPort) -> Any: ...
    def link(self, source: MediaPort, sink: MediaPort, *, fill_silence: bool = False) -> Any: ...


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

    def apply(self, event: LegInput) -> bool:
        """Move along :data:`LEG_TABLE`; False (state unchanged) when ``event`` does not apply."""
        nxt = leg_transition(self.state, event)
        if nxt is None:
            return False
        self.state = nxt
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

    def close_media(self) -> None:
        """Free the leg's media resources (ports)."""


# ------------------------------------------------------------------------------- media helpers


class _Watched:
    """A source port that reports when it runs dry (a non-looping player/tone finished)."""

    def __init__(self, port: MediaPort, done: asyncio.Future[None]) -> None:
        self.port = port
        self.sample_rate = port.sample_rate
        self._done = done

    def get_frame(self) -> Frame | None:
        frame = self.port.get_frame()
        if frame is None and not self._done.done():
            self._done.set_result(None)
        return frame

    def put_frame(self, frame: Frame) -> None:
        self.port.put_frame(frame)


class Playback:
    """A media port playing to a leg: :meth:`stop` ends it; ``await playback.done`` waits until
    the source runs dry."""

    def __init__(self, graph: MediaGraph, source: MediaPort, sink: MediaPort) -> None:
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self.source = source
        self._link = graph.link(_Watched(source, self.done), sink)

    def stop(self) -> None:
        """Stop playing (idempotent) and close the source when it can be closed."""
        self._link.close()
        close = getattr(self.source, "close", None) or getattr(self.source, "stop", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()
        if not self.done.done():
            self.done.set_result(None)


class InbandDtmf:
    """A sink port that detects in-band DTMF in what a leg sends and posts
    :class:`DtmfReceived` (``source="inband"``) for it."""

    def __init__(self, leg: Leg, sample_rate: int) -> None:
        self.leg = leg
        self.sample_rate = sample_rate
        self._detector = DtmfDetector(sample_rate)

    def get_frame(self) -> Frame | None:
        """A sink only."""
        return None

    def put_frame(self, frame: Frame) -> None:
        """Feed one frame; every recognised digit becomes a :class:`DtmfReceived`."""
        for found in self._detector.process(frame):
            self.leg.post(DtmfReceived(self.leg, found.digit, "inband"))


def needs_inband_detection(leg: Leg, other: Leg) -> bool:
    """True when ``leg`` can only send digits in-band (an RTP leg without telephone-event)
    while ``other`` negotiated RFC 4733: its digits must be detected and sent as events.
    (Towards a leg without telephone-event the tones simply pass in the audio.)"""
    return (leg.media is not None and other.media is not None
            and getattr(leg.media, "telephone_event_pt", 0) is None
            and getattr(other.media, "telephone_event_pt", None) is not None)


class Bridge:
    """Two legs talking to each other through the media core.

    Relay when both legs are RTP with one codec, transcoding otherwise (``graph.bridge``). While
    one side holds, the other hears ``hold_source()`` (music on hold) instead; :meth:`rebuild`
    follows a codec change.
    """

    def __init__(
        self,
        graph: MediaGraph,
        a: Leg,
        b: Leg,
        *,
        hold_source: Callable[[int], MediaPort] | None = None,
    ) -> None:
        self.graph = graph
        self.a, self.b = a, b
        self.hold_source = hold_source
        self._bridge: Any = None
        self._moh: dict[str, Playback] = {}
        self._taps: list[Any] = []
        self.closed = False
        #: True while the media core relays RFC 4733 events itself (same codec, both legs
        #: negotiated telephone-event): call control must not send digits again.
        self.relays_dtmf = False
        self.rebuild()

    def other(self, leg: Leg) -> Leg:
        """The leg on the other side of ``leg``."""
        return self.b if leg is self.a else self.a

    def rebuild(self) -> None:
        """(Re)wire the media for the legs' current codecs and hold states."""
        if self.closed:
            return
        self._unbridge()
        for p in self._moh.values():
            p.stop()
        self._moh.clear()
        held = [leg for leg in (self.a, self.b) if leg.held]
        if not held:
            if self.a.media is not None and self.b.media is not None:
                inband = [leg for leg in (self.a, self.b)
                          if needs_inband_detection(leg, self.other(leg))]
                clock = getattr(self.graph, "clock", None)
                if inband and clock is not None:
                    # the detector needs decoded audio, which a packet relay never produces
                    self._bridge = TranscodingBridge(clock, self.a.media, self.b.media)
                    for leg in inband:
                        assert leg.media is not None
                        self._taps.append(self.graph.link(
                            leg.media, InbandDtmf(leg, leg.media.sample_rate)))
                else:
                    self._bridge = self.graph.bridge(self.a.media, self.b.media)
                self.relays_dtmf = isinstance(self._bridge, RelayBridge) and all(
                    getattr(m, "telephone_event_pt", None) is not None
                    for m in (self.a.media, self.b.media))
            return
        # Whoever put the call on hold sends no media; the other party hears music on hold.
        for holder in held:
            listener = self.other(holder)
            if listener.held or listener.media is None or self.hold_source is None:
                continue
            self._moh[listener.id] = Playback(
                self.graph, self.hold_source(listener.media.sample_rate), listener.media)

    def _unbridge(self) -> None:
        self.relays_dtmf = False
        for tap in self._taps:
            tap.close()
        self._taps.clear()
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    @property
    def music_on_hold_to(self) -> list[str]:
        """Ids of the legs hearing music on hold now."""
        return list(self._moh)

    def close(self) -> None:
        """Disconnect the legs (they stay up)."""
        if self.closed:
            return
        self._unbridge()
        for p in self._moh.values():
            p.stop()
        self._moh.clear()
        self.closed = True


# ------------------------------------------------------------------------------------ records


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
    REJECTED = "rejected"  # a target declined (603)
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


def _tell(statuses: list[int], timed_out: bool) -> tuple[RingOutcome, int]:
    if any(s in _BUSY for s in statuses):
        return RingOutcome.BUSY, 486
    if timed_out:
        return RingOutcome.NO_ANSWER, 480
    if any(s in _DECLINED for s in statuses):
        return RingOutcome.REJECTED, 603
    # the lowest class is the most specific (RFC 3261 §16.7 picks a 4xx over 5xx/6xx)
    best = min(statuses, default=480, key=lambda s: (s // 100 if s != 408 else 4.9, s))
    return RingOutcome.UNREACHABLE, 480 if best in (408, 487) else best


# -------------------------------------------------------------------------------------- calls

_call_ids = itertools.count(1)

LegFactory = Callable[["Call", Target], Leg]


class Call:
    """One call: the caller leg, the legs created for it, its media and its events.

    ``graph`` is the media engine, ``leg_factory(call, target)`` makes an outbound leg (the
    B2BUA's), ``hold_source(rate)`` the music-on-hold port, ``ringback_source(rate)`` our own
    ringback tone. ``on_record`` is the call-history hook: called with the :class:`CallRecord`
    when the call starts, is answered and ends.
    """

    def __init__(
        self,
        caller: Leg,
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
        caller.call = self
        self.legs: list[Leg] = [caller]
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
        self.released = False
        #: Digits seen outside collect_dtmf (features' on_dtmf reads them).
        self.dtmf_log: list[str] = []

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
                log.exception("call.record_hook_failed")

    # -- operations ------------------------------------------------------------------------------

    def add_leg(self, target: Target) -> Leg:
        """Create (but do not start) an outbound leg towards ``target``."""
        leg = self.leg_factory(self, target)
        leg.call = self
        self.legs.append(leg)
        return leg

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
        legs: list[Leg] = []
        for t in targets:
            leg = self.add_leg(t)
            try:
                leg.start()
            except Exception:
                log.exception("call.leg_start_failed", extra={"target": t.label})
                leg.apply(LegInput.FAIL)
                leg.final_status = 500
                continue
            legs.append(leg)
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
                    outcome, status = _tell(statuses, timed_out=True)
                    return RingResult(outcome, status=status, statuses=statuses)
                event = await self.next_event(remaining)
                if event is None:
                    continue
                if event.leg is caller:
                    if isinstance(event, LegFailed | LegEnded):
                        for leg in pending():
                            leg.cancel()
                        return RingResult(RingOutcome.CALLER_GONE, status=487, statuses=statuses)
                    self._side_event(event)
                    continue
                if event.leg not in outstanding:
                    continue
                if isinstance(event, LegProgressed):
                    if event.early_media and early is None and caller.media is not None:
                        if ringback is not None:
                            ringback.stop()
                            ringback = None
                        early = Bridge(self.graph, caller, event.leg)
                    if not caller_progressed and caller.state is not LegState.ANSWERED:
                        caller_progressed = True
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
                elif isinstance(event, LegEnded):
                    outstanding.discard(event.leg)
                    statuses.append(480)
            outcome, status = _tell(statuses, timed_out=False)
            return RingResult(outcome, status=status, statuses=statuses)
        finally:
            if ringback is not None:
                ringback.stop()
            if early is not None:
                early.close()

    def _side_event(self, event: CallEvent) -> None:
        if isinstance(event, DtmfReceived):
            self.dtmf_log.append(event.digit)

    def _defer(self, events: list[CallEvent]) -> None:
        """Give events an operation did not consume back to the next one, in order."""
        self._backlog.extendleft(reversed(events))

    async def answer(self, leg: Leg | None = None) -> bool:
        """Answer ``leg`` (default: the caller) and wait for its ACK; False when it went away."""
        leg = leg or self.caller
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
        if not self.caller.ended and not self.caller.answered:
            self.caller.reject(status, reason)

    def bridge(self, a: Leg, b: Leg) -> Bridge:
        """Connect two answered legs' media (relay or transcoding, music on hold while held)."""
        br = Bridge(self.graph, a, b, hold_source=self.hold_source)
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
        ended (None when the call was released otherwise)."""
        while not self.released:
            event = await self.next_event()
            if event is None:  # pragma: no cover
                continue
            if isinstance(event, LegEnded | LegFailed):
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
                self.dtmf_log.append(event.digit)
                # RFC 4733 packets between same-codec legs are relayed by the media core
                if bridge is not None and event.leg in (bridge.a, bridge.b) and not (
                        bridge.relays_dtmf and event.source == "rfc4733"):
                    other = bridge.other(event.leg)
                    with contextlib.suppress(Exception):
                        other.send_dtmf(event.digit)
        return None

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


async def supervise(call: Call, script: Callable[[Call], Awaitable[None]],
                    on_error: Callable[[Call, BaseException], None] | None = None) -> None:
    """Run ``script(call)`` with a per-call :class:`asyncio.TaskGroup` as ``call.tasks``.

    Whatever happens — normal end, an exception in the script or one of its tasks, cancellation
    at shutdown — the call is released cleanly (:meth:`Call.release`) and nothing escapes: one
    call's failure never touches another. Cancellation is re-raised after the release.
    """
    call._notify_record()
    cause = "normal"
    try:
        async with asyncio.TaskGroup() as tg:
            call.tasks = tg
            await script(call)
    except asyncio.CancelledError:
        cause = "shutdown"
        call.release(cause)
        raise
    except Exception as exc:  # the supervisor's whole point: nothing escapes
        cause = "error"
        if on_error is not None:
            on_error(call, exc)
        else:
            log.exception("call.failed")
    finally:
        call.tasks = None
        call.release(cause)
        # The call is over: late signalling on its legs (a BYE's 200, retransmissions) is
        # dropped by Leg.post. Detaching breaks the call <-> leg reference cycles, so a call's
        # few hundred objects are freed by reference counting when the B2BUA lets go of them
        # instead of piling up for the cycle collector (long pauses at hundreds of calls/s).
        for leg in call.legs:
            leg.call = None
