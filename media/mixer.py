"""The conference mixer: N-party mix-minus for every conference in one kernel call per tick.

Theory of operation
-------------------
All participants of all conferences are rows of one set of preallocated arrays (``[P, L]`` frames,
``L = sample_rate // 50``), each row carrying its conference index, flags, codec and gains. Once
per 20 ms tick ``Mixer.mix()`` makes ONE kernel call over all rows (DESIGN.md principle 5):

1. every row that TALKs and got a FRESH frame this tick (G.711 rows are decoded from their payload
   first) contributes ``clip16((pcm * talk_gain) >> 12)`` to its conference's int32 sum;
2. every row that LISTENs gets ``clip16(((sum - own_contribution) * listen_gain) >> 12)`` —
   everybody but itself (mix-minus) — and G.711 rows get it encoded into their output payload;
3. FRESH is cleared, so a participant whose frame did not arrive is silent next tick.

Gains are Q12 integers (4096 = 1.0, range 0..65535). Modes: NORMAL (talk+listen), LISTEN_ONLY,
TALK_ONLY; mute removes the TALK flag without changing the mode. The kernel interface
``MixKernel(arrays…).mix(start, stop)`` exists twice: the numpy reference below and the Cython
kernel ``media._mixer``, tested equal; ``media._accel.load`` picks one at import time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from media import g711
from media._accel import load
from media.errors import MediaUsageError
from media.port import Frame, samples_per_frame

__all__ = [
    "FRESH",
    "LISTEN",
    "TALK",
    "UNITY_GAIN",
    "Codec",
    "MixKernel",
    "Mixer",
    "Mode",
    "ParticipantPort",
    "gain_to_q12",
]

#: Row flag: the row's signal goes into its conference's sum.
TALK = 1
#: Row flag: the row receives the mix of the others.
LISTEN = 2
#: Row flag: a frame arrived for this row this tick (cleared by every mix).
FRESH = 4
#: Q12 gain of 1.0.
UNITY_GAIN = 4096
_MAX_GAIN = 65535


class Codec(enum.IntEnum):
    """How a row's audio enters and leaves the mixer."""

    LINEAR = 0  #: int16 frames in ``pcm_in`` / out of ``pcm_out``
    PCMU = 1  #: µ-law payloads in ``payload_in`` / out of ``payload_out`` (8 kHz only)
    PCMA = 2  #: A-law payloads, likewise


class Mode(enum.Enum):
    """What a participant does in its conference."""

    NORMAL = TALK | LISTEN
    LISTEN_ONLY = LISTEN
    TALK_ONLY = TALK


def gain_to_q12(gain: float) -> int:
    """A linear gain factor as the Q12 integer the kernel uses (clamped to 0..65535)."""
    return max(0, min(_MAX_GAIN, round(gain * UNITY_GAIN)))


_TABLES: dict[str, npt.NDArray[np.int16] | npt.NDArray[np.uint8]] = {}


def _table(name: str) -> npt.NDArray[np.int16] | npt.NDArray[np.uint8]:
    # Built lazily from the G.711 reference so importing the mixer stays cheap.
    if not _TABLES:
        from media import g711

        _TABLES["ulaw_dec"] = g711.decode_table("ulaw")
        _TABLES["alaw_dec"] = g711.decode_table("alaw")
        _TABLES["ulaw_enc"] = g711.encode_table("ulaw")
        _TABLES["alaw_enc"] = g711.encode_table("alaw")
    return _TABLES[name]


