# cython: annotation_typing=False
"""Adaptive jitter buffer for one RTP stream, pulled once per 20 ms media tick, sans-IO.

One source, two builds (DESIGN.md principle 6). This file is plain Python and is the readable
reference (imported as ``media._jitter_py`` when ``ASYNCPBX_NO_EXTENSIONS=1``). ``setup.py``
also compiles this very file with Cython in pure-Python mode into the extension
``media._jitter``; the C types of that build come only from the augmenting declaration file
``media/_jitter.pxd`` (found by the extension's module name), so nothing here imports Cython and
the Python annotations stay for mypy only (``annotation_typing=False`` above). The public module
is :mod:`media.jitter`; ``tests/media/test_jitter_differential.py`` drives both builds in
lock-step on Hypothesis traces and requires identical outputs.

Rules that keep the two builds bit-identical: every integer stays far inside a C ``long long``
(extended numbers start near 2**16 / 2**32, and a timestamp beyond ``_TS_LIMIT`` resyncs);
no ``//`` or ``%`` on floats or negative integers (the extension is built with ``cdivision``)
and no ``/`` between two integers (C integer division in the extension);
float arithmetic is plain IEEE double in both.

Theory of operation
-------------------
``put(packet, arrival)`` files a packet under its extended sequence number (RFC 3550 §A.1);
``get(now)`` is called once per tick and returns a :class:`JitterOutput`: the packet due now, or
no packet with ``conceal=True`` when one was lost (the decoder runs its PLC), or no packet with
``conceal=False`` during silence (DTX/CN, before playout starts, or after a long outage).

Playout schedule. ``playout_ts`` is the (extended) RTP timestamp due at the next tick and
advances by one frame (``clock_rate * ptime``) per tick. A packet is emitted when its timestamp
is due; packets are emitted in sequence order, at most once, so anything arriving for a slot that
has already been played is *late* and dropped (counted), and a sequence number already buffered
or played within the last ``_RECENT`` sequence numbers is a *duplicate* (counted).

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

Storage. The buffered packets are three parallel lists sorted by extended sequence number
(head first). Packets mostly arrive in order, so filing one is an append after one comparison,
and the buffer is small (``capacity``), so the shifts of an out-of-order insert or of popping the
head cost less than a heap's bookkeeping. Played sequence numbers are a 64-bit mask relative to
the last one played (bit ``k`` set: ``last - k`` was played).

Limitations: the sender's ptime is assumed to be the tick (20 ms); other packet durations are
for the RTP stream to repacketize.
"""

from __future__ import annotations

from typing import Final

from media.rtp import RtpPacket

__all__ = ["MAX_DROPOUT", "JitterBuffer", "JitterOutput", "JitterStatistics"]

MAX_DROPOUT: Final = 3000
_MAX_DROPOUT: Final = MAX_DROPOUT  # a C constant in the extension (see _jitter.pxd)
_WINDOW: Final = 256
_STRETCH_EVERY: Final = 4
_RELEASE: Final = 1.0 / 128
#: Played sequence numbers remembered (relative to the last one) to tell duplicates from late.
_RECENT: Final = 64
_RECENT_MASK: Final = 0xFFFFFFFFFFFFFFFF  # (1 << _RECENT) - 1, spelled out for C
#: Consecutive underrun ticks concealed before the stream counts as silent.
_MAX_UNDERRUN_CONCEAL: Final = 5
#: Skipped (telephone-event) sequence numbers remembered at most.
_MAX_SKIPPED: Final = 256
#: Extended timestamps beyond this resync: a hostile sender cannot push them towards 2**63
#: (only packets older than the last played one may move the timestamp reference unchecked).
_TS_LIMIT: Final = 0x10000000000000  # 2**52, spelled out for C
#: 32-bit timestamp arithmetic (named: literals beyond 31 bits would be Python ints in C).
_TS_CYCLE: Final = 0x100000000
_TS_HALF: Final = 0x80000000
_TS_MASK: Final = 0xFFFFFFFF
#: "None" of the integer state (all extended numbers are positive).
_UNSET: Final = -1

#: Counter names of :class:`JitterStatistics`, in ``statistics()`` order.
COUNTERS: Final = (
    "received",
    "emitted",
    "late",
    "duplicates",
    "concealed",
    "overflows",
    "discarded",
    "resyncs",
    "stretched",
)


