"""Where voicemail lives on disk and how files and rows are kept in agreement.

A box is the directory ``<data>/voicemail/<tenant>/<extension>/``: one ``<id>.wav`` per message
(``id`` is the store row's), the user's recorded greeting ``greeting.wav``, and while a caller
is recorded the recorder's partial file ``.<id>.wav.partial`` (:mod:`media.recorder`: fsync'd
every second, renamed into place, directory fsync'd).

The order of a deposit makes a crash at any instant recoverable: the row is written
(``recording``) before the partial file exists; the file is renamed into place before the row
becomes ``new``; a delete removes the row before the file. :func:`recover_boxes` runs at
start-up: a ``recording`` row whose audio survived (up to its last sync, ≤ 1 s before the crash)
becomes a message, one without audio is dropped; a message file without a row is removed, a row
without its file too. After it, files and rows agree.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

import structlog

from media.recorder import PARTIAL_SUFFIX, recover, remove_file
from pbx.store.voicemail import VoicemailMessage

__all__ = ["GREETING", "MIN_SPEECH", "Boxes", "recover_boxes"]

log = structlog.get_logger("pbx.voicemail")

#: The user's own greeting in their box directory.
GREETING = "greeting.wav"
#: A message with less speech than this (seconds) is not kept.
MIN_SPEECH = 1.0


class Boxes:
    """The voicemail directory of a data directory."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / "voicemail"

    def box(self, tenant: str, extension: str) -> Path:
        """A box's directory (created)."""
        path = self.root / _safe(tenant) / _safe(extension)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def greeting(self, tenant: str, extension: str) -> Path:
        """Where the user's recorded greeting is (it may not exist)."""
        return self.box(tenant, extension) / GREETING

    def message_path(self, tenant: str, extension: str, message_id: str) -> Path:
        """The final audio file of a message."""
        return self.box(tenant, extension) / f"{message_id}.wav"


def _safe(part: str) -> str:
    """A path component from a tenant name or extension (never ``..`` or a separator)."""
    cleaned = "".join(c if c.isalnum() or c in "-_.@+" else "_" for c in part).strip(".")
    return cleaned or "_"


def wav_seconds(path: str | os.PathLike[str]) -> float:
    """Length of a WAV file in seconds (0 when it cannot be read)."""
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (OSError, EOFError, wave.Error):
        return 0.0


def recover_boxes(store: object, data_dir: str | os.PathLike[str]) -> set[int]:
    """Make files and rows agree after a crash (see the module docstring); returns the ids of
    the users whose box changed. ``store`` is a :class:`pbx.store.Store`."""
    from pbx.store import Store

    assert isinstance(store, Store)
    boxes = Boxes(data_dir)
    changed: set[int] = set()
    if not boxes.root.is_dir():
        return changed
    for tenant_dir in sorted(p for p in boxes.root.iterdir() if p.is_dir()):
        for box_dir in sorted(p for p in tenant_dir.iterdir() if p.is_dir()):
            recover(box_dir)  # partial recordings become WAV files (or go)
    recording = store.voicemails(states=("recording",))
    for msg in recording:
        seconds = wav_seconds(msg.audio_path)
        if seconds >= MIN_SPEECH:
            store.finish_voicemail(msg.id, seconds)
            log.info("voicemail.recovered", id=msg.id, user_id=msg.user_id, duration=seconds)
        else:
            store.delete_voicemail(msg.id)
            log.info("voicemail.recovery_dropped", id=msg.id, user_id=msg.user_id,
                     duration=seconds)
        changed.add(msg.user_id)
    kept: dict[Path, VoicemailMessage] = {}
    for msg in store.voicemails():
        if Path(msg.audio_path).is_file():
            kept[Path(msg.audio_path).resolve()] = msg
        else:  # a row whose file is gone: nothing to play
            store.delete_voicemail(msg.id)
            changed.add(msg.user_id)
            log.warning("voicemail.file_missing", id=msg.id, path=msg.audio_path)
    for path in sorted(boxes.root.glob("*/*/*")):
        if path.name == GREETING or not path.is_file():
            continue
        if path.name.endswith(PARTIAL_SUFFIX) or path.resolve() not in kept:
            remove_file(path)
            log.info("voicemail.orphan_removed", path=str(path))
    return changed
