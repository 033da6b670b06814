"""Voice-portal numbers in the store: DIDs of the company (``owner_kind`` company) on which a
call from a trunk reaches the voice portal (``*62``: mailbox number and PIN) instead of a user.
:class:`PortalStoreMixin` is part of :class:`pbx.store.Store`; ``asyncpbx number add NUMBER
--voice-portal`` sets one up.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from pbx.store.records import StoreError

__all__ = ["PortalStoreMixin"]


class PortalStoreMixin:
    """The store's ``voice_portal_numbers`` table (mixed into :class:`pbx.store.Store`)."""

    _lock: threading.RLock
    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _changed: Callable[[str], None]

    def set_voice_portal(self, e164: str, on: bool = True) -> None:
        """Make the company DID ``e164`` (E.164, as stored) a voice-portal number, or an
        ordinary one again; StoreError when it is no company number."""
        with self._lock:
            row = self._db.execute("SELECT owner_kind FROM numbers WHERE e164=?",
                                   (e164,)).fetchone()
        if row is None or row[0] != "company":
            raise StoreError(f"{e164} is no company number (add it without --user/--group)")
        with self._tx() as db:
            if on:
                db.execute("INSERT OR IGNORE INTO voice_portal_numbers(e164) VALUES (?)",
                           (e164,))
            else:
                db.execute("DELETE FROM voice_portal_numbers WHERE e164=?", (e164,))
        self._changed("numbers")

    def voice_portal_numbers(self) -> frozenset[str]:
        """Every voice-portal DID (E.164)."""
        with self._lock:
            rows = self._db.execute("SELECT e164 FROM voice_portal_numbers").fetchall()
        return frozenset(r[0] for r in rows)
