"""Call-progress tones: a tone-plan table per country and a phase-continuous tone generator.

A ``Tone`` is a cadence: a sequence of ``Segment``s (duration, frequencies — none means silence)
played once or repeated. A sample belongs to the segment its exact time falls in (integer
arithmetic on samples × 1000 vs cumulative milliseconds × rate, so nothing drifts), and each frequency's oscillator keeps
running through pauses and across frames, so every burst continues the phase it would have had.

German values after 1TR110/ITU-T E.180 Suppl. 2: 425 Hz dial tone, ringback 1 s on 4 s off, busy
480/480 ms, congestion 240/240 ms, call waiting 200 on 200 off 200 on 5 s off. Confirmation,
error (special information tone) and the voicemail beep are our choices where no norm exists.

Usage::

    gen = ToneGenerator(tone_plan("DE")[ToneName.BUSY], sample_rate=8000)
    frame = gen.get_frame()        # 20 ms int16, a media port (media/port.py)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from media.port import Frame, samples_per_frame

__all__ = [
    "DEFAULT_LEVEL_DBM0",
    "TONE_PLANS",
    "Segment",
    "Tone",
    "ToneGenerator",
    "ToneName",
    "dbm0_to_amplitude",
    "tone_plan",
]

#: Level of each frequency component unless a tone says otherwise.
DEFAULT_LEVEL_DBM0 = -13.0
#: A full-scale 16-bit sine is +3.14 dBm0 (G.711's digital milliwatt sits 3.14 dB below clipping).
_FULL_SCALE_DBM0 = 3.14


def dbm0_to_amplitude(level_dbm0: float) -> float:
    """Peak amplitude (16-bit PCM units) of a sine at ``level_dbm0``."""
    return float(32767.0 * 10.0 ** ((level_dbm0 - _FULL_SCALE_DBM0) / 20.0))


class ToneName(enum.Enum):
    """The tones a PBX plays (names after ITU-T E.180)."""

    DIAL = "dial"
    RINGBACK = "ringback"
    BUSY = "busy"
    CONGESTION = "congestion"
    CALL_WAITING = "call_waiting"
    CONFIRMATION = "confirmation"
    ERROR = "error"  # special information tone: number unobtainable, feature refused
    BEEP = "beep"  # voicemail "speak after the beep"


@dataclass(frozen=True)
class Segment:
    """``duration_ms`` of the sum of ``frequencies`` (Hz); no frequencies is silence."""

    duration_ms: int
    frequencies: tuple[float, ...] = ()


@dataclass(frozen=True)
class Tone:
    """A cadence of segments; ``repeat`` loops it forever, otherwise it plays once."""

    segments: tuple[Segment, ...]
    repeat: bool = True
    level_dbm0: float = DEFAULT_LEVEL_DBM0

    @property
    def frequencies(self) -> tuple[float, ...]:
        """Every frequency used, in first-use order."""
        seen: dict[float, None] = {}
        for seg in self.segments:
            for f in seg.frequencies:
                seen.setdefault(f, None)
        return tuple(seen)

    @property
    def cycle_ms(self) -> int:
        """Length of one cadence cycle."""
        return sum(s.duration_ms for s in self.segments)


def _on(ms: int, *freqs: float) -> Segment:
    return Segment(ms, tuple(freqs))


def _off(ms: int) -> Segment:
    return Segment(ms)


_SIT = (_on(330, 950.0), _on(330, 1400.0), _on(330, 1800.0), _off(1000))

#: Tone plans by ISO country code (plus "UK"). Rows are data: add a country by adding a row.
TONE_PLANS: dict[str, dict[ToneName, Tone]] = {
    "DE": {
        ToneName.DIAL: Tone((_on(1000, 425.0),)),
        ToneName.RINGBACK: Tone((_on(1000, 425.0), _off(4000))),
        ToneName.BUSY: Tone((_on(480, 425.0), _off(480))),
        ToneName.CONGESTION: Tone((_on(240, 425.0), _off(240))),
        ToneName.CALL_WAITING: Tone((_on(200, 425.0), _off(200), _on(200, 425.0), _off(5000))),
        ToneName.CONFIRMATION: Tone(
            (_on(100, 425.0), _off(100), _on(100, 425.0), _off(100), _on(100, 425.0), _off(500)),
            repeat=False,
        ),
        ToneName.ERROR: Tone(_SIT),
        ToneName.BEEP: Tone((_on(500, 1000.0),), repeat=False, level_dbm0=-10.0),
    },
    "US": {
        ToneName.DIAL: Tone((_on(1000, 350.0, 440.0),)),
        ToneName.RINGBACK: Tone((_on(2000, 440.0, 480.0), _off(4000))),
        ToneName.BUSY: Tone((_on(500, 480.0, 620.0), _off(500))),
        ToneName.CONGESTION: Tone((_on(250, 480.0, 620.0), _off(250))),
        ToneName.CALL_WAITING: Tone((_on(300, 440.0), _off(9700))),
        ToneName.CONFIRMATION: Tone(
            (_on(100, 350.0, 440.0), _off(100), _on(100, 350.0, 440.0), _off(100),
             _on(100, 350.0, 440.0), _off(500)),
            repeat=False,
        ),
        ToneName.ERROR: Tone(
            (_on(274, 913.8), _on(274, 1370.6), _on(380, 1776.7), _off(1000))
        ),
        ToneName.BEEP: Tone((_on(500, 1000.0),), repeat=False, level_dbm0=-10.0),
    },
    "UK": {
        ToneName.DIAL: Tone((_on(1000, 350.0, 450.0),)),
        ToneName.RINGBACK: Tone(
            (_on(400, 400.0, 450.0), _off(200), _on(400, 400.0, 450.0), _off(2000))
        ),
        ToneName.BUSY: Tone((_on(375, 400.0), _off(375))),
        ToneName.CONGESTION: Tone(
            (_on(400, 400.0), _off(350), _on(225, 400.0), _off(525))
        ),
        ToneName.CALL_WAITING: Tone((_on(100, 400.0), _off(3000))),
        ToneName.CONFIRMATION: Tone(
            (_on(100, 1400.0), _off(100), _on(100, 1400.0), _off(500)), repeat=False
        ),
        ToneName.ERROR: Tone(_SIT),
        ToneName.BEEP: Tone((_on(500, 1000.0),), repeat=False, level_dbm0=-10.0),
    },
}


def tone_plan(country: str = "DE") -> dict[ToneName, Tone]:
    """The tone plan of ``country`` (case-insensitive; "GB" is an alias of "UK")."""
    code = country.upper()
    code = "UK" if code == "GB" else code
    try:
        return TONE_PLANS[code]
    except KeyError:
        raise ValueError(f"no tone plan for {country!r}; known: {sorted(TONE_PLANS)}") from None


class ToneGenerator:
    """A media port playing ``tone`` at ``sample_rate`` (sample-accurate, phase-continuous).

    ``get_frame()`` returns 20 ms frames (silent frames during pauses) and ``None`` once a
    non-repeating tone has finished. ``read(n)`` returns any number of samples the same way.
    """

    def __init__(
        self, tone: Tone, sample_rate: int = 8000, level_dbm0: float | None = None
    ) -> None:
        if sample_rate <= 0:
            raise ValueError("sample rate must be positive")
        if not tone.segments or tone.cycle_ms <= 0:
            raise ValueError("a tone needs at least one segment of positive length")
        self.tone = tone
        self.sample_rate = sample_rate
        self.amplitude = dbm0_to_amplitude(tone.level_dbm0 if level_dbm0 is None else level_dbm0)
        self._freqs = tone.frequencies
        # Segment ends in units of 1/rate ms (cumulative ms × rate): sample n belongs to the
        # segment containing its time n × 1000 / rate exactly, in integers, so a cadence never
        # drifts even when a cycle is not a whole number of samples (e.g. 10 ms at 11,025 Hz).
        cum = np.cumsum([seg.duration_ms for seg in tone.segments]).astype(np.int64)
        self._ends = cum * sample_rate
        self._cycle = int(self._ends[-1])
        # Which frequencies sound in each segment: [segment, frequency] 0/1 weights.
        self._weights = np.array(
            [[1.0 if f in seg.frequencies else 0.0 for f in self._freqs] for seg in tone.segments],
            dtype=np.float64,
        ).reshape(len(tone.segments), len(self._freqs))
        self._phase = np.zeros(len(self._freqs), dtype=np.float64)  # in cycles, wrapped to [0, 1)
        self._step = np.array([f / sample_rate for f in self._freqs], dtype=np.float64)
        self._position = 0  # samples played since start

    @property
    def finished(self) -> bool:
        """True once a non-repeating tone has played to its end."""
        return not self.tone.repeat and self._position * 1000 >= self._cycle

    @property
    def position(self) -> int:
        """Samples generated so far."""
        return self._position

    def read(self, n: int) -> npt.NDArray[np.int16]:
        """The next ``n`` samples (silence after a non-repeating tone's end)."""
        time = (self._position + np.arange(n, dtype=np.int64)) * 1000
        if self.tone.repeat:
            in_cycle = time % self._cycle
            playing = np.ones(n, dtype=bool)
        else:
            in_cycle = np.minimum(time, self._cycle - 1)
            playing = time < self._cycle
        segment = np.searchsorted(self._ends, in_cycle, side="right")
        weights = self._weights[segment] * playing[:, None]  # [n, freqs]
        k = np.arange(n, dtype=np.float64)[:, None]
        phases = self._phase[None, :] + k * self._step[None, :]
        signal = (np.sin(2.0 * math.pi * phases) * weights).sum(axis=1) * self.amplitude
        # The oscillators run on through pauses: that is what makes bursts phase-continuous.
        self._phase = (self._phase + n * self._step) % 1.0
        self._position += n
        out: npt.NDArray[np.int16] = np.clip(np.rint(signal), -32768, 32767).astype(np.int16)
        return out

    def get_frame(self) -> Frame | None:
        """The next 20 ms, or None when a non-repeating tone is over."""
        if self.finished:
            return None
        return self.read(samples_per_frame(self.sample_rate))

    def put_frame(self, frame: Frame) -> None:
        """A tone generator is a source only; frames put into it are ignored."""

    def reset(self) -> None:
        """Start the cadence (and the oscillators) from the beginning."""
        self._position = 0
        self._phase[:] = 0.0
