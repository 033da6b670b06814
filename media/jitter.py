"""Adaptive jitter buffer for one RTP stream, pulled once per 20 ms media tick, sans-IO.

Theory of operation
-------------------
``put(packet, arrival)`` files a packet under its extended sequence number (RFC 3550 §A.1
style, see :class:`media.rtp.SequenceExtender`); ``get(now)`` is called once per tick and returns
a :class:`JitterOutput`: the packet due now, or no packet with ``conceal=True`` when one was lost
(the decoder runs its PLC), or no packet with ``conceal=False`` during silence (DTX/CN, before
playout starts, or after a long outage).

Playout schedule. ``playout_ts`` is the (extended) RTP timestamp due at the next tick and
advances by one frame (``clock_rate * ptime``) per tick. A packet is emitted when its timestamp
is due; packets are emitted in sequence order, at most once, so anything arriving for a slot that
has already been played is *late* and dropped (counted), and a sequence number already buffered
or recently played is a *duplicate* (counted).

Delay estimate. For every packet the relative transit ``arrival - ts/clock_rate`` is compared
with the smallest transit seen in a sliding window (two buckets of ``_WINDOW`` packets, so the
reference follows clock drift). The difference is that packet's queuing delay; a peak follower
(instant attack, slow exponential release) of it plus one frame gives the target delay, bounded
to ``[min_delay, max_delay]``. The ideal playout timestamp at ``now`` is
``(now - min_transit - target) * clock_rate``.

Adaptation. Each tick compares ``playout_ts`` with the ideal. When more than a frame early
(too little delay, packets would be late) the buffer holds: it repeats the slot (silence in a
gap, concealment in speech — the latter at most every ``_STRETCH_EVERY`` ticks). When more than
a frame late (too much delay) it jumps forward in silence (a DTX gap or before a marker-bit
talkspurt start) or, in speech and only when more than two frames late, discards one frame.

Resync. An SSRC change, two consecutive packets after a sequence jump of more than
``MAX_DROPOUT`` or a timestamp jump far outside the buffer's window flush the buffer and start
playout anew from the new packet (counted in ``resyncs``). The buffer never holds more than
``capacity`` packets; beyond that the oldest is dropped (``overflows``).

Limitations: the sender's ptime is assumed to be the tick (20 ms); other packet durations are
for the RTP stream to repacketize.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Final

from media.rtp import RtpPacket, SequenceExtender

__all__ = ["JitterBuffer", "JitterOutput", "JitterStatistics"]

MAX_DROPOUT: Final = 3000
_WINDOW: Final = 256
_STRETCH_EVERY: Final = 4
_RELEASE: Final = 1.0 / 128
#: Recently played sequence numbers kept to tell duplicates from late packets.
_RECENT: Final = 64
#: Consecutive underrun ticks concealed before the stream counts as silent.
_MAX_UNDERRUN_CONCEAL: Final = 5


@dataclass(frozen=True, slots=True)
class JitterOutput:
    """What one tick gets from the jitter buffer.

    ``packet`` is the packet to decode (``None`` if nothing is due). ``conceal`` asks the
    decoder for packet-loss concealment. ``comfort_noise`` carries the last CN payload while the
    sender is in a CN silence period (RFC 3389), else ``None``.
    """

    packet: RtpPacket | None
    conceal: bool = False
    comfort_noise: bytes | None = None


@dataclass(slots=True)
class JitterStatistics:
    """Counters of one jitter buffer (exported via ``statistics()``)."""

    received: int = 0
    emitted: int = 0
    late: int = 0
    duplicates: int = 0
    concealed: int = 0
    overflows: int = 0
    discarded: int = 0
    resyncs: int = 0
    stretched: int = 0


_NOTHING: Final = JitterOutput(None)
_CONCEAL: Final = JitterOutput(None, True)


class JitterBuffer:
    """Adaptive jitter buffer (see the module docstring).

    ``clock_rate`` is the RTP clock (8000 for PCMU/PCMA/G722, 48000 for Opus), ``ptime`` the tick
    in seconds, ``min_delay``/``max_delay`` the bounds of the target delay in seconds.
    ``cn_payload_type`` marks comfort-noise packets (RFC 3389) so the silence they start is not
    mistaken for loss.
    """

    def __init__(
        self,
        clock_rate: int = 8000,
        ptime: float = 0.020,
        min_delay: float = 0.020,
        max_delay: float = 0.200,
        capacity: int | None = None,
        cn_payload_type: int | None = 13,
    ) -> None:
        if not 0 < min_delay <= max_delay:
            raise ValueError("need 0 < min_delay <= max_delay")
        self.clock_rate = clock_rate
        self.ptime = ptime
        self.frame = round(clock_rate * ptime)
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.capacity = capacity or int(max_delay / ptime) * 2 + 8
        self.cn_payload_type = cn_payload_type
        self.stats = JitterStatistics()
        self._reset()

    def _reset(self) -> None:
        self._heap: list[int] = []
        self._packets: dict[int, tuple[int, RtpPacket]] = {}  # ext seq → (ext ts, packet)
        self._seq = SequenceExtender()
        self._ssrc: int | None = None
        self._ts_ref: int | None = None  # highest extended timestamp so far
        self._bad_seq: int | None = None
        self._started = False
        self._playout_ts = 0
        self._last_seq: int | None = None  # extended seq of the last emitted packet
        self._recent: set[int] = set()
        self._skipped: set[int] = set()
        self._recent_order: deque[int] = deque()
        self._min_cur = float("inf")
        self._min_prev = float("inf")
        self._count_in_bucket = 0
        self._peak = 0.0
        self._underrun = 0
        self._since_stretch = _STRETCH_EVERY
        self._talking = False
        self._comfort_noise: bytes | None = None
        self._first_arrival = 0.0

    # --- public -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._packets)

    @property
    def target_delay(self) -> float:
        """Current target delay in seconds."""
        return min(self.max_delay, max(self.min_delay, self._peak + self.ptime))

    @property
    def ssrc(self) -> int | None:
        """The SSRC currently played."""
        return self._ssrc

    def put(self, packet: RtpPacket, arrival: float) -> None:
        """File one received packet (already parsed and source-checked)."""
        stats = self.stats
        stats.received += 1
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                stats.resyncs += 1
                stats.discarded += len(self._packets)
            self._reset()
            self._ssrc = packet.ssrc
        seq_highest = self._seq.highest
        ext_seq = self._seq.extend(packet.sequence_number)
        if seq_highest is not None and abs(ext_seq - seq_highest) > MAX_DROPOUT:
            # A big jump is believed only when the next packet follows it (RFC 3550 §A.1).
            self._seq.highest = seq_highest
            if self._bad_seq is not None and packet.sequence_number == self._bad_seq:
                self._resync(packet, arrival)
            else:
                self._bad_seq = (packet.sequence_number + 1) & 0xFFFF
                stats.discarded += 1
            return
        ext_ts = self._extend_ts(packet.timestamp)
        if self._ts_jumped(ext_ts, ext_seq):
            self._resync(packet, arrival)
            return
        if ext_seq in self._packets or ext_seq in self._recent:
            stats.duplicates += 1
            return
        if self._started and (
            (self._last_seq is not None and ext_seq <= self._last_seq) or ext_ts < self._playout_ts
        ):
            stats.late += 1
            self._observe(ext_ts, arrival)  # late packets are exactly what must raise the delay
            return
        self._observe(ext_ts, arrival)
        self._insert(ext_seq, ext_ts, packet)

    def skip(self, packet: RtpPacket) -> None:
        """Note a packet of this stream that does not go through the buffer (an RFC 4733
        telephone-event, handled elsewhere), so its sequence number is not taken for a loss."""
        if packet.ssrc != self._ssrc or self._seq.highest is None:
            return
        ext_seq = self._seq.extend(packet.sequence_number)
        if (self._last_seq is None or ext_seq > self._last_seq) and len(self._skipped) < 256:
            self._skipped.add(ext_seq)

    def get(self, now: float) -> JitterOutput:
        """The output for the tick at ``now`` (call exactly once per ``ptime``)."""
        if not self._started:
            if not self._packets:
                return _NOTHING
            if now < self._first_arrival + self.target_delay - self.ptime / 2:
                return _NOTHING
            self._started = True
            self._playout_ts = self._packets[self._heap[0]][0]
        self._since_stretch += 1
        frame = self.frame
        ideal = (now - min(self._min_cur, self._min_prev) - self.target_delay) * self.clock_rate
        error = self._playout_ts - ideal  # > 0: playing too early (too little delay)
        head = self._head()
        due = head is not None and head[1] <= self._playout_ts
        if error > frame:
            if not due:
                return self._hold()  # a gap (loss, DTX or underrun): wait in it
            assert head is not None
            if head[2].marker or (error > 2 * frame and self._since_stretch >= _STRETCH_EVERY):
                self._since_stretch = 0
                self.stats.stretched += 1
                return self._hold()
        elif error < -frame:
            if not due and not self._talking:
                # In silence: skip ahead, but never past the next packet.
                jump = int(-error // frame) * frame
                if head is not None:
                    jump = min(jump, head[1] - self._playout_ts)
                self._playout_ts += max(0, jump)
                due = head is not None and head[1] <= self._playout_ts
            elif due and error < -2 * frame and self._since_stretch >= _STRETCH_EVERY:
                assert head is not None
                self._since_stretch = 0
                self._pop()
                self.stats.discarded += 1
                self._last_seq = head[0]
                self._remember(head[0])
                self._playout_ts = max(self._playout_ts, head[1]) + frame
                head = self._head()
                due = head is not None and head[1] <= self._playout_ts
        return self._emit(head, due)

    def statistics(self) -> dict[str, float]:
        """Counters and the current target delay, for ``/metrics``."""
        out: dict[str, float] = {k: getattr(self.stats, k) for k in self.stats.__slots__}
        out["target_delay"] = self.target_delay
        out["buffered"] = len(self._packets)
        return out

    # --- internals --------------------------------------------------------------------------

    def _emit(self, head: tuple[int, int, RtpPacket] | None, due: bool) -> JitterOutput:
        if head is not None and due:
            self._pop()
            ext_seq, ext_ts, packet = head
            self._last_seq = ext_seq
            self._remember(ext_seq)
            if self._skipped:
                self._skipped = {s for s in self._skipped if s > ext_seq}
            self._playout_ts = max(self._playout_ts, ext_ts) + self.frame
            self._underrun = 0
            self.stats.emitted += 1
            if packet.payload_type == self.cn_payload_type:
                self._comfort_noise = bytes(packet.payload)
                self._talking = False
            else:
                self._comfort_noise = None
                self._talking = True
            return JitterOutput(packet)
        self._playout_ts += self.frame
        if self._comfort_noise is not None:
            return JitterOutput(None, False, self._comfort_noise)
        if head is not None:
            if self._follows(head[0]):
                self._talking = False
                return _NOTHING  # a DTX gap: the next packet follows without loss
            self.stats.concealed += 1
            return _CONCEAL
        return self._underrun_output()

    def _follows(self, ext_seq: int) -> bool:
        """True when every sequence number between the last emitted one and ``ext_seq`` was
        consumed by a non-audio packet (:meth:`skip`), i.e. nothing is missing."""
        last = self._last_seq
        if last is None:
            return False
        skipped = self._skipped
        return all(s in skipped for s in range(last + 1, ext_seq)) if ext_seq - last < 64 else False

    def _hold(self) -> JitterOutput:
        """Repeat the current slot (playout position unchanged): adds one frame of delay."""
        if self._comfort_noise is not None:
            return JitterOutput(None, False, self._comfort_noise)
        return self._underrun_output()

    def _underrun_output(self) -> JitterOutput:
        if self._last_seq is not None and self._last_seq + 1 in self._skipped:
            self._talking = False  # the stream switched to telephone-events: not a loss
        if self._talking and self._underrun < _MAX_UNDERRUN_CONCEAL:
            self._underrun += 1
            self.stats.concealed += 1
            return _CONCEAL
        self._talking = False
        return _NOTHING

    def _head(self) -> tuple[int, int, RtpPacket] | None:
        if not self._heap:
            return None
        seq = self._heap[0]
        ts, packet = self._packets[seq]
        return seq, ts, packet

    def _pop(self) -> None:
        seq = heapq.heappop(self._heap)
        del self._packets[seq]

    def _remember(self, ext_seq: int) -> None:
        self._recent.add(ext_seq)
        self._recent_order.append(ext_seq)
        if len(self._recent_order) > _RECENT:
            self._recent.discard(self._recent_order.popleft())

    def _insert(self, ext_seq: int, ext_ts: int, packet: RtpPacket) -> None:
        if len(self._packets) >= self.capacity:
            self.stats.overflows += 1
            if ext_seq < self._heap[0]:
                return  # the newcomer is the oldest: it is the one dropped
            oldest = heapq.heappop(self._heap)
            del self._packets[oldest]
        self._packets[ext_seq] = (ext_ts, packet)
        heapq.heappush(self._heap, ext_seq)

    def _extend_ts(self, ts: int) -> int:
        ref = self._ts_ref
        if ref is None:
            ext = 0x100000000 + ts
            self._ts_ref = ext
            return ext
        ext = ref + (((ts - ref + 0x80000000) & 0xFFFFFFFF) - 0x80000000)
        if ext > ref:
            self._ts_ref = ext
        return ext

    def _ts_jumped(self, ext_ts: int, ext_seq: int) -> bool:
        """A newer packet whose timestamp is far from the playout position: the sender's clock
        jumped (DTX gaps do not count: the playout position advances through silence)."""
        if self._started:
            ref = self._playout_ts
        elif self._packets:
            head_seq = self._heap[0]
            ref = self._packets[head_seq][0] + (ext_seq - head_seq) * self.frame
        else:
            return False
        window = self.clock_rate * (2 * self.max_delay + 1.0)
        newer = self._last_seq is None or ext_seq > self._last_seq
        return newer and abs(ext_ts - ref) > window

    def _resync(self, packet: RtpPacket, arrival: float) -> None:
        ssrc = packet.ssrc
        self.stats.resyncs += 1
        self.stats.discarded += len(self._packets)
        self._reset()
        self._ssrc = ssrc
        ext_seq = self._seq.extend(packet.sequence_number)
        ext_ts = self._extend_ts(packet.timestamp)
        self._observe(ext_ts, arrival)
        self._insert(ext_seq, ext_ts, packet)

    def _observe(self, ext_ts: int, arrival: float) -> None:
        """Update the transit reference and the delay peak follower."""
        if not self._packets and not self._started:
            self._first_arrival = arrival
        transit = arrival - ext_ts / self.clock_rate
        if transit < self._min_cur:
            self._min_cur = transit
        self._count_in_bucket += 1
        if self._count_in_bucket >= _WINDOW:
            self._min_prev = self._min_cur
            self._min_cur = transit
            self._count_in_bucket = 0
        delay = transit - min(self._min_cur, self._min_prev)
        if delay > self._peak:
            self._peak = delay
        else:
            self._peak += (delay - self._peak) * _RELEASE