class JitterOutput:
    """What one tick gets from the jitter buffer (read-only).

    ``packet`` is the packet to decode (``None`` if nothing is due). ``conceal`` asks the
    decoder for packet-loss concealment. ``comfort_noise`` carries the last CN payload while the
    sender is in a CN silence period (RFC 3389), else ``None``.
    """

    __slots__ = ("comfort_noise", "conceal", "packet")

    packet: RtpPacket | None
    conceal: bool
    comfort_noise: bytes | None

    def __init__(
        self, packet: RtpPacket | None, conceal: bool = False, comfort_noise: bytes | None = None
    ) -> None:
        self.packet = packet
        self.conceal = conceal
        self.comfort_noise = comfort_noise

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JitterOutput):
            return NotImplemented
        return (
            self.packet == other.packet
            and self.conceal == other.conceal
            and self.comfort_noise == other.comfort_noise
        )

    def __hash__(self) -> int:
        return hash((id(self.packet), self.conceal, self.comfort_noise))

    def __repr__(self) -> str:
        return (
            f"JitterOutput(packet={self.packet!r}, conceal={self.conceal!r}, "
            f"comfort_noise={self.comfort_noise!r})"
        )


class JitterStatistics:
    """Counters of one jitter buffer (exported via ``statistics()``; names in ``COUNTERS``)."""

    __slots__ = COUNTERS

    received: int
    emitted: int
    late: int
    duplicates: int
    concealed: int
    overflows: int
    discarded: int
    resyncs: int
    stretched: int

    def __init__(self) -> None:
        self.received = 0
        self.emitted = 0
        self.late = 0
        self.duplicates = 0
        self.concealed = 0
        self.overflows = 0
        self.discarded = 0
        self.resyncs = 0
        self.stretched = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {name: getattr(self, name) for name in COUNTERS}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.as_dict().items())
        return f"JitterStatistics({inner})"


_NOTHING: Final = JitterOutput(None)
_CONCEAL: Final = JitterOutput(None, True)


