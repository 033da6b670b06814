"""The embedded store: SQLite in the data directory (WAL, versioned migrations).

Hot paths never wait on the database (DESIGN.md "Storage"): the server keeps users and
registrations in memory and writes registration changes behind, batched once a second, in one
transaction. A crash loses at most the last second of registration refreshes — phones re-register
anyway — and never corrupts the file (WAL + ``synchronous=FULL`` for the tables that must survive).

The store is synchronous on purpose: the CLI calls it directly and the server calls it through
``asyncio.to_thread``; one lock serialises use of the single connection.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sipcore.digest import Credentials, make_credentials
from sipcore.registrar import Binding
from sipcore.transport import Peer

#: Extensions are 2–8 digits (the dial plan of a small or mid business).
EXTENSION_RE = re.compile(r"^[0-9]{2,8}$")

#: Versioned migrations: index + 1 is the schema version after running that script.
MIGRATIONS: tuple[str, ...] = (
    # 1: users and registrations
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE users (
        extension   TEXT PRIMARY KEY,
        name        TEXT NOT NULL DEFAULT '',
        realm       TEXT NOT NULL,
        ha1_md5     TEXT NOT NULL,
        ha1_sha256  TEXT NOT NULL,
        created_at  REAL NOT NULL DEFAULT (unixepoch())
    );
    CREATE TABLE registrations (
        aor         TEXT NOT NULL,
        uri         TEXT NOT NULL,   -- the contact URI (key with aor)
        contact     TEXT NOT NULL,   -- the Contact value as echoed
        expires_at  REAL NOT NULL,   -- POSIX time
        q           REAL NOT NULL,
        call_id     TEXT NOT NULL,
        cseq        INTEGER NOT NULL,
        path        TEXT NOT NULL DEFAULT '',   -- Path header values, one per line
        transport   TEXT,            -- where the REGISTER came from (NAT traversal)
        host        TEXT,
        port        INTEGER,
        user_agent  TEXT,
        instance    TEXT,
        reg_id      INTEGER,
        PRIMARY KEY (aor, uri)
    );
    """,
)


class StoreError(ValueError):
    """A request to the store that cannot be carried out (message says why)."""


@dataclass(frozen=True, slots=True)
class User:
    """A PBX user with the digest credentials of their SIP account."""

    extension: str
    name: str
    realm: str
    ha1_md5: str
    ha1_sha256: str

    def credentials(self) -> Credentials:
        """The digest credentials (stored HA1s, never the password)."""
        return Credentials(
            username=self.extension,
            realm=self.realm,
            ha1={"MD5": self.ha1_md5, "SHA-256": self.ha1_sha256},
        )


class Store:
    """SQLite store in ``data_dir/asyncpbx.sqlite3``."""

    FILENAME = "asyncpbx.sqlite3"

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data directory {self.data_dir}: {exc}") from exc
        self.path = self.data_dir / self.FILENAME
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable SQLite database: {exc}") from exc
        self._migrate()

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this asyncpbx "
                    f"({len(MIGRATIONS)}): upgrade asyncpbx"
                )
            for number in range(version, len(MIGRATIONS)):
                # executescript commits; the version bump is in the same script so a crash
                # mid-migration re-runs it from a consistent point.
                self._db.executescript(
                    "BEGIN;" + MIGRATIONS[number] + f";PRAGMA user_version={number + 1};COMMIT;"
                )

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the database (checkpointing the WAL)."""
        with self._lock:
            self._db.close()

    def integrity_ok(self) -> bool:
        """``PRAGMA integrity_check`` says ok."""
        with self._lock:
            return bool(self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    # -- meta --------------------------------------------------------------------------------

    def secret(self, name: str, nbytes: int = 32) -> bytes:
        """A persistent random secret (created on first use), e.g. the nonce key."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (f"secret:{name}",)).fetchone()
            if row:
                return bytes.fromhex(row[0])
            value = secrets.token_bytes(nbytes)
            db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (f"secret:{name}", value.hex()))
            return value

    # -- users -------------------------------------------------------------------------------

    def add_user(self, extension: str, password: str, realm: str, name: str = "") -> User:
        """Create a user; raises StoreError for a bad extension/password or a duplicate."""
        if not EXTENSION_RE.match(extension):
            raise StoreError(f"extension {extension!r} must be 2 to 8 digits")
        if len(password) < 4:
            raise StoreError("password must have at least 4 characters")
        if any(ord(c) < 32 for c in password + name):
            raise StoreError("password and name must not contain control characters")
        creds = make_credentials(extension, realm, password)
        user = User(extension, name, realm, creds.ha1["MD5"], creds.ha1["SHA-256"])
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO users(extension, name, realm, ha1_md5, ha1_sha256) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (user.extension, user.name, user.realm, user.ha1_md5, user.ha1_sha256),
                )
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise StoreError(f"user {extension} exists already") from None
            raise
        return user

    def remove_user(self, extension: str) -> None:
        """Delete a user and their registrations."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM users WHERE extension=?", (extension,))
            if cur.rowcount == 0:
                raise StoreError(f"no user {extension}")
            db.execute("DELETE FROM registrations WHERE aor LIKE ?", (f"sip:{extension}@%",))

    def users(self) -> list[User]:
        """All users, by extension."""
        with self._lock:
            rows = self._db.execute(
                "SELECT extension, name, realm, ha1_md5, ha1_sha256 FROM users ORDER BY extension"
            ).fetchall()
        return [User(*row) for row in rows]

    def user_count(self) -> int:
        """How many users exist."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM users").fetchone()[0])

    # -- registrations (written behind by the server) ----------------------------------------

    def save_bindings(self, upserts: Iterable[Binding], removals: Iterable[tuple[str, str]]) -> None:
        """Apply a batch of registration changes (upserts, then (aor, uri) removals) in one
        transaction."""
        rows = []
        for b in upserts:
            r = b.received
            rows.append((b.aor, b.uri, b.contact, b.expires_at, b.q, b.call_id, b.cseq,
                         "\n".join(b.path), r.transport if r else None, r.host if r else None,
                         r.port if r else None, b.user_agent, b.instance, b.reg_id))
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO registrations(aor, uri, contact, expires_at, q, call_id, "
                "cseq, path, transport, host, port, user_agent, instance, reg_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            db.executemany("DELETE FROM registrations WHERE aor=? AND uri=?", list(removals))

    def load_bindings(self, now: float) -> list[Binding]:
        """Unexpired registrations at POSIX time ``now`` (expired rows are deleted)."""
        with self._tx() as db:
            db.execute("DELETE FROM registrations WHERE expires_at <= ?", (now,))
            rows = db.execute(
                "SELECT aor, uri, contact, expires_at, q, call_id, cseq, path, transport, host, "
                "port, user_agent, instance, reg_id FROM registrations ORDER BY aor, q DESC"
            ).fetchall()
        out = []
        for (aor, uri, contact, expires_at, q, call_id, cseq, path, transport, host, port, ua,
             instance, reg_id) in rows:
            received = Peer(transport, host, int(port)) if transport and host and port else None
            out.append(Binding(aor=aor, uri=uri, contact=contact, expires_at=expires_at, q=q,
                               call_id=call_id, cseq=cseq,
                               path=tuple(p for p in path.split("\n") if p),
                               received=received, user_agent=ua, instance=instance,
                               reg_id=reg_id))
        return out


def default_data_dir() -> str:
    """``$ASYNCPBX_DATA_DIR`` or ``./asyncpbx-data``."""
    return os.environ.get("ASYNCPBX_DATA_DIR", "asyncpbx-data")
