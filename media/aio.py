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
import errno
import fcntl
import os
import random
import socket
import struct
import termios
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import numpy as np

from media import batchio as _batchio_ref
from media import rtcp as _rtcp
from media._accel import load
from media.codecs import Codec, PayloadFormat, UnsupportedCodec, create_codec
from media.dtmf import DtmfReceiver, DtmfSender, DtmfSuppressor
from media.errors import MediaParseError
from media.jitter import JitterBuffer
from media.mixer import Codec as MixCodec
from media.mixer import Mixer, Mode
from media.port import PTIME, Frame, MediaPort, samples_per_frame
from media.resample import Resampler
from media.rtp import RtpError, RtpPacket
from media.stats import ReceiverStatistics

_hubmod: Any = load("media._batchio", "media.batchio")

__all__ = [
    "Bridge",
    "ClockJob",
    "Conference",
    "Link",
    "MediaClock",
    "MediaEngine",
    "Mode",
    "Phase",
    "RelayBridge",
    "RtpSession",
    "SrtpKeys",
    "inband_only",
    "make_codec",
    "payload_format",
]

# -------------------------------------------------------------------------------------------------
# Codecs come from media.codecs; names from SDP map to their standard RTP clock rates.
# -------------------------------------------------------------------------------------------------

_CLOCK_RATES = {"PCMU": (8000, 1), "PCMA": (8000, 1), "G722": (8000, 1), "OPUS": (48000, 2)}


def payload_format(name: str, payload_type: int | None = None) -> PayloadFormat:
    """The :class:`~media.codecs.PayloadFormat` for an SDP encoding name (PCMU, PCMA, G722, OPUS).

    ``payload_type`` defaults to the static number (0, 8, 9) or 111 for Opus.
    """
    key = name.upper()
    if key not in _CLOCK_RATES:
        raise UnsupportedCodec(name)
    rate, channels = _CLOCK_RATES[key]
    pt = payload_type if payload_type is not None else {"PCMU": 0, "PCMA": 8, "G722": 9}.get(
        key, 111
    )
    return PayloadFormat(pt, "opus" if key == "OPUS" else key, rate, channels)


def make_codec(codec: str | PayloadFormat, payload_type: int | None = None) -> Codec:
    """A fresh codec object (``media.codecs``) for an encoding name or a payload format."""
    fmt = codec if isinstance(codec, PayloadFormat) else payload_format(codec, payload_type)
    return create_codec(fmt)


class _Resample:
    """A stateful resampler that is a no-op when the rates agree."""

    __slots__ = ("_r",)

    def __init__(self, src: int, dst: int) -> None:
        self._r = Resampler(src, dst) if src != dst else None

    def __call__(self, frame: Frame) -> Frame:
        if self._r is None:
            return frame
        return self._r.process(frame)


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
class ClockJob:
    """A callback the clock runs every tick; ``cancel()`` stops it."""

    phase: Phase
    callback: Callable[[float], None]
    active: bool = True

    def cancel(self) -> None:
        self.active = False
        # The callback is usually a bound method of the job's owner, which holds the job: drop
        # it so the owner is freed by reference counting, not left to the cycle collector.
        self.callback = _no_tick


def _no_tick(now: float) -> None:
    """The callback of a cancelled :class:`ClockJob`."""


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
        self._jobs: list[ClockJob] = []
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

    def add(self, callback: Callable[[float], None], phase: Phase = Phase.BRIDGE) -> ClockJob:
        """Run ``callback(now)`` every tick in ``phase``; ``.cancel()`` the result to stop."""
        job = ClockJob(phase, callback)
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
        # ticks whose deadline has passed (the epsilon keeps an exact deadline from rounding down)
        due = int((now - self._t0) / self.ptime + 1e-9) - self._n + 1
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
# RTP session: one call leg
# -------------------------------------------------------------------------------------------------

_RTP_HDR = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_DIRECTIONS = {"sendrecv": (True, True), "sendonly": (True, False), "recvonly": (False, True),
               "inactive": (False, False)}


