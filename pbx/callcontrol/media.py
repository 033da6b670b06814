"""Media helpers of call control: bridges between legs, playback to a leg, in-band DTMF taps.

Call control talks to the media engine only through :class:`MediaGraph`: it links ports and
bridges two legs' ports; it never sees RTP, codecs or the media clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection
from typing import Protocol

from media.dtmf import DtmfDetector
from media.port import Frame, MediaPort
from pbx.callcontrol.events import DtmfReceived
from pbx.callcontrol.legs import Leg


class MediaLink(Protocol):
    """A connection in the media graph (a one-way link, a bridge): it lasts until closed."""

    def close(self) -> None: ...


class MediaBridge(MediaLink, Protocol):
    """Two ports talking both ways. ``relays_events``: RFC 4733 telephone-events pass through
    untouched (a packet relay between legs that both negotiated them) — call control must not
    send the digits again."""

    @property
    def relays_events(self) -> bool: ...


class MediaConference(MediaLink, Protocol):
    """An N-party mix: every member hears the sum of the others (mix-minus)."""

    def add(self, port: MediaPort) -> None: ...
    def remove(self, port: MediaPort) -> None: ...
    def mute(self, port: MediaPort, muted: bool) -> None: ...


class MediaGraph(Protocol):
    """What call control needs of the media engine, and all it sees of it: ports connected by
    links, bridges and conferences. No RTP, codecs or media clock (:mod:`pbx.mediagraph`
    adapts :class:`media.aio.MediaEngine`; tests use a fake)."""

    def bridge(self, a: MediaPort, b: MediaPort, *, decode: bool = False,
               mute_dtmf: tuple[bool, bool] | None = None) -> MediaBridge:
        """Connect two ports both ways (``decode``: through decoded audio even when a packet
        relay would do, so a tap can hear it; ``mute_dtmf``: (a→b, b→a) in-band DTMF replaced
        by silence in that direction, implies ``decode``)."""
        ...

    def link(self, source: MediaPort, sink: MediaPort, *,
             fill_silence: bool = False) -> MediaLink:
        """One way: ``sink`` gets what ``source`` produces, every 20 ms tick."""
        ...

    def conference(self, sample_rate: int) -> MediaConference:
        """A new, empty conference."""
        ...


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
        guarded: Collection[Leg] = (),
    ) -> None:
        self.graph = graph
        self.a, self.b = a, b
        #: legs whose digits call control passes on itself (in-call codes): their RFC 4733
        #: events are never relayed, their tones are muted where the audio is decoded (a leg
        #: without telephone-event always is); the collection is live
        self.guarded = guarded
        self.hold_source = hold_source
        self._bridge: MediaBridge | None = None
        self._moh: dict[str, Playback] = {}
        self._taps: list[MediaLink] = []
        #: leg id -> what it hears instead of the other party for a moment (call-waiting tone)
        self._interrupts: dict[str, MediaPort] = {}
        self._interrupt_links: list[MediaLink] = []
        self.closed = False
        #: The bridge that took this one's place (:meth:`pbx.callcontrol.Call.replace`: a
        #: transfer); a connected call's loop follows it.
        self.replaced_by: Bridge | None = None
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
        if self._interrupts and not held:
            self._wire_interrupted()
            return
        if not held:
            if self.a.media is not None and self.b.media is not None:
                guarded = [leg in self.guarded for leg in (self.a, self.b)]
                inband = [leg for leg, watched in zip((self.a, self.b), guarded, strict=True)
                          if needs_inband_detection(leg, self.other(leg)) or (
                              watched and getattr(leg.media, "telephone_event_pt", 0) is None)]
                # the detector needs decoded audio, which a packet relay never produces
                if any(guarded):
                    self._bridge = self.graph.bridge(self.a.media, self.b.media,
                                                     decode=bool(inband),
                                                     mute_dtmf=(guarded[0], guarded[1]))
                else:
                    self._bridge = self.graph.bridge(self.a.media, self.b.media,
                                                     decode=bool(inband))
                for leg in inband:
                    assert leg.media is not None
                    self._taps.append(self.graph.link(
                        leg.media, InbandDtmf(leg, leg.media.sample_rate)))
                self.relays_dtmf = self._bridge.relays_events
            return
        # Whoever put the call on hold sends no media; the other party hears music on hold.
        for holder in held:
            listener = self.other(holder)
            if listener.held or listener.media is None or self.hold_source is None:
                continue
            self._moh[listener.id] = Playback(
                self.graph, self.hold_source(listener.media.sample_rate), listener.media)

    def interrupt(self, listener: Leg, source: MediaPort) -> None:
        """``listener`` hears ``source`` instead of the other party until :meth:`resume_audio`
        (the call-waiting tone); the other party keeps hearing ``listener``."""
        self._interrupts[listener.id] = source
        self.rebuild()

    def resume_audio(self, listener: Leg) -> None:
        """End :meth:`interrupt`: ``listener`` hears the other party again."""
        if self._interrupts.pop(listener.id, None) is not None:
            self.rebuild()

    def _wire_interrupted(self) -> None:
        # one-way links through decoded audio: a packet relay cannot leave one direction out
        for leg in (self.a, self.b):
            other = self.other(leg)
            if leg.media is None:
                continue
            source = self._interrupts.get(leg.id)
            if source is not None:
                self._interrupt_links.append(self.graph.link(source, leg.media,
                                                             fill_silence=True))
            elif other.media is not None:
                self._interrupt_links.append(self.graph.link(other.media, leg.media))

    def _unbridge(self) -> None:
        for link in self._interrupt_links:
            link.close()
        self._interrupt_links.clear()
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
        self._interrupts.clear()
        self._unbridge()
        for p in self._moh.values():
            p.stop()
        self._moh.clear()
        self.closed = True



class Conference:
    """A conference port of a call (:meth:`pbx.callcontrol.Call.conference`): the legs in it
    hear each other."""

    def __init__(self, port: MediaConference) -> None:
        self._port = port
        self.members: list[Leg] = []
        self.closed = False

    def add(self, leg: Leg) -> None:
        """Let ``leg`` hear the others and be heard (idempotent)."""
        if leg in self.members or leg.media is None:
            return
        self._port.add(leg.media)
        self.members.append(leg)

    def mute(self, leg: Leg, muted: bool = True) -> None:
        """Stop (or resume) mixing what ``leg`` says; it keeps hearing the others."""
        if leg in self.members and leg.media is not None:
            self._port.mute(leg.media, muted)

    def remove(self, leg: Leg) -> None:
        """Take ``leg`` out (it stays up)."""
        if leg in self.members:
            self.members.remove(leg)
            if leg.media is not None:
                self._port.remove(leg.media)

    def close(self) -> None:
        """End the mix (idempotent; the legs stay up)."""
        if not self.closed:
            self.closed = True
            self.members.clear()
            self._port.close()
