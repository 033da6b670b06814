"""Voicemail messages in the store: one row per message of a box, in one of three states.

``recording`` — the caller is being recorded now (the row is written *before* the audio file is
created, so a crash always leaves a row that names its partial file); ``new`` — deposited, not
heard yet; ``old`` — heard (saved). A deposit ends with :meth:`VoicemailStoreMixin.finish_voicemail`:
one transaction turns the row ``new`` and runs every :attr:`voicemail_deposit_hooks` hook inside
it (the mail outbox queues the message's e-mail there, so the message and its mail commit
together). Start-up recovery (:mod:`pbx.voicemail.storage`) finishes or discards what a crash
left in ``recording``. :class:`VoicemailStoreMixin` is part of :class:`pbx.store.Store`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from media.recorder import remove_file
from pbx.store.records import StoreError

__all__ = ["MESSAGE_STATES", "DepositHook", "VoicemailMessage", "VoicemailStoreMixin"]

#: A message's states, in the order of its life.
MESSAGE_STATES = ("recording", "new", "old")

_COLS = ("id, user_id, tenant, extension, caller, caller_name, received_at, duration, "
         "audio_path, language, state, urgent")


@dataclass(frozen=True, slots=True)
class VoicemailMessage:
    """One message of a box. ``id`` is stable (uuid4 hex: the audio file's name, the mail's
    Message-ID); ``tenant``/``extension`` name the box; ``audio_path`` is the final file
    (``<data>/voicemail/<tenant>/<extension>/<id>.wav``); ``state`` one of
    :data:`MESSAGE_STATES`."""

    id: str
    user_id: int
    tenant: str
    extension: str
    caller: str
    caller_name: str
    received_at: float
    duration: float
    audio_path: str
    language: str
    state: str = "new"
    urgent: bool = False


def _message(row: tuple[Any, ...]) -> VoicemailMessage:
    return VoicemailMessage(row[0], int(row[1]), row[2], row[3], row[4], row[5], float(row[6]),
                            float(row[7]), row[8], row[9], row[10], bool(row[11]))


#: A deposit hook: called inside the transaction that records a deposited message.
DepositHook = Callable[[sqlite3.Connection, VoicemailMessage], None]


class VoicemailStoreMixin:
    """The store's voicemail table (mixed into :class:`pbx.store.Store`)."""

    _lock: threading.RLock
    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    #: run inside the transaction of every deposit (:meth:`finish_voicemail`)
    voicemail_deposit_hooks: list[DepositHook]

    def begin_voicemail(self, message: VoicemailMessage) -> None:
        """Record that ``message`` is being recorded (state ``recording``; before its audio
        file exists)."""
        with self._tx() as db:
            db.execute(f"INSERT INTO voicemail_messages({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       (message.id, message.user_id, message.tenant, message.extension,
                        message.caller, message.caller_name, message.received_at,
                        message.duration, message.audio_path, message.language, "recording",
                        int(message.urgent)))

    def finish_voicemail(self, message_id: str, duration: float) -> VoicemailMessage:
        """The recording is in place: the message becomes ``new`` with its ``duration`` and
        every deposit hook runs, all in one transaction (a hook that raises undoes it)."""
        with self._tx() as db:
            cur = db.execute("UPDATE voicemail_messages SET state='new', duration=? "
                             "WHERE id=? AND state='recording'", (duration, message_id))
            if cur.rowcount == 0:
                raise StoreError(f"no voicemail {message_id} being recorded")
            row = db.execute(f"SELECT {_COLS} FROM voicemail_messages WHERE id=?",
                             (message_id,)).fetchone()
            message = _message(row)
            for hook in self.voicemail_deposit_hooks:
                hook(db, message)
        return message

    def voicemail(self, message_id: str) -> VoicemailMessage | None:
        """One message by id (None: no such message)."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLS} FROM voicemail_messages WHERE id=?",
                                   (message_id,)).fetchone()
        return _message(row) if row is not None else None

    def voicemails(self, user_id: int | None = None, *,
                   states: tuple[str, ...] = ("new", "old")) -> list[VoicemailMessage]:
        """The messages of a box (every box when None) in ``states``, oldest first."""
        marks = ",".join("?" * len(states))
        q = f"SELECT {_COLS} FROM voicemail_messages WHERE state IN ({marks})"
        args: tuple[Any, ...] = states
        if user_id is not None:
            q += " AND user_id=?"
            args = (*states, user_id)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY received_at, id", args).fetchall()
        return [_message(r) for r in rows]

    def voicemail_counts(self, user_id: int) -> tuple[int, int, int, int]:
        """(new, old, new urgent, old urgent) messages of a box (the MWI summary)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state, urgent, COUNT(*) FROM voicemail_messages WHERE user_id=? "
                "AND state IN ('new', 'old') GROUP BY state, urgent", (user_id,)).fetchall()
        counts = {(state, bool(urgent)): int(n) for state, urgent, n in rows}
        new = counts.get(("new", False), 0) + counts.get(("new", True), 0)
        old = counts.get(("old", False), 0) + counts.get(("old", True), 0)
        return new, old, counts.get(("new", True), 0), counts.get(("old", True), 0)

    def mark_voicemail_heard(self, message_id: str) -> bool:
        """A new message was heard (or saved): it becomes ``old``; False when it was not new."""
        with self._tx() as db:
            return db.execute("UPDATE voicemail_messages SET state='old' WHERE id=? AND "
                              "state='new'", (message_id,)).rowcount > 0

    def mark_voicemail_unheard(self, message_id: str) -> bool:
        """A saved message is new again (the API's ``heard: false``); False when it was not
        old."""
        with self._tx() as db:
            return db.execute("UPDATE voicemail_messages SET state='new' WHERE id=? AND "
                              "state='old'", (message_id,)).rowcount > 0

    def delete_voicemail(self, message_id: str) -> None:
        """Delete a message: its row, then (after the commit) its audio file, and fsync the
        directory. A crash in between leaves an orphan file, which start-up recovery removes."""
        with self._tx() as db:
            row = db.execute("SELECT audio_path FROM voicemail_messages WHERE id=?",
                             (message_id,)).fetchone()
            db.execute("DELETE FROM voicemail_messages WHERE id=?", (message_id,))
        if row is not None:
            remove_file(row[0])
