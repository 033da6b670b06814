"""DTMF: RFC 4733 telephone-events (payload, sender, receiver) and an in-band Goertzel detector.

Theory of operation
-------------------
*RFC 4733 §2.3* — a telephone-event payload is 4 bytes: event (0–9, * = 10, # = 11, A–D = 12–15,
flash = 16), E (end) bit, R bit, 6-bit volume (−dBm0), 16-bit duration in RTP timestamp units.
``DtmfSender`` is driven once per packet interval by the media clock with the RTP timestamp of
that interval (sans-IO, no timers): the first packet of an event carries the marker bit and the
event's timestamp; continuation packets repeat that timestamp with a growing duration; the final
packet (E bit) is sent three times, one per interval (§2.5.1.4), with the same timestamp and
duration; events longer than 0xFFFF units are split into segments (§2.5.1.3).
``DtmfReceiver`` identifies an event by its RTP timestamp and reports each event once, on the first
packet it sees of it — a lost start (only continuation or only end packets) still yields the digit,
and retransmitted end packets do not yield it twice.

*In-band* — ``DtmfDetector`` cuts the signal into blocks of 13.25 ms (106 samples at 8 kHz) and
tests each with Goertzel filters at the eight DTMF frequencies (ITU-T Q.23/Q.24): minimum level,
twist (high group at most 8 dB below the low group — "normal" — or 4 dB above it — "reverse"),
each group's peak 6 dB above the rest of its group, the two tones carrying most of the block's
energy (rejects speech and music), and each tone's frequency within ±2.4 % of nominal, measured
from the phase advance between two overlapping Hann-windowed sub-blocks (accepts ±1.5 %, rejects
±3.5 %, which plain Goertzel energies cannot resolve in 13 ms). A digit is declared after two
consecutive valid blocks each ≥ 80 % covered by the tone pair — its share of the block's energy,
measured at the estimated frequencies — so every tone ≥ 40 ms is seen and tones ≤ 21 ms are not and ends
after two consecutive blocks without it (so a 40 ms pause separates digits, a 10 ms drop-out does
not). The Goertzel filter bank has two implementations — the numpy reference here (a direct DFT
at the given frequencies) and ``media._goertzel`` (the Goertzel recurrence) — tested equal.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from media._accel import load
from media.errors import MediaParseError, MediaUsageError
from media.port import Frame, samples_per_frame
from media.tones import dbm0_to_amplitude

__all__ = [
    "COLUMN_FREQUENCIES",
    "DIGITS",
    "FLASH",
    "ROW_FREQUENCIES",
    "DigitReceived",
    "DtmfDetected",
    "DtmfDetector",
    "DtmfGenerator",
    "DtmfPacket",
    "DtmfReceiver",
    "DtmfSender",
    "DtmfSuppressor",
    "TelephoneEvent",
    "decode_event",
    "digit_to_event",
    "dtmf_tone",
    "encode_event",
    "event_to_digit",
    "goertzel",
    "is_dtmf_frame",
    "tone_ratio",
]

#: Digits in RFC 4733 event-code order (event 0..15); event 16 is flash ("!").
DIGITS = "0123456789*#ABCD"
FLASH = 16
_FLASH_DIGIT = "!"
ROW_FREQUENCIES = (697.0, 770.0, 852.0, 941.0)
COLUMN_FREQUENCIES = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")


def digit_to_event(digit: str) -> int:
    """RFC 4733 event code of a DTMF digit (0-9, *, #, A-D, ``!`` for flash)."""
    d = digit.upper()
    if d == _FLASH_DIGIT:
        return FLASH
    idx = DIGITS.find(d) if len(d) == 1 else -1
    if idx < 0:
        raise MediaUsageError(f"{digit!r} is not a DTMF digit")
    return idx


def event_to_digit(event: int) -> str | None:
    """The digit of an RFC 4733 event code, or None for a non-DTMF event."""
    if 0 <= event < 16:
        return DIGITS[event]
    return _FLASH_DIGIT if event == FLASH else None


def _frequencies(digit: str) -> tuple[float, float]:
    d = digit.upper()
    for r, row in enumerate(_KEYPAD):
        c = row.find(d)
        if c >= 0 and len(d) == 1:
            return ROW_FREQUENCIES[r], COLUMN_FREQUENCIES[c]
    raise MediaUsageError(f"{digit!r} has no DTMF tone pair")


# --- RFC 4733 payload ----------------------------------------------------------------------


@dataclass(frozen=True)
class TelephoneEvent:
    """One RFC 4733 telephone-event payload."""

    event: int
    end: bool
    volume: int  #: 0..63, the power level as −dBm0
    duration: int  #: 0..65535, in RTP timestamp units

    @property
    def digit(self) -> str | None:
        """The DTMF digit of this event, if it is one."""
        return event_to_digit(self.event)


def encode_event(ev: TelephoneEvent) -> bytes:
    """The 4-byte payload of ``ev`` (RFC 4733 §2.3); the R bit is sent as zero."""
    if not (0 <= ev.event <= 255 and 0 <= ev.volume <= 63 and 0 <= ev.duration <= 0xFFFF):
        raise MediaUsageError(f"telephone-event field out of range: {ev}")
    return bytes(
        (ev.event, (0x80 if ev.end else 0) | ev.volume, ev.duration >> 8, ev.duration & 0xFF)
    )


def decode_event(payload: bytes) -> TelephoneEvent:
    """Parse a telephone-event payload; raises ``MediaParseError`` if shorter than 4 bytes.

    Only the first event block is read (RFC 2198 redundancy, if any, is the RTP layer's).
    """
    if len(payload) < 4:
        raise MediaParseError(f"telephone-event payload of {len(payload)} bytes, need 4")
    return TelephoneEvent(
        event=payload[0],
        end=bool(payload[1] & 0x80),
        volume=payload[1] & 0x3F,
        duration=(payload[2] << 8) | payload[3],
    )


@dataclass(frozen=True)
class DtmfPacket:
    """A telephone-event packet for the RTP layer to send (it owns SSRC and sequence numbers)."""

    payload: bytes
    timestamp: int  #: RTP timestamp: the start of the event (segment)
    marker: bool  #: set on the first packet of an event
    event: TelephoneEvent
    retransmission: bool = False  #: a repeated final packet (§2.5.1.4)


class _SenderState(enum.Enum):
    IDLE = "idle"
    SENDING = "sending"
    ENDING = "ending"
    GAP = "gap"


@dataclass
class _Pending:
    event: int
    duration: int | None  # timestamp units; None = until stop()


class DtmfSender:
    """Turns digits into RFC 4733 packets, one ``tick(timestamp)`` per packet interval.

    While ``active`` the RTP layer should send these packets instead of audio.
    """

    def __init__(
        self,
        clock_rate: int = 8000,
        packet_ms: int = 20,
        volume: int = 10,
        end_repeats: int = 3,
    ) -> None:
        if not 0 <= volume <= 63:
            raise MediaUsageError("volume is 0..63 (−dBm0)")
        self.clock_rate = clock_rate
        self.interval = clock_rate * packet_ms // 1000
        self.volume = volume
        self.end_repeats = max(1, end_repeats)
        self._queue: deque[_Pending | int] = deque()  # int entries are gaps in intervals
        self._state = _SenderState.IDLE
        self._current: _Pending | None = None
        self._start = 0
        self._elapsed = 0
        self._final: DtmfPacket | None = None
        self._repeats_left = 0
        self._gap_left = 0

    @property
    def active(self) -> bool:
        """True while an event is being sent (including its final-packet repeats)."""
        return self._state in (_SenderState.SENDING, _SenderState.ENDING)

    @property
    def busy(self) -> bool:
        """True while anything (events or gaps) remains to be sent."""
        return self._state != _SenderState.IDLE or bool(self._queue)

    def send(self, digits: str, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Queue ``digits``, each lasting ``duration_ms`` and followed by ``gap_ms`` of audio."""
        events = [digit_to_event(d) for d in digits]  # validate all before queueing any
        for ev in events:
            self._queue.append(_Pending(ev, max(1, duration_ms * self.clock_rate // 1000)))
            gap = -(-gap_ms * self.clock_rate // 1000 // self.interval)  # whole intervals, ≥ 1
            if gap > 0:
                self._queue.append(gap)

    def start(self, digit: str) -> None:
        """Queue an event that lasts until ``stop()`` (a key held down)."""
        self._queue.append(_Pending(digit_to_event(digit), None))

    def stop(self) -> None:
        """End the open-ended event now (its final packets follow on the next ticks)."""
        if self._current is not None and self._current.duration is None:
            self._current.duration = self._elapsed

    def tick(self, timestamp: int) -> list[DtmfPacket]:
        """Packets for the packet interval starting at RTP ``timestamp`` (usually 0 or 1)."""
        if self._state == _SenderState.ENDING:
            assert self._final is not None
            self._repeats_left -= 1
            if self._repeats_left <= 0:
                self._state = _SenderState.IDLE
                self._current = None
            return [
                DtmfPacket(self._final.payload, self._final.timestamp, False, self._final.event,
                           retransmission=True)
            ]
        if self._state == _SenderState.GAP:
            self._gap_left -= 1
            if self._gap_left <= 0:
                self._state = _SenderState.IDLE
            return []
        if self._state == _SenderState.IDLE:
            if not self._queue:
                return []
            item = self._queue.popleft()
            if isinstance(item, int):  # a gap of `item` intervals, this one being the first
                self._gap_left = item - 1
                if self._gap_left > 0:
                    self._state = _SenderState.GAP
                return []
            self._current = item
            self._start = timestamp & 0xFFFFFFFF
            self._elapsed = 0
            self._state = _SenderState.SENDING
            return [self._advance(marker=True)]
        return [self._advance(marker=False)]

    def _advance(self, marker: bool) -> DtmfPacket:
        cur = self._current
        assert cur is not None
        self._elapsed += self.interval
        if self._elapsed > 0xFFFF and (cur.duration is None or cur.duration > 0xFFFF):
            # §2.5.1.3: the segment closes at the maximum duration; the next one starts where
            # it ends (timestamp + 0xFFFF) and carries the rest.
            full = TelephoneEvent(cur.event, False, self.volume, 0xFFFF)
            packet = DtmfPacket(encode_event(full), self._start, marker, full)
            self._start = (self._start + 0xFFFF) & 0xFFFFFFFF
            self._elapsed -= 0xFFFF
            if cur.duration is not None:
                cur.duration -= 0xFFFF
            return packet
        end = cur.duration is not None and self._elapsed >= cur.duration
        ev = TelephoneEvent(cur.event, end, self.volume, min(self._elapsed, 0xFFFF))
        packet = DtmfPacket(encode_event(ev), self._start, marker, ev)
        if end:
            self._final = packet
            self._repeats_left = self.end_repeats - 1
            if self._repeats_left > 0:
                self._state = _SenderState.ENDING
            else:
                self._state = _SenderState.IDLE
                self._current = None
        return packet


@dataclass(frozen=True)
class DigitReceived:
    """A DTMF digit arrived as an RFC 4733 event (reported once per event)."""

    digit: str
    timestamp: int
    volume: int


@dataclass
class _Seen:
    timestamp: int
    event: int
    duration: int
    ended: bool


class DtmfReceiver:
    """Reports each telephone-event once, de-duplicated by RTP timestamp."""

    def __init__(self, history: int = 16) -> None:
        self._seen: deque[_Seen] = deque(maxlen=history)

    def receive(self, payload: bytes, timestamp: int, marker: bool = False) -> list[DigitReceived]:
        """Feed one telephone-event packet; returns the digit if this is a new event.

        Raises ``MediaParseError`` for a payload shorter than 4 bytes; non-DTMF events are ignored.
        """
        ev = decode_event(payload)
        digit = event_to_digit(ev.event)
        for seen in self._seen:
            if seen.timestamp == timestamp and seen.event == ev.event:
                seen.duration = max(seen.duration, ev.duration)
                seen.ended = seen.ended or ev.end
                return []
        last = self._seen[-1] if self._seen else None
        self._seen.append(_Seen(timestamp, ev.event, ev.duration, ev.end))
        if (
            last is not None
            and not marker
            and last.event == ev.event
            and not last.ended
            and timestamp == (last.timestamp + 0xFFFF) & 0xFFFFFFFF
        ):
            return []  # the next segment of a long event (§2.5.1.3), not a new key press
        if digit is None:
            return []
        return [DigitReceived(digit, timestamp, ev.volume)]


# --- Goertzel kernels (reference; media._goertzel has the same interface) ------------------


def goertzel_powers(x: Any, freqs: Any, rate: float, out: Any) -> None:
    """Reference: ``out[k] = |Σ x[n]·e^(−j2π·freqs[k]·n/rate)|²`` (float64 buffers)."""
    xs = np.asarray(x, dtype=np.float64)
    fs = np.asarray(freqs, dtype=np.float64)
    n = np.arange(xs.shape[0], dtype=np.float64)
    spectrum = np.exp(-2j * math.pi * np.outer(fs, n) / rate) @ xs
    np.asarray(out)[:] = spectrum.real**2 + spectrum.imag**2


def goertzel_complex(x: Any, freq: float, rate: float) -> tuple[float, float]:
    """Reference: the DTFT ``Σ x[n]·e^(−j2π·freq·n/rate)`` as (real, imaginary)."""
    xs = np.asarray(x, dtype=np.float64)
    n = np.arange(xs.shape[0], dtype=np.float64)
    value = complex(np.exp(-2j * math.pi * freq * n / rate) @ xs)
    return value.real, value.imag


_kernel = load("media._goertzel", __name__)


def goertzel(frame: npt.ArrayLike, freq: float, rate: int) -> float:
    """Amplitude (PCM units) of the ``freq`` component of ``frame``: a sine of amplitude A → ≈A.

    Useful in tests anywhere in the project to check that a tone is present.
    """
    x = np.ascontiguousarray(frame, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return 0.0
    re, im = _kernel.goertzel_complex(x, float(freq), float(rate))
    return 2.0 * math.hypot(re, im) / x.size


def tone_ratio(frame: npt.ArrayLike, freq: float, rate: int) -> float:
    """Fraction (0..~1) of ``frame``'s energy that is at ``freq``: ≈1 for a pure tone there."""
    x = np.ascontiguousarray(frame, dtype=np.float64).reshape(-1)
    energy = float(x @ x)
    if energy == 0.0:
        return 0.0
    amp = goertzel(x, freq, rate)
    return (amp * amp / 2.0) * x.size / energy


# --- tone generation ------------------------------------------------------------------------


def dtmf_tone(
    digit: str,
    duration_ms: float,
    rate: int = 8000,
    *,
    low_dbm0: float = -7.0,
    high_dbm0: float = -5.0,
    low_deviation: float = 0.0,
    high_deviation: float = 0.0,
    phase: float = 0.0,
) -> npt.NDArray[np.int16]:
    """``duration_ms`` of the tone pair of ``digit`` (deviations are fractions, 0.015 = +1.5 %)."""
    low, high = _frequencies(digit)
    n = round(duration_ms * rate / 1000)
    t = np.arange(n, dtype=np.float64) / rate
    sig = dbm0_to_amplitude(low_dbm0) * np.sin(2 * math.pi * low * (1 + low_deviation) * t + phase)
    sig += dbm0_to_amplitude(high_dbm0) * np.sin(2 * math.pi * high * (1 + high_deviation) * t)
    out: npt.NDArray[np.int16] = np.clip(np.rint(sig), -32768, 32767).astype(np.int16)
    return out


class DtmfGenerator:
    """A media port that plays a digit string in-band (tone, pause, tone, …), then ``None``."""

    def __init__(
        self, digits: str, sample_rate: int = 8000, duration_ms: int = 100, gap_ms: int = 100
    ) -> None:
        parts = []
        for d in digits:
            parts.append(dtmf_tone(d, duration_ms, sample_rate))
            parts.append(np.zeros(round(gap_ms * sample_rate / 1000), dtype=np.int16))
        self.sample_rate = sample_rate
        self._signal = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        self._pos = 0

    def get_frame(self) -> Frame | None:
        """The next 20 ms (zero-padded at the end), or None when done."""
        if self._pos >= self._signal.size:
            return None
        n = samples_per_frame(self.sample_rate)
        frame = np.zeros(n, dtype=np.int16)
        chunk = self._signal[self._pos : self._pos + n]
        frame[: chunk.size] = chunk
        self._pos += n
        return frame

    def put_frame(self, frame: Frame) -> None:
        """A source only; ignored."""


# --- in-band detector -----------------------------------------------------------------------


@dataclass(frozen=True)
class DtmfDetected:
    """The in-band detector recognised ``digit``; ``sample`` is where (samples since start)."""

    digit: str
    sample: int


#: Detector limits (ITU-T Q.24 style); twist is high-group level relative to low-group level.
MAX_NORMAL_TWIST_DB = 8.0  # high group may be up to 8 dB below the low group
MAX_REVERSE_TWIST_DB = 4.0  # …or up to 4 dB above it
MIN_LEVEL_DBM0 = -36.0  # per tone
FREQUENCY_TOLERANCE = 0.024  # accept ±1.5 %, reject ±3.5 %
RELATIVE_PEAK_DB = 6.0
MIN_TONE_ENERGY_FRACTION = 0.6
_FULL_BLOCK_COVERAGE = 0.8  # both onset blocks must be (nearly) full of tone
_BLOCK_SECONDS = 0.01325

_ALL_FREQUENCIES = np.array(ROW_FREQUENCIES + COLUMN_FREQUENCIES, dtype=np.float64)


class DtmfDetector:
    """In-band DTMF detection over any sequence of sample chunks (sans-IO)."""

    def __init__(self, sample_rate: int = 8000) -> None:
        self.sample_rate = sample_rate
        self.block = max(32, round(sample_rate * _BLOCK_SECONDS))
        self._hop = self.block // 4
        self._window = np.hanning(self.block - self._hop)
        self._block_window = np.hanning(self.block)
        self._block_window_sum = float(self._block_window.sum())
        self._buffer = np.zeros(0, dtype=np.float64)
        self._position = 0  # samples consumed into blocks
        self._powers = np.zeros(8, dtype=np.float64)
        self._min_amplitude = dbm0_to_amplitude(MIN_LEVEL_DBM0)
        self._prev: tuple[str, float] | None = None  # last block's digit and energy
        self._current: str | None = None
        self._misses = 0
        self._digits: list[str] = []

    def process(self, samples: npt.ArrayLike) -> list[DtmfDetected]:
        """Feed samples (int16 or float); returns the digits recognised in them."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        self._buffer = np.concatenate((self._buffer, x)) if self._buffer.size else x.copy()
        found: list[DtmfDetected] = []
        n = self.block
        while self._buffer.size >= n:
            block = np.ascontiguousarray(self._buffer[:n])
            self._buffer = self._buffer[n:]
            self._position += n
            digit, coverage = self._classify(block)
            event = self._track(digit, coverage)
            if event is not None:
                found.append(DtmfDetected(event, self._position))
        return found

    def put_frame(self, frame: Frame) -> None:
        """Port-style input; the digits go to ``digits``."""
        self.digits.extend(d.digit for d in self.process(frame))

    @property
    def digits(self) -> list[str]:
        """Digits collected by ``put_frame`` (the caller may clear the list)."""
        return self._digits

    def _track(self, digit: str | None, coverage: float) -> str | None:
        prev, self._prev = self._prev, ((digit, coverage) if digit is not None else None)
        if self._current is not None:
            if digit == self._current:
                self._misses = 0
                return None
            self._misses += 1
            if self._misses < 2:
                return None
            self._current = None
        if digit is None or prev is None or prev[0] != digit:
            return None
        if min(prev[1], coverage) < _FULL_BLOCK_COVERAGE:
            return None  # one of the two blocks is only partly tone: too short so far
        self._current = digit
        self._misses = 0
        return digit

    def _classify(self, x: npt.NDArray[np.float64]) -> tuple[str | None, float]:
        energy = float(x @ x)
        n = x.size
        if energy <= 0.0:
            return None, 0.0
        p = self._powers
        _kernel.goertzel_powers(x, _ALL_FREQUENCIES, float(self.sample_rate), p)
        rows, cols = p[:4], p[4:]
        r = int(np.argmax(rows))
        c = int(np.argmax(cols))
        pr, pc = float(rows[r]), float(cols[c])
        if pr <= 0.0 or pc <= 0.0:
            return None, 0.0
        rel = 10.0 ** (RELATIVE_PEAK_DB / 10.0)
        if any(rows[i] * rel > pr for i in range(4) if i != r):
            return None, 0.0
        if any(cols[i] * rel > pc for i in range(4) if i != c):
            return None, 0.0
        freqs = np.empty(2, dtype=np.float64)
        for i, f in enumerate((ROW_FREQUENCIES[r], COLUMN_FREQUENCIES[c])):
            offset = self._offset(x, f)
            if abs(offset) > FREQUENCY_TOLERANCE * f:
                return None, 0.0
            freqs[i] = f + offset
        # Level, twist and energy share use powers at the measured frequencies: the nominal
        # filters lose up to ~1.5 dB to an allowed frequency offset (scalloping).
        measured = np.empty(2, dtype=np.float64)
        _kernel.goertzel_powers(x, freqs, float(self.sample_rate), measured)
        mr, mc = float(measured[0]), float(measured[1])
        # Level and twist through a Hann window: the rectangular block leaks a strong low tone
        # into the high tone's filter by up to ±1 dB, too much for a 8 dB twist limit.
        windowed = np.empty(2, dtype=np.float64)
        _kernel.goertzel_powers(x * self._block_window, freqs, float(self.sample_rate), windowed)
        wr, wc = float(windowed[0]), float(windowed[1])
        if min(wr, wc) <= 0.0 or 2.0 * math.sqrt(min(wr, wc)) / self._block_window_sum < (
            self._min_amplitude
        ):
            return None, 0.0
        twist_db = 10.0 * math.log10(wc / wr)
        if twist_db < -MAX_NORMAL_TWIST_DB or twist_db > MAX_REVERSE_TWIST_DB:
            return None, 0.0
        # The pair's share of the block's energy: rejects speech and music, and — the rest being
        # silence at a tone's edge — tells how much of the block the tone covers.
        coverage = (mr + mc) / (energy * n / 2.0)
        if coverage < MIN_TONE_ENERGY_FRACTION:
            return None, 0.0
        return _KEYPAD[r][c], coverage

    def _offset(self, x: npt.NDArray[np.float64], freq: float) -> float:
        """Frequency offset (Hz) of the tone near ``freq``: phase advance over ``hop`` samples."""
        h = self._hop
        m = x.size - h
        a = complex(*_kernel.goertzel_complex(x[:m] * self._window, freq, float(self.sample_rate)))
        b = complex(*_kernel.goertzel_complex(x[h:] * self._window, freq, float(self.sample_rate)))
        advance = math.atan2((b * a.conjugate()).imag, (b * a.conjugate()).real)
        expected = 2.0 * math.pi * freq * h / self.sample_rate
        error = (advance - expected + math.pi) % (2.0 * math.pi) - math.pi
        return error * self.sample_rate / (2.0 * math.pi * h)


# --- in-band suppression --------------------------------------------------------------------

#: Suppressor limits: looser than the detector's, since muting a little too much costs 20 ms of
#: audio while a tone that leaks through is dialled twice at the far end.
SUPPRESS_MIN_SHARE = 0.5  # the pair's share of a frame's energy
SUPPRESS_MAX_TWIST_DB = 10.0  # either way


def is_dtmf_frame(frame: npt.ArrayLike, rate: int) -> bool:
    """True when ``frame`` is (mostly) a DTMF pair: one row and one column tone, each at least
    −36 dBm0, within ±10 dB of each other, together most of the frame's energy."""
    x = np.ascontiguousarray(frame, dtype=np.float64).reshape(-1)
    n = x.size
    energy = float(x @ x)
    if n == 0 or energy <= 0.0:
        return False
    p = np.empty(8, dtype=np.float64)
    _kernel.goertzel_powers(x, _ALL_FREQUENCIES, float(rate), p)
    pr = float(p[:4].max())
    pc = float(p[4:].max())
    minimum = dbm0_to_amplitude(MIN_LEVEL_DBM0) * n / 2.0  # |X| of a sine at the minimum level
    if min(pr, pc) < minimum * minimum:
        return False
    if abs(10.0 * math.log10(pc / pr)) > SUPPRESS_MAX_TWIST_DB:
        return False
    return (pr + pc) / (energy * n / 2.0) >= SUPPRESS_MIN_SHARE


class DtmfSuppressor:
    """Mutes in-band DTMF in a stream of frames (sans-IO), for a leg whose digits the far end
    receives as RFC 4733 events or SIP INFO instead: the tone must not reach it as well, or it
    would be dialled twice.

    Frames come out one frame late (:meth:`process` returns the previous frame), so the frame
    before a tone — which a tone starting mid-frame only partly covers — is known to precede a
    tone and is muted too; after the last tone frame ``hangover`` more frames are muted (the
    tone's partly covered end). Muted frames are silence; other frames pass untouched.
    """

    def __init__(self, sample_rate: int = 8000, *, hangover: int = 1) -> None:
        self.sample_rate = sample_rate
        self.hangover = hangover
        self._held: Frame | None = None
        self._held_tone = False
        self._after = 0  # frames still to mute after a tone
        #: Frames replaced by silence so far.
        self.muted = 0

    def process(self, frame: Frame | None) -> Frame | None:
        """Take this tick's frame (None: nothing arrived); return the previous tick's, muted
        when it is DTMF or next to DTMF."""
        tone = frame is not None and is_dtmf_frame(frame, self.sample_rate)
        out, out_tone = self._held, self._held_tone
        self._held, self._held_tone = frame, tone
        if out is None:
            self._after = max(0, self._after - 1)
            return None
        if out_tone:
            self._after = self.hangover
            mute = True
        elif tone:
            mute = True  # the tone starts in the next frame: this one may hold its onset
        elif self._after > 0:
            self._after -= 1
            mute = True
        else:
            mute = False
        if not mute:
            return out
        self.muted += 1
        return np.zeros(len(out), dtype=np.int16)
