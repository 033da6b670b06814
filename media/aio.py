"""RTP/RTCP sockets, sessions, the 20 ms media clock, bridges and conferences (asyncio adapter).

Theory of operation
-------------------
A :class:`MediaEngine` owns an even-port range on one local address. Each call leg gets an
:class:`RtpSession`: an RTP socket on an even port and an RTCP socket on the next odd port (or one
socket with RFC 5761 rtcp-mux). All sockets sit behind one :class:`~media.batchio.PacketHub`
(Cython ``recvmmsg`` kernel, pure-Python reference) whose single fd is what the event loop watches.
The hub validates headers, applies the anti-bleed source rule (SECURITY.md "Media") and relays
same-codec calls without Python ever seeing the packets.

One :class:`MediaClock` drives the graph every 20 ms on absolute deadlines against
``loop.time()``: its phases run jitter buffers → bridges/mixers → encoders → RTP out, players and
recorders. Every session is a media port (``get_frame``/``put_frame`` at its codec's sample rate,
``media.port``), so a transcoding :class:`Bridge`, a :class:`Link` (player→leg, leg→recorder) and
a :class:`Conference` treat RTP legs, players, recorders and WebRTC legs alike. All conferences are
mixed in one kernel call per tick.

Security order for an incoming packet: SRTP authentication (bad tag or replay → dropped and
counted) → header validation → source rule → payload. No per-packet logging: counters only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol, cast

import numpy as np

from media import batchio as _batchio_ref
from media._accel import load
from media.port import PTIME, Frame, MediaPort, samples_per_frame

_hubmod: Any = load("media._batchio", "media.batchio")

__all__ = [
    "Bridge",
    "Conference",
    "Link",
    "MediaClock",
    "MediaEngine",
    "Phase",
    "RelayBridge",
    "RtpSession",
    "SrtpKeys",
]

# -------------------------------------------------------------------------------------------------
# Codecs: the `media.codecs` registry when present, else a tiny internal one (G.711 tables, PyAV).
# -------------------------------------------------------------------------------------------------


class Codec(Protocol):
    """What a session needs from a codec object."""

    name: str
    sample_rate: int  # PCM rate of frames
    clock_rate: int  # RTP timestamp rate

    def encode(self, frame: Frame) -> bytes: ...

    def decode(self, payload: bytes) -> Frame: ...


def _ulaw_tables() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    # ITU-T G.711 μ-law: decode table by formula, encode table by exhaustive nearest code.
    codes = np.arange(256, dtype=np.int32)
    u = ~codes & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    dec = np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)
    x = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    seg = np.floor(np.log2(mag)).astype(np.int32) - 7
    mant = (mag >> (seg + 3)) & 0x0F
    enc_signed = (((seg << 4) | mant) ^ sign) & 0xFF
    enc = np.empty(65536, dtype=np.uint8)
    enc[x.astype(np.uint16)] = enc_signed
    return enc, dec


def _alaw_tables() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    codes = np.arange(256, dtype=np.int32)
    a = codes ^ 0x55
    seg = (a & 0x70) >> 4
    mant = a & 0x0F
    t = np.where(seg == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(seg - 1, 0))
    dec = np.where(a & 0x80, t, -t).astype(np.int16)
    x = np.arange(-32768, 32768, dtype=np.int32)
    # Nearest code per input by searching the sorted decode values (exact for G.711 A-law).
    order = np.argsort(dec.astype(np.int32), kind="stable")
    vals = dec.astype(np.int32)[order]
    idx = np.clip(np.searchsorted(vals, x), 1, 255)
    lo, hi = vals[idx - 1], vals[idx]
    pick = np.where(np.abs(x - lo) <= np.abs(hi - x), idx - 1, idx)
    enc = np.empty(65536, dtype=np.uint8)
    enc[x.astype(np.uint16)] = order[pick].astype(np.uint8)
    return enc, dec


class _G711:
    clock_rate = 8000
    sample_rate = 8000
    _tables: dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}

    def __init__(self, name: str) -> None:
        self.name = name
        if name not in self._tables:
            self._tables[name] = _ulaw_tables() if name == "PCMU" else _alaw_tables()
        self._enc, self._dec = self._tables[name]

    def encode(self, frame: Frame) -> bytes:
        return bytes(self._enc[frame.view(np.uint16)])

    def decode(self, payload: bytes) -> Frame:
        out: Frame = self._dec[np.frombuffer(payload, dtype=np.uint8)]
        return out


class _AvCodec:
    """G.722 or Opus through PyAV (libavcodec) — used until ``media.codecs`` provides them."""

    def __init__(self, name: str) -> None:
        import av

        self.name = name
        if name == "G722":
            self.sample_rate, self.clock_rate, lib = 16000, 8000, "g722"
        else:
            self.sample_rate, self.clock_rate, lib = 48000, 48000, "libopus"
        self._av = av
        self._enc: Any = cast(Any, av.CodecContext).create(lib, "w")
        self._enc.sample_rate = self.sample_rate
        self._enc.format = "s16"
        self._enc.layout = "mono"
        if name == "OPUS":
            self._enc.bit_rate = 32000
        self._enc.open()
        dec_name = "g722" if name == "G722" else "libopus"
        self._dec: Any = cast(Any, av.CodecContext).create(dec_name, "r")
        self._dec.sample_rate = self.sample_rate
        self._dec.layout = "mono"
        self._dec.format = "s16"
        self._dec.open()
        self._pts = 0
        self._n = samples_per_frame(self.sample_rate)

    def encode(self, frame: Frame) -> bytes:
        f = self._av.AudioFrame.from_ndarray(
            frame.reshape(1, -1).astype(np.int16), format="s16", layout="mono"
        )
        f.sample_rate = self.sample_rate
        f.pts = self._pts
        self._pts += len(frame)
        return b"".join(bytes(p) for p in self._enc.encode(f))

    def decode(self, payload: bytes) -> Frame:
        pkt = self._av.Packet(payload)
        chunks = [fr.to_ndarray().reshape(-1) for fr in self._dec.decode(pkt)]
        if not chunks:
            return np.zeros(self._n, dtype=np.int16)
        data = np.concatenate(chunks)
        if data.dtype != np.int16:
            data = (np.clip(data.astype(np.float32), -1, 1) * 32767).astype(np.int16)
        out: Frame = data[: self._n] if len(data) >= self._n else np.pad(data, (0, self._n - len(data)))
        return out


def make_codec(name: str) -> Codec:
    """A codec object for an SDP encoding name (PCMU, PCMA, G722, OPUS)."""
    key = name.upper()
    if key in ("PCMU", "PCMA"):
        return _G711(key)
    if key in ("G722", "OPUS"):
        return _AvCodec(key)
    raise ValueError(f"unsupported codec {name!r}")


def _resample(frame: Frame, src: int, dst: int) -> Frame:
    """Band-limited enough for speech: linear interpolation between the two 20 ms grids."""
    if src == dst:
        return frame
    n = samples_per_frame(dst)
    x = np.arange(n, dtype=np.float64) * (src / dst)
    out: Frame = np.interp(x, np.arange(len(frame)), frame.astype(np.float64)).astype(np.int16)
    return out


# -------------------------------------------------------------------------------------------------
# Jitter buffer: fixed prefetch, seq-ordered, one 20 ms frame per packet.
# -------------------------------------------------------------------------------------------------


class _JitterBuffer:
    """Reorders by sequence number and releases one payload per tick after ``prefetch`` ticks."""

    def __init__(self, prefetch: int = 3, capacity: int = 16) -> None:
        self.prefetch = prefetch
        self.capacity = capacity
        self._buf: dict[int, bytes] = {}
        self._next = -1
        self._playing = False
        self.late = 0
        self.lost = 0

    def put(self, seq: int, payload: bytes) -> None:
        if self._next >= 0 and ((seq - self._next) & 0xFFFF) >= 0x8000:
            self.late += 1  # behind the playout point: too late to play
            return
        if self._next < 0:
            self._next = seq
        self._buf[seq] = payload
        if len(self._buf) > self.capacity:
            # Far behind (e.g. a burst after a stall): skip to the oldest buffered packet.
            self._next = min(self._buf, key=lambda s: (s - self._next) & 0xFFFF)
            while len(self._buf) > self.prefetch:
                self._buf.pop(self._next, None)
                self._next = (self._next + 1) & 0xFFFF

    def get(self) -> bytes | None:
        if not self._playing:
            if len(self._buf) < self.prefetch:
                return None
            self._playing = True
        if not self._buf:
            self._playing = False  # underrun: refill before playing again
            return None
        payload = self._buf.pop(self._next, None)
        if payload is None:
            self.lost += 1
        self._next = (self._next + 1) & 0xFFFF
        return payload


# -------------------------------------------------------------------------------------------------
# The media clock
# -------------------------------------------------------------------------------------------------


class Phase(IntEnum):
    """Order of work inside one tick."""

    INPUT = 0  # sources that must be pulled first (e.g. WebRTC frame queues)
    BRIDGE = 1  # bridges, links, conferences: pull frames, push frames (encoders → RTP out)
    MIX = 2  # the one mixer call for all conferences
    OUTPUT = 3  # recorders flushing, RTCP reports


@dataclass(slots=True)
class _Job:
    phase: Phase
    callback: Callable[[float], None]
    active: bool = True

    def cancel(self) -> None:
        self.active = False


class MediaClock:
    """One 20 ms tick for the whole media graph, on absolute deadlines against ``loop.time()``.

    A late wake-up runs the missed ticks back to back (so jitter buffers and RTP timestamps keep
    real time), but never more than ``max_catchup`` at once: after a longer stall the clock skips
    ahead rather than burst a second of audio. ``overruns`` counts ticks that started more than
    one period late; ``skipped`` counts ticks dropped by skipping ahead.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, ptime: float = PTIME, max_catchup: int = 3):
        self.loop = loop
        self.ptime = ptime
        self.max_catchup = max_catchup
        self._jobs: list[_Job] = []
        self._handle: asyncio.TimerHandle | None = None
        self._t0 = 0.0
        self._n = 0
        self.ticks = 0
        self.overruns = 0
        self.skipped = 0
        self.busy = 0.0  # seconds spent inside ticks
        self.max_lateness = 0.0
        self.tick_times: list[float] = []  # recent tick durations (bench); bounded
        self.now = 0.0  # deadline of the tick being run (media time for timestamps)
        self.on_error: Callable[[BaseException], None] | None = None

    def add(self, callback: Callable[[float], None], phase: Phase = Phase.BRIDGE) -> _Job:
        """Run ``callback(now)`` every tick in ``phase``; ``.cancel()`` the result to stop."""
        job = _Job(phase, callback)
        self._jobs.append(job)
        self._jobs.sort(key=lambda j: j.phase)
        return job

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        """Start ticking at the next period boundary."""
        if self._handle is None:
            self._t0 = self.loop.time() + self.ptime
            self._n = 0
            self._handle = self.loop.call_at(self._t0, self._wake)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _wake(self) -> None:
        now = self.loop.time()
        due = int((now - self._t0) / self.ptime) - self._n + 1
        lateness = now - (self._t0 + self._n * self.ptime)
        self.max_lateness = max(self.max_lateness, lateness)
        if due > self.max_catchup:
            self.skipped += due - self.max_catchup
            self.overruns += due - self.max_catchup
            self._n += due - self.max_catchup
            due = self.max_catchup
        if lateness > self.ptime:
            self.overruns += 1
        for _ in range(max(due, 1)):
            self._tick(self._t0 + self._n * self.ptime)
            self._n += 1
        if self._jobs and any(not j.active for j in self._jobs):
            self._jobs = [j for j in self._jobs if j.active]
        if self._handle is not None:
            self._handle = self.loop.call_at(self._t0 + self._n * self.ptime, self._wake)

    def _tick(self, deadline: float) -> None:
        start = time.perf_counter()
        self.now = deadline
        for job in self._jobs:
            if job.active:
                try:
                    job.callback(deadline)
                except Exception as exc:  # one broken port must not stop the clock
                    job.active = False
                    if self.on_error is not None:
                        self.on_error(exc)
        spent = time.perf_counter() - start
        self.busy += spent
        self.ticks += 1
        if len(self.tick_times) < 100_000:
            self.tick_times.append(spent)


