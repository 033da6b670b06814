"""File player: a media port that plays WAV/MP3/Opus/FLAC files as 20 ms frames (PyAV).

Theory of operation
-------------------
The player decodes its playlist lazily, one container packet at a time, through PyAV and an
``av.AudioResampler`` to mono s16 at the leg's ``sample_rate``, and hands out exactly one 20 ms
frame per ``get_frame()`` (the media clock's pull). Items of a playlist follow each other; with
``loop=True`` the playlist starts again after the last item (music on hold) and the seam is not
padded, so a seamless loop stays seamless. Without looping the last partial frame is padded with
silence, ``finished`` becomes True and ``get_frame()`` returns ``None`` from then on.

A file that cannot be opened or decoded is skipped and counted in ``errors``; a playlist whose
every item fails finishes instead of spinning. This is one of the two media modules that do file
I/O (with the recorder); decoding a 20 ms frame's worth is cheap enough to run on the tick.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from media.port import Frame, samples_per_frame

__all__ = ["Player"]

PathLike = str | os.PathLike[str]


class Player:
    """Plays a file or a playlist as a media port (``get_frame``), optionally looping."""

    def __init__(
        self,
        source: PathLike | Sequence[PathLike],
        sample_rate: int = 8000,
        *,
        loop: bool = False,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        if isinstance(source, str | os.PathLike):
            self.playlist: list[Path] = [Path(source)]
        else:
            self.playlist = [Path(p) for p in source]
        if not self.playlist:
            raise ValueError("empty playlist")
        self.sample_rate = sample_rate
        self.loop = loop
        self.on_finished = on_finished
        #: True once a non-looping playlist has played out (or ``stop()`` was called).
        self.finished = False
        #: Items that could not be opened or decoded.
        self.errors = 0
        #: Frames handed out so far.
        self.frames_played = 0
        self._n = samples_per_frame(sample_rate)
        self._pending = np.zeros(0, np.int16)
        self._chunks: Iterator[Frame] | None = None
        self._container: Any = None

    # --- MediaPort ---------------------------------------------------------------------------

    def get_frame(self) -> Frame | None:
        """The next 20 ms frame, or ``None`` when finished."""
        if self.finished:
            return None
        while len(self._pending) < self._n:
            chunk = self._next_chunk()
            if chunk is None:
                break
            self._pending = np.concatenate((self._pending, chunk))
        if len(self._pending) == 0:
            self._finish()
            return None
        frame = self._pending[: self._n]
        self._pending = self._pending[self._n :]
        if len(frame) < self._n:
            frame = np.concatenate((frame, np.zeros(self._n - len(frame), np.int16)))
        self.frames_played += 1
        return frame

    def put_frame(self, frame: Frame) -> None:
        """Players ignore what they are sent."""

    def stop(self) -> None:
        """Stop playing and release the file."""
        self._close()
        self.finished = True
        self._pending = np.zeros(0, np.int16)

    close = stop

    # --- decoding ----------------------------------------------------------------------------

    def _finish(self) -> None:
        self._close()
        self.finished = True
        if self.on_finished is not None:
            self.on_finished()

    def _close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None
        self._chunks = None

    def _next_chunk(self) -> Frame | None:
        """Decoded samples from the playlist, moving to the next item (or looping) at EOF."""
        if self._chunks is None:
            self._chunks = self._playlist_chunks()
        return next(self._chunks, None)

    def _playlist_chunks(self) -> Iterator[Frame]:
        while True:
            produced = False
            for path in self.playlist:
                for chunk in self._file_chunks(path):
                    produced = True
                    yield chunk
            if not self.loop or not produced:
                return

    def _file_chunks(self, path: Path) -> Iterator[Frame]:
        import av

        try:
            container: Any = av.open(str(path))
        except (OSError, av.FFmpegError, ValueError):
            self.errors += 1
            return
        self._container = container
        try:
            if not container.streams.audio:
                self.errors += 1
                return
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=self.sample_rate)
            try:
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        yield np.asarray(out.to_ndarray(), np.int16).reshape(-1)
                for out in resampler.resample(None):
                    yield np.asarray(out.to_ndarray(), np.int16).reshape(-1)
            except (av.FFmpegError, ValueError):
                self.errors += 1
        finally:
            container.close()
            if self._container is container:
                self._container = None
