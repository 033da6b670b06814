"""One call leg's RTP/RTCP session: a media port over two packet-hub slots.

Theory of operation
-------------------
An :class:`RtpSession` is one call leg: the RTP stream it sends (SSRC, sequence numbers, media-time
timestamps, RFC 4733 telephone-events in place of audio), the streams it receives (jitter buffer,
receiver statistics, DTMF receiver, RTCP sender reports) and its SRTP keys. It is a media port
(``media.port``): per tick ``get_frame()`` pulls the jitter buffer once and decodes or conceals,
``put_frame()`` encodes and sends one packet; ``get_payload()``/``put_payload()`` skip the codec
(the conference mixer's fused G.711 path).

It does no I/O of its own: the sockets belong to the engine (:mod:`media.engine`), which hands
each received datagram to :meth:`RtpSession._on_packet` with the time it arrived; sends go through
the packet hub's slots (:mod:`media.batchio`). Media time comes from the engine's clock, so the
session runs on a fake clock as it does in real time.

Security order for an incoming packet: SRTP authentication (bad tag or replay → dropped and
counted) → header validation → source rule (in the hub) → payload. No per-packet logging.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from media import batchio as _batchio_ref
from media import rtcp as _rtcp
from media.clock import ClockJob, Phase
from media.codecs import Codec, PayloadFormat, create_codec
from media.dtmf import DtmfReceiver, DtmfSender
from media.errors import MediaParseError
from media.jitter import JitterBuffer
from media.port import PTIME, Frame
from media.rtp import RtpError, RtpPacket
from media.stats import ReceiverStatistics

if TYPE_CHECKING:
    from media.engine import MediaEngine

__all__ = ["RtpSession", "SrtpKeys"]

#: SSRCs, initial sequence numbers and timestamps: RFC 3550 wants them random, not secret (SRTP
#: keys still come from os.urandom, media.srtp), so a PRNG seeded from the OS instead of one
#: getrandom() system call per value (several per call).
_prng = random.Random(os.urandom(32))


class SrtpKeys(Protocol):
    """A pair of SRTP contexts for one leg (see :class:`media.srtp.SrtpSession`)."""

    def protect(self, packet: bytes) -> bytes: ...

    def unprotect(self, packet: bytes) -> bytes | None: ...

    def protect_rtcp(self, packet: bytes) -> bytes: ...

    def unprotect_rtcp(self, packet: bytes) -> bytes | None: ...


_RTP_HDR = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_DIRECTIONS = {"sendrecv": (True, True), "sendonly": (True, False), "recvonly": (False, True),
               "inactive": (False, False)}


class RtpSession:
    """One call leg's RTP/RTCP endpoint, and a media port at its codec's sample rate.

    Created by :meth:`~media.engine.MediaEngine.create_session`, which owns the sockets: the
    session knows its packet-hub slots only. Per tick, ``get_frame()`` pulls the jitter
    buffer once (later calls in the same tick return the same frame) and decodes or conceals;
    ``put_frame()`` encodes and sends one RTP packet. ``get_payload()``/``put_payload()`` are the
    same without the codec (the conference mixer's fused G.711 path). While the session is a leg
    of a :class:`~media.bridge.RelayBridge` its packets bypass all of these.
    """

    def __init__(
        self,
        engine: MediaEngine,
        slot: int,
        rtcp_slot: int | None,
        *,
        local_addr: tuple[str, int],
        rtcp_port: int,
        fmt: PayloadFormat,
        telephone_event_pt: int | None,
        srtp: SrtpKeys | None,
        cn_payload_type: int | None,
    ) -> None:
        self.engine = engine
        hub = engine.hub
        self._hub = hub
        self.slot = slot
        self.rtcp_slot = rtcp_slot
        self.local_addr = local_addr
        self.rtcp_port = rtcp_port
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
        self._last_tx: float | None = None  # media time of our last own packet
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
            self._hub.set_remote(self.slot, self.remote, self.engine.time())
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
        # (our first packet steps once: the stream's random start is its origin)
        last = self._last_tx
        gap = max(1, round((now - last) / PTIME)) if last is not None and now > last else 1
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

    def send_rtcp_report(self, now: float, wallclock: float) -> None:
        """Send one compound SR (we sent RTP) or RR, with a report block, plus SDES CNAME.

        ``now`` is media time (the clock's), ``wallclock`` the Unix time for the SR's NTP
        timestamp (RFC 3550 §6.4.1)."""
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
                self.ssrc, _rtcp.ntp_timestamp(wallclock), ts, c["tx_packets"] & 0xFFFFFFFF,
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
        if self.rtcp_slot is not None:
            self._hub.remove(self.rtcp_slot)
        self.engine._release(self)
