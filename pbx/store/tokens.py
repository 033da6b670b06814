"""API tokens in the store: only a token's SHA-256 is kept (the token itself is shown once, when
it is made), with its role, tenant, user, expiry and when it was last used.

A token is 32 random bytes (``apx_`` + URL-safe base64): far too much entropy to guess, so a
plain SHA-256 is enough to keep a stolen database from yielding usable tokens (a password needs
a slow hash; a random token does not). :class:`TokenStoreMixin` is part of
:class:`pbx.store.Store`.
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

__all__ = ["ROLES", "TOKEN_PREFIX", "ApiToken", "TokenStoreMixin", "hash_token", "new_token"]

#: The roles a token (and later a portal login) can have, weakest first.
ROLES = ("user", "tenant_admin", "system_admin")
TOKEN_PREFIX = "apx_"
#: last_used_at is written at most this often per token (not on every request).
LAST_USED_RESOLUTION = 60.0

_COLS = "id, name, role, tenant_id, user_id, created_at, expires_at, last_used_at, revoked"


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A token's record (never the token): ``tenant_id`` None only for a system admin of
    every tenant; ``user_id`` for a ``user`` token (the user it acts as)."""

    id: int
    name: str
    role: str
    tenant_id: int | None
    user_id: int | None
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked: bool

    def expired(self, now: float) -> bool:
        """Whether the token no longer works at ``now`` (expired or revoked)."""
        return self.revoked or (self.expires_at is not None and now >= self.expires_at)


def new_token() -> str:
    """A fresh token (``apx_`` + 43 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _token(row: tuple[Any, ...]) -> ApiToken:
    return ApiToken(row[0], row[1], row[2], row[3], row[4], float(row[5]),
                    None if row[6] is None else float(row[6]),
                    None if row[7] is None else float(row[7]), bool(row[8]))


class TokenStoreMixin:
    """The store's API-token table (mixed into :class:`pbx.store.Store`)."""

    _lock: threading.RLock
    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def create_api_token(self, *, role: str, tenant_id: int | None, user_id: int | None = None,
                         name: str = "", expires_at: float | None = None,
                         now: float) -> tuple[str, ApiToken]:
        """Make a token; returns (the token — shown once, never stored —, its record)."""
        if role not in ROLES:
            raise StoreError(f"role {role!r} must be one of {', '.join(ROLES)}")
        if role != "system_admin" and tenant_id is None:
            raise StoreError(f"a {role} token needs a tenant")
        if role == "user" and user_id is None:
            raise StoreError("a user token needs a user (--user EXT)")
        if len(name) > 64 or any(ord(c) < 32 for c in name):
            raise StoreError("token name must be at most 64 printable characters")
        if expires_at is not None and expires_at <= now:
            raise StoreError("a token must expire in the future")
        token = new_token()
        with self._tx() as db:
            if user_id is not None:
                row = db.execute("SELECT tenant_id FROM users WHERE id=?", (user_id,)).fetchone()
                if row is None or row[0] != tenant_id:
                    raise StoreError(f"no user with id {user_id} in that tenant")
            cur = db.execute(
                "INSERT INTO api_tokens(token_hash, name, role, tenant_id, user_id, created_at, "
                "expires_at) VALUES (?,?,?,?,?,?,?)",
                (hash_token(token), name, role, tenant_id, user_id, now, expires_at))
            assert cur.lastrowid is not None
            token_id = cur.lastrowid
        return token, ApiToken(token_id, name, role, tenant_id, user_id, now, expires_at, None,
                               False)

    def api_token(self, token: str, *, now: float | None = None) -> ApiToken | None:
        """The record of ``token`` (None: unknown). With ``now``, records the use (at most
        once a minute per token, so a busy integration does not write on every request)."""
        digest = hash_token(token)
        with self._lock:
            row = self._db.execute(f"SELECT {_COLS} FROM api_tokens WHERE token_hash=?",
                                   (digest,)).fetchone()
        if row is None:
            return None
        found = _token(row)
        last = found.last_used_at
        if now is not None and not found.expired(now) and (
                last is None or now - last >= LAST_USED_RESOLUTION):
            with self._tx() as db:
                db.execute("UPDATE api_tokens SET last_used_at=? WHERE id=?", (now, found.id))
        return found

    def api_tokens(self, tenant_id: int | None = None) -> list[ApiToken]:
        """Every token's record (of one tenant when given), by id."""
        q = f"SELECT {_COLS} FROM api_tokens"
        args: tuple[Any, ...] = ()
        if tenant_id is not None:
            q += " WHERE tenant_id=?"
            args = (tenant_id,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        return [_token(r) for r in rows]

    def revoke_api_token(self, token_id: int) -> bool:
        """Revoke a token for good; False when there is no such token."""
        with self._tx() as db:
            return db.execute("UPDATE api_tokens SET revoked=1 WHERE id=?",
                              (token_id,)).rowcount > 0

