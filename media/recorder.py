"""Crash-safe recorder: a media port that writes WAV (or Ogg/Opus) from ``put_frame``.

Theory of operation
-------------------
Frames go to a temporary file ``.<name>.partial`` in the target directory. For WAV the 44-octet
header is written first with sizes 0, samples are appended with ``os.write`` as they come (so a
killed process loses nothing the kernel already has), and every ``sync_interval`` seconds of audio
(1 s by default; frames arrive in real time from the media clock) the header's RIFF and data sizes
are rewritten to cover what was written and the file is ``fsync``'d. The sizes are always updated
*after* the data, so at every instant the header describes data that exists: after ``kill -9``
the partial file opens with the ``wave`` module and holds the audio up to the last sync (≤ 1 s
old). ``close()`` syncs, renames the file into place and fsyncs the directory (DESIGN.md
§Storage). :func:`recover` runs at start-up: it extends leftover WAV headers to the data actually
present, renames them into place and removes partial files holding no audio.

Ogg/Opus (``.opus``/``.ogg``) goes through PyAV into a Python file object that is flushed and
fsync'd at the same interval; Ogg is streamable, so a truncated file still plays up to its last
complete page.

Silence detection: after ``silence_timeout`` seconds of frames quieter than
``silence_threshold`` dBov, ``silence_detected`` becomes True and ``on_silence`` is called once
(until sound resets it). ``max_duration`` caps the recording: later frames are dropped,
``limit_reached`` becomes True and ``on_limit`` is called once.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from media.port import Frame

__all__ = ["PARTIAL_SUFFIX", "Recorder", "fsync_directory", "recover", "remove_file"]

PARTIAL_SUFFIX = ".partial"
_WAV_HEADER_SIZE = 44


def _wav_header(sample_rate: int, data_size: int) -> bytes:
    return b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16
    ) + b"data" + struct.pack("<I", data_size)


def _partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (fsync of the directory itself)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_file(path: str | os.PathLike[str]) -> None:
    """Unlink ``path`` (gone already is fine) and fsync its directory, so the removal survives
    a crash (a directory that cannot be synced is left as it is)."""
    p = Path(path)
    with contextlib.suppress(FileNotFoundError):
        p.unlink()
    with contextlib.suppress(OSError):
        fsync_directory(p.parent)


def _level_dbov(frame: Frame) -> float:
    if len(frame) == 0:
        return -127.0
    rms = float(np.sqrt(np.mean(np.square(frame.astype(np.float64)))))
    return -127.0 if rms < 1e-9 else 20 * float(np.log10(rms / 32767.0))


class Recorder:
    """Records frames into ``path`` (``.wav``, or ``.opus``/``.ogg``) crash-safely."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        sample_rate: int = 8000,
        *,
        max_duration: float | None = None,
        silence_timeout: float | None = None,
        silence_threshold: float = -50.0,
        on_silence: Callable[[], None] | None = None,
        on_limit: Callable[[], None] | None = None,
        sync_interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.partial_path = _partial_path(self.path)
        self.sample_rate = sample_rate
        self.max_duration = max_duration
        self.silence_timeout = silence_timeout
        self.silence_threshold = silence_threshold
        self.on_silence = on_silence
        self.on_limit = on_limit
        self.sync_interval = sync_interval
        #: Samples recorded so far.
        self.samples = 0
        self.silence_detected = False
        self.limit_reached = False
        self.closed = False
        self._silent_samples = 0
        self._unsynced = 0
        suffix = self.path.suffix.lower()
        self._opus = suffix in (".opus", ".ogg")
        if not self._opus and suffix != ".wav":
            raise ValueError(f"unsupported recording format {suffix!r} (use .wav or .opus)")
        self._fd = -1
        self._file: BinaryIO | None = None
        self._container: Any = None
        self._stream: Any = None
        if self._opus:
            self._open_opus()
        else:
            self._fd = os.open(self.partial_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            os.write(self._fd, _wav_header(sample_rate, 0))
            os.fsync(self._fd)
        # The new directory entry must survive a crash too.
        fsync_directory(self.path.parent)

    @property
    def duration(self) -> float:
        """Seconds recorded."""
        return self.samples / self.sample_rate

    @property
    def trailing_silence(self) -> float:
        """Seconds of silence at the end of what was recorded so far (0 when it ends in
        sound; counted only with ``silence_timeout`` set)."""
        return self._silent_samples / self.sample_rate

    # --- MediaPort ---------------------------------------------------------------------------

    def get_frame(self) -> Frame | None:
        """Recorders produce nothing."""
        return None

    def put_frame(self, frame: Frame) -> None:
        """Append one frame (dropped once closed or at ``max_duration``)."""
        if self.closed or self.limit_reached:
            return
        if self.max_duration is not None:
            room = int(self.max_duration * self.sample_rate) - self.samples
            if room <= 0:
                self._hit_limit()
                return
            if len(frame) > room:
                frame = frame[:room]
        data = np.ascontiguousarray(frame, dtype="<i2")
        if self._opus:
            self._encode_opus(data)
        else:
            os.write(self._fd, data.tobytes())
        self.samples += len(data)
        self._unsynced += len(data)
        self._detect_silence(data)
        if self._unsynced >= self.sync_interval * self.sample_rate:
            self.sync()
        if self.max_duration is not None and self.samples >= self.max_duration * self.sample_rate:
            self._hit_limit()

    # --- durability --------------------------------------------------------------------------

    def sync(self) -> None:
        """Make everything recorded so far durable (header sizes first updated for WAV)."""
        if self.closed:
            return
        self._unsynced = 0
        if self._opus:
            assert self._file is not None
            self._file.flush()
            os.fsync(self._file.fileno())
            return
        size = self.samples * 2
        os.pwrite(self._fd, struct.pack("<I", 36 + size), 4)
        os.pwrite(self._fd, struct.pack("<I", size), 40)
        os.fsync(self._fd)

    def close(self) -> Path:
        """Finish: sync, rename into place, fsync the directory. Returns the final path."""
        if self.closed:
            return self.path
        if self._opus:
            self._close_opus()
        else:
            self.sync()
            os.close(self._fd)
        self.closed = True
        os.replace(self.partial_path, self.path)
        fsync_directory(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Throw the recording away (no file is left behind)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._opus:
                with contextlib.suppress(Exception):
                    self._container.close()
                assert self._file is not None
                self._file.close()
            else:
                os.close(self._fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.partial_path)
            fsync_directory(self.path.parent)

    # --- helpers -----------------------------------------------------------------------------

    def _hit_limit(self) -> None:
        if not self.limit_reached:
            self.limit_reached = True
            if self.on_limit is not None:
                self.on_limit()

    def _detect_silence(self, data: Frame) -> None:
        if self.silence_timeout is None:
            return
        if _level_dbov(data) <= self.silence_threshold:
            self._silent_samples += len(data)
            if (
                not self.silence_detected
                and self._silent_samples >= self.silence_timeout * self.sample_rate
            ):
                self.silence_detected = True
                if self.on_silence is not None:
                    self.on_silence()
        else:
            self._silent_samples = 0
            self.silence_detected = False

    def _open_opus(self) -> None:
        import av

        rate = self.sample_rate
        if rate not in (8000, 12000, 16000, 24000, 48000):
            raise ValueError(f"Opus cannot record at {rate} Hz")
        self._file = open(self.partial_path, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._container = av.open(self._file, "w", format="ogg")
        self._stream = self._container.add_stream("libopus", rate=rate)
        self._stream.layout = "mono"
        self._stream.format = "s16"
        self._pts = 0

    def _encode_opus(self, data: Frame) -> None:
        from av.audio.frame import AudioFrame

        af = AudioFrame.from_ndarray(data.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        af.sample_rate = self.sample_rate
        af.pts = self._pts
        self._pts += len(data)
        for packet in self._stream.encode(af):
            self._container.mux(packet)

    def _close_opus(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def recover(directory: str | os.PathLike[str]) -> list[Path]:
    """Turn leftover partial recordings in ``directory`` into readable files.

    WAV: the header is extended to the whole samples present (a crash may leave up to a second
    of data beyond the last synced header), the file renamed to its final name (never over an
    existing file) and the directory fsync'd. Partial files without audio are removed. Returns
    the recovered final paths.
    """
    root = Path(directory)
    recovered: list[Path] = []
    changed = False
    for partial in sorted(root.glob(f".*{PARTIAL_SUFFIX}")):
        final_name = partial.name[1 : -len(PARTIAL_SUFFIX)]
        final = root / final_name
        size = partial.stat().st_size
        is_wav = final.suffix.lower() == ".wav"
        empty = size <= _WAV_HEADER_SIZE if is_wav else size == 0
        changed = True
        if empty or (is_wav and not _repair_wav(partial, size)):
            partial.unlink()
            continue
        if final.exists():
            final = final.with_name(f"{final.stem}.recovered{final.suffix}")
        os.replace(partial, final)
        recovered.append(final)
    if changed:
        fsync_directory(root)
    return recovered


def _repair_wav(path: Path, size: int) -> bool:
    """Fix the sizes of a partial WAV; False if it is not one of ours."""
    with open(path, "r+b") as f:
        header = f.read(_WAV_HEADER_SIZE)
        if len(header) < _WAV_HEADER_SIZE or header[:4] != b"RIFF" or header[36:40] != b"data":
            return False
        data_size = (size - _WAV_HEADER_SIZE) & ~1
        f.truncate(_WAV_HEADER_SIZE + data_size)
        f.seek(4)
        f.write(struct.pack("<I", 36 + data_size))
        f.seek(40)
        f.write(struct.pack("<I", data_size))
        f.flush()
        os.fsync(f.fileno())
    return data_size > 0