# -------------------------------------------------------------------------------------------------
# SRTP hook (media.srtp provides the implementation; this is the shape the session needs)
# -------------------------------------------------------------------------------------------------


class SrtpKeys(Protocol):
    """A pair of SRTP contexts for one leg (see :class:`media.srtp.SrtpSession`)."""

    def protect(self, packet: bytes) -> bytes: ...

    def unprotect(self, packet: bytes) -> bytes | None: ...

    def protect_rtcp(self, packet: bytes) -> bytes: ...

    def unprotect_rtcp(self, packet: bytes) -> bytes | None: ...


# -------------------------------------------------------------------------------------------------
# RTCP (RFC 3550 §6.4): just enough to send SR/RR and validate what comes in
# -------------------------------------------------------------------------------------------------

_NTP_EPOCH = 2208988800
_RTP_HDR = struct.Struct("!BBHII")
_SR = struct.Struct("!BBHIIIIII")
_RB = struct.Struct("!IIIIII")


def _rtcp_valid(data: bytes) -> bool:
    """RFC 3550 §A.2 compound validity: version 2, every length inside, at least 8 bytes."""
    n = len(data)
    if n < 8 or data[0] >> 6 != 2 or not 192 <= data[1] <= 223:
        return False
    off = 0
    while off < n:
        if n - off < 4 or data[off] >> 6 != 2:
            return False
        off += 4 * (((data[off + 2] << 8) | data[off + 3]) + 1)
    return off == n


