"""Media sources the B2BUA plays: music on hold, ringback and busy tone (one cycle shared by every call)."""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from media.port import Frame, samples_per_frame
from media.tones import Segment, Tone, ToneGenerator

#: Music on hold when no file is configured: a slow arpeggio (A major), clearly "music" and easy
#: to detect in tests (440/554/659 Hz).
MOH_TONE = Tone((Segment(400, (440.0,)), Segment(400, (554.37,)), Segment(400, (659.26,)),
                 Segment(400, (554.37,))), repeat=True, level_dbm0=-16.0)



def looped_tone_cycle(tone: Tone, rate: int) -> npt.NDArray[np.int16] | None:
    """One cycle of a repeating ``tone`` at ``rate`` plus one frame of wrap-around (so a frame
    never straddles the loop point), or None when looping it would not be exact: a tone that
    does not repeat, a cycle that is not whole samples, or a frequency that does not complete
    whole periods per cycle (the loop point would click)."""
    total_ms = sum(seg.duration_ms for seg in tone.segments)
    if not tone.repeat or (total_ms * rate) % 1000:
        return None
    samples = total_ms * rate // 1000
    for f in tone.frequencies:
        periods = f * samples / rate
        if abs(periods - round(periods)) > 1e-9:
            return None
    frame = samples_per_frame(rate)
    cycle = ToneGenerator(tone, rate).read(samples)
    padded: npt.NDArray[np.int16] = np.concatenate([cycle, cycle[:frame]]) if samples >= frame \
        else np.resize(cycle, samples + frame)
    padded.setflags(write=False)
    return padded


class LoopedTone:
    """A media port playing a shared precomputed tone cycle (see :func:`looped_tone_cycle`);
    its frames equal :class:`media.tones.ToneGenerator`'s for the same tone."""

    def __init__(self, cycle: npt.NDArray[np.int16], sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._cycle = cycle
        self._frame = samples_per_frame(sample_rate)
        self._length = len(cycle) - self._frame
        self._position = 0

    def get_frame(self) -> Frame | None:
        """The next 20 ms (a read-only view of the shared cycle)."""
        pos = self._position
        self._position = (pos + self._frame) % self._length
        return self._cycle[pos:pos + self._frame]

    def put_frame(self, frame: Frame) -> None:
        """A tone is a source only; frames put into it are ignored."""

