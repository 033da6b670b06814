"""The media engine as call control sees it: :class:`EngineGraph` adapts
:class:`media.aio.MediaEngine` to :class:`pbx.callcontrol.MediaGraph`.

Call control knows ports, links, bridges and conferences; which bridge the engine builds (a packet
relay between same-codec RTP legs, a transcoding bridge otherwise) and its media clock stay here.
"""

from __future__ import annotations

from media.aio import Bridge as TranscodingBridge
from media.aio import Conference, Link, MediaEngine, RelayBridge, RtpSession, inband_only
from media.port import MediaPort

__all__ = ["EngineBridge", "EngineConference", "EngineGraph"]


class EngineBridge:
    """A relay or transcoding bridge of the engine, with what call control asks of it."""

    __slots__ = ("_bridge", "relays_events")

    def __init__(self, bridge: RelayBridge | TranscodingBridge, relays_events: bool) -> None:
        self._bridge = bridge
        self.relays_events = relays_events

    def close(self) -> None:
        """Disconnect the two ports."""
        self._bridge.close()


class EngineConference:
    """An engine conference; members join with the normal mode, unmuted."""

    __slots__ = ("_conference",)

    def __init__(self, conference: Conference) -> None:
        self._conference = conference

    def add(self, port: MediaPort) -> None:
        """Let ``port`` hear the others and be heard."""
        self._conference.add(port)

    def remove(self, port: MediaPort) -> None:
        """Take ``port`` out of the mix."""
        self._conference.remove(port)

    def mute(self, port: MediaPort, muted: bool) -> None:
        """Stop (or resume) mixing what ``port`` says."""
        self._conference.mute(port, muted)

    def close(self) -> None:
        """End the conference (its members stay up)."""
        self._conference.close()


class EngineGraph:
    """:class:`pbx.callcontrol.MediaGraph` over a :class:`MediaEngine`."""

    __slots__ = ("engine",)

    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine

    def bridge(self, a: MediaPort, b: MediaPort, *, decode: bool = False,
               mute_dtmf: tuple[bool, bool] | None = None) -> EngineBridge:
        """A packet relay when both are RTP legs of one codec (and ``decode`` is not asked),
        a transcoding bridge otherwise. ``mute_dtmf`` (a→b, b→a) keeps that side's digits
        from the other: a relay then drops (and only taps) its telephone-events — when the
        side negotiated them and neither leg runs SRTP — else the audio is transcoded with its
        in-band DTMF muted (and wherever the far side gets RFC 4733 events)."""
        if mute_dtmf is not None:
            if (not decode and isinstance(a, RtpSession) and isinstance(b, RtpSession)
                    and _relay_holding_events(a, b, mute_dtmf)):
                # every held-back side sends RFC 4733 events: a relay that only taps them
                return EngineBridge(RelayBridge(a, b, drop_events=mute_dtmf), False)
            mute = (mute_dtmf[0] or inband_only(a, b), mute_dtmf[1] or inband_only(b, a))
            return EngineBridge(TranscodingBridge(self.engine.clock, a, b, mute_dtmf=mute),
                                False)
        if decode:
            return EngineBridge(TranscodingBridge(self.engine.clock, a, b), False)
        made = self.engine.bridge(a, b)
        relays = isinstance(made, RelayBridge) and all(
            getattr(m, "telephone_event_pt", None) is not None for m in (a, b))
        return EngineBridge(made, relays)

    def link(self, source: MediaPort, sink: MediaPort, *, fill_silence: bool = False) -> Link:
        """One-way, every tick."""
        return self.engine.link(source, sink, fill_silence=fill_silence)

    def conference(self, sample_rate: int) -> EngineConference:
        """A new conference mixed at ``sample_rate``."""
        return EngineConference(self.engine.conference(sample_rate))


def _relay_holding_events(a: RtpSession, b: RtpSession, held: tuple[bool, bool]) -> bool:
    """Can a relay keep ``held`` sides' digits back? Plain RTP legs of one codec, each held
    side with telephone-event (its digits come as events the relay can drop)."""
    if (a.format.name, a.format.clock_rate) != (b.format.name, b.format.clock_rate):
        return False
    if a.srtp is not None or b.srtp is not None:
        return False
    return all(not h or s.telephone_event_pt is not None for h, s in zip(held, (a, b), strict=True))