# -------------------------------------------------------------------------------------------------
# RTP session: one call leg
# -------------------------------------------------------------------------------------------------


class RtpSession:
    """One call leg's RTP/RTCP endpoint, and a media port at its codec's sample rate.

    Created by :meth:`MediaEngine.create_session`. ``get_frame()`` pulls the jitter buffer and
    decodes (None while nothing is playable); ``put_frame()`` encodes and sends one RTP packet.
    While the session is a leg of a :class:`RelayBridge` its packets bypass both.
    """

    def __init__(
        self,
        engine: MediaEngine,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket | None,
        *,
        payload_type: int,
        codec: str,
        telephone_event_pt: int | None,
        srtp: SrtpKeys | None,
        jitter_prefetch: int,
    ) -> None:
        self.engine = engine
        self._rtp_sock = rtp_sock
        self._rtcp_sock = rtcp_sock
        hub = engine.hub
        self._hub = hub
        self.slot: int = hub.add(rtp_sock, raw=srtp is not None, rtcp_mux=rtcp_sock is None)
        self.rtcp_slot: int | None = (
            hub.add(rtcp_sock, raw=True) if rtcp_sock is not None else None
        )
        self.local_addr: tuple[str, int] = rtp_sock.getsockname()[:2]
        self.rtcp_port = self.local_addr[1] if rtcp_sock is None else rtcp_sock.getsockname()[1]
        self.srtp = srtp
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self._seq = int.from_bytes(os.urandom(2), "big")
        self._ts = int.from_bytes(os.urandom(4), "big")
        self.telephone_event_pt = telephone_event_pt
        self.remote: tuple[str, int] | None = None
        self.remote_rtcp: tuple[str, int] | None = None
        self._rtcp_learned: tuple[str, int] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.relay_peer: RtpSession | None = None  # Python-path relay (SRTP legs)
        self._jitter = _JitterBuffer(prefetch=jitter_prefetch)
        self._dtmf_last_ts = -1
        self._marker = True
        self._last_tx = 0.0
        self.closed = False
        # receive statistics (RFC 3550 §A.3, §A.8)
        self._rx_ssrc = 0
        self._rx_base = -1
        self._rx_max = 0
        self._rx_cycles = 0
        self._rx_count = 0
        self._rx_prior_expected = 0
        self._rx_prior_count = 0
        self._jitter_est = 0.0
        self._transit = 0.0
        self._lsr = 0
        self._lsr_at = 0.0
        self.counters: dict[str, int] = {
            "srtp_auth": 0,
            "rtcp_malformed": 0,
            "rtcp_source": 0,
            "rtcp_rx": 0,
            "rtcp_tx": 0,
            "unknown_pt": 0,
            "dtmf_rx": 0,
        }
        self.set_codec(payload_type, codec)

    # -- configuration ---------------------------------------------------------------------------

    @property
    def local_port(self) -> int:
        return self.local_addr[1]

    def set_codec(self, payload_type: int, codec: str | Codec) -> None:
        """Use ``codec`` (name or object) under ``payload_type`` for both directions."""
        self.payload_type = payload_type
        self.codec: Codec = make_codec(codec) if isinstance(codec, str) else codec
        self.sample_rate: int = self.codec.sample_rate
        self._ts_step = self.codec.clock_rate // 50
        self._hub.set_ssrc(self.slot, self.ssrc, self._seq, self._ts)

    def set_remote(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        """The signalled address from SDP (``c=``/``m=``, ``a=rtcp``); sends go there."""
        self.remote = (host, port)
        self._hub.set_remote(self.slot, self.remote)
        if self.rtcp_slot is not None:
            self.remote_rtcp = (host, rtcp_port if rtcp_port is not None else port + 1)
            self._hub.set_remote(self.rtcp_slot, self.remote_rtcp)

    @property
    def send_address(self) -> tuple[str, int] | None:
        """Where RTP goes now: the validated source (symmetric RTP) or the signalled address."""
        addr: tuple[str, int] | None = self._hub.remote(self.slot)
        return addr

    # -- media port ------------------------------------------------------------------------------

    def get_frame(self) -> Frame | None:
        """Next decoded frame from the jitter buffer (None: nothing to play this tick)."""
        payload = self._jitter.get()
        if payload is None:
            return None
        return self.codec.decode(payload)

    def put_frame(self, frame: Frame) -> None:
        """Encode one 20 ms frame and send it as one RTP packet."""
        self._send_payload(self.payload_type, self.codec.encode(frame), self._ts_step)

    def _send_payload(self, pt: int, payload: bytes, step: int, marker: bool = False) -> None:
        if self.closed:
            return
        seq, ts = self._hub.last_sent(self.slot)
        clock = self.engine._clock
        now = clock.now if clock is not None else 0.0
        if not self._marker:
            seq = (seq + 1) & 0xFFFF
            # The timestamp follows media time, so silence (no put_frame) advances it too.
            gap = max(1, round((now - self._last_tx) / PTIME)) if now > self._last_tx else 1
            ts = (ts + step * gap) & 0xFFFFFFFF
            marker = marker or gap > 1
        self._last_tx = now
        m = 0x80 if (self._marker or marker) else 0
        self._marker = False
        pkt = _RTP_HDR.pack(0x80, m | pt, seq, ts, self.ssrc) + payload
        if self.srtp is not None:
            self._hub.set_ssrc(self.slot, self.ssrc, seq, ts)
            pkt = self.srtp.protect(pkt)
            self._hub.send(self.slot, pkt)
        else:
            self._hub.send_rtp(self.slot, pkt)

    def send_dtmf(self, digit: str, duration_ms: int = 100, volume: int = 10) -> None:
        """Send one RFC 4733 telephone-event now (three end packets, same timestamp)."""
        if self.telephone_event_pt is None:
            raise ValueError("no telephone-event payload type negotiated")
        event = "0123456789*#ABCD".index(digit.upper())
        seq, ts = self._hub.last_sent(self.slot)
        dur = duration_ms * self.codec.clock_rate // 1000
        for i in range(3):
            payload = struct.pack("!BBH", event, 0x80 | volume, dur)
            pkt = _RTP_HDR.pack(
                0x80, (0x80 if i == 0 else 0) | self.telephone_event_pt,
                (seq + 1 + i) & 0xFFFF, ts, self.ssrc,
            ) + payload
            if self.srtp is not None:
                self._hub.set_ssrc(self.slot, self.ssrc, (seq + 1 + i) & 0xFFFF, ts)
                self._hub.send(self.slot, self.srtp.protect(pkt))
            else:
                self._hub.send_rtp(self.slot, pkt)

    # -- receive path (called by the engine) -----------------------------------------------------

    def _on_packet(self, slot: int, data: bytes, addr: tuple[str, int] | None, now: float) -> None:
        if slot == self.rtcp_slot or (addr is not None and _batchio_ref.is_rtcp(data)):
            self._on_rtcp(data, addr, now)
            return
        if addr is not None:  # raw slot: SRTP first, then the hub's header + source checks
            if self.srtp is not None:
                plain = self.srtp.unprotect(data)
                if plain is None:
                    self.counters["srtp_auth"] += 1
                    return
                data = plain
            if not self._hub.accept(self.slot, data, addr, now):
                return
        peer = self.relay_peer
        if peer is not None:
            peer._relay_in(data)
            return
        self._on_rtp(data, now)

    def _relay_in(self, data: bytes) -> None:
        # Python-path relay (used when a leg has SRTP): rewrite to our stream, protect, send.
        seq, ts = self._hub.last_sent(self.slot)
        buf = bytearray(data)
        struct.pack_into("!HII", buf, 2, (seq + 1) & 0xFFFF, (ts + self._ts_step) & 0xFFFFFFFF,
                         self.ssrc)
        if self.srtp is not None:
            self._hub.set_ssrc(self.slot, self.ssrc, seq + 1, ts + self._ts_step)
            self._hub.send(self.slot, self.srtp.protect(bytes(buf)))
        else:
            self._hub.send_rtp(self.slot, buf)

    def _on_rtp(self, data: bytes, now: float) -> None:
        b1 = data[1]
        pt = b1 & 0x7F
        seq = (data[2] << 8) | data[3]
        hl = _batchio_ref.rtp_header_length(data)
        end = len(data) - (data[-1] if data[0] & 0x20 else 0)
        payload = data[hl:end]
        ts = int.from_bytes(data[4:8], "big")
        self._rx_stats(int.from_bytes(data[8:12], "big"), seq, ts, now)
        if pt == self.payload_type:
            self._jitter.put(seq, payload)
        elif pt == self.telephone_event_pt:
            if len(payload) >= 4 and payload[1] & 0x80 and ts != self._dtmf_last_ts:
                self._dtmf_last_ts = ts
                self.counters["dtmf_rx"] += 1
                if payload[0] < 16 and self.on_dtmf is not None:
                    self.on_dtmf("0123456789*#ABCD"[payload[0]])
        else:
            self.counters["unknown_pt"] += 1

    def _rx_stats(self, ssrc: int, seq: int, ts: int, now: float) -> None:
        if ssrc != self._rx_ssrc or self._rx_base < 0:
            self._rx_ssrc = ssrc
            self._rx_base = seq
            self._rx_max = seq
            self._rx_cycles = 0
            self._rx_count = 0
            self._rx_prior_expected = self._rx_prior_count = 0
            self._transit = now * self.codec.clock_rate - ts
        self._rx_count += 1
        delta = (seq - self._rx_max) & 0xFFFF
        if 0 < delta < 0x8000:
            if seq < self._rx_max:
                self._rx_cycles += 0x10000
            self._rx_max = seq
        transit = now * self.codec.clock_rate - ts
        d = abs(transit - self._transit)
        self._transit = transit
        if d < 1e6:
            self._jitter_est += (d - self._jitter_est) / 16.0

    def _on_rtcp(self, data: bytes, addr: tuple[str, int] | None, now: float) -> None:
        if self.srtp is not None:
            plain = self.srtp.unprotect_rtcp(data)
            if plain is None:
                self.counters["srtp_auth"] += 1
                return
            data = plain
        if not _rtcp_valid(data):
            self.counters["rtcp_malformed"] += 1
            return
        rtp_remote = self.send_address
        if addr is None or rtp_remote is None or addr[0] != rtp_remote[0]:
            # RTCP only from the host our validated RTP comes from (or the signalled host).
            self.counters["rtcp_source"] += 1
            return
        if self.rtcp_slot is not None and addr != self._rtcp_learned:
            self._rtcp_learned = addr
            self._hub.set_remote(self.rtcp_slot, addr)
        self.counters["rtcp_rx"] += 1
        if data[1] == 200 and len(data) >= 20:  # SR: remember the middle 32 bits of its NTP time
            self._lsr = int.from_bytes(data[10:14], "big")
            self._lsr_at = now

    def send_rtcp_report(self, now: float) -> None:
        """Send one SR (we sent RTP since the last report) or RR, with a report block if any."""
        if self.closed:
            return
        c = self._hub.counters(self.slot)
        blocks = b""
        rc = 0
        if self._rx_base >= 0:
            ext_max = self._rx_cycles + self._rx_max
            expected = ext_max - self._rx_base + 1
            lost = max(0, expected - self._rx_count)
            exp_int = expected - self._rx_prior_expected
            rx_int = self._rx_count - self._rx_prior_count
            self._rx_prior_expected, self._rx_prior_count = expected, self._rx_count
            lost_int = exp_int - rx_int
            frac = (lost_int << 8) // exp_int if exp_int > 0 and lost_int > 0 else 0
            dlsr = int((now - self._lsr_at) * 65536) if self._lsr else 0
            blocks = _RB.pack(
                self._rx_ssrc, (min(frac, 255) << 24) | min(lost, 0x7FFFFF), ext_max & 0xFFFFFFFF,
                int(self._jitter_est), self._lsr, dlsr & 0xFFFFFFFF,
            )
            rc = 1
        if c["tx_packets"]:
            wall = time.time() + _NTP_EPOCH
            sec = int(wall)
            frac_s = int((wall - sec) * (1 << 32)) & 0xFFFFFFFF
            _, ts = self._hub.last_sent(self.slot)
            length = (28 + len(blocks)) // 4 - 1
            pkt = _SR.pack(
                0x80 | rc, 200, length, self.ssrc, sec & 0xFFFFFFFF, frac_s, ts,
                c["tx_packets"] & 0xFFFFFFFF, c["tx_octets"] & 0xFFFFFFFF,
            ) + blocks
        else:
            pkt = struct.pack("!BBHI", 0x80 | rc, 201, (8 + len(blocks)) // 4 - 1, self.ssrc) + blocks
        if self.srtp is not None:
            pkt = self.srtp.protect_rtcp(pkt)
        slot = self.rtcp_slot if self.rtcp_slot is not None else self.slot
        if self._hub.send(slot, pkt):
            self.counters["rtcp_tx"] += 1

    # -- lifecycle -------------------------------------------------------------------------------

    def statistics(self) -> dict[str, int | float]:
        """Counters of this leg: hub packet counters, drops by reason, RTCP, jitter buffer."""
        out: dict[str, int | float] = dict(self._hub.counters(self.slot))
        out.update(self.counters)
        if self.rtcp_slot is not None:
            rc = self._hub.counters(self.rtcp_slot)
            out["rtcp_rx_packets"] = rc["rx_packets"]
        out["jitter_lost"] = self._jitter.lost
        out["jitter_late"] = self._jitter.late
        out["interarrival_jitter"] = self._jitter_est
        return out

    def close(self) -> None:
        """Release the ports; any bridge using this leg stops forwarding to it."""
        if self.closed:
            return
        self.closed = True
        self.engine._release(self)
        self._hub.remove(self.slot)
        self._rtp_sock.close()
        if self.rtcp_slot is not None and self._rtcp_sock is not None:
            self._hub.remove(self.rtcp_slot)
            self._rtcp_sock.close()


# -------------------------------------------------------------------------------------------------
# Bridges, links, conferences
# -------------------------------------------------------------------------------------------------


class RelayBridge:
    """Two legs sharing a codec: packets are forwarded without decoding.

    Plain RTP legs are relayed inside the packet hub (no Python per packet); when a leg uses SRTP
    the relay runs in Python (unprotect → rewrite → protect). Payload types are mapped between the
    legs' negotiated numbers for the codec and telephone-event; other payload types are dropped.
    """

    def __init__(self, a: RtpSession, b: RtpSession) -> None:
        if a.codec.name != b.codec.name:
            raise ValueError("RelayBridge needs legs with the same codec; use Bridge")
        self.a, self.b = a, b
        self.closed = False
        hub = a.engine.hub
        if a.srtp is None and b.srtp is None:
            hub.set_relay(a.slot, b.slot, self._pt_map(a, b))
            hub.set_relay(b.slot, a.slot, self._pt_map(b, a))
        else:
            a.relay_peer, b.relay_peer = b, a

    @staticmethod
    def _pt_map(src: RtpSession, dst: RtpSession) -> bytes:
        m = bytearray(b"\xff" * 128)
        m[src.payload_type] = dst.payload_type
        if src.telephone_event_pt is not None and dst.telephone_event_pt is not None:
            m[src.telephone_event_pt] = dst.telephone_event_pt
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
        self._job = clock.add(self._tick, Phase.BRIDGE)

    def _tick(self, now: float) -> None:
        frame = self.source.get_frame()
        if frame is None:
            if not self.fill_silence:
                return
            frame = np.zeros(samples_per_frame(self.source.sample_rate), dtype=np.int16)
        self.sink.put_frame(_resample(frame, self.source.sample_rate, self.sink.sample_rate))

    def close(self) -> None:
        self._job.cancel()


class Bridge:
    """A two-party transcoding bridge: decode → resample → encode, both ways, every tick."""

    def __init__(self, clock: MediaClock, a: MediaPort, b: MediaPort) -> None:
        self.a, self.b = a, b
        self._job = clock.add(self._tick, Phase.BRIDGE)

    def _tick(self, now: float) -> None:
        fa = self.a.get_frame()
        fb = self.b.get_frame()
        if fa is not None:
            self.b.put_frame(_resample(fa, self.a.sample_rate, self.b.sample_rate))
        if fb is not None:
            self.a.put_frame(_resample(fb, self.b.sample_rate, self.a.sample_rate))

    def close(self) -> None:
        self._job.cancel()


class _MixerKernel(Protocol):
    def mix(
        self, frames: np.ndarray[Any, Any], groups: np.ndarray[Any, Any], n_groups: int
    ) -> np.ndarray[Any, Any]: ...


class _NumpyMixer:
    """All conferences in one call: ``out[i] = clip(sum(frames of i's group) - frames[i])``."""

    def mix(
        self, frames: np.ndarray[Any, Any], groups: np.ndarray[Any, Any], n_groups: int
    ) -> np.ndarray[Any, Any]:
        wide = frames.astype(np.int32)
        sums = np.zeros((n_groups, frames.shape[1]), dtype=np.int32)
        np.add.at(sums, groups, wide)
        out: np.ndarray[Any, Any] = np.clip(sums[groups] - wide, -32768, 32767).astype(np.int16)
        return out


class Conference:
    """An N-party conference port set; created by :meth:`MediaEngine.conference`.

    Each participant hears the sum of the others, not itself. Mixing happens at
    ``sample_rate``; participants at other rates are resampled on the way in and out.
    """

    def __init__(self, engine: MediaEngine, sample_rate: int) -> None:
        self.engine = engine
        self.sample_rate = sample_rate
        self.participants: list[MediaPort] = []
        self.closed = False

    def add(self, port: MediaPort) -> None:
        """Join a participant (an RTP leg, a player, a WebRTC leg…)."""
        if port not in self.participants:
            self.participants.append(port)

    def remove(self, port: MediaPort) -> None:
        with contextlib.suppress(ValueError):
            self.participants.remove(port)

    def close(self) -> None:
        self.closed = True
        self.participants.clear()
        self.engine._conferences.discard(self)


class _ConferenceMixer:
    """The engine's one mixer job: gathers every conference's frames, mixes once, delivers."""

    def __init__(self, kernel: _MixerKernel) -> None:
        self.kernel = kernel
        self.conferences: set[Conference] = set()

    def tick(self, now: float) -> None:
        confs = [c for c in self.conferences if len(c.participants) > 1]
        if not confs:
            return
        by_rate: dict[int, list[Conference]] = {}
        for c in confs:
            by_rate.setdefault(c.sample_rate, []).append(c)
        for rate, group in by_rate.items():
            n = samples_per_frame(rate)
            ports: list[MediaPort] = []
            gid: list[int] = []
            for g, c in enumerate(group):
                ports.extend(c.participants)
                gid.extend([g] * len(c.participants))
            frames = np.zeros((len(ports), n), dtype=np.int16)
            for i, p in enumerate(ports):
                f = p.get_frame()
                if f is not None:
                    frames[i] = _resample(f, p.sample_rate, rate)
            out = self.kernel.mix(frames, np.asarray(gid, dtype=np.intp), len(group))
            for i, p in enumerate(ports):
                p.put_frame(_resample(out[i], rate, p.sample_rate))


# -------------------------------------------------------------------------------------------------
# The engine
# -------------------------------------------------------------------------------------------------


class MediaEngine:
    """RTP port allocator, packet hub, media clock, and factory for sessions and bridges.

    Use as ``async with MediaEngine(host="127.0.0.1", port_range=(30000, 30999)) as engine:`` or
    call :meth:`start` / :meth:`close`. Everything runs on the current event loop.
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port_range: tuple[int, int] = (30000, 32999),
        *,
        rtcp_mux: bool = False,
        rtcp_interval: float = 5.0,
        jitter_prefetch: int = 3,
    ) -> None:
        lo, hi = port_range
        if lo % 2:
            lo += 1
        if hi <= lo:
            raise ValueError("port range must hold at least one even/odd pair")
        self.host = host
        self.port_range = (lo, hi)
        self.rtcp_mux = rtcp_mux
        self.rtcp_interval = rtcp_interval
        self.jitter_prefetch = jitter_prefetch
        self.hub: Any = _hubmod.PacketHub()
        self._sessions: dict[int, RtpSession] = {}
        self._used: set[int] = set()
        self._next_port = lo + 2 * (int.from_bytes(os.urandom(2), "big") % ((hi - lo) // 2 + 1))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: MediaClock | None = None
        self._mixer = _ConferenceMixer(_NumpyMixer())
        self._conferences = self._mixer.conferences
        self._rtcp_due: dict[RtpSession, float] = {}
        self.counters = {"port_exhausted": 0, "reader_errors": 0}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Watch the hub on the running loop and start the media clock."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._clock = MediaClock(loop)
        self._clock.add(self._mixer.tick, Phase.MIX)
        self._clock.add(self._rtcp_tick, Phase.OUTPUT)
        loop.add_reader(self.hub.fileno(), self._on_readable)
        self._clock.start()

    async def close(self) -> None:
        """Stop the clock, close every session and the hub."""
        if self._clock is not None:
            self._clock.stop()
        if self._loop is not None:
            self._loop.remove_reader(self.hub.fileno())
        for s in list(self._sessions.values()):
            s.close()
        self.hub.close()

    async def __aenter__(self) -> MediaEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def clock(self) -> MediaClock:
        """The media clock (after :meth:`start`)."""
        if self._clock is None:
            raise RuntimeError("MediaEngine.start() first")
        return self._clock

    # -- ports and sessions ----------------------------------------------------------------------

    def _bind_pair(self, mux: bool) -> tuple[socket.socket, socket.socket | None]:
        lo, hi = self.port_range
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        pairs = (hi - lo) // 2 + 1
        for _ in range(pairs):
            port = self._next_port
            self._next_port = port + 2 if port + 2 <= hi - (0 if mux else 1) else lo
            if port in self._used or (not mux and port + 1 > hi):
                continue
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtcp: socket.socket | None = None
            try:
                rtp.bind((self.host, port))
                if not mux:
                    rtcp = socket.socket(family, socket.SOCK_DGRAM)
                    rtcp.bind((self.host, port + 1))
            except OSError as exc:
                rtp.close()
                if rtcp is not None:
                    rtcp.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            for s in (rtp, rtcp):
                if s is not None:
                    s.setblocking(False)
                    with contextlib.suppress(OSError):
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            self._used.add(port)
            return rtp, rtcp
        self.counters["port_exhausted"] += 1
        raise OSError(errno.EADDRINUSE, "RTP port range exhausted")

    def create_session(
        self,
        *,
        payload_type: int = 0,
        codec: str = "PCMU",
        remote: tuple[str, int] | None = None,
        remote_rtcp_port: int | None = None,
        telephone_event_pt: int | None = 101,
        srtp: SrtpKeys | None = None,
        rtcp_mux: bool | None = None,
    ) -> RtpSession:
        """Allocate an even RTP port (+ odd RTCP port unless rtcp-mux) and make a session.

        ``payload_type``/``codec`` and ``telephone_event_pt`` come from the negotiated SDP;
        ``remote`` is the signalled ``c=``/``m=`` address (it can also be set later with
        :meth:`RtpSession.set_remote`); ``srtp`` is a :class:`media.srtp.SrtpSession`.
        """
        mux = self.rtcp_mux if rtcp_mux is None else rtcp_mux
        rtp, rtcp = self._bind_pair(mux)
        sess = RtpSession(
            self, rtp, rtcp, payload_type=payload_type, codec=codec,
            telephone_event_pt=telephone_event_pt, srtp=srtp,
            jitter_prefetch=self.jitter_prefetch,
        )
        self._sessions[sess.slot] = sess
        if sess.rtcp_slot is not None:
            self._sessions[sess.rtcp_slot] = sess
        if remote is not None:
            sess.set_remote(remote[0], remote[1], remote_rtcp_port)
        now = self._loop.time() if self._loop is not None else 0.0
        self._rtcp_due[sess] = now + self.rtcp_interval * (0.5 + _rand01())
        return sess

    def _release(self, sess: RtpSession) -> None:
        self._sessions.pop(sess.slot, None)
        if sess.rtcp_slot is not None:
            self._sessions.pop(sess.rtcp_slot, None)
        self._used.discard(sess.local_port)
        self._rtcp_due.pop(sess, None)

    @property
    def sessions(self) -> list[RtpSession]:
        return list({id(s): s for s in self._sessions.values()}.values())

    # -- graph -----------------------------------------------------------------------------------

    def relay(self, a: RtpSession, b: RtpSession) -> RelayBridge:
        """Forward packets between two same-codec legs without decoding."""
        return RelayBridge(a, b)

    def bridge(self, a: MediaPort, b: MediaPort) -> RelayBridge | Bridge:
        """Connect two ports: a relay when both are RTP legs with one codec, else transcoding."""
        if (
            isinstance(a, RtpSession)
            and isinstance(b, RtpSession)
            and a.codec.name == b.codec.name
        ):
            return RelayBridge(a, b)
        return Bridge(self.clock, a, b)

    def link(self, source: MediaPort, sink: MediaPort, *, fill_silence: bool = False) -> Link:
        """One-way: every tick ``sink.put_frame(source.get_frame())`` (player→leg, leg→recorder)."""
        return Link(self.clock, source, sink, fill_silence=fill_silence)

    def conference(self, sample_rate: int = 8000) -> Conference:
        """A new conference mixed (with all others) in the engine's one mixer call per tick."""
        conf = Conference(self, sample_rate)
        self._conferences.add(conf)
        return conf

    def set_mixer(self, kernel: _MixerKernel) -> None:
        """Use another mixer kernel (same contract as the numpy reference)."""
        self._mixer.kernel = kernel

    # -- I/O -------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        sessions = self._sessions
        for slot, data, addr in self.hub.poll(now):
            sess = sessions.get(slot)
            if sess is not None:
                try:
                    sess._on_packet(slot, data, addr, now)
                except Exception:  # a bad packet must never take the reader down
                    self.counters["reader_errors"] += 1

    def _rtcp_tick(self, now: float) -> None:
        due = self._rtcp_due
        for sess, t in list(due.items()):
            if now >= t:
                due[sess] = now + self.rtcp_interval * (0.5 + _rand01())
                sess.send_rtcp_report(now)

    def statistics(self) -> dict[str, Any]:
        """Engine-wide figures: sessions, clock ticks/overruns, summed packet counters."""
        totals: dict[str, int] = {}
        for s in self.sessions:
            for k, v in self.hub.counters(s.slot).items():
                totals[k] = totals.get(k, 0) + v
            for k, v in s.counters.items():
                totals[k] = totals.get(k, 0) + v
        clock = self._clock
        return {
            "sessions": len(self.sessions),
            "conferences": len(self._conferences),
            "ticks": clock.ticks if clock else 0,
            "overruns": clock.overruns if clock else 0,
            "skipped": clock.skipped if clock else 0,
            **totals,
            **self.counters,
        }


def _rand01() -> float:
    return int.from_bytes(os.urandom(2), "big") / 65536.0


def iter_ports(sessions: Iterable[RtpSession]) -> list[int]:
    """Local RTP ports of ``sessions`` (for SDP and tests)."""
    return [s.local_port for s in sessions]
