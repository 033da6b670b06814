"""Conferences: N-party mix-minus for every conference in one kernel call per tick.

Theory of operation
-------------------
A :class:`Conference` is a set of media ports (RTP legs, players, recorders, WebRTC legs) in one
conference of a ``media.mixer.Mixer``; each participant hears the sum of the others, not itself.
The engine's :class:`ConferenceMixers` job runs once per tick (phase MIX) over every conference of
every sample rate: per mixer one plan (rebuilt only when membership changes), this tick's G.711
payloads written into the kernel's input rows in one numpy assignment, ONE ``Mixer.mix()`` call,
and the fused G.711 mixes sent through the packet hub's ``send_rtp_rows`` (headers built in C).
Ports that are not fused G.711 legs are resampled to the conference rate and back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from media.mixer import Codec as MixCodec
from media.mixer import Mixer, Mode
from media.port import MediaPort
from media.resample import RateAdapter
from media.session import RtpSession

if TYPE_CHECKING:
    from media.engine import MediaEngine

__all__ = ["Conference", "ConferenceMixers", "Mode"]


class _Member:
    __slots__ = ("fused", "port", "row", "rs_in", "rs_out")

    def __init__(self, port: MediaPort, row: int, fused: bool, rate: int) -> None:
        self.port = port
        self.row = row
        self.fused = fused  # G.711 payloads straight into/out of the mixer kernel
        self.rs_in = RateAdapter(port.sample_rate, rate)
        self.rs_out = RateAdapter(rate, port.sample_rate)


class Conference:
    """An N-party conference; created by :meth:`~media.engine.MediaEngine.conference`.

    Each participant hears the sum of the others, not itself (``media.mixer``'s mix-minus).
    All conferences of one sample rate are mixed by ONE kernel call per tick. G.711 RTP legs at
    8 kHz go through the kernel's fused G.711 path (payloads in and out, no Python codec work);
    other ports are resampled to the conference rate and back.
    """

    def __init__(self, engine: MediaEngine, mixer: Mixer) -> None:
        self.engine = engine
        self.mixer = mixer
        self.sample_rate = mixer.sample_rate
        self.id = mixer.add_conference()
        self._members: dict[int, _Member] = {}
        self.closed = False

    @property
    def participants(self) -> list[MediaPort]:
        """The ports in this conference."""
        return [m.port for m in self._members.values()]

    def add(self, port: MediaPort, *, mode: Mode = Mode.NORMAL, muted: bool = False) -> None:
        """Join a participant (an RTP leg, a player, a WebRTC leg…)."""
        if id(port) in self._members:
            return
        fused = (
            isinstance(port, RtpSession)
            and port.format.name in ("PCMU", "PCMA")
            and port.srtp is None
            and self.sample_rate == 8000
        )
        codec = MixCodec.LINEAR
        if fused:
            assert isinstance(port, RtpSession)
            codec = MixCodec.PCMU if port.format.name == "PCMU" else MixCodec.PCMA
        row = self.mixer.add_participant(self.id, mode=mode, codec=codec, muted=muted)
        self._members[id(port)] = _Member(port, row, fused, self.sample_rate)
        self.engine._mixers.changed = True

    def remove(self, port: MediaPort) -> None:
        """Leave the conference."""
        m = self._members.pop(id(port), None)
        if m is not None:
            self.mixer.remove_participant(m.row)
            self.engine._mixers.changed = True

    def mute(self, port: MediaPort, muted: bool = True) -> None:
        """Stop (or resume) mixing what ``port`` says; it keeps hearing the others."""
        self.mixer.mute(self._members[id(port)].row, muted)

    def set_mode(self, port: MediaPort, mode: Mode) -> None:
        """NORMAL, LISTEN_ONLY (e.g. a coach/monitor) or TALK_ONLY (an announcement)."""
        self.mixer.set_mode(self._members[id(port)].row, mode)

    def close(self) -> None:
        """Remove every participant and the conference."""
        if self.closed:
            return
        self.closed = True
        self.mixer.remove_conference(self.id)
        self._members.clear()
        self.engine._mixers.remove(self)


class _Plan:
    """One mixer's per-tick work, rebuilt only when membership changes."""

    def __init__(self, mixer: Mixer, members: list[_Member]) -> None:
        self.mixer = mixer
        self.fused = [m for m in members if m.fused]
        self.linear = [m for m in members if not m.fused]
        out = [m for m in self.fused if m.port.sending]  # type: ignore[attr-defined]
        self.out_slots = np.array([m.port.slot for m in out], dtype=np.int32)  # type: ignore[attr-defined]
        self.out_rows = np.array([m.row for m in out], dtype=np.int64)
        self.out_pts = np.array([m.port.payload_type for m in out], dtype=np.uint8)  # type: ignore[attr-defined]


class ConferenceMixers:
    """The engine's mixer job (phase MIX): per sample rate one ``Mixer``, one kernel call per tick.

    Fused G.711 rows never meet a Python codec: this tick's jitter-buffer payloads are written
    into the kernel's input rows in one numpy assignment, and the mixes leave through the packet
    hub's ``send_rtp_rows`` (headers built and sent in C).
    """

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.by_rate: dict[int, Mixer] = {}
        self.conferences: set[Conference] = set()
        self.changed = True
        self._plans: list[_Plan] = []

    def mixer(self, rate: int) -> Mixer:
        m = self.by_rate.get(rate)
        if m is None:
            m = self.by_rate[rate] = Mixer(rate, capacity=64, conferences=16)
        return m

    def remove(self, conf: Conference) -> None:
        self.conferences.discard(conf)
        self.changed = True

    def _replan(self) -> None:
        members: dict[int, list[_Member]] = {}
        mixers: dict[int, Mixer] = {}
        for c in self.conferences:
            members.setdefault(id(c.mixer), []).extend(c._members.values())
            mixers[id(c.mixer)] = c.mixer
        self._plans = [_Plan(mixers[k], v) for k, v in members.items() if v]
        self.changed = False

    def tick(self, now: float) -> None:
        if self.changed:
            self._replan()
        for plan in self._plans:
            mixer = plan.mixer
            rows: list[int] = []
            payloads: list[memoryview | bytes] = []
            for m in plan.fused:
                payload = m.port._tick_payload()  # type: ignore[attr-defined]
                if payload is not None and len(payload) == 160:
                    rows.append(m.row)
                    payloads.append(payload)
            if rows:
                block = np.frombuffer(b"".join(payloads), dtype=np.uint8).reshape(len(rows), 160)
                mixer.payload_in[rows] = block
                mixer.mark_fresh(rows)
            for m in plan.linear:
                frame = m.port.get_frame()
                if frame is not None:
                    mixer.put_frame(m.row, m.rs_in(frame))
            mixer.mix()
            if len(plan.out_slots):
                self.hub.send_rtp_rows(
                    plan.out_slots, mixer.payload_out, plan.out_rows, plan.out_pts, 160
                )
            for m in plan.linear:
                frame = mixer.get_frame(m.row)
                if frame is not None:
                    m.port.put_frame(m.rs_out(frame))
