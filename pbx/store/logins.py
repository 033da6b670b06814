"""Portal logins in the store: a user's password hash (argon2id, made by
:mod:`pbx.api.passwords`; the store never sees a password) and portal role, and the browser's
server-side sessions. Only a session id's SHA-256 is kept (the id is 32 random bytes, like a
token: a fast hash suffices), with its CSRF token, when it began, when it was last used and its
absolute end. :class:`LoginStoreMixin` is part of :class:`pbx.store.Store`.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from pbx.store.records import StoreError
from pbx.store.tokens import ROLES

__all__ = ["LoginStoreMixin", "PortalLogin", "PortalSession", "hash_session"]

#: last_seen is written at most this often per session (idle expiry is this coarse).
SEEN_RESOLUTION = 30.0

_SCOLS = "s.id, s.user_id, s.csrf_token, s.created_at, s.last_seen, s.expires_at, " \
         "l.role, u.tenant_id"


@dataclass(frozen=True, slots=True)
class PortalLogin:
    """A user's portal login: the password's argon2 hash (PHC string) and role."""

    user_id: int
    password_hash: str
    role: str
    changed_at: float


@dataclass(frozen=True, slots=True)
class PortalSession:
    """A session's record (never its id): the user, their role and tenant, the CSRF token
    the browser sends back on every change, and its times."""

    id: int
    user_id: int
    csrf_token: str
    created_at: float
    last_seen: float
    expires_at: float
    role: str
    tenant_id: int

    def expired(self, now: float, idle: float) -> bool:
        """Whether the session has ended at ``now`` (past its end, or idle ``idle`` s)."""
        return now >= self.expires_at or now - self.last_seen >= idle


def hash_session(session_id: str) -> str:
    """What the store keeps of a session id."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def _session(row: tuple[Any, ...]) -> PortalSession:
    return PortalSession(int(row[0]), int(row[1]), str(row[2]), float(row[3]), float(row[4]),
                         float(row[5]), str(row[6]), int(row[7]))


class LoginStoreMixin:
    """The store's ``portal_logins`` and ``portal_sessions`` tables (mixed into
    :class:`pbx.store.Store`)."""

    _lock: threading.RLock
    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def set_portal_password(self, user_id: int, password_hash: str, *, now: float,
                            role: str | None = None, keep_session: int | None = None) -> None:
        """Set ``user_id``'s password hash (and role, default: keep it, ``user`` for a new
        login); ends the user's sessions but ``keep_session`` (a changed password logs the
        other browsers out)."""
        if role is not None and role not in ROLES:
            raise StoreError(f"role {role!r} must be one of {', '.join(ROLES)}")
        with self._tx() as db:
            if db.execute("SELECT 1 FROM users WHERE id=?", (user_id,)).fetchone() is None:
                raise StoreError(f"no user with id {user_id}")
            db.execute(
                "INSERT INTO portal_logins(user_id, password_hash, role, changed_at) "
                "VALUES (?,?,?,?) ON CONFLICT(user_id) DO UPDATE SET "
                "password_hash=excluded.password_hash, changed_at=excluded.changed_at, "
                "role=COALESCE(?, role)",
                (user_id, password_hash, role or "user", now, role))
            db.execute("DELETE FROM portal_sessions WHERE user_id=? AND id IS NOT ?",
                       (user_id, keep_session))

    def rehash_portal_password(self, user_id: int, password_hash: str) -> None:
        """Replace the hash after a login with old parameters (the password is unchanged)."""
        with self._tx() as db:
            db.execute("UPDATE portal_logins SET password_hash=? WHERE user_id=?",
                       (password_hash, user_id))

    def portal_login(self, user_id: int) -> PortalLogin | None:
        """``user_id``'s portal login (None: no password set)."""
        with self._lock:
            row = self._db.execute("SELECT user_id, password_hash, role, changed_at FROM "
                                   "portal_logins WHERE user_id=?", (user_id,)).fetchone()
        return None if row is None else PortalLogin(int(row[0]), str(row[1]), str(row[2]),
                                                    float(row[3]))

    def create_portal_session(self, user_id: int, *, now: float, lifetime: float
                              ) -> tuple[str, PortalSession]:
        """Start a session; returns (its id — the cookie, never stored —, its record)."""
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO portal_sessions(session_hash, user_id, csrf_token, created_at, "
                "last_seen, expires_at) VALUES (?,?,?,?,?,?)",
                (hash_session(session_id), user_id, csrf, now, now, now + lifetime))
            assert cur.lastrowid is not None
        found = self._session_where("s.id=?", cur.lastrowid)
        if found is None:
            raise StoreError(f"user {user_id} has no portal login")
        return session_id, found

    def portal_session(self, session_id: str, *, now: float | None = None,
                       idle: float = float("inf")) -> PortalSession | None:
        """The record of ``session_id`` (None: unknown, or ended at ``now``: an ended session
        is deleted). With ``now``, records the use (at most every :data:`SEEN_RESOLUTION`
        seconds)."""
        found = self._session_where("s.session_hash=?", hash_session(session_id))
        if found is None or now is None:
            return found
        if found.expired(now, idle):
            self.end_portal_session(found.id)
            return None
        if now - found.last_seen >= SEEN_RESOLUTION:
            with self._tx() as db:
                db.execute("UPDATE portal_sessions SET last_seen=? WHERE id=?", (now, found.id))
        return found

    def portal_session_by_id(self, session: int) -> PortalSession | None:
        """A session's record by its row id (None: ended)."""
        return self._session_where("s.id=?", session)

    def end_portal_session(self, session: int) -> bool:
        """End a session (logout); False when there was none."""
        with self._tx() as db:
            return db.execute("DELETE FROM portal_sessions WHERE id=?",
                              (session,)).rowcount > 0

    def _session_where(self, where: str, arg: object) -> PortalSession | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_SCOLS} FROM portal_sessions s JOIN portal_logins l "
                f"ON l.user_id=s.user_id JOIN users u ON u.id=s.user_id WHERE {where}",
                (arg,)).fetchone()
        return None if row is None else _session(row)
