"""Two-party media paths: a relay, a transcoding bridge, and a one-way link.

Theory of operation
-------------------
* :class:`RelayBridge` — two RTP legs with one codec: packets are forwarded without decoding,
  inside the packet hub for plain RTP (no Python per packet), in Python when a leg uses SRTP
  (unprotect → rewrite → protect). Payload types are mapped between the legs' numbers.
* :class:`Bridge` — any two media ports: every tick decode → resample → encode, both ways, with
  in-band DTMF muted towards a leg that gets digits as RFC 4733 events (:func:`inband_only`).
* :class:`Link` — one way, every tick: player → leg, leg → recorder.

Bridges and links are clock jobs (:mod:`media.clock`, phase BRIDGE); the relay needs no clock.
"""

from __future__ import annotations

import numpy as np

from media.clock import MediaClock, Phase
from media.dtmf import DtmfSuppressor
from media.port import MediaPort, samples_per_frame
from media.resample import RateAdapter
from media.session import RtpSession

__all__ = ["Bridge", "Link", "RelayBridge", "inband_only"]


class RelayBridge:
    """Two legs sharing a codec: packets are forwarded without decoding.

    Plain RTP legs are relayed inside the packet hub (no Python per packet); when a leg uses SRTP
    the relay runs in Python (unprotect → rewrite → protect). Payload types are mapped between the
    legs' negotiated numbers for the codec, CN and telephone-event; other payload types are dropped.
    """

    def __init__(self, a: RtpSession, b: RtpSession, *,
                 drop_events: tuple[bool, bool] = (False, False)) -> None:
        if a.format.name != b.format.name or a.format.clock_rate != b.format.clock_rate:
            raise ValueError("RelayBridge needs legs with the same codec; use Bridge")
        if any(drop_events) and (a.srtp is not None or b.srtp is not None):
            raise ValueError("an SRTP relay forwards every event; use Bridge to hold some back")
        self.a, self.b = a, b
        self.closed = False
        hub = a.engine.hub
        if a.srtp is None and b.srtp is None:
            # DTMF is relayed and also tapped: the PBX acts on digits (feature codes, IVR).
            # ``drop_events`` (a→b, b→a): that side's telephone-events are tapped only (the
            # PBX passes on what it wants itself: in-call codes).
            step = a.codec.timestamp_increment
            hub.set_relay(a.slot, b.slot, self._pt_map(a, b, drop_events[0]),
                          _tap(a.telephone_event_pt), step)
            hub.set_relay(b.slot, a.slot, self._pt_map(b, a, drop_events[1]),
                          _tap(b.telephone_event_pt), step)
        else:
            a.relay_peer, b.relay_peer = b, a

    @staticmethod
    def _pt_map(src: RtpSession, dst: RtpSession, drop_events: bool = False) -> bytes:
        m = bytearray(b"\xff" * 128)
        m[src.payload_type] = dst.payload_type
        pairs = [(src.cn_payload_type, dst.cn_payload_type)]
        if not drop_events:
            pairs.append((src.telephone_event_pt, dst.telephone_event_pt))
        for s_pt, d_pt in pairs:
            if s_pt is not None and d_pt is not None:
                m[s_pt] = d_pt
        return bytes(m)

    def close(self) -> None:
        """Stop relaying (the legs stay open)."""
        if self.closed:
            return
        self.closed = True
        hub = self.a.engine.hub
        for leg in (self.a, self.b):
            leg.relay_peer = None
            if not leg.closed:
                hub.set_relay(leg.slot, -1, None)


def _tap(pt: int | None) -> int:
    return -1 if pt is None else pt


class Link:
    """Each tick, move one frame from ``source`` to ``sink`` (resampling between their rates).

    Player → leg, leg → recorder, leg → leg one way. Silence (None) is passed on as zeros only
    when ``fill_silence`` is set (a recorder wants a continuous timeline; an RTP leg does not).
    """

    def __init__(
        self, clock: MediaClock, source: MediaPort, sink: MediaPort, *, fill_silence: bool = False
    ) -> None:
        self.source, self.sink = source, sink
        self.fill_silence = fill_silence
        self._rs = RateAdapter(source.sample_rate, sink.sample_rate)
        self._job = clock.add(self._tick, Phase.BRIDGE)

    def _tick(self, now: float) -> None:
        frame = self.source.get_frame()
        if frame is None:
            if not self.fill_silence:
                return
            frame = np.zeros(samples_per_frame(self.source.sample_rate), dtype=np.int16)
        self.sink.put_frame(self._rs(frame))

    def close(self) -> None:
        """Stop moving frames."""
        self._job.cancel()


def inband_only(source: object, sink: object) -> bool:
    """True when ``source`` (an RTP leg without telephone-event) can send digits only as tones
    while ``sink`` negotiated RFC 4733: the sink gets the digits as events (or SIP INFO), so the
    tones must not reach it as well (:class:`Bridge` mutes them)."""
    return (getattr(source, "telephone_event_pt", 0) is None
            and getattr(sink, "telephone_event_pt", None) is not None)


class Bridge:
    """A two-party transcoding bridge: decode → resample → encode, both ways, every tick.

    ``mute_dtmf`` = (a→b, b→a): replace in-band DTMF in that direction by silence
    (:class:`media.dtmf.DtmfSuppressor`, one frame of delay). By default a direction is muted
    when its source can only send tones and its sink gets digits as events
    (:func:`inband_only`); between two in-band legs the audio passes untouched.
    """

    def __init__(self, clock: MediaClock, a: MediaPort, b: MediaPort, *,
                 mute_dtmf: tuple[bool, bool] | None = None) -> None:
        self.a, self.b = a, b
        self._ab = RateAdapter(a.sample_rate, b.sample_rate)
        self._ba = RateAdapter(b.sample_rate, a.sample_rate)
        if mute_dtmf is None:
            mute_dtmf = (inband_only(a, b), inband_only(b, a))
        self.suppress_ab = DtmfSuppressor(a.sample_rate) if mute_dtmf[0] else None
        self.suppress_ba = DtmfSuppressor(b.sample_rate) if mute_dtmf[1] else None
        self._job = clock.add(self._tick, Phase.BRIDGE)

    def _tick(self, now: float) -> None:
        fa = self.a.get_frame()
        fb = self.b.get_frame()
        if self.suppress_ab is not None:
            fa = self.suppress_ab.process(fa)
        if self.suppress_ba is not None:
            fb = self.suppress_ba.process(fb)
        if fa is not None:
            self.b.put_frame(self._ab(fa))
        if fb is not None:
            self.a.put_frame(self._ba(fb))

    def close(self) -> None:
        """Stop bridging (the ports stay open)."""
        self._job.cancel()