class MixKernel:
    """numpy reference of the mix-minus kernel, bound once to the mixer's arrays.

    ``pcm_in``/``pcm_out`` are int16 ``[P, L]``, ``payload_in``/``payload_out`` uint8 ``[P, L]``,
    ``conference`` int32 ``[P]`` (index < ``n_conferences``), ``flags``/``codec`` uint8 ``[P]``,
    ``talk_gain``/``listen_gain`` int32 ``[P]`` (Q12). Rows that do not LISTEN keep their output
    untouched. G.711 talkers get their decoded frame written to ``pcm_in``; G.711 listeners get
    both ``pcm_out`` and ``payload_out``.
    """

    def __init__(
        self,
        pcm_in: npt.NDArray[np.int16],
        pcm_out: npt.NDArray[np.int16],
        payload_in: npt.NDArray[np.uint8],
        payload_out: npt.NDArray[np.uint8],
        conference: npt.NDArray[np.int32],
        flags: npt.NDArray[np.uint8],
        codec: npt.NDArray[np.uint8],
        talk_gain: npt.NDArray[np.int32],
        listen_gain: npt.NDArray[np.int32],
        n_conferences: int,
    ) -> None:
        rows, length = pcm_in.shape
        per_row = (conference, flags, codec, talk_gain, listen_gain)
        if any(a.shape[0] != rows for a in (pcm_out, payload_in, payload_out, *per_row)):
            raise ValueError("all per-row arrays need the same number of rows")
        if any(a.shape[1] != length for a in (pcm_out, payload_in, payload_out)):
            raise ValueError("all frame arrays need the same frame length")
        if n_conferences < 1 or length < 1:
            raise ValueError("need at least one conference slot and one sample")
        self.pcm_in, self.pcm_out = pcm_in, pcm_out
        self.payload_in, self.payload_out = payload_in, payload_out
        self.conference, self.flags, self.codec = conference, flags, codec
        self.talk_gain, self.listen_gain = talk_gain, listen_gain
        self.n_conferences = n_conferences

    def mix(self, start: int, stop: int) -> None:
        """Mix rows ``[start, stop)``: decode, mix-minus, saturate, encode; clear FRESH."""
        if start < 0 or stop > self.pcm_in.shape[0] or start > stop:
            raise ValueError("row range out of bounds")
        flags = self.flags[start:stop]
        conf = self.conference[start:stop]
        active = (flags & (TALK | LISTEN)) != 0
        bad = active & ((conf < 0) | (conf >= self.n_conferences))
        if bad.any():
            p = start + int(np.argmax(bad))
            raise ValueError(f"row {p} has conference {self.conference[p]} outside the accumulator")
        codec = self.codec[start:stop]
        talk = (flags & (TALK | FRESH)) == (TALK | FRESH)
        listen = (flags & LISTEN) != 0

        # Decode the G.711 talkers into their pcm_in rows.
        for code, table in ((Codec.PCMU, "ulaw_dec"), (Codec.PCMA, "alaw_dec")):
            rows = start + np.flatnonzero(talk & (codec == code))
            if rows.size:
                self.pcm_in[rows] = _table(table)[self.payload_in[rows]]

        # Each talker's contribution: gain in Q12, clipped to int16.
        pcm = self.pcm_in[start:stop].astype(np.int64)
        gain = self.talk_gain[start:stop].astype(np.int64)[:, None]
        own = np.where(talk[:, None], np.clip((pcm * gain) >> 12, -32768, 32767), 0)

        # Per-conference sums, then everybody-but-me for the listeners.
        total = np.zeros((self.n_conferences, pcm.shape[1]), dtype=np.int64)
        np.add.at(total, conf[talk], own[talk])
        li = np.flatnonzero(listen)
        heard = total[conf[li]] - own[li]
        heard = (heard * self.listen_gain[start:stop][li].astype(np.int64)[:, None]) >> 12
        self.pcm_out[start + li] = np.clip(heard, -32768, 32767).astype(np.int16)

        for code, table in ((Codec.PCMU, "ulaw_enc"), (Codec.PCMA, "alaw_enc")):
            rows = start + np.flatnonzero(listen & (codec == code))
            if rows.size:
                self.payload_out[rows] = _table(table)[self.pcm_out[rows].view(np.uint16)]

        self.flags[start:stop] = flags & np.uint8(0xFF ^ FRESH)


_kernel = load("media._mixer", __name__)


@dataclass
class _Participant:
    conference: int
    mode: Mode
    muted: bool


@dataclass(eq=False)
class ParticipantPort:
    """A media port (media/port.py) for one participant of a ``Mixer``.

    ``put_frame`` delivers what the participant says this tick; ``get_frame`` returns what it
    hears (the last ``mix()``), or ``None`` when it does not listen.
    """

    mixer: Mixer
    participant: int

    @property
    def sample_rate(self) -> int:
        """The mixer's rate."""
        return self.mixer.sample_rate

    def get_frame(self) -> Frame | None:
        """What this participant hears after the last mix."""
        return self.mixer.get_frame(self.participant)

    def put_frame(self, frame: Frame) -> None:
        """What this participant says in this tick."""
        self.mixer.put_frame(self.participant, frame)