class JitterBuffer:
    """Adaptive jitter buffer (see the module docstring).

    ``clock_rate`` is the RTP clock (8000 for PCMU/PCMA/G722, 48000 for Opus), ``ptime`` the tick
    in seconds, ``min_delay``/``max_delay`` the bounds of the target delay in seconds.
    ``cn_payload_type`` marks comfort-noise packets (RFC 3389) so the silence they start is not
    mistaken for loss.
    """

    clock_rate: int
    ptime: float
    frame: int
    min_delay: float
    max_delay: float
    capacity: int
    cn_payload_type: int | None
    stats: JitterStatistics

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
        if clock_rate <= 0 or ptime <= 0:
            raise ValueError("need clock_rate > 0 and ptime > 0")
        self.clock_rate = clock_rate
        self.ptime = ptime
        self.frame = round(clock_rate * ptime)
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.capacity = capacity or int(max_delay / ptime) * 2 + 8
        self.cn_payload_type = cn_payload_type
        self.stats = JitterStatistics()
        self._rate = float(clock_rate)  # int / int would be C integer division in the extension
        self._window = self.clock_rate * (2 * self.max_delay + 1.0)
        self._reset()

    def _reset(self) -> None:
        # The buffered packets, sorted by extended sequence number (head first).
        self._seqs: list[int] = []
        self._stamps: list[int] = []  # their extended timestamps
        self._packets: list[RtpPacket] = []
        self._highest = _UNSET  # highest extended sequence number (RFC 3550 §A.1)
        self._ssrc = _UNSET
        self._ts_ref = _UNSET  # highest extended timestamp so far
        self._bad_seq = _UNSET
        self._started = False
        self._playout_ts = 0
        self._last_seq = _UNSET  # extended seq of the last emitted (or discarded) packet
        self._played = 0  # bit k: last_seq - k was played (or discarded)
        self._skipped: set[int] = set()
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
        return len(self._seqs)

    @property
    def target_delay(self) -> float:
        """Current target delay in seconds."""
        return self._target_delay()

    @property
    def ssrc(self) -> int | None:
        """The SSRC currently played."""
        return None if self._ssrc == _UNSET else self._ssrc

    def put(self, packet: RtpPacket, arrival: float) -> None:
        """File one received packet (already parsed and source-checked)."""
        stats = self.stats
        stats.received += 1
        ssrc = packet.ssrc
        if ssrc != self._ssrc:
            if self._ssrc != _UNSET:
                stats.resyncs += 1
                stats.discarded += len(self._seqs)
            self._reset()
            self._ssrc = ssrc
        seq = packet.sequence_number
        seq_highest = self._highest
        ext_seq = self._extend_seq(seq)
        if seq_highest != _UNSET and abs(ext_seq - seq_highest) > _MAX_DROPOUT:
            # A big jump is believed only when the next packet follows it (RFC 3550 §A.1).
            self._highest = seq_highest
            if self._bad_seq != _UNSET and (seq & 0xFFFF) == self._bad_seq:
                self._resync(packet, arrival)
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                stats.discarded += 1
            return
        ext_ts = self._extend_ts(packet.timestamp)
        if ext_ts > _TS_LIMIT or self._ts_jumped(ext_ts, ext_seq):
            self._resync(packet, arrival)
            return
        if self._is_duplicate(ext_seq):
            stats.duplicates += 1
            return
        if self._started and (
            (self._last_seq != _UNSET and ext_seq <= self._last_seq) or ext_ts < self._playout_ts
        ):
            stats.late += 1
            self._observe(ext_ts, arrival)  # late packets are exactly what must raise the delay
            return
        self._observe(ext_ts, arrival)
        self._insert(ext_seq, ext_ts, packet)

    def skip(self, packet: RtpPacket) -> None:
        """Note a packet of this stream that does not go through the buffer (an RFC 4733
        telephone-event, handled elsewhere), so its sequence number is not taken for a loss."""
        if packet.ssrc != self._ssrc or self._highest == _UNSET:
            return
        ext_seq = self._extend_seq(packet.sequence_number)
        if (self._last_seq == _UNSET or ext_seq > self._last_seq) and len(
            self._skipped
        ) < _MAX_SKIPPED:
            self._skipped.add(ext_seq)

    def get(self, now: float) -> JitterOutput:
        """The output for the tick at ``now`` (call exactly once per ``ptime``)."""
        if not self._started:
            if not self._seqs:
                return _NOTHING
            if now < self._first_arrival + self._target_delay() - self.ptime / 2:
                return _NOTHING
            self._started = True
            self._playout_ts = self._stamps[0]
        self._since_stretch += 1
        frame = self.frame
        ideal = (now - min(self._min_cur, self._min_prev) - self._target_delay()) * self.clock_rate
        error = self._playout_ts - ideal  # > 0: playing too early (too little delay)
        has_head = len(self._seqs) > 0
        head_ts = self._stamps[0] if has_head else 0
        due = has_head and head_ts <= self._playout_ts
        if error > frame:
            if not due:
                return self._hold()  # a gap (loss, DTX or underrun): wait in it
            if self._packets[0].marker or (
                error > 2 * frame and self._since_stretch >= _STRETCH_EVERY
            ):
                self._since_stretch = 0
                self.stats.stretched += 1
                return self._hold()
        elif error < -frame:
            if not due and not self._talking:
                # In silence: skip ahead, but never past the next packet. (Truncating division
                # of a positive float: the same in both builds, unlike float ``//``.)
                jump = int(-error / frame) * frame
                if has_head:
                    jump = min(jump, head_ts - self._playout_ts)
                self._playout_ts += max(0, jump)
                due = has_head and head_ts <= self._playout_ts
            elif due and error < -2 * frame and self._since_stretch >= _STRETCH_EVERY:
                self._since_stretch = 0
                self.stats.discarded += 1
                self._remember(self._seqs[0])
                self._pop()
                self._playout_ts = max(self._playout_ts, head_ts) + frame
                has_head = len(self._seqs) > 0
                head_ts = self._stamps[0] if has_head else 0
                due = has_head and head_ts <= self._playout_ts
        if due:
            return self._emit()
        return self._gap(has_head)

    def statistics(self) -> dict[str, float]:
        """Counters and the current target delay, for ``/metrics``."""
        out: dict[str, float] = {}
        out.update(self.stats.as_dict())
        out["target_delay"] = self._target_delay()
        out["buffered"] = len(self._seqs)
        return out

    # --- internals --------------------------------------------------------------------------

    def _target_delay(self) -> float:
        return min(self.max_delay, max(self.min_delay, self._peak + self.ptime))

    def _emit(self) -> JitterOutput:
        """Play the head packet (it is due)."""
        ext_seq = self._seqs[0]
        ext_ts = self._stamps[0]
        packet = self._packets[0]
        self._pop()
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

    def _gap(self, has_head: bool) -> JitterOutput:
        """Nothing is due at this tick: advance through the gap."""
        self._playout_ts += self.frame
        if self._comfort_noise is not None:
            return JitterOutput(None, False, self._comfort_noise)
        if has_head:
            if self._follows(self._seqs[0]):
                self._talking = False
                return _NOTHING  # a DTX gap: the next packet follows without loss
            self.stats.concealed += 1
            return _CONCEAL
        return self._underrun_output()

    def _follows(self, ext_seq: int) -> bool:
        """True when every sequence number between the last emitted one and ``ext_seq`` was
        consumed by a non-audio packet (:meth:`skip`), i.e. nothing is missing."""
        last = self._last_seq
        if last == _UNSET or ext_seq - last >= 64:
            return False
        skipped = self._skipped
        return all(s in skipped for s in range(last + 1, ext_seq))

    def _hold(self) -> JitterOutput:
        """Repeat the current slot (playout position unchanged): adds one frame of delay."""
        if self._comfort_noise is not None:
            return JitterOutput(None, False, self._comfort_noise)
        return self._underrun_output()

    def _underrun_output(self) -> JitterOutput:
        if self._last_seq != _UNSET and self._last_seq + 1 in self._skipped:
            self._talking = False  # the stream switched to telephone-events: not a loss
        if self._talking and self._underrun < _MAX_UNDERRUN_CONCEAL:
            self._underrun += 1
            self.stats.concealed += 1
            return _CONCEAL
        self._talking = False
        return _NOTHING

    def _pop(self) -> None:
        """Drop the head packet."""
        del self._seqs[0]
        del self._stamps[0]
        del self._packets[0]

    def _remember(self, ext_seq: int) -> None:
        """``ext_seq`` (the head, so above every earlier one) was played or discarded."""
        last = self._last_seq
        if last == _UNSET or ext_seq - last >= _RECENT:
            self._played = 1
        else:
            self._played = ((self._played << (ext_seq - last)) | 1) & _RECENT_MASK
        self._last_seq = ext_seq

    def _is_duplicate(self, ext_seq: int) -> bool:
        """Buffered already, or played within the last ``_RECENT`` sequence numbers."""
        last = self._last_seq
        if last != _UNSET and ext_seq <= last:
            age = last - ext_seq
            return age < _RECENT and (self._played >> age) & 1 == 1
        seqs = self._seqs
        i = len(seqs)
        while i > 0:  # from the tail: packets mostly arrive in order
            s = seqs[i - 1]
            if s <= ext_seq:
                return s == ext_seq
            i -= 1
        return False

    def _insert(self, ext_seq: int, ext_ts: int, packet: RtpPacket) -> None:
        seqs = self._seqs
        n = len(seqs)
        if n >= self.capacity:
            self.stats.overflows += 1
            if ext_seq < seqs[0]:
                return  # the newcomer is the oldest: it is the one dropped
            # The head is lost for good: playout passes its slot as if it had been played.
            # Otherwise a sender that keeps the buffer full (one that started with a backlog and
            # sends faster than real time to catch up) has every head dropped just before it
            # is due, and playout conceals behind the buffer forever.
            dropped_seq = seqs[0]
            dropped_ts = self._stamps[0]
            self._pop()
            self._remember(dropped_seq)
            if self._started:
                self._playout_ts = max(self._playout_ts, dropped_ts + self.frame)
            n -= 1
        i = n
        while i > 0:
            s = seqs[i - 1]
            if s < ext_seq:
                break
            i -= 1
        if i == n:
            seqs.append(ext_seq)
            self._stamps.append(ext_ts)
            self._packets.append(packet)
        else:
            seqs.insert(i, ext_seq)
            self._stamps.insert(i, ext_ts)
            self._packets.insert(i, packet)

    def _extend_seq(self, seq: int) -> int:
        """RFC 3550 §A.1: place ``seq`` in the cycle closest to the highest number seen."""
        highest = self._highest
        if highest == _UNSET:
            ext = 0x10000 + (seq & 0xFFFF)
            self._highest = ext
            return ext
        ext = highest + (((seq - highest + 0x8000) & 0xFFFF) - 0x8000)
        if ext > highest:
            self._highest = ext
        return ext

    def _extend_ts(self, ts: int) -> int:
        ref = self._ts_ref
        if ref == _UNSET:
            ext = _TS_CYCLE + (ts & _TS_MASK)
            self._ts_ref = ext
            return ext
        ext = ref + (((ts - ref + _TS_HALF) & _TS_MASK) - _TS_HALF)
        if ext > ref:
            self._ts_ref = ext
        return ext

    def _ts_jumped(self, ext_ts: int, ext_seq: int) -> bool:
        """A newer packet whose timestamp is far from the playout position: the sender's clock
        jumped (DTX gaps do not count: the playout position advances through silence)."""
        if self._last_seq != _UNSET and ext_seq <= self._last_seq:
            return False  # not newer
        if self._started:
            ref = self._playout_ts
        elif self._seqs:
            ref = self._stamps[0] + (ext_seq - self._seqs[0]) * self.frame
        else:
            return False
        return abs(ext_ts - ref) > self._window

    def _resync(self, packet: RtpPacket, arrival: float) -> None:
        ssrc = self._ssrc
        self.stats.resyncs += 1
        self.stats.discarded += len(self._seqs)
        self._reset()
        self._ssrc = ssrc
        ext_seq = self._extend_seq(packet.sequence_number)
        ext_ts = self._extend_ts(packet.timestamp)
        self._observe(ext_ts, arrival)
        self._insert(ext_seq, ext_ts, packet)

    def _observe(self, ext_ts: int, arrival: float) -> None:
        """Update the transit reference and the delay peak follower."""
        if not self._seqs and not self._started:
            self._first_arrival = arrival
        transit = arrival - ext_ts / self._rate
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
