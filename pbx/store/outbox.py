"""The mail outbox in the store: one row per mail to send (pbx.mail fills and drains it).

A mail is queued with :func:`enqueue` on the connection of a transaction that is already open —
the voicemail box's deposit transaction — so the message and its mails are recorded together or
not at all. Its ``message_id`` is fixed then: every attempt sends the same Message-ID, so a mail
sent twice (the server accepted it, we crashed before noting it) is recognisable as one. The
sender takes :meth:`OutboxStoreMixin.outbox_due` rows and notes the outcome: ``sent``, a retry
at a later time (``attempts`` + 1, the error kept), or ``failed`` for good.
:class:`OutboxStoreMixin` is part of :class:`pbx.store.Store`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "STATUSES", "OutboxMail", "OutboxStoreMixin", "enqueue"]

#: Mail kinds: the message with audio, a notification without audio, a copy with audio.
KINDS = ("forward", "notify", "copy")
STATUSES = ("pending", "sent", "failed")
_COLS = ("id, message_id, kind, recipient, user_id, voicemail_id, payload, delete_after, status, "
         "attempts, next_attempt_at, last_error, created_at, sent_at")


@dataclass(frozen=True, slots=True)
class OutboxMail:
    """One queued mail: what it is (``kind``, ``recipient``, ``payload`` — caller, time,
    duration, language, audio path, …) and where it stands."""

    id: int
    message_id: str
    kind: str
    recipient: str
    user_id: int | None
    voicemail_id: str | None
    payload: Mapping[str, Any]
    delete_after: bool
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str
    created_at: float
    sent_at: float | None

    @property
    def with_audio(self) -> bool:
        """Whether the mail carries the message's audio."""
        return self.kind in ("forward", "copy")


def _mail(row: tuple[Any, ...]) -> OutboxMail:
    return OutboxMail(int(row[0]), row[1], row[2], row[3], row[4], row[5], json.loads(row[6]),
                      bool(row[7]), row[8], int(row[9]), float(row[10]), row[11],
                      float(row[12]), None if row[13] is None else float(row[13]))


def enqueue(db: sqlite3.Connection, *, message_id: str, kind: str, recipient: str,
            user_id: int | None, voicemail_id: str | None, payload: Mapping[str, Any],
            delete_after: bool, now: float) -> int:
    """Queue a mail on ``db`` inside the caller's open transaction; returns its row id."""
    if kind not in KINDS:
        raise ValueError(f"mail kind {kind!r} is not one of {', '.join(KINDS)}")
    cur = db.execute(
        "INSERT INTO mail_outbox(message_id, kind, recipient, user_id, voicemail_id, payload, "
        "delete_after, next_attempt_at, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (message_id, kind, recipient, user_id, voicemail_id, json.dumps(dict(payload)),
         int(delete_after), now, now))
    assert cur.lastrowid is not None
    return cur.lastrowid


class OutboxStoreMixin:
    """The store's mail outbox (mixed into :class:`pbx.store.Store`)."""

    _lock: threading.RLock
    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def outbox_enqueue(self, **fields: Any) -> int:
        """Queue a mail in a transaction of its own (:func:`enqueue`'s arguments)."""
        with self._tx() as db:
            return enqueue(db, **fields)

    def outbox_due(self, now: float, limit: int = 20) -> list[OutboxMail]:
        """Pending mails whose next attempt is due, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM mail_outbox WHERE status='pending' AND next_attempt_at<=? "
                "ORDER BY next_attempt_at, id LIMIT ?", (now, limit)).fetchall()
        return [_mail(r) for r in rows]

    def outbox_next_due(self) -> float | None:
        """When the earliest pending mail is due (None: nothing pending)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(next_attempt_at) FROM mail_outbox "
                                   "WHERE status='pending'").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def outbox(self, status: str | None = None) -> list[OutboxMail]:
        """Every mail (of one status when given), by id."""
        q = f"SELECT {_COLS} FROM mail_outbox"
        args: tuple[str, ...] = ()
        if status is not None:
            q, args = q + " WHERE status=?", (status,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        return [_mail(r) for r in rows]

    def outbox_sent(self, mail_id: int, now: float) -> None:
        """The server accepted the mail."""
        with self._tx() as db:
            db.execute("UPDATE mail_outbox SET status='sent', sent_at=?, attempts=attempts+1, "
                       "last_error='' WHERE id=?", (now, mail_id))

    def outbox_retry(self, mail_id: int, at: float, error: str) -> None:
        """The attempt failed for now: try again at ``at``."""
        with self._tx() as db:
            db.execute("UPDATE mail_outbox SET attempts=attempts+1, next_attempt_at=?, "
                       "last_error=? WHERE id=?", (at, error[:500], mail_id))

    def outbox_failed(self, mail_id: int, error: str) -> None:
        """The mail cannot be sent (refused, or too old): failed for good."""
        with self._tx() as db:
            db.execute("UPDATE mail_outbox SET status='failed', attempts=attempts+1, "
                       "last_error=? WHERE id=?", (error[:500], mail_id))
