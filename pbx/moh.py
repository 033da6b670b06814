"""Music on hold per tenant: an administrator's upload (any common audio format: WAV, MP3,
Ogg/Opus, FLAC, AAC/M4A …) is decoded once with PyAV into what the hold player
(:class:`media.player.Player`) reads fastest and every codec's rate can be made from — mono
16-bit PCM WAV at 16 kHz — and kept as ``<data>/moh/tenant-<id>.wav`` (written to a temporary
name, fsync'd, renamed: a call on hold meanwhile keeps playing the old file). A tenant without
its own file hears the server's default (``[media] moh_file``, or the built-in tone).

The B2BUA asks :meth:`MusicOnHold.path` when a party goes on hold (one ``stat``, no database),
so an upload is in force from the next hold on, on this node. The API
(``/tenants/{tenant}/music-on-hold``) is the only writer.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

from pbx import audiofile
from pbx.audiofile import AudioRefused

__all__ = ["MAX_SECONDS", "MAX_UPLOAD", "RATE", "AudioRefused", "MohState", "MusicOnHold",
           "decode_to_wav"]

#: The stored file's sample rate (G.722's; G.711 and Opus legs resample from it).
RATE = 16000
#: The largest upload read (bytes) and the longest music kept (seconds).
MAX_UPLOAD = 20 * 1024 * 1024
MAX_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class MohState:
    """What a tenant's callers on hold hear: their own file (its length, size, when it was
    uploaded) or the server's default (``default``: ``file`` or ``tone``)."""

    tenant_id: int
    custom: bool
    duration: float
    size: int
    updated_at: float | None
    default: str


def decode_to_wav(data: bytes, *, max_seconds: float = MAX_SECONDS) -> tuple[bytes, float]:
    """``data`` (any container/codec PyAV reads) as mono s16 WAV at :data:`RATE`, and its
    duration; :class:`AudioRefused` when it is no audio or longer than ``max_seconds``."""
    return audiofile.decode_to_wav(data, rate=RATE, max_seconds=max_seconds, what="the music")


class MusicOnHold:
    """The tenants' music-on-hold files in ``folder`` (``default``: the server's own file,
    '' for the built-in tone)."""

    def __init__(self, folder: str | Path, default: str = "") -> None:
        self.folder = Path(folder)
        self.default = default

    def file_of(self, tenant_id: int) -> Path:
        """Where ``tenant_id``'s music is kept (whether or not there is one)."""
        return self.folder / f"tenant-{int(tenant_id)}.wav"

    def path(self, tenant_id: int | None) -> Path | None:
        """The tenant's own music, None when it has none (the default plays)."""
        if tenant_id is None:
            return None
        found = self.file_of(tenant_id)
        return found if found.is_file() else None

    def state(self, tenant_id: int) -> MohState:
        """What the tenant's callers on hold hear now."""
        default = "file" if self.default else "tone"
        found = self.path(tenant_id)
        if found is None:
            return MohState(tenant_id, False, 0.0, 0, None, default)
        stat = found.stat()
        try:
            with wave.open(str(found), "rb") as w:
                duration = w.getnframes() / float(w.getframerate() or RATE)
        except (wave.Error, EOFError, OSError):
            duration = 0.0
        return MohState(tenant_id, True, round(duration, 3), stat.st_size, stat.st_mtime,
                        default)

    def save(self, tenant_id: int, data: bytes) -> MohState:
        """Decode ``data`` and make it the tenant's music (blocking: run it in a thread)."""
        wav, _duration = decode_to_wav(data)
        audiofile.write_atomically(self.file_of(tenant_id), wav)
        return self.state(tenant_id)

    def remove(self, tenant_id: int) -> bool:
        """Back to the default; False when the tenant had no music of its own."""
        found = self.path(tenant_id)
        if found is None:
            return False
        found.unlink(missing_ok=True)
        return True
