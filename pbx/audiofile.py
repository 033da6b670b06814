"""Audio files users upload (a voicemail greeting, music on hold): decoded with PyAV from any
container and codec it reads into the mono 16-bit WAV the players read, and written so that a
crash never leaves half a file where a player looks (temporary name, fsync, rename, fsync of
the folder)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AudioRefused", "decode_to_wav", "write_atomically"]


class AudioRefused(ValueError):
    """The upload is no audio we can use (the message says why, for the user)."""


def decode_to_wav(data: bytes, *, rate: int, max_seconds: float, what: str = "the audio",
                  min_seconds: float = 0.1) -> tuple[bytes, float]:
    """``data`` as mono s16 WAV at ``rate``, and its duration; :class:`AudioRefused` when it
    is no audio, shorter than ``min_seconds`` or longer than ``max_seconds`` (``what`` names
    it in the message: "a greeting")."""
    import av

    limit = int(max_seconds * rate) + rate // 2  # half a second of codec padding
    chunks: list[np.ndarray[Any, Any]] = []
    total = 0
    try:
        container: Any = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise AudioRefused(f"not an audio file this server can read "
                           f"({exc.__class__.__name__})") from None
    try:
        if not container.streams.audio:
            raise AudioRefused("the file has no audio stream")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        try:
            for frame in [*container.decode(container.streams.audio[0]), None]:
                for out in resampler.resample(frame):
                    samples = np.asarray(out.to_ndarray(), np.int16).reshape(-1)
                    total += len(samples)
                    if total > limit:
                        raise AudioRefused(f"{what} may last at most {max_seconds:g} "
                                           "seconds")
                    chunks.append(samples)
        except AudioRefused:
            raise
        except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
            raise AudioRefused(f"the audio does not decode ({exc.__class__.__name__})") \
                from None
    finally:
        container.close()
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    if len(pcm) < int(rate * min_seconds) or not len(pcm):
        raise AudioRefused(f"the file holds less than {min_seconds:g} s of audio")
    wav = io.BytesIO()
    with wave.open(wav, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return wav.getvalue(), len(pcm) / rate


def write_atomically(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` whole or not at all (blocking: run it in a thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
