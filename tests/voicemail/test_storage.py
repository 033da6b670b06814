"""The voicemail store and its crash recovery without a call: the deposit transaction with its
hooks, counts, deletion, and start-up recovery of what a crash leaves (a partial recording, a
row without audio, an orphan file, a row whose file is gone); the CLI over the same box."""

from __future__ import annotations

import sqlite3
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from media.recorder import Recorder
from pbx.cli import main
from pbx.store import Store
from pbx.store.voicemail import VoicemailMessage
from pbx.voicemail import Boxes, recover_boxes


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path)
    s.add_user("101", "pw-101", "asyncpbx", "Bea")
    return s


def message(store: Store, tmp_path: Path, **changes: object) -> VoicemailMessage:
    user = store.user("101")
    mid = str(changes.pop("id", f"m{time.monotonic_ns()}"))
    path = Boxes(tmp_path).message_path("default", "101", mid)
    fields: dict[str, object] = {
        "id": mid, "user_id": user.id, "tenant": "default", "extension": "101",
        "caller": "100", "caller_name": "Anna", "received_at": time.time(), "duration": 0.0,
        "audio_path": str(path), "language": "de", "state": "recording", **changes}
    return VoicemailMessage(**fields)  # type: ignore[arg-type]


def record(path: Path, seconds: float, *, close: bool) -> Recorder:
    rec = Recorder(path, 8000)
    tone = (8000 * np.sin(2 * np.pi * 1000 * np.arange(160) / 8000)).astype(np.int16)
    for _ in range(int(seconds * 50)):
        rec.put_frame(tone)
    if close:
        rec.close()
    return rec


def test_a_deposit_commits_with_its_hooks_or_not_at_all(store: Store, tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    def hook(db: sqlite3.Connection, m: VoicemailMessage) -> None:
        assert db.in_transaction  # the outbox's row commits with the message
        seen.append((m.id, m.user_id))

    store.voicemail_deposit_hooks.append(hook)
    m = message(store, tmp_path, id="a")
    store.begin_voicemail(m)
    assert store.voicemail_counts(m.user_id) == (0, 0, 0, 0)  # recording: not counted
    done = store.finish_voicemail("a", 2.5)
    assert (done.state, done.duration, seen) == ("new", 2.5, [("a", m.user_id)])
    assert store.voicemail_counts(m.user_id) == (1, 0, 0, 0)

    def failing(db: sqlite3.Connection, m: VoicemailMessage) -> None:
        raise RuntimeError("outbox full")

    store.voicemail_deposit_hooks.append(failing)
    store.begin_voicemail(message(store, tmp_path, id="b"))
    with pytest.raises(RuntimeError):
        store.finish_voicemail("b", 1.5)
    pending = store.voicemail("b")
    assert pending is not None and pending.state == "recording"  # rolled back
    assert store.mark_voicemail_heard("a") and not store.mark_voicemail_heard("a")
    assert store.voicemail_counts(m.user_id) == (0, 1, 0, 0)
    Path(m.audio_path).write_bytes(b"RIFF")
    store.delete_voicemail("a")
    assert store.voicemail("a") is None and not Path(m.audio_path).exists()
    store.delete_voicemail("a")  # gone already: nothing to do


def test_recovery_makes_files_and_rows_agree(store: Store, tmp_path: Path) -> None:
    boxes = Boxes(tmp_path)
    # killed while recording 2.5 s: the row says recording, the partial file holds the audio
    crashed = message(store, tmp_path, id="crashed")
    store.begin_voicemail(crashed)
    record(Path(crashed.audio_path), 2.5, close=False)  # never closed: as after kill -9
    # killed before the recorder made its file
    early = message(store, tmp_path, id="early")
    store.begin_voicemail(early)
    # killed after 0.4 s: too short to keep
    short = message(store, tmp_path, id="short")
    store.begin_voicemail(short)
    record(Path(short.audio_path), 0.4, close=False)
    # a deleted message whose file was not removed yet, and a message whose file is gone
    orphan = boxes.message_path("default", "101", "orphan")
    record(orphan, 1.0, close=True)
    gone = message(store, tmp_path, id="gone")
    store.begin_voicemail(gone)
    store.finish_voicemail("gone", 3.0)
    greeting = boxes.greeting("default", "101")
    record(greeting, 1.0, close=True)

    changed = recover_boxes(store, tmp_path)

    user = store.user("101")
    assert changed == {user.id}
    (kept,) = store.voicemails(user.id)
    assert (kept.id, kept.state) == ("crashed", "new")
    assert abs(kept.duration - 2.5) < 0.05
    with wave.open(kept.audio_path, "rb") as w:
        assert w.getnframes() == 2.5 * 8000
    files = sorted(p.name for p in boxes.box("default", "101").iterdir())
    assert files == ["crashed.wav", "greeting.wav"]
    assert store.voicemails(states=("recording",)) == []
    assert recover_boxes(store, tmp_path) == set()  # nothing left to do


def test_cli_lists_plays_and_deletes(store: Store, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    m = message(store, tmp_path, id="0123abcd")
    store.begin_voicemail(m)
    record(Path(m.audio_path), 1.5, close=True)
    store.finish_voicemail(m.id, 1.5)
    store.close()
    d = str(tmp_path)
    assert main(["voicemail", "list", "101", "--data-dir", d]) == 0
    out = capsys.readouterr().out
    assert "0123abcd" in out and "new" in out and "100 (Anna)" in out and "1.5 s" in out
    wav = tmp_path / "out.wav"
    assert main(["voicemail", "play", "101", "0123", "--out", str(wav), "--data-dir", d]) == 0
    assert wav.read_bytes() == Path(m.audio_path).read_bytes()
    assert main(["voicemail", "list", "101", "--data-dir", d]) == 0
    assert "old" in capsys.readouterr().out  # heard
    assert main(["voicemail", "delete", "101", "nope", "--data-dir", d]) != 0
    assert main(["voicemail", "delete", "101", "0123abcd", "--data-dir", d]) == 0
    assert not Path(m.audio_path).exists()
    assert main(["voicemail", "list", "101", "--data-dir", d]) == 0
    assert "no messages" in capsys.readouterr().out
