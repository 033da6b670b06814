"""The media port that plays an announcement once: a sequence of in-memory clips (a prompt and
the digits it says), 20 ms per ``get_frame()``, then ``None`` (the call script's cue that the
announcement is over)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from media.port import Frame, samples_per_frame

__all__ = ["PromptPort"]


class PromptPort:
    """Plays ``clips`` (read-only int16 arrays at ``sample_rate``) one after the other with
    ``gap`` seconds of silence between them; frames are views into the clips where a frame
    lies within one clip (no copy), assembled only at the joins."""

    def __init__(self, clips: Sequence[npt.NDArray[np.int16]], sample_rate: int, *,
                 gap: float = 0.0) -> None:
        self.sample_rate = sample_rate
        silence = np.zeros(int(gap * sample_rate), np.int16)
        parts: list[npt.NDArray[np.int16]] = []
        for i, clip in enumerate(clips):
            if i and len(silence):
                parts.append(silence)
            if len(clip):
                parts.append(clip)
        self._parts = parts
        self._frame = samples_per_frame(sample_rate)
        self._part = 0
        self._offset = 0
        #: Samples in the whole announcement.
        self.samples = sum(len(p) for p in parts)

    @property
    def duration(self) -> float:
        """Seconds the announcement lasts."""
        return self.samples / self.sample_rate

    @property
    def finished(self) -> bool:
        """True once every sample was handed out (or :meth:`stop` was called)."""
        return self._part >= len(self._parts)

    def get_frame(self) -> Frame | None:
        """The next 20 ms; the last frame is padded with silence; then None."""
        if self.finished:
            return None
        n = self._frame
        part = self._parts[self._part]
        if self._offset + n <= len(part):
            frame = part[self._offset:self._offset + n]
            self._offset += n
            if self._offset == len(part):
                self._part, self._offset = self._part + 1, 0
            return frame
        out = np.zeros(n, np.int16)
        filled = 0
        while filled < n and not self.finished:
            part = self._parts[self._part]
            take = min(n - filled, len(part) - self._offset)
            out[filled:filled + take] = part[self._offset:self._offset + take]
            filled += take
            self._offset += take
            if self._offset == len(part):
                self._part, self._offset = self._part + 1, 0
        return out

    def put_frame(self, frame: Frame) -> None:
        """An announcement is a source only."""

    def stop(self) -> None:
        """Play nothing more."""
        self._part = len(self._parts)