class RtpSession:
    """One call leg's RTP/RTCP endpoint, and a media port at its codec's sample rate.

    Created by :meth:`MediaEngine.create_session`. Per tick, ``get_frame()`` pulls the jitter
    buffer once (later calls in the same tick return the same frame) and decodes or conceals;
    ``put_frame()`` encodes and sends one RTP packet. ``get_payload()``/``put_payload()`` are the
    same without the codec (the conference mixer's fused G.711 path). While the session is a leg
    of a :class:`RelayBridge` its packets bypass all of these.
    """

    def __init__(
        self,
        engine: MediaEngine,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket | None,
        *,
        fmt: PayloadFormat,
        telephone_event_pt: int | None,
        srtp: SrtpKeys | None,
        cn_payload_type: int | None,
        local_addr: tuple[str, int] | None = None,
        rtcp_port: int | None = None,
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
        self.local_addr: tuple[str, int] = (
            local_addr if local_addr is not None else rtp_sock.getsockname()[:2])
        self.rtcp_port: int = (
            self.local_addr[1] if rtcp_sock is None
            else rtcp_port if rtcp_port is not None else rtcp_sock.getsockname()[1]
        )
        self.srtp = srtp
        self.ssrc = _prng.getrandbits(32)
        self.telephone_event_pt = telephone_event_pt
        self.cn_payload_type = cn_payload_type
        self.remote: tuple[str, int] | None = None
        self.remote_rtcp: tuple[str, int] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.relay_peer: RtpSession | None = None  # Python-path relay (SRTP legs)
        self.sending = True
        self.receiving = True
        self.closed = False
        self._dtmf_rx = DtmfReceiver()
        self._dtmf_tx: DtmfSender | None = None
        self._dtmf_job: ClockJob | None = None
        self._marker = True
        self._last_tx = 0.0
        self._tick_at = -1.0
        self._tick_packet: RtpPacket | None = None
        self._tick_conceal = False
        self._tick_frame: Frame | None = None
        self._tick_decoded = False
        self.counters: dict[str, int] = {
            "srtp_auth": 0,
            "rtcp_malformed": 0,
            "rtcp_source": 0,
            "rtcp_rx": 0,
            "rtcp_tx": 0,
            "unknown_pt": 0,
            "dtmf_rx": 0,
            "dtmf_malformed": 0,
        }
        self.set_format(fmt)
        hub.set_ssrc(self.slot, self.ssrc, _prng.getrandbits(16), _prng.getrandbits(32))

    # -- configuration ---------------------------------------------------------------------------

    @property
    def local_port(self) -> int:
        """The RTP port to put in SDP (``m=audio <port>``)."""
        return self.local_addr[1]

    def set_format(self, fmt: PayloadFormat) -> None:
        """Use the negotiated payload format (pt + codec) for both directions (re-INVITE)."""
        self.format = fmt
        self.payload_type = fmt.payload_type
        self.codec: Codec = create_codec(fmt)
        self.sample_rate: int = self.codec.sample_rate
        self._jitter = JitterBuffer(clock_rate=fmt.clock_rate, cn_payload_type=self.cn_payload_type)
        self._rx = ReceiverStatistics(fmt.clock_rate)

    def set_remote(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        """The signalled address from SDP (``c=``/``m=``, ``a=rtcp``); sends go there.

        ``host`` must be a numeric IP address (resolve names in the signalling layer).

        A *new* address (re-INVITE/UPDATE moved the media) goes to the packet hub as a
        re-offer: the source heard until now is refused from this moment, and for the hub's
        latch window (``LATCH_WINDOW``) only the new signalled address, or the first packet
        from its host on another port, re-latches the stream (symmetric RTP, RFC 4961); packets
        from anywhere else are dropped and counted as ``source``. So stale packets from the old
        port cannot pull the audio back there, and no stranger can take the stream over.
        """
        previous = self.remote
        self.remote = (host, port)
        if previous is not None and previous != self.remote:
            loop = self.engine._loop
            self._hub.set_remote(self.slot, self.remote, loop.time() if loop is not None else 0.0)
        else:
            self._hub.set_remote(self.slot, self.remote)
        if self.rtcp_slot is not None:
            self.remote_rtcp = (host, rtcp_port if rtcp_port is not None else port + 1)
            self._hub.set_remote(self.rtcp_slot, self.remote_rtcp)

    def set_srtp(self, srtp: SrtpKeys | None) -> None:
        """Switch this leg to SRTP with ``srtp`` (or back to plain RTP with None) before its
        media flows: e.g. an offer retried with the other RTP profile after a 488. SRTP
        packets go up raw (authenticated before anything else); plain ones are checked in the
        hub."""
        self.srtp = srtp
        self._hub.set_raw(self.slot, srtp is not None)

    def set_direction(self, direction: str) -> None:
        """SDP direction: ``sendrecv``, ``sendonly``, ``recvonly`` or ``inactive`` (hold)."""
        self.sending, self.receiving = _DIRECTIONS[direction]
        self.engine._mixers.changed = True

    @property
    def send_address(self) -> tuple[str, int] | None:
        """Where RTP goes now: the validated source (symmetric RTP) or the signalled address."""
        addr: tuple[str, int] | None = self._hub.remote(self.slot)
        return addr

    # -- media port ------------------------------------------------------------------------------

    def _pull(self) -> None:
        clock = self.engine._clock
        now = clock.now if clock is not None else 0.0
        if now == self._tick_at:
            return
        self._tick_at = now
        self._tick_decoded = False
        self._tick_frame = None
        out = self._jitter.get(now)
        self._tick_packet = out.packet
        self._tick_conceal = out.conceal

    def get_frame(self) -> Frame | None:
        """This tick's decoded frame (concealment for a lost packet; None in silence)."""
        self._pull()
        if not self._tick_decoded:
            self._tick_decoded = True
            pkt = self._tick_packet
            if pkt is not None and pkt.payload_type == self.payload_type:
                self._tick_frame = self.codec.decode(pkt.payload)
            elif pkt is None and self._tick_conceal:
                self._tick_frame = self.codec.conceal()
        return self._tick_frame

    def get_payload(self) -> bytes | None:
        """This tick's undecoded payload in the session's codec (None: nothing arrived)."""
        view = self._tick_payload()
        return None if view is None else bytes(view)

    def _tick_payload(self) -> memoryview | bytes | None:
        self._pull()
        pkt = self._tick_packet
        if pkt is None or pkt.payload_type != self.payload_type:
            return None
        payload: memoryview | bytes = pkt.payload  # type: ignore[assignment]
        return payload

    def put_frame(self, frame: Frame) -> None:
        """Encode one 20 ms frame and send it as one RTP packet."""
        if self.sending and not (self._dtmf_tx is not None and self._dtmf_tx.active):
            self._send_payload(self.payload_type, self.codec.encode(frame),
                               self.codec.timestamp_increment)

    def put_payload(self, payload: bytes | bytearray | memoryview) -> None:
        """Send one 20 ms payload already in the session's codec."""
        if self.sending and not (self._dtmf_tx is not None and self._dtmf_tx.active):
            self._send_payload(self.payload_type, payload, self.codec.timestamp_increment)

    def _send_payload(
        self, pt: int, payload: bytes | bytearray | memoryview, step: int, marker: bool = False,
        timestamp: int | None = None,
    ) -> None:
        if self.closed:
            return
        hub = self._hub
        seq, ts = hub.last_sent(self.slot)
        clock = self.engine._clock
        now = clock.now if clock is not None else 0.0
        seq = (seq + 1) & 0xFFFF
        # The timestamp follows media time, so silence (no put_frame) advances it too.
        gap = max(1, round((now - self._last_tx) / PTIME)) if now > self._last_tx else 1
        ts = (ts + step * gap) & 0xFFFFFFFF
        marker = marker or self._marker or gap > 1
        self._last_tx = now
        self._marker = False
        wire_ts = ts if timestamp is None else timestamp
        pkt = _RTP_HDR.pack(0x80, (0x80 if marker else 0) | pt, seq, wire_ts, self.ssrc) + payload
        # The stream's clock (hub.last_sent) advances even when an event repeats its timestamp.
        hub.set_ssrc(self.slot, self.ssrc, seq, ts)
        if self.srtp is not None:
            pkt = self.srtp.protect(pkt)
        hub.send(self.slot, pkt)

    def send_dtmf(self, digits: str, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Queue RFC 4733 telephone-events (``media.dtmf.DtmfSender``), sent one packet per tick
        in place of audio, then audio resumes. Raises ``ValueError`` without a negotiated PT."""
        if self.telephone_event_pt is None:
            raise ValueError("no telephone-event payload type negotiated")
        if self._dtmf_tx is None:
            self._dtmf_tx = DtmfSender(clock_rate=self.format.clock_rate)
        self._dtmf_tx.send(digits, duration_ms, gap_ms)
        if self._dtmf_job is None or not self._dtmf_job.active:
            self._dtmf_job = self.engine.clock.add(self._dtmf_tick, Phase.OUTPUT)

    def _dtmf_tick(self, now: float) -> None:
        tx = self._dtmf_tx
        if tx is None or not tx.busy or self.closed:
            if self._dtmf_job is not None:
                self._dtmf_job.cancel()
            return
        _, ts = self._hub.last_sent(self.slot)
        step = self.codec.timestamp_increment
        for p in tx.tick((ts + step) & 0xFFFFFFFF):
            assert self.telephone_event_pt is not None
            self._send_payload(self.telephone_event_pt, p.payload, step, marker=p.marker,
                               timestamp=p.timestamp)

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
        if not self.receiving:
            return
        peer = self.relay_peer
        if peer is not None:
            if data[1] & 0x7F == self.telephone_event_pt:
                self._on_rtp(data, now)  # the PBX sees relayed digits too
            peer._relay_in(data)
            return
        self._on_rtp(data, now)

    def _relay_in(self, data: bytes) -> None:
        # Python-path relay (a leg has SRTP): continue our stream, protect, send.
        seq, ts = self._hub.last_sent(self.slot)
        buf = bytearray(data)
        seq = (seq + 1) & 0xFFFF
        ts = (ts + self.codec.timestamp_increment) & 0xFFFFFFFF
        _SEQ_TS_SSRC.pack_into(buf, 2, seq, ts, self.ssrc)
        if self.srtp is not None:
            self._hub.set_ssrc(self.slot, self.ssrc, seq, ts)
            self._hub.send(self.slot, self.srtp.protect(bytes(buf)))
        else:
            self._hub.send_rtp(self.slot, buf)

    def _on_rtp(self, data: bytes, now: float) -> None:
        try:
            pkt = RtpPacket.parse(data)
        except RtpError:  # the hub checked the header already; belt and braces
            return
        pt = pkt.payload_type
        rx = self._rx
        if rx.ssrc != pkt.ssrc:
            if rx.ssrc is not None:  # a new source (re-INVITE, transfer): fresh statistics
                rx = self._rx = ReceiverStatistics(self.format.clock_rate)
            rx.ssrc = pkt.ssrc
        rx.update(pkt.sequence_number, pkt.timestamp, now)
        if pt == self.payload_type or pt == self.cn_payload_type:
            self._jitter.put(pkt, now)
        elif pt == self.telephone_event_pt:
            self._jitter.skip(pkt)  # shares the sequence space: not a loss for the audio
            try:
                digits = self._dtmf_rx.receive(bytes(pkt.payload), pkt.timestamp, pkt.marker)
            except MediaParseError:
                self.counters["dtmf_malformed"] += 1
                return
            for d in digits:
                self.counters["dtmf_rx"] += 1
                if self.on_dtmf is not None:
                    self.on_dtmf(d.digit)
        else:
            self.counters["unknown_pt"] += 1

    def _on_rtcp(self, data: bytes, addr: tuple[str, int] | None, now: float) -> None:
        if self.srtp is not None:
            plain = self.srtp.unprotect_rtcp(data)
            if plain is None:
                self.counters["srtp_auth"] += 1
                return
            data = plain
        try:
            packets = _rtcp.parse_compound(data)
        except _rtcp.RtcpError:
            self.counters["rtcp_malformed"] += 1
            return
        rtp_remote = self.send_address
        if addr is None or rtp_remote is None or addr[0] != rtp_remote[0]:
            # RTCP only from the host our validated RTP comes from (or the signalled host).
            self.counters["rtcp_source"] += 1
            return
        if self.rtcp_slot is not None and addr != self._hub.remote(self.rtcp_slot):
            self._hub.set_remote(self.rtcp_slot, addr)  # symmetric RTCP
        self.counters["rtcp_rx"] += 1
        for p in packets:
            if isinstance(p, _rtcp.SenderReport):
                self._rx.on_sender_report(p, now)

    def send_rtcp_report(self, now: float) -> None:
        """Send one compound SR (we sent RTP) or RR, with a report block, plus SDES CNAME."""
        if self.closed:
            return
        c = self._hub.counters(self.slot)
        blocks: tuple[_rtcp.ReportBlock, ...] = ()
        if self._rx.received:
            blocks = (self._rx.report_block(now),)
        report: _rtcp.SenderReport | _rtcp.ReceiverReport
        if c["tx_packets"]:
            _, ts = self._hub.last_sent(self.slot)
            report = _rtcp.SenderReport(
                self.ssrc, _rtcp.ntp_timestamp(time.time()), ts, c["tx_packets"] & 0xFFFFFFFF,
                (c["tx_octets"] - 12 * c["tx_packets"]) & 0xFFFFFFFF, blocks,
            )
        else:
            report = _rtcp.ReceiverReport(self.ssrc, blocks)
        pkt = _rtcp.serialize_compound(
            [report, _rtcp.SourceDescription.cname(self.ssrc, self.engine.cname)]
        )
        if self.srtp is not None:
            pkt = self.srtp.protect_rtcp(pkt)
        slot = self.rtcp_slot if self.rtcp_slot is not None else self.slot
        if self._hub.send(slot, pkt):
            self.counters["rtcp_tx"] += 1

    # -- lifecycle -------------------------------------------------------------------------------

    def statistics(self) -> dict[str, float]:
        """Counters of this leg: hub packet counters, drops by reason, RTCP, jitter buffer."""
        out: dict[str, float] = dict(self._hub.counters(self.slot))
        out.update(self.counters)
        if self.rtcp_slot is not None:
            out["rtcp_rx_packets"] = self._hub.counters(self.rtcp_slot)["rx_packets"]
        for k, v in self._jitter.statistics().items():
            out[f"jitter_{k}"] = v
        out["lost"] = self._rx.lost
        out["interarrival_jitter"] = self._rx.jitter_seconds
        if self.srtp is not None:
            out["srtp_replays"] = getattr(self.srtp, "replays", 0)
        return out

    def close(self) -> None:
        """Release the ports; any bridge using this leg stops forwarding to it."""
        if self.closed:
            return
        self.closed = True
        self._hub.remove(self.slot)
        if self.rtcp_slot is not None and self._rtcp_sock is not None:
            self._hub.remove(self.rtcp_slot)
        self.engine._release(self)


# -------------------------------------------------------------------------------------------------
# Bridges, links, conferences
# -------------------------------------------------------------------------------------------------


class RelayBridge:
    """Two legs sharing a codec: packets are forwarded without decoding.

    Plain RTP legs are relayed inside the packet hub (no Python per packet); when a leg uses SRTP
    the relay runs in Python (unprotect → rewrite → protect). Payload types are mapped between the
    legs' negotiated numbers for the codec, CN and telephone-event; other payload types are dropped.
    """

    def __init__(self, a: RtpSession, b: RtpSession) -> None:
        if a.format.name != b.format.name or a.format.clock_rate != b.format.clock_rate:
            raise ValueError("RelayBridge needs legs with the same codec; use Bridge")
        self.a, self.b = a, b
        self.closed = False
        hub = a.engine.hub
        if a.srtp is None and b.srtp is None:
            # DTMF is relayed and also tapped: the PBX acts on digits (feature codes, IVR).
            step = a.codec.timestamp_increment
            hub.set_relay(a.slot, b.slot, self._pt_map(a, b), _tap(a.telephone_event_pt), step)
            hub.set_relay(b.slot, a.slot, self._pt_map(b, a), _tap(b.telephone_event_pt), step)
        else:
            a.relay_peer, b.relay_peer = b, a

    @staticmethod
    def _pt_map(src: RtpSession, dst: RtpSession) -> bytes:
        m = bytearray(b"\xff" * 128)
        m[src.payload_type] = dst.payload_type
        for s_pt, d_pt in ((src.telephone_event_pt, dst.telephone_event_pt),
                           (src.cn_payload_type, dst.cn_payload_type)):
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
        self._rs = _Resample(source.sample_rate, sink.sample_rate)
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
        self._ab = _Resample(a.sample_rate, b.sample_rate)
        self._ba = _Resample(b.sample_rate, a.sample_rate)
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


class _Member:
    __slots__ = ("fused", "port", "row", "rs_in", "rs_out")

    def __init__(self, port: MediaPort, row: int, fused: bool, rate: int) -> None:
        self.port = port
        self.row = row
        self.fused = fused  # G.711 payloads straight into/out of the mixer kernel
        self.rs_in = _Resample(port.sample_rate, rate)
        self.rs_out = _Resample(rate, port.sample_rate)


class Conference:
    """An N-party conference; created by :meth:`MediaEngine.conference`.

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


class _Mixers:
    """The engine's mixer job: per sample rate one ``Mixer`` and one kernel call per tick.

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


# -------------------------------------------------------------------------------------------------
# The engine
# -------------------------------------------------------------------------------------------------


class MediaEngine:
    """RTP port allocator, packet hub, media clock, and factory for sessions and bridges.

    Use as ``async with MediaEngine("127.0.0.1", (30000, 30999)) as engine:`` or call
    :meth:`start` / :meth:`close`. Everything runs on the event loop that called :meth:`start`.
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port_range: tuple[int, int] = (30000, 32999),
        *,
        rtcp_mux: bool = False,
        rtcp_interval: float = 5.0,
        cname: bytes = b"asyncpbx",
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
        self.cname = cname
        self.hub: Any = _hubmod.PacketHub()
        self._sessions: dict[int, RtpSession] = {}
        self._used: set[int] = set()
        self._closing = False
        #: Sockets of ended sessions kept bound for reuse, oldest first: (port, rtp, rtcp|None).
        #: A call would otherwise pay socket/bind/ioctl/getsockname/close for each of its (up to)
        #: four sockets — some 20 system calls per call on the signalling hot path.
        self._spare: deque[tuple[int, socket.socket, socket.socket | None]] = deque()
        # At most an eighth of the range waits as spares, so they never crowd out new calls.
        self.spare_max = min(SPARE_SOCKETS_MAX, ((hi - lo) // 2 + 1) // 8)
        # Start at a random pair so port numbers do not reveal the call count.
        self._next_port = lo + 2 * (int.from_bytes(os.urandom(2), "big") % ((hi - lo) // 2 + 1))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: MediaClock | None = None
        self._mixers = _Mixers(self.hub)
        self._rtcp_due: dict[RtpSession, float] = {}
        self.counters = {"port_exhausted": 0, "reader_errors": 0, "tick_errors": 0}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Watch the hub on the running loop and start the media clock."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._clock = MediaClock(loop)
        self._clock.on_error = self._on_tick_error
        self._clock.add(self._mixers.tick, Phase.MIX)
        self._clock.add(self._rtcp_tick, Phase.OUTPUT)
        loop.add_reader(self.hub.fileno(), self._on_readable)
        self._clock.start()

    async def close(self) -> None:
        """Stop the clock, close every session and the hub."""
        if self._clock is not None:
            self._clock.stop()
        if self._loop is not None:
            self._loop.remove_reader(self.hub.fileno())
        self._closing = True
        for s in self.sessions:
            s.close()
        while self._spare:
            self._close_pair(*self._spare.popleft())
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

    def _on_tick_error(self, exc: BaseException) -> None:
        # The clock disabled the failing job; the call supervisor sees the port go silent.
        self.counters["tick_errors"] += 1

    # -- ports and sessions ----------------------------------------------------------------------

    def _reuse_pair(self, mux: bool) -> tuple[int, socket.socket, socket.socket | None] | None:
        """The oldest spare socket pair of this shape, emptied of datagrams that arrived after
        its last session ended (they belong to nobody); None when there is none."""
        spare = self._spare
        for i, entry in enumerate(spare):
            if (entry[2] is None) == mux:
                del spare[i]
                for sock in entry[1:]:
                    # FIONREAD says whether anything waits (usually not): a recv on an empty
                    # socket would raise BlockingIOError (and select() stops at fd 1024)
                    if sock is not None and _pending(sock):
                        _drain(sock)
                return entry
        return None

    def _bind_pair(self, mux: bool) -> tuple[socket.socket, socket.socket | None]:
        lo, hi = self.port_range
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range((hi - lo) // 2 + 1):
            port = self._next_port
            self._next_port = port + 2 if port + 2 + (0 if mux else 1) <= hi else lo
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
            self._used.add(port)
            return rtp, rtcp
        self.counters["port_exhausted"] += 1
        raise OSError(errno.EADDRINUSE, "RTP port range exhausted")

    def create_session(
        self,
        *,
        payload_type: int = 0,
        codec: str | PayloadFormat = "PCMU",
        remote: tuple[str, int] | None = None,
        remote_rtcp_port: int | None = None,
        telephone_event_pt: int | None = 101,
        cn_payload_type: int | None = 13,
        srtp: SrtpKeys | None = None,
        rtcp_mux: bool | None = None,
    ) -> RtpSession:
        """Allocate an even RTP port (+ the odd RTCP port unless rtcp-mux) and make a session.

        ``payload_type`` + ``codec`` (an encoding name, or a :class:`media.codecs.PayloadFormat`
        whose own payload type then wins) and ``telephone_event_pt`` come from the negotiated
        SDP; ``remote`` is the signalled ``c=``/``m=`` address (or call
        :meth:`RtpSession.set_remote` later); ``srtp`` is a :class:`media.srtp.SrtpSession`.
        Raises ``OSError(EADDRINUSE)`` when the range is exhausted.
        """
        fmt = codec if isinstance(codec, PayloadFormat) else payload_format(codec, payload_type)
        mux = self.rtcp_mux if rtcp_mux is None else rtcp_mux
        reused = self._reuse_pair(mux)
        if reused is not None:
            port, rtp, rtcp = reused
            local: tuple[str, int] | None = (self.host, port)
        else:
            try:
                rtp, rtcp = self._bind_pair(mux)
            except OSError:
                if not self._spare:
                    raise
                while self._spare:  # spares of the other shape (rtcp-mux or not): give them up
                    self._close_pair(*self._spare.popleft())
                rtp, rtcp = self._bind_pair(mux)
            local = None
        try:
            sess = RtpSession(
                self, rtp, rtcp, fmt=fmt, telephone_event_pt=telephone_event_pt, srtp=srtp,
                cn_payload_type=cn_payload_type, local_addr=local,
                rtcp_port=None if local is None or rtcp is None else local[1] + 1,
            )
        except BaseException:
            self._used.discard(rtp.getsockname()[1])
            rtp.close()
            if rtcp is not None:
                rtcp.close()
            raise
        self._sessions[sess.slot] = sess
        if sess.rtcp_slot is not None:
            self._sessions[sess.rtcp_slot] = sess
        if remote is not None:
            sess.set_remote(remote[0], remote[1], remote_rtcp_port)
        now = self._loop.time() if self._loop is not None else 0.0
        self._rtcp_due[sess] = now + self.rtcp_interval * (0.5 + _rand01())
        return sess

    def _release(self, sess: RtpSession) -> None:
        """A session closed (its hub slots are gone): keep its sockets for reuse, or close them
        when the spare pool is full (the oldest spare pair goes first) or the engine stops."""
        self._sessions.pop(sess.slot, None)
        if sess.rtcp_slot is not None:
            self._sessions.pop(sess.rtcp_slot, None)
        self._rtcp_due.pop(sess, None)
        for conf in list(self._mixers.conferences):
            conf.remove(sess)
        port, rtp, rtcp = sess.local_port, sess._rtp_sock, sess._rtcp_sock
        if self._closing or self.spare_max <= 0:
            self._close_pair(port, rtp, rtcp)
            return
        self._spare.append((port, rtp, rtcp))
        while len(self._spare) > self.spare_max:
            self._close_pair(*self._spare.popleft())

    def _close_pair(self, port: int, rtp: socket.socket, rtcp: socket.socket | None) -> None:
        self._used.discard(port)
        rtp.close()
        if rtcp is not None:
            rtcp.close()

    @property
    def sessions(self) -> list[RtpSession]:
        """Open sessions."""
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
            and a.format.name == b.format.name
            and a.format.clock_rate == b.format.clock_rate
        ):
            return RelayBridge(a, b)
        return Bridge(self.clock, a, b)

    def link(self, source: MediaPort, sink: MediaPort, *, fill_silence: bool = False) -> Link:
        """One-way: every tick ``sink.put_frame(source.get_frame())`` (player→leg, leg→recorder)."""
        return Link(self.clock, source, sink, fill_silence=fill_silence)

    def conference(self, sample_rate: int = 8000) -> Conference:
        """A new conference, mixed with all others of its rate in one kernel call per tick."""
        conf = Conference(self, self._mixers.mixer(sample_rate))
        self._mixers.conferences.add(conf)
        self._mixers.changed = True
        return conf

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

    def statistics(self) -> dict[str, float]:
        """Engine-wide figures: sessions, clock ticks/overruns, summed packet counters."""
        totals: dict[str, float] = {}
        for s in self.sessions:
            for k, v in self.hub.counters(s.slot).items():
                totals[k] = totals.get(k, 0) + v
            for k, v in s.counters.items():
                totals[k] = totals.get(k, 0) + v
        clock = self._clock
        return {
            "sessions": len(self.sessions),
            "conferences": len(self._mixers.conferences),
            "ticks": clock.ticks if clock else 0,
            "overruns": clock.overruns if clock else 0,
            "skipped": clock.skipped if clock else 0,
            **totals,
            **self.counters,
        }


#: SSRCs, initial sequence numbers and timestamps, RTCP interval jitter: RFC 3550 wants them
#: random, not secret (SRTP keys still come from os.urandom, media.srtp), so a PRNG seeded
#: from the OS instead of one getrandom() system call per value (several per call).
_prng = random.Random(os.urandom(32))


#: Spare socket pairs a :class:`MediaEngine` keeps bound for reuse by default.
SPARE_SOCKETS_MAX = 256


def _pending(sock: socket.socket) -> int:
    """Bytes of the next datagram waiting in ``sock`` (0: none, or an empty datagram)."""
    return int(struct.unpack("=i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0])


def _drain(sock: socket.socket, limit: int = 64) -> None:
    """Read and drop what waits in a (non-blocking) socket."""
    for _ in range(limit):
        try:
            sock.recv(2048)
        except OSError:  # BlockingIOError when empty; anything else: nothing to drain either
            return


def _rand01() -> float:
    return _prng.random()
