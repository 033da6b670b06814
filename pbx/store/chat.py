"""Chat messages in the store (SIP MESSAGE, RFC 3428; :mod:`pbx.chat`): every message between
two users of a tenant is kept, per conversation (the unordered pair of users), with the id the
clients use to drop duplicates and when it was delivered to one of the recipient's devices
(NULL: waiting for the recipient to register). :class:`ChatStoreMixin` is part of
:class:`pbx.store.Store`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

__all__ = ["ChatMessage", "ChatStoreMixin"]

_COLS = ("id, tenant_id, sender_id, recipient_id, message_id, content_type, body, created_at, "
         "delivered_at")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One stored message: ``message_id`` is the per-message id sent with every delivery
    attempt (a client drops a second copy by it); ``delivered_at`` None while no device of
    the recipient has accepted it."""

    id: int
    tenant_id: int
    sender_id: int
    recipient_id: int
    message_id: str
    content_type: str
    body: bytes
    created_at: float
    delivered_at: float | None


def _message(row: tuple[Any, ...]) -> ChatMessage:
    return ChatMessage(row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]),
                       float(row[7]), None if row[8] is None else float(row[8]))


class ChatStoreMixin:
    """The store's chat table (mixed into :class:`pbx.store.Store`)."""

    _lock: threading.RLock
    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def chat_add(self, *, tenant_id: int, sender_id: int, recipient_id: int, message_id: str,
                 content_type: str, body: bytes, now: float) -> ChatMessage:
        """Keep a new message (undelivered). A ``message_id`` the sender used already for this
        recipient is the same message sent again: the stored one is returned, nothing added."""
        with self._tx() as db:
            row = db.execute(f"SELECT {_COLS} FROM chat_messages WHERE sender_id=? AND "
                             "recipient_id=? AND message_id=?",
                             (sender_id, recipient_id, message_id)).fetchone()
            if row is not None:
                return _message(row)
            cur = db.execute(
                "INSERT INTO chat_messages(tenant_id, sender_id, recipient_id, message_id, "
                "content_type, body, created_at) VALUES (?,?,?,?,?,?,?)",
                (tenant_id, sender_id, recipient_id, message_id, content_type, body, now))
            assert cur.lastrowid is not None
            return ChatMessage(cur.lastrowid, tenant_id, sender_id, recipient_id, message_id,
                               content_type, body, now, None)

    def chat_delivered(self, row_id: int, now: float) -> None:
        """A device of the recipient accepted message ``row_id`` (the first time counts)."""
        with self._tx() as db:
            db.execute("UPDATE chat_messages SET delivered_at=? WHERE id=? AND "
                       "delivered_at IS NULL", (now, row_id))

    def chat_pending(self, recipient_id: int, limit: int = 500) -> list[ChatMessage]:
        """Messages to ``recipient_id`` no device accepted yet, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM chat_messages WHERE recipient_id=? AND delivered_at IS "
                "NULL ORDER BY id LIMIT ?", (recipient_id, limit)).fetchall()
        return [_message(r) for r in rows]

    def chat_conversation(self, user_id: int, other_id: int,
                          limit: int = 200) -> list[ChatMessage]:
        """The conversation of two users (both directions), the newest ``limit``, oldest
        first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM chat_messages WHERE (sender_id=? AND recipient_id=?) OR "
                "(sender_id=? AND recipient_id=?) ORDER BY id DESC LIMIT ?",
                (user_id, other_id, other_id, user_id, limit)).fetchall()
        return [_message(r) for r in reversed(rows)]

    def chat_conversations(self, user_id: int) -> list[tuple[int, ChatMessage, int]]:
        """The conversations of ``user_id``: (the other user's id, the newest message, how
        many of the other's messages came after what the user marked read), newest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM chat_messages WHERE id IN ("
                "  SELECT MAX(id) FROM chat_messages WHERE sender_id=? OR recipient_id=?"
                "  GROUP BY CASE WHEN sender_id=? THEN recipient_id ELSE sender_id END)"
                " ORDER BY id DESC", (user_id, user_id, user_id)).fetchall()
            unread = dict(self._db.execute(
                "SELECT m.sender_id, COUNT(*) FROM chat_messages m LEFT JOIN chat_reads r "
                "ON r.user_id=m.recipient_id AND r.other_id=m.sender_id "
                "WHERE m.recipient_id=? AND m.id > COALESCE(r.last_read_id, 0) "
                "GROUP BY m.sender_id", (user_id,)).fetchall())
        out = []
        for row in rows:
            m = _message(row)
            other = m.recipient_id if m.sender_id == user_id else m.sender_id
            out.append((other, m, int(unread.get(other, 0))))
        return out

    def chat_mark_read(self, user_id: int, other_id: int, up_to: int | None = None
                       ) -> tuple[int, bool]:
        """``user_id`` read the conversation with ``other_id`` up to message ``up_to`` (None:
        all of it); returns the id read up to (it never goes back) and whether it moved."""
        with self._tx() as db:
            before = db.execute("SELECT last_read_id FROM chat_reads WHERE user_id=? AND "
                                "other_id=?", (user_id, other_id)).fetchone()
            if up_to is None:
                row = db.execute("SELECT MAX(id) FROM chat_messages WHERE sender_id=? AND "
                                 "recipient_id=?", (other_id, user_id)).fetchone()
                up_to = int(row[0] or 0)
            db.execute("INSERT INTO chat_reads(user_id, other_id, last_read_id) VALUES (?,?,?) "
                       "ON CONFLICT(user_id, other_id) DO UPDATE SET last_read_id="
                       "MAX(last_read_id, excluded.last_read_id)", (user_id, other_id, up_to))
            found = db.execute("SELECT last_read_id FROM chat_reads WHERE user_id=? AND "
                               "other_id=?", (user_id, other_id)).fetchone()
        return int(found[0]), before is None or int(found[0]) != int(before[0])

    def chat_unread(self, user_id: int) -> int:
        """How many messages to ``user_id`` they have not marked read (every conversation)."""
        return sum(n for _, _, n in self.chat_conversations(user_id))