class Mixer:
    """All conferences of one sample rate, mixed by one kernel call per tick.

    Participant ids are row indices and conference ids accumulator indices; both stay valid until
    removed and are reused afterwards. The arrays grow (doubling) when full. Batch I/O may write
    ``payload_in``/``pcm_in`` rows directly and call ``mark_fresh``; outputs are ``pcm_out`` and
    ``payload_out`` rows after ``mix()``.
    """

    pcm_in: npt.NDArray[np.int16]
    pcm_out: npt.NDArray[np.int16]
    payload_in: npt.NDArray[np.uint8]
    payload_out: npt.NDArray[np.uint8]
    conference: npt.NDArray[np.int32]
    flags: npt.NDArray[np.uint8]
    codec: npt.NDArray[np.uint8]
    talk_gain: npt.NDArray[np.int32]
    listen_gain: npt.NDArray[np.int32]

    def __init__(self, sample_rate: int = 8000, capacity: int = 32, conferences: int = 8) -> None:
        if sample_rate % 50 or sample_rate <= 0:
            raise MediaUsageError(f"sample rate {sample_rate} has no whole 20 ms frame")
        self.sample_rate = sample_rate
        self.samples_per_frame = samples_per_frame(sample_rate)
        self._participants: dict[int, _Participant] = {}
        self._members: dict[int, set[int]] = {}
        self._free_rows: list[int] = []
        self._free_conferences: list[int] = []
        self._next_row = 0
        self._next_conference = 0
        self._allocate(max(1, capacity), max(1, conferences))

    # -- storage -----------------------------------------------------------------------------

    def _allocate(self, rows: int, conferences: int) -> None:
        L = self.samples_per_frame
        pcm_in = np.zeros((rows, L), np.int16)
        pcm_out = np.zeros((rows, L), np.int16)
        payload_in = np.zeros((rows, L), np.uint8)
        payload_out = np.zeros((rows, L), np.uint8)
        conference = np.zeros(rows, np.int32)
        flags = np.zeros(rows, np.uint8)
        codec = np.zeros(rows, np.uint8)
        talk_gain = np.full(rows, UNITY_GAIN, np.int32)
        listen_gain = np.full(rows, UNITY_GAIN, np.int32)
        if hasattr(self, "pcm_in"):  # growing: keep every row where it was (ids stay valid)
            n = self.pcm_in.shape[0]
            pcm_in[:n], pcm_out[:n] = self.pcm_in, self.pcm_out
            payload_in[:n], payload_out[:n] = self.payload_in, self.payload_out
            conference[:n], flags[:n], codec[:n] = self.conference, self.flags, self.codec
            talk_gain[:n], listen_gain[:n] = self.talk_gain, self.listen_gain
        self.pcm_in, self.pcm_out = pcm_in, pcm_out
        self.payload_in, self.payload_out = payload_in, payload_out
        self.conference, self.flags, self.codec = conference, flags, codec
        self.talk_gain, self.listen_gain = talk_gain, listen_gain
        self._conference_capacity = conferences
        self._kernel = _kernel.MixKernel(
            pcm_in, pcm_out, payload_in, payload_out, conference, flags, codec,
            talk_gain, listen_gain, conferences,
        )

    @property
    def capacity(self) -> int:
        """Rows allocated."""
        return int(self.pcm_in.shape[0])

    # -- conferences and participants --------------------------------------------------------

    def add_conference(self) -> int:
        """Create an empty conference; returns its id."""
        if self._free_conferences:
            conf = self._free_conferences.pop()
        else:
            conf = self._next_conference
            self._next_conference += 1
            if conf >= self._conference_capacity:
                self._allocate(self.capacity, self._conference_capacity * 2)
        self._members[conf] = set()
        return conf

    def remove_conference(self, conference: int) -> None:
        """Remove a conference and all its participants."""
        for pid in sorted(self._conference_members(conference)):
            self.remove_participant(pid)
        del self._members[conference]
        self._free_conferences.append(conference)

    def participants(self, conference: int) -> list[int]:
        """Participant ids of ``conference``."""
        return sorted(self._conference_members(conference))

    @property
    def conferences(self) -> list[int]:
        """Ids of the existing conferences."""
        return sorted(self._members)

    def add_participant(
        self,
        conference: int,
        *,
        mode: Mode = Mode.NORMAL,
        codec: Codec = Codec.LINEAR,
        talk_gain: float = 1.0,
        listen_gain: float = 1.0,
        muted: bool = False,
    ) -> int:
        """Add a participant to ``conference``; returns its id (its row)."""
        members = self._conference_members(conference)
        if codec != Codec.LINEAR and self.sample_rate != 8000:
            raise MediaUsageError("G.711 rows need an 8 kHz mixer")
        if len(members) >= 65535:
            raise MediaUsageError("a conference holds at most 65,535 participants")
        if self._free_rows:
            row = self._free_rows.pop()
        else:
            row = self._next_row
            self._next_row += 1
            if row >= self.capacity:
                self._allocate(self.capacity * 2, self._conference_capacity)
        self._participants[row] = _Participant(conference, mode, muted)
        members.add(row)
        self.conference[row] = conference
        self.codec[row] = codec
        self.talk_gain[row] = gain_to_q12(talk_gain)
        self.listen_gain[row] = gain_to_q12(listen_gain)
        self.pcm_in[row] = 0
        self.pcm_out[row] = 0
        self.payload_out[row] = 0xFF if codec == Codec.PCMU else 0xD5
        self._update_flags(row)
        return row

    def remove_participant(self, participant: int) -> None:
        """Remove a participant; its row becomes inactive and reusable."""
        info = self._get(participant)
        self._members[info.conference].discard(participant)
        del self._participants[participant]
        self.flags[participant] = 0
        self._free_rows.append(participant)

    def set_gain(
        self, participant: int, *, talk: float | None = None, listen: float | None = None
    ) -> None:
        """Set the linear gain of what ``participant`` says (talk) and/or hears (listen)."""
        self._get(participant)
        if talk is not None:
            self.talk_gain[participant] = gain_to_q12(talk)
        if listen is not None:
            self.listen_gain[participant] = gain_to_q12(listen)

    def mute(self, participant: int, muted: bool = True) -> None:
        """Mute (or unmute) what ``participant`` says; it keeps hearing the others."""
        self._get(participant).muted = muted
        self._update_flags(participant)

    def set_mode(self, participant: int, mode: Mode) -> None:
        """Switch a participant between NORMAL, LISTEN_ONLY and TALK_ONLY."""
        self._get(participant).mode = mode
        self._update_flags(participant)

    def port(self, participant: int) -> ParticipantPort:
        """A media port for ``participant``."""
        self._get(participant)
        return ParticipantPort(self, participant)

    # -- per tick ----------------------------------------------------------------------------

    def put_frame(self, participant: int, frame: Frame) -> None:
        """Deliver ``participant``'s 20 ms int16 frame for this tick (LINEAR or G.711 rows)."""
        self._get(participant)
        if frame.shape != (self.samples_per_frame,):
            raise MediaUsageError(
                f"frame has shape {frame.shape}, expected ({self.samples_per_frame},)"
            )
        if self.codec[participant] != Codec.LINEAR:
            # A decoded frame for a G.711 row: store it and treat the row as linear this tick
            # by encoding it, so the kernel's decode reproduces the companded signal.
            encode = g711.ulaw_encode_into if self.codec[participant] == Codec.PCMU else (
                g711.alaw_encode_into
            )
            encode(np.ascontiguousarray(frame, dtype=np.int16), self.payload_in[participant])
        else:
            self.pcm_in[participant] = frame
        self.flags[participant] |= FRESH

    def put_payload(self, participant: int, payload: bytes | bytearray | memoryview) -> None:
        """Deliver ``participant``'s G.711 payload (one 20 ms frame) for this tick."""
        self._get(participant)
        if self.codec[participant] == Codec.LINEAR:
            raise MediaUsageError("put_payload on a LINEAR participant")
        if len(payload) != self.samples_per_frame:
            raise MediaUsageError(
                f"payload has {len(payload)} bytes, expected {self.samples_per_frame}"
            )
        self.payload_in[participant] = np.frombuffer(payload, dtype=np.uint8)
        self.flags[participant] |= FRESH

    def mark_fresh(self, participants: npt.ArrayLike) -> None:
        """Flag rows whose input arrays were written directly (batch I/O) as fresh this tick."""
        self.flags[np.asarray(participants, dtype=np.intp)] |= FRESH

    def mix(self) -> None:
        """Mix every conference: ONE kernel call over all rows in use."""
        self._kernel.mix(0, self._next_row)

    def get_frame(self, participant: int) -> Frame | None:
        """What ``participant`` hears after the last ``mix()`` (a copy), or None if not listening."""
        info = self._get(participant)
        if not info.mode.value & LISTEN:
            return None
        frame: Frame = self.pcm_out[participant].copy()
        return frame

    def get_payload(self, participant: int) -> bytes | None:
        """The G.711 payload ``participant`` hears after the last ``mix()``, or None."""
        info = self._get(participant)
        if not info.mode.value & LISTEN or self.codec[participant] == Codec.LINEAR:
            return None
        return bytes(self.payload_out[participant])

    # -- internals ---------------------------------------------------------------------------

    def _get(self, participant: int) -> _Participant:
        try:
            return self._participants[participant]
        except KeyError:
            raise MediaUsageError(f"no participant {participant}") from None

    def _conference_members(self, conference: int) -> set[int]:
        try:
            return self._members[conference]
        except KeyError:
            raise MediaUsageError(f"no conference {conference}") from None

    def _update_flags(self, row: int) -> None:
        info = self._participants[row]
        flags = info.mode.value
        if info.muted:
            flags &= ~TALK
        self.flags[row] = flags | (int(self.flags[row]) & FRESH)
