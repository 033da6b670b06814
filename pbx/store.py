"""The embedded store: SQLite in the data directory (WAL, versioned migrations).

Model (schema version 2): **tenants** (a company with its SIP domain, extension plan, main
number, country and area code) have **users** (extension, name, e-mail, language, voicemail PIN,
mobile and remote office numbers, call permission); a user has **devices** (SIP accounts: a
username and the HA1 digests for one realm, never the password), **numbers** (E.164 DIDs owned by
a user, a group or the company), per-user **feature settings** (JSON checked against the
feature's schema) and a **call history**. **Trunks** connect a tenant to carriers.

Hot paths never wait on the database (DESIGN.md "Storage"): the server reads a
:class:`pbx.directory.Directory` cache that store mutations keep current (write-through via
:meth:`Store.add_listener`), keeps registrations in memory and writes their changes behind,
batched once a second. WAL + ``synchronous=FULL`` on every transaction: a committed call record
or user survives a power cut; a crash loses at most the last second of registration refreshes
(phones re-register anyway) and never corrupts the file.

The store is synchronous on purpose: the CLI calls it directly and the server calls it through
``asyncio.to_thread`` (or :class:`pbx.directory.AsyncHistory`); one lock serialises use of the
single connection. :class:`PbxStore` is the narrow interface a PostgreSQL implementation fills.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pbx.routing.dialplan import DialPlan, Permission, reserved_extension, to_e164
from pbx.settings_schema import (
    SettingError,
    SettingsSchema,
    stored_over_defaults,
)
from pbx.settings_schema import validate as validate_settings
from sipcore.digest import Credentials, make_credentials
from sipcore.registrar import Binding
from sipcore.transport import Peer

#: Extensions are 2–8 digits (the dial plan of a small or mid business).
EXTENSION_RE = re.compile(r"^[0-9]{2,8}$")
#: Tenant handles (CLI/API names) and trunk names.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
#: A SIP domain: a host name or an IP address (no user part, no port, no parameters).
DOMAIN_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")
#: Device usernames: the RFC 3261 "user" characters people actually use.
USERNAME_RE = re.compile(r"^[A-Za-z0-9._+~-]{1,64}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PIN_RE = re.compile(r"^[0-9]{4,8}$")
E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")

DEFAULT_TENANT = "default"
LANGUAGES = ("de", "en")
DEVICE_KINDS = ("desk", "softphone", "browser", "mobile")
TRUNK_KINDS = ("register", "ip")
TRUNK_TRANSPORTS = ("udp", "tcp", "tls")
OWNER_KINDS = ("user", "group", "company")

#: A migration: SQL run as one script, or (DDL, data step) where the data step runs in the same
#: transaction after the DDL (to move rows with Python logic).
Migration = str | tuple[str, Callable[[sqlite3.Connection, "MigrationContext"], None]]


@dataclass(frozen=True, slots=True)
class MigrationContext:
    """What a data migration may need from the configuration."""

    domain: str


def _migrate_v1_users(db: sqlite3.Connection, ctx: MigrationContext) -> None:
    """v1 users become users of the "default" tenant, each with one device whose credentials are
    their existing HA1s (username = extension), so phones keep registering unchanged."""
    rows = db.execute(
        "SELECT extension, name, realm, ha1_md5, ha1_sha256, created_at FROM users_v1 "
        "ORDER BY extension"
    ).fetchall()
    if rows:
        realm = rows[0][2]
        domain = ctx.domain or realm
        db.execute(
            "INSERT INTO tenants(name, company, domain, realm, ext_min_len, ext_max_len) "
            "VALUES (?, '', ?, ?, 2, 8)",
            (DEFAULT_TENANT, domain, realm),
        )
        tenant_id = db.execute("SELECT id FROM tenants WHERE name=?", (DEFAULT_TENANT,)).fetchone()[0]
        for extension, name, user_realm, md5, sha256, created_at in rows:
            cur = db.execute(
                "INSERT INTO users(tenant_id, extension, name, created_at) VALUES (?, ?, ?, ?)",
                (tenant_id, extension, name, created_at),
            )
            db.execute(
                "INSERT INTO devices(user_id, username, realm, ha1_md5, ha1_sha256, kind, "
                "created_at) VALUES (?, ?, ?, ?, ?, 'desk', ?)",
                (cur.lastrowid, extension, user_realm, md5, sha256, created_at),
            )
    db.execute("DROP TABLE users_v1")


#: Versioned migrations: index + 1 is the schema version after running it. Never edit a released
#: migration: existing data directories have run it already; add the next one.
MIGRATIONS: tuple[Migration, ...] = (
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
    # 2: tenants, users v2, devices, numbers, trunks, feature settings, call history
    ("""
    CREATE TABLE tenants (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,          -- handle for CLI/API: "default", "acme"
        company       TEXT NOT NULL DEFAULT '',
        domain        TEXT NOT NULL UNIQUE COLLATE NOCASE,
        realm         TEXT NOT NULL,                 -- digest realm of new devices
        ext_min_len   INTEGER NOT NULL DEFAULT 3,    -- the extension plan
        ext_max_len   INTEGER NOT NULL DEFAULT 3,
        main_number   TEXT,                          -- E.164
        country_code  TEXT NOT NULL DEFAULT '49',
        area_code     TEXT NOT NULL DEFAULT '',
        created_at    REAL NOT NULL DEFAULT (unixepoch())
    );
    ALTER TABLE users RENAME TO users_v1;
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        tenant_id     INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        extension     TEXT NOT NULL,
        name          TEXT NOT NULL DEFAULT '',
        email         TEXT NOT NULL DEFAULT '',
        language      TEXT NOT NULL DEFAULT 'de' CHECK (language IN ('de', 'en')),
        voicemail_pin TEXT,                          -- scrypt hash, never the PIN
        mobile_number TEXT,                          -- E.164
        remote_office_number TEXT,                   -- E.164
        permission    TEXT NOT NULL DEFAULT 'national'
                      CHECK (permission IN ('internal', 'national', 'international')),
        premium_allowed INTEGER NOT NULL DEFAULT 0,
        created_at    REAL NOT NULL DEFAULT (unixepoch()),
        UNIQUE (tenant_id, extension)
    );
    CREATE TABLE devices (
        id            INTEGER PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        username      TEXT NOT NULL,
        realm         TEXT NOT NULL,                 -- the HA1s are only valid for this realm
        ha1_md5       TEXT NOT NULL,
        ha1_sha256    TEXT NOT NULL,
        kind          TEXT NOT NULL DEFAULT 'softphone'
                      CHECK (kind IN ('desk', 'softphone', 'browser', 'mobile')),
        mobile        INTEGER NOT NULL DEFAULT 0,    -- a mobile client (push/battery-aware)
        created_at    REAL NOT NULL DEFAULT (unixepoch()),
        UNIQUE (realm, username)
    );
    CREATE INDEX devices_user ON devices(user_id);
    CREATE TABLE numbers (
        e164          TEXT PRIMARY KEY,              -- "+4930123456"
        tenant_id     INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        owner_kind    TEXT NOT NULL CHECK (owner_kind IN ('user', 'group', 'company')),
        user_id       INTEGER REFERENCES users(id) ON DELETE CASCADE,
        group_name    TEXT,
        created_at    REAL NOT NULL DEFAULT (unixepoch()),
        CHECK ((owner_kind = 'user') = (user_id IS NOT NULL)),
        CHECK ((owner_kind = 'group') = (group_name IS NOT NULL))
    );
    CREATE TABLE trunks (
        id            INTEGER PRIMARY KEY,
        tenant_id     INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name          TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('register', 'ip')),
        host          TEXT NOT NULL,
        port          INTEGER NOT NULL DEFAULT 5060,
        transport     TEXT NOT NULL DEFAULT 'udp',
        username      TEXT NOT NULL DEFAULT '',
        -- The carrier account's password in clear: answering the carrier's digest challenge
        -- needs it (an HA1 would do only for one realm and MD5); the data directory is
        -- private to the service account.
        password      TEXT NOT NULL DEFAULT '',
        realm         TEXT NOT NULL DEFAULT '',      -- the only realm we answer challenges for
        allowed_sources TEXT NOT NULL DEFAULT '',    -- [transport:]addr[/prefix][:port], one a line
        trusted       INTEGER NOT NULL DEFAULT 0,    -- gets P-Asserted-Identity
        register_expiry INTEGER NOT NULL DEFAULT 600,
        created_at    REAL NOT NULL DEFAULT (unixepoch()),
        UNIQUE (tenant_id, name)
    );
    CREATE TABLE feature_settings (
        user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        feature       TEXT NOT NULL,
        value         TEXT NOT NULL,                 -- JSON object, checked against the schema
        updated_at    REAL NOT NULL DEFAULT (unixepoch()),
        PRIMARY KEY (user_id, feature)
    );
    CREATE TABLE call_history (
        id            INTEGER PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        call_id       TEXT NOT NULL,
        direction     TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        other_name    TEXT NOT NULL DEFAULT '',
        other_number  TEXT NOT NULL DEFAULT '',
        started_at    REAL NOT NULL,
        answered_at   REAL,
        ended_at      REAL,                          -- NULL while the call is in progress
        duration      REAL NOT NULL DEFAULT 0,       -- seconds talked (answer to end)
        missed        INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX call_history_user ON call_history(user_id, started_at);
    """, _migrate_v1_users),
)


class StoreError(ValueError):
    """A request to the store that cannot be carried out (message says why)."""


# -- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tenant:
    """A company: its SIP domain, digest realm, extension plan and numbering context."""

    id: int
    name: str
    company: str
    domain: str
    realm: str
    ext_min_len: int
    ext_max_len: int
    main_number: str | None
    country_code: str
    area_code: str

    @property
    def dialplan(self) -> DialPlan:
        """The dial plan context for this tenant's users."""
        return DialPlan(country_code=self.country_code, area_code=self.area_code,
                        ext_min_len=self.ext_min_len, ext_max_len=self.ext_max_len)


@dataclass(frozen=True, slots=True)
class User:
    """A PBX user (without secrets: the voicemail PIN hash stays in the store)."""

    id: int
    tenant_id: int
    extension: str
    name: str
    email: str
    language: str
    mobile_number: str | None
    remote_office_number: str | None
    permission: Permission
    premium_allowed: bool
    has_voicemail_pin: bool


@dataclass(frozen=True, slots=True)
class Device:
    """A SIP account of a user: username and HA1 digests for one realm."""

    id: int
    user_id: int
    username: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    kind: str
    mobile: bool

    def credentials(self) -> Credentials:
        """The digest credentials (stored HA1s, never the password)."""
        return Credentials(
            username=self.username,
            realm=self.realm,
            ha1={"MD5": self.ha1_md5, "SHA-256": self.ha1_sha256},
        )


@dataclass(frozen=True, slots=True)
class Number:
    """An E.164 DID and its owner (a user, a group by name, or the company)."""

    e164: str
    tenant_id: int
    owner_kind: str
    user_id: int | None
    group_name: str | None


@dataclass(frozen=True, slots=True)
class Trunk:
    """A carrier connection of a tenant.

    ``password`` is kept in clear because answering the carrier's challenge needs it; it is only
    ever used for challenges from this trunk's host with ``realm`` (SECURITY.md: no digest leak).
    ``allowed_sources`` are where calls from this trunk may come from
    (``[transport:]address[/prefix][:port]``); empty means the host (when it is an address).
    """

    id: int
    tenant_id: int
    name: str
    kind: str
    host: str
    port: int
    transport: str
    username: str
    password: str
    realm: str
    allowed_sources: tuple[str, ...]
    trusted: bool
    register_expiry: int


@dataclass(slots=True)
class HistoryWrite:
    """What one batch knows of one history entry (see :meth:`Store.history_write`):
    ``entry_id`` None → a new entry (inserted with whatever times are known already), else the
    stored entry gets ``answered_at``/``ended_at`` where given (the first answer and the first end
    count, as with :meth:`Store.history_answered` / :meth:`Store.history_end`)."""

    user_id: int
    call_id: str
    direction: str
    other_name: str
    other_number: str
    started_at: float
    entry_id: int | None = None
    answered_at: float | None = None
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One call in a user's history. ``ended_at`` is None while the call is in progress."""

    id: int
    user_id: int
    call_id: str
    direction: str
    other_name: str
    other_number: str
    started_at: float
    answered_at: float | None
    ended_at: float | None
    duration: float
    missed: bool


# -- feature settings schemas ------------------------------------------------------------------------
# One schema language for the whole product: pbx.settings_schema (the features declare theirs).



# -- PINs ---------------------------------------------------------------------------------------------

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 14, 8, 1


def hash_pin(pin: str) -> str:
    """A salted scrypt hash of a voicemail PIN (``scrypt$n$r$p$salt$hash``)."""
    salt = secrets.token_bytes(16)
    h = hashlib.scrypt(pin.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${h.hex()}"


def check_pin(stored: str, pin: str) -> bool:
    """Whether ``pin`` matches a hash from :func:`hash_pin` (constant-time comparison)."""
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        h = hashlib.scrypt(pin.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                           dklen=len(digest) // 2)
    except ValueError:
        return False
    return hmac.compare_digest(h.hex(), digest)


# -- the interface ---------------------------------------------------------------------------------


class PbxStore(Protocol):
    """What the server, the directory cache and the CLI need from a store. :class:`Store` is the
    SQLite implementation; a PostgreSQL one fills the same methods (synchronous, thread-safe)."""

    def add_listener(self, callback: Callable[[str], None]) -> None: ...
    def data_version(self) -> int: ...
    def secret(self, name: str, nbytes: int = 32) -> bytes: ...
    def tenants(self) -> list[Tenant]: ...
    def users(self, tenant: str | None = None) -> list[User]: ...
    def devices(self, tenant: str | None = None) -> list[Device]: ...
    def numbers(self, tenant: str | None = None) -> list[Number]: ...
    def trunks(self, tenant: str | None = None) -> list[Trunk]: ...
    def all_feature_settings(self) -> dict[tuple[int, str], dict[str, Any]]: ...
    def save_bindings(self, upserts: Iterable[Binding],
                      removals: Iterable[tuple[str, str]]) -> None: ...
    def load_bindings(self, now: float) -> list[Binding]: ...
    def history_start(self, user_id: int, call_id: str, direction: str, other_name: str,
                      other_number: str, started_at: float) -> int: ...
    def history_answered(self, entry_id: int, answered_at: float) -> None: ...
    def history_end(self, entry_id: int, ended_at: float) -> HistoryEntry | None: ...
    def history_write(self, writes: Sequence[HistoryWrite]) -> list[int]: ...
    def history(self, user_id: int, limit: int = 200) -> list[HistoryEntry]: ...
    def history_delete(self, user_id: int, entry_id: int) -> bool: ...
    def history_clear(self, user_id: int) -> int: ...


# -- SQLite ------------------------------------------------------------------------------------------

_TENANT_COLS = ("id, name, company, domain, realm, ext_min_len, ext_max_len, main_number, "
                "country_code, area_code")
_USER_COLS = ("u.id, u.tenant_id, u.extension, u.name, u.email, u.language, u.mobile_number, "
              "u.remote_office_number, u.permission, u.premium_allowed, "
              "u.voicemail_pin IS NOT NULL")
_DEVICE_COLS = "d.id, d.user_id, d.username, d.realm, d.ha1_md5, d.ha1_sha256, d.kind, d.mobile"
_TRUNK_COLS = ("t.id, t.tenant_id, t.name, t.kind, t.host, t.port, t.transport, t.username, "
               "t.password, t.realm, t.allowed_sources, t.trusted, t.register_expiry")
_HISTORY_COLS = ("id, user_id, call_id, direction, other_name, other_number, started_at, "
                 "answered_at, ended_at, duration, missed")


def _user(row: tuple[Any, ...]) -> User:
    return User(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                Permission(row[8]), bool(row[9]), bool(row[10]))


def _device(row: tuple[Any, ...]) -> Device:
    return Device(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))


def _trunk(row: tuple[Any, ...]) -> Trunk:
    return Trunk(row[0], row[1], row[2], row[3], row[4], int(row[5]), row[6], row[7], row[8],
                 row[9], tuple(s for s in row[10].split("\n") if s), bool(row[11]), int(row[12]))


def _history(row: tuple[Any, ...]) -> HistoryEntry:
    return HistoryEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                        float(row[9]), bool(row[10]))


def _no_control(**fields: str) -> None:
    for key, text in fields.items():
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise StoreError(f"{key} must not contain control characters")


def source_network(text: str) -> str:
    """The address/network of an allowed-source entry ``[transport:]address[/prefix][:port]``
    (the syntax of :func:`pbx.trunks.parse_source`); StoreError when it is none."""
    import ipaddress

    rest = text.strip()
    for name in TRUNK_TRANSPORTS:
        if rest.lower().startswith(name + ":"):
            rest = rest[len(name) + 1:]
            break
    port = ""
    if rest.startswith("["):
        addr, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise StoreError(f"allowed source {text!r}: IPv6 addresses are written [addr]:port")
        rest, port = addr, tail[1:]
    elif rest.count(":") == 1:
        rest, _, port = rest.partition(":")
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise StoreError(f"allowed source {text!r}: port {port!r} is not 1-65535")
    try:
        return str(ipaddress.ip_network(rest, strict=False))
    except ValueError:
        raise StoreError(f"allowed source {text!r} is not an IP address or network") from None


#: One label of an RFC 3261 ``hostname`` (``domainlabel``; at most 63 octets, RFC 1035 §2.3.4).
_DOMAINLABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def trunk_host_problem(host: str) -> str | None:
    """Why ``host`` is neither an IP address (IPv6 bare or in brackets) nor a DNS host name
    (RFC 3261 ``hostname``: dot-separated labels of letters, digits and inner hyphens, the last
    one beginning with a letter, at most 253 characters); None when it is one of them."""
    import ipaddress

    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        address = None
    if address is not None:
        if literal is not host and address.version != 6:
            return "only IPv6 addresses are written in brackets"
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            return "a zone index (%...) cannot go in a SIP URI"
        return None
    if host.count(":") == 1 and "[" not in host:
        return "the port goes in the port field (--port), not in the host"
    if "[" in host or "]" in host or ":" in host:
        return "not a valid IPv6 address"
    name = host[:-1] if host.endswith(".") else host  # a fully qualified name may end in '.'
    if not name:
        return "empty"
    if len(name) > 253:
        return "longer than 253 characters"
    labels = name.split(".")
    for label in labels:
        if not _DOMAINLABEL_RE.match(label):
            return (f"label {label!r} is not 1-63 letters, digits and inner hyphens" if label
                    else "empty label (two dots in a row or a leading dot)")
    if not labels[-1][0].isalpha():
        # RFC 3261 toplabel: what looks like a mistyped address (1.2.3.999) is not a name.
        return f"its last label {labels[-1]!r} must begin with a letter (or it is a bad address)"
    return None


def _parse_sources(sources: Iterable[str]) -> tuple[str, ...]:
    out = []
    for s in sources:
        if s.strip():
            source_network(s)
            out.append(s.strip())
    return tuple(out)


class Store:
    """SQLite store in ``data_dir/asyncpbx.sqlite3``.

    ``domain`` is the configured SIP domain: the default tenant gets it when v1 users are
    migrated or the default tenant is created.
    """

    FILENAME = "asyncpbx.sqlite3"

    def __init__(self, data_dir: str | Path, *, domain: str = "") -> None:
        self.data_dir = Path(data_dir)
        self.domain = domain
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data directory {self.data_dir}: {exc}") from exc
        self.path = self.data_dir / self.FILENAME
        self._lock = threading.RLock()
        self._listeners: list[Callable[[str], None]] = []
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit (a call record, a new user) is on disk when the call returns.
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

    def _changed(self, table: str) -> None:
        for callback in list(self._listeners):
            callback(table)

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(table)`` after every committed change to tenants, users, devices,
        numbers, trunks or feature settings (not registrations or history) made through this
        store object — the directory cache's write-through."""
        self._listeners.append(callback)

    def data_version(self) -> int:
        """Changes when *another* connection (e.g. the CLI in another process) commits:
        ``PRAGMA data_version``; the directory polls it."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _migrate(self) -> None:
        ctx = MigrationContext(domain=self.domain)
        with self._lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this asyncpbx "
                    f"({len(MIGRATIONS)}): upgrade asyncpbx"
                )
            for number in range(version, len(MIGRATIONS)):
                migration = MIGRATIONS[number]
                if isinstance(migration, str):
                    # executescript commits; the version bump is in the same script so a crash
                    # mid-migration re-runs it from a consistent point.
                    self._db.executescript(
                        "BEGIN;" + migration + f";PRAGMA user_version={number + 1};COMMIT;"
                    )
                    continue
                ddl, step = migration
                # The script leaves its BEGIN open: DDL, data step and version bump commit
                # together (SQLite DDL is transactional).
                self._db.executescript("BEGIN;" + ddl)
                try:
                    step(self._db, ctx)
                    self._db.execute(f"PRAGMA user_version={number + 1}")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")

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
        """``PRAGMA integrity_check`` says ok (and no foreign key is dangling)."""
        with self._lock:
            ok = self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            return bool(ok and not self._db.execute("PRAGMA foreign_key_check").fetchall())

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

    # -- tenants -----------------------------------------------------------------------------

    def add_tenant(
        self,
        name: str,
        domain: str,
        *,
        company: str = "",
        realm: str = "",
        ext_min_len: int = 3,
        ext_max_len: int | None = None,
        main_number: str | None = None,
        country_code: str = "49",
        area_code: str = "",
    ) -> Tenant:
        """Create a tenant; ``realm`` defaults to the domain, ``ext_max_len`` to ``ext_min_len``."""
        if not NAME_RE.match(name):
            raise StoreError(f"tenant name {name!r} must be 1-32 of a-z 0-9 _ - (lower case)")
        if not DOMAIN_RE.match(domain):
            raise StoreError(f"domain {domain!r} is not a host name or IP address")
        realm = realm or domain
        _no_control(company=company, realm=realm)
        if '"' in realm or "\\" in realm:
            raise StoreError("realm must not contain quotes or backslashes")
        max_len = ext_min_len if ext_max_len is None else ext_max_len
        area_code = area_code.removeprefix("0")
        try:
            plan = DialPlan(country_code=country_code, area_code=area_code,
                            ext_min_len=ext_min_len, ext_max_len=max_len)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        main = self._e164(plan, main_number, "main number") if main_number else None
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO tenants(name, company, domain, realm, ext_min_len, ext_max_len, "
                    "main_number, country_code, area_code) VALUES (?,?,?,?,?,?,?,?,?)",
                    (name, company, domain, realm, ext_min_len, max_len, main, country_code,
                     area_code),
                )
                tenant_id = cur.lastrowid
        except sqlite3.IntegrityError as exc:
            if "tenants.name" in str(exc):
                raise StoreError(f"tenant {name} exists already") from None
            if "tenants.domain" in str(exc):
                raise StoreError(f"domain {domain} belongs to another tenant") from None
            raise
        self._changed("tenants")
        assert tenant_id is not None
        return Tenant(tenant_id, name, company, domain, realm, ext_min_len, max_len, main,
                      country_code, area_code)

    def ensure_default_tenant(self, domain: str, realm: str) -> Tenant:
        """The "default" tenant (single-company mode), created with ``domain``/``realm`` when
        missing; an existing one keeps its realm (devices' HA1s depend on it) but follows a
        changed domain."""
        existing = self.find_tenant(DEFAULT_TENANT)
        if existing is None:
            try:
                return self.add_tenant(DEFAULT_TENANT, domain, realm=realm, ext_min_len=2,
                                       ext_max_len=8)
            except StoreError:
                # The domain is taken by another tenant: the default tenant still needs to exist
                # (requests to our IP address belong to it); give it a placeholder domain.
                return self.add_tenant(DEFAULT_TENANT, "default.invalid", realm=realm,
                                       ext_min_len=2, ext_max_len=8)
        if existing.domain.lower() != domain.lower() and DOMAIN_RE.match(domain):
            with self._tx() as db:
                taken = db.execute("SELECT 1 FROM tenants WHERE domain=? AND id<>?",
                                   (domain, existing.id)).fetchone()
                if not taken:
                    db.execute("UPDATE tenants SET domain=? WHERE id=?", (domain, existing.id))
            if not taken:
                self._changed("tenants")
                return self.tenant(DEFAULT_TENANT)
        return existing

    def find_tenant(self, name: str) -> Tenant | None:
        """A tenant by name, or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {_TENANT_COLS} FROM tenants WHERE name=?",
                                   (name,)).fetchone()
        return Tenant(*row) if row is not None else None

    def tenant(self, name: str) -> Tenant:
        """A tenant by name; StoreError when there is none."""
        t = self.find_tenant(name)
        if t is None:
            raise StoreError(f"no tenant {name}")
        return t

    def tenants(self) -> list[Tenant]:
        """All tenants, by name."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_TENANT_COLS} FROM tenants ORDER BY name").fetchall()
        return [Tenant(*r) for r in rows]

    def remove_tenant(self, name: str) -> None:
        """Delete a tenant with its users, devices, numbers, trunks, settings and history."""
        t = self.tenant(name)
        with self._tx() as db:
            self._delete_registrations(db, t, None)
            db.execute("DELETE FROM tenants WHERE id=?", (t.id,))
        self._changed("tenants")

    def _tenant_or_default(self, tenant: str | None) -> Tenant:
        if tenant is None or tenant == DEFAULT_TENANT:
            t = self.find_tenant(DEFAULT_TENANT)
            if t is None:
                raise StoreError("there is no default tenant yet (add a user with --password "
                                 "first, or name a tenant with --tenant)")
            return t
        return self.tenant(tenant)

    @staticmethod
    def _e164(plan: DialPlan, number: str, what: str) -> str:
        e164 = to_e164(plan, number)
        if e164 is None:
            raise StoreError(f"{what} {number!r} is not a telephone number "
                             "(write +49 30 123456, 030 123456 or 0049 30 123456)")
        return e164

    # -- users -------------------------------------------------------------------------------

    def add_user(
        self,
        extension: str,
        password: str | None = None,
        realm: str | None = None,
        name: str = "",
        *,
        tenant: str | None = None,
        email: str = "",
        language: str = "de",
        voicemail_pin: str | None = None,
        mobile_number: str | None = None,
        remote_office_number: str | None = None,
        permission: str | Permission = Permission.NATIONAL,
        premium_allowed: bool = False,
        device_kind: str = "softphone",
    ) -> User:
        """Create a user; with ``password`` also one device (username = extension).

        Without ``tenant`` the user goes to the default tenant, which is created on the fly with
        the store's domain and ``realm`` (the single-company shortcut, and the v1 signature
        ``add_user(ext, password, realm, name)``). The device's realm is ``realm`` or the
        tenant's. Raises StoreError for bad input or a duplicate.
        """
        if tenant is None or tenant == DEFAULT_TENANT:
            t = self.find_tenant(DEFAULT_TENANT)
            if t is None:
                if not realm and not self.domain:
                    raise StoreError("there is no default tenant yet and no domain to create it")
                t = self.ensure_default_tenant(self.domain or str(realm), realm or self.domain)
        else:
            t = self.tenant(tenant)
        plan = t.dialplan
        if not EXTENSION_RE.match(extension) or not (
                plan.ext_min_len <= len(extension) <= plan.ext_max_len):
            span = (f"{plan.ext_min_len}" if plan.ext_min_len == plan.ext_max_len
                    else f"{plan.ext_min_len} to {plan.ext_max_len}")
            raise StoreError(f"extension {extension!r} must be {span} digits")
        reserved = reserved_extension(extension)
        if reserved:
            raise StoreError(f"extension {extension}: {reserved}")
        if password is not None:
            self._check_password(password)
        _no_control(name=name, email=email)
        if email and not EMAIL_RE.match(email):
            raise StoreError(f"e-mail address {email!r} is not valid")
        if language not in LANGUAGES:
            raise StoreError(f"language {language!r} must be one of {', '.join(LANGUAGES)}")
        if voicemail_pin is not None and not PIN_RE.match(voicemail_pin):
            raise StoreError("voicemail PIN must be 4 to 8 digits")
        try:
            perm = Permission(permission)
        except ValueError:
            raise StoreError(f"permission {permission!r} must be one of "
                             f"{', '.join(p.value for p in Permission)}") from None
        if device_kind not in DEVICE_KINDS:
            raise StoreError(f"device kind {device_kind!r} must be one of {', '.join(DEVICE_KINDS)}")
        mobile = self._e164(plan, mobile_number, "mobile number") if mobile_number else None
        remote = (self._e164(plan, remote_office_number, "remote office number")
                  if remote_office_number else None)
        pin_hash = hash_pin(voicemail_pin) if voicemail_pin is not None else None
        device_realm = realm or t.realm
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO users(tenant_id, extension, name, email, language, voicemail_pin, "
                    "mobile_number, remote_office_number, permission, premium_allowed) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (t.id, extension, name, email, language, pin_hash, mobile, remote, perm.value,
                     int(premium_allowed)),
                )
                user_id = cur.lastrowid
                assert user_id is not None
                if password is not None:
                    self._insert_device(db, user_id, extension, device_realm, password,
                                        device_kind, device_kind == "mobile")
        except sqlite3.IntegrityError as exc:
            if "users.tenant_id, users.extension" in str(exc):
                raise StoreError(f"user {extension} exists already") from None
            if "devices.realm, devices.username" in str(exc):
                raise StoreError(f"a device with username {extension} exists already in realm "
                                 f"{device_realm}") from None
            raise
        self._changed("users")
        return User(user_id, t.id, extension, name, email, language, mobile, remote, perm,
                    premium_allowed, pin_hash is not None)

    @staticmethod
    def _check_password(password: str) -> None:
        if len(password) < 4:
            raise StoreError("password must have at least 4 characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in password):
            raise StoreError("password must not contain control characters")

    def update_user(self, extension: str, *, tenant: str | None = None,
                    **changes: Any) -> User:
        """Change fields of a user: name, email, language, voicemail_pin (the PIN; stored
        hashed; None removes it), mobile_number, remote_office_number (None removes them),
        permission, premium_allowed."""
        t = self._tenant_or_default(tenant)
        user = self.user(extension, tenant=t.name)
        cols: dict[str, Any] = {}
        for key, value in changes.items():
            if key in ("name", "email"):
                _no_control(**{key: str(value)})
                if key == "email" and value and not EMAIL_RE.match(value):
                    raise StoreError(f"e-mail address {value!r} is not valid")
                cols[key] = str(value)
            elif key == "language":
                if value not in LANGUAGES:
                    raise StoreError(f"language {value!r} must be one of {', '.join(LANGUAGES)}")
                cols[key] = value
            elif key == "voicemail_pin":
                if value is not None and not PIN_RE.match(value):
                    raise StoreError("voicemail PIN must be 4 to 8 digits")
                cols[key] = hash_pin(value) if value is not None else None
            elif key in ("mobile_number", "remote_office_number"):
                cols[key] = (self._e164(t.dialplan, value, key.replace("_", " "))
                             if value else None)
            elif key == "permission":
                try:
                    cols[key] = Permission(value).value
                except ValueError:
                    raise StoreError(f"permission {value!r} must be one of "
                                     f"{', '.join(p.value for p in Permission)}") from None
            elif key == "premium_allowed":
                cols[key] = int(bool(value))
            else:
                raise StoreError(f"unknown user field {key!r}")
        if cols:
            with self._tx() as db:
                db.execute(f"UPDATE users SET {', '.join(f'{k}=?' for k in cols)} WHERE id=?",
                           (*cols.values(), user.id))
            self._changed("users")
        return self.user(extension, tenant=t.name)

    def check_voicemail_pin(self, user_id: int, pin: str) -> bool:
        """Whether ``pin`` is the user's voicemail PIN (False when none is set)."""
        with self._lock:
            row = self._db.execute("SELECT voicemail_pin FROM users WHERE id=?",
                                   (user_id,)).fetchone()
        return bool(row and row[0] and check_pin(row[0], pin))

    def user(self, extension: str, *, tenant: str | None = None) -> User:
        """A user by extension in ``tenant`` (default tenant when None); StoreError if none."""
        t = self._tenant_or_default(tenant)
        with self._lock:
            row = self._db.execute(
                f"SELECT {_USER_COLS} FROM users u WHERE u.tenant_id=? AND u.extension=?",
                (t.id, extension)).fetchone()
        if row is None:
            raise StoreError(f"no user {extension}" + (f" in tenant {t.name}" if tenant else ""))
        return _user(row)

    def remove_user(self, extension: str, *, tenant: str | None = None) -> None:
        """Delete a user with their devices, DIDs, settings, history and registrations."""
        t = self._tenant_or_default(tenant)
        user = self.user(extension, tenant=t.name)
        with self._tx() as db:
            db.execute("DELETE FROM users WHERE id=?", (user.id,))
            self._delete_registrations(db, t, extension)
        self._changed("users")

    @staticmethod
    def _delete_registrations(db: sqlite3.Connection, t: Tenant, extension: str | None) -> None:
        user = extension if extension is not None else "%"
        db.execute("DELETE FROM registrations WHERE aor LIKE ?", (f"sip:{user}@{t.domain}",))
        if t.name == DEFAULT_TENANT and extension is not None:
            # v1 registrations of the single-company mode: any host (the domain was the
            # listen address, which may have changed since).
            db.execute("DELETE FROM registrations WHERE aor LIKE ?", (f"sip:{extension}@%",))

    def users(self, tenant: str | None = None) -> list[User]:
        """The users of ``tenant`` (all tenants when None), by tenant and extension."""
        q = f"SELECT {_USER_COLS} FROM users u"
        args: tuple[Any, ...] = ()
        if tenant is not None:
            q += " WHERE u.tenant_id=?"
            args = (self.tenant(tenant).id,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY u.tenant_id, u.extension", args).fetchall()
        return [_user(r) for r in rows]

    def user_count(self) -> int:
        """How many users exist (all tenants)."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM users").fetchone()[0])

    # -- devices -----------------------------------------------------------------------------

    def _insert_device(self, db: sqlite3.Connection, user_id: int, username: str, realm: str,
                       password: str, kind: str, mobile: bool) -> Device:
        creds = make_credentials(username, realm, password)
        cur = db.execute(
            "INSERT INTO devices(user_id, username, realm, ha1_md5, ha1_sha256, kind, mobile) "
            "VALUES (?,?,?,?,?,?,?)",
            (user_id, username, realm, creds.ha1["MD5"], creds.ha1["SHA-256"], kind, int(mobile)),
        )
        assert cur.lastrowid is not None
        return Device(cur.lastrowid, user_id, username, realm, creds.ha1["MD5"],
                      creds.ha1["SHA-256"], kind, mobile)

    def add_device(self, extension: str, username: str, password: str, *,
                   tenant: str | None = None, kind: str = "softphone",
                   mobile: bool | None = None) -> Device:
        """Add a SIP account to a user; the HA1s are made for the tenant's realm. ``mobile``
        defaults to ``kind == "mobile"``."""
        t = self._tenant_or_default(tenant)
        user = self.user(extension, tenant=t.name)
        if not USERNAME_RE.match(username):
            raise StoreError(f"username {username!r} must be 1-64 of A-Z a-z 0-9 . _ + ~ -")
        self._check_password(password)
        if kind not in DEVICE_KINDS:
            raise StoreError(f"device kind {kind!r} must be one of {', '.join(DEVICE_KINDS)}")
        try:
            with self._tx() as db:
                device = self._insert_device(db, user.id, username, t.realm, password, kind,
                                             kind == "mobile" if mobile is None else mobile)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise StoreError(f"a device with username {username} exists already in realm "
                                 f"{t.realm}") from None
            raise
        self._changed("devices")
        return device

    def set_device_password(self, username: str, password: str, *,
                            tenant: str | None = None) -> Device:
        """New credentials for a device (HA1s for the tenant's current realm)."""
        t = self._tenant_or_default(tenant)
        self._check_password(password)
        creds = make_credentials(username, t.realm, password)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE devices SET realm=?, ha1_md5=?, ha1_sha256=? WHERE username=? AND "
                "user_id IN (SELECT id FROM users WHERE tenant_id=?)",
                (t.realm, creds.ha1["MD5"], creds.ha1["SHA-256"], username, t.id))
            if cur.rowcount == 0:
                raise StoreError(f"no device {username} in tenant {t.name}")
        self._changed("devices")
        return next(d for d in self.devices(t.name) if d.username == username)

    def remove_device(self, username: str, *, tenant: str | None = None) -> None:
        """Delete a device of the tenant by username."""
        t = self._tenant_or_default(tenant)
        with self._tx() as db:
            cur = db.execute("DELETE FROM devices WHERE username=? AND user_id IN "
                             "(SELECT id FROM users WHERE tenant_id=?)", (username, t.id))
            if cur.rowcount == 0:
                raise StoreError(f"no device {username} in tenant {t.name}")
        self._changed("devices")

    def devices(self, tenant: str | None = None) -> list[Device]:
        """Devices of ``tenant`` (all when None), by username."""
        q = f"SELECT {_DEVICE_COLS} FROM devices d JOIN users u ON u.id = d.user_id"
        args: tuple[Any, ...] = ()
        if tenant is not None:
            q += " WHERE u.tenant_id=?"
            args = (self.tenant(tenant).id,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY d.realm, d.username", args).fetchall()
        return [_device(r) for r in rows]

    # -- numbers -----------------------------------------------------------------------------

    def add_number(self, number: str, *, tenant: str | None = None, user: str | None = None,
                   group: str | None = None) -> Number:
        """Assign a DID (normalised to E.164 with the tenant's dial plan) to the user with
        extension ``user``, to ``group`` (a name), or — with neither — to the company."""
        t = self._tenant_or_default(tenant)
        e164 = self._e164(t.dialplan, number, "number")
        if user is not None and group is not None:
            raise StoreError("a number belongs to a user or a group, not both")
        user_id = self.user(user, tenant=t.name).id if user is not None else None
        if group is not None and (not group or len(group) > 64):
            raise StoreError("group name must have 1 to 64 characters")
        if group is not None:
            _no_control(group=group)
        kind = "user" if user is not None else "group" if group is not None else "company"
        try:
            with self._tx() as db:
                db.execute("INSERT INTO numbers(e164, tenant_id, owner_kind, user_id, group_name) "
                           "VALUES (?,?,?,?,?)", (e164, t.id, kind, user_id, group))
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise StoreError(f"number {e164} is assigned already") from None
            raise
        self._changed("numbers")
        return Number(e164, t.id, kind, user_id, group)

    def remove_number(self, number: str, *, tenant: str | None = None) -> None:
        """Release a DID of the tenant."""
        t = self._tenant_or_default(tenant)
        e164 = self._e164(t.dialplan, number, "number")
        with self._tx() as db:
            cur = db.execute("DELETE FROM numbers WHERE e164=? AND tenant_id=?", (e164, t.id))
            if cur.rowcount == 0:
                raise StoreError(f"no number {e164} in tenant {t.name}")
        self._changed("numbers")

    def numbers(self, tenant: str | None = None) -> list[Number]:
        """DIDs of ``tenant`` (all when None), by number."""
        q = "SELECT e164, tenant_id, owner_kind, user_id, group_name FROM numbers"
        args: tuple[Any, ...] = ()
        if tenant is not None:
            q += " WHERE tenant_id=?"
            args = (self.tenant(tenant).id,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY e164", args).fetchall()
        return [Number(*r) for r in rows]

    # -- trunks ------------------------------------------------------------------------------

    def add_trunk(
        self,
        name: str,
        *,
        tenant: str | None = None,
        kind: str,
        host: str,
        port: int = 5060,
        transport: str = "udp",
        username: str = "",
        password: str = "",
        realm: str = "",
        allowed_sources: Iterable[str] = (),
        trusted: bool = False,
        register_expiry: int = 600,
    ) -> Trunk:
        """Add a carrier trunk. ``host`` is an IP address or a DNS name (see
        :func:`trunk_host_problem`); a name is resolved by :class:`pbx.trunks.TrunkManager`
        (A/AAAA). ``register`` trunks need username and password. An ``ip`` trunk without
        ``allowed_sources`` is recognised by its host's address(es)."""
        t = self._tenant_or_default(tenant)
        if not NAME_RE.match(name):
            raise StoreError(f"trunk name {name!r} must be 1-32 of a-z 0-9 _ - (lower case)")
        if kind not in TRUNK_KINDS:
            raise StoreError(f"trunk kind {kind!r} must be one of {', '.join(TRUNK_KINDS)}")
        problem = trunk_host_problem(host)
        if problem is not None:
            raise StoreError(f"trunk host {host!r} is neither an IP address nor a DNS name: "
                             f"{problem}")
        if not 1 <= port <= 65535:
            raise StoreError(f"trunk port {port} is outside 1-65535")
        if transport not in TRUNK_TRANSPORTS:
            raise StoreError(f"transport {transport!r} must be one of {', '.join(TRUNK_TRANSPORTS)}")
        _no_control(username=username, password=password, realm=realm)
        if kind == "register" and (not username or not password):
            raise StoreError("a register trunk needs --username and --password")
        if not 60 <= register_expiry <= 86400:
            raise StoreError("register expiry must lie between 60 and 86400 seconds")
        # Without a list an IP trunk is known by its host's address, or by what its DNS name
        # resolves to (pbx.trunks.TrunkManager does that): --allow is optional either way.
        sources = _parse_sources(allowed_sources)
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO trunks(tenant_id, name, kind, host, port, transport, username, "
                    "password, realm, allowed_sources, trusted, register_expiry) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (t.id, name, kind, host, port, transport, username, password, realm,
                     "\n".join(sources), int(trusted), register_expiry))
                trunk_id = cur.lastrowid
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise StoreError(f"trunk {name} exists already in tenant {t.name}") from None
            raise
        self._changed("trunks")
        assert trunk_id is not None
        return Trunk(trunk_id, t.id, name, kind, host, port, transport, username, password, realm,
                     sources, trusted, register_expiry)

    def remove_trunk(self, name: str, *, tenant: str | None = None) -> None:
        """Delete a trunk of the tenant."""
        t = self._tenant_or_default(tenant)
        with self._tx() as db:
            cur = db.execute("DELETE FROM trunks WHERE name=? AND tenant_id=?", (name, t.id))
            if cur.rowcount == 0:
                raise StoreError(f"no trunk {name} in tenant {t.name}")
        self._changed("trunks")

    def trunks(self, tenant: str | None = None) -> list[Trunk]:
        """Trunks of ``tenant`` (all when None), by tenant and name."""
        q = f"SELECT {_TRUNK_COLS} FROM trunks t"
        args: tuple[Any, ...] = ()
        if tenant is not None:
            q += " WHERE t.tenant_id=?"
            args = (self.tenant(tenant).id,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY t.tenant_id, t.name", args).fetchall()
        return [_trunk(r) for r in rows]

    # -- feature settings ------------------------------------------------------------------

    def set_feature_settings(self, user_id: int, feature: str, schema: SettingsSchema,
                             value: Mapping[str, Any]) -> dict[str, Any]:
        """Update a user's settings of ``feature`` (checked against its schema; keys not given
        keep their current value); returns the full settings."""
        current = self.feature_settings(user_id, feature, schema)
        try:
            merged = validate_settings(feature, schema, value, base=current)
        except SettingError as exc:
            raise StoreError(str(exc)) from None
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO feature_settings(user_id, feature, value) VALUES (?,?,?) "
                    "ON CONFLICT(user_id, feature) DO UPDATE SET value=excluded.value, "
                    "updated_at=unixepoch()",
                    (user_id, feature, json.dumps(merged, sort_keys=True)))
        except sqlite3.IntegrityError:
            raise StoreError(f"no user with id {user_id}") from None
        self._changed("feature_settings")
        return merged

    def feature_settings(self, user_id: int, feature: str,
                         schema: SettingsSchema | None = None) -> dict[str, Any]:
        """A user's settings of ``feature``: stored values over the schema's defaults (keys the
        schema no longer has are dropped)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM feature_settings WHERE user_id=? AND "
                                   "feature=?", (user_id, feature)).fetchone()
        stored: dict[str, Any] = json.loads(row[0]) if row else {}
        if schema is None:
            return stored
        return stored_over_defaults(schema, stored)

    def all_feature_settings(self) -> dict[tuple[int, str], dict[str, Any]]:
        """Every stored settings object by (user id, feature) — for the directory cache."""
        with self._lock:
            rows = self._db.execute("SELECT user_id, feature, value FROM feature_settings").fetchall()
        return {(uid, f): json.loads(v) for uid, f, v in rows}

    # -- call history ------------------------------------------------------------------------

    def history_start(self, user_id: int, call_id: str, direction: str, other_name: str,
                      other_number: str, started_at: float) -> int:
        """Record the start of a call for a user; returns the entry id."""
        if direction not in ("in", "out"):
            raise StoreError(f"direction {direction!r} must be 'in' or 'out'")
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO call_history(user_id, call_id, direction, other_name, other_number, "
                "started_at, missed) VALUES (?,?,?,?,?,?,0)",
                (user_id, call_id, direction, other_name, other_number, started_at))
            assert cur.lastrowid is not None
            return cur.lastrowid

    def history_answered(self, entry_id: int, answered_at: float) -> None:
        """The call of an entry was answered (the first answer counts)."""
        with self._tx() as db:
            db.execute("UPDATE call_history SET answered_at=? WHERE id=? AND answered_at IS NULL",
                       (answered_at, entry_id))

    def history_end(self, entry_id: int, ended_at: float) -> HistoryEntry | None:
        """Complete an entry: duration (answer to end) and missed (an incoming call never
        answered). Ending twice keeps the first end. None when the entry is gone (deleted)."""
        with self._tx() as db:
            db.execute(
                "UPDATE call_history SET ended_at=?, "
                "duration=CASE WHEN answered_at IS NULL THEN 0 ELSE max(0, ? - answered_at) END, "
                "missed=(answered_at IS NULL AND direction='in') "
                "WHERE id=? AND ended_at IS NULL", (ended_at, ended_at, entry_id))
            row = db.execute(f"SELECT {_HISTORY_COLS} FROM call_history WHERE id=?",
                             (entry_id,)).fetchone()
        return _history(row) if row else None

    def history_write(self, writes: Sequence[HistoryWrite]) -> list[int]:
        """Apply a batch of history writes in ONE transaction (group commit: one fsync for
        everything the call-history worker collected while the previous commit ran) and return
        the entry ids in order (new ids for inserts). An entry whose start, answer and end are
        all in the batch is one INSERT. Raises :class:`StoreError` for a bad direction before
        anything is written; other failures roll the whole batch back (the caller retries the
        writes one by one to isolate the bad one)."""
        for w in writes:
            if w.direction not in ("in", "out"):
                raise StoreError(f"direction {w.direction!r} must be 'in' or 'out'")
        ids: list[int] = []
        with self._tx() as db:
            for w in writes:
                if w.entry_id is None:
                    ended = w.ended_at
                    duration = (max(0.0, ended - w.answered_at)
                                if ended is not None and w.answered_at is not None else 0.0)
                    missed = ended is not None and w.answered_at is None and w.direction == "in"
                    cur = db.execute(
                        "INSERT INTO call_history(user_id, call_id, direction, other_name, "
                        "other_number, started_at, answered_at, ended_at, duration, missed) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (w.user_id, w.call_id, w.direction, w.other_name, w.other_number,
                         w.started_at, w.answered_at, ended, duration, int(missed)))
                    assert cur.lastrowid is not None
                    ids.append(cur.lastrowid)
                    continue
                if w.answered_at is not None:
                    db.execute("UPDATE call_history SET answered_at=? "
                               "WHERE id=? AND answered_at IS NULL", (w.answered_at, w.entry_id))
                if w.ended_at is not None:
                    db.execute(
                        "UPDATE call_history SET ended_at=?, "
                        "duration=CASE WHEN answered_at IS NULL THEN 0 "
                        "ELSE max(0, ? - answered_at) END, "
                        "missed=(answered_at IS NULL AND direction='in') "
                        "WHERE id=? AND ended_at IS NULL", (w.ended_at, w.ended_at, w.entry_id))
                ids.append(w.entry_id)
        return ids

    def history_close_unfinished(self, now: float) -> int:
        """At start-up: entries of calls that were in progress when the server stopped end now."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE call_history SET ended_at=?, "
                "duration=CASE WHEN answered_at IS NULL THEN 0 ELSE max(0, ? - answered_at) END, "
                "missed=(answered_at IS NULL AND direction='in') WHERE ended_at IS NULL",
                (now, now))
            return cur.rowcount

    def history(self, user_id: int, limit: int = 200) -> list[HistoryEntry]:
        """A user's call history, newest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_HISTORY_COLS} FROM call_history WHERE user_id=? "
                "ORDER BY started_at DESC, id DESC LIMIT ?", (user_id, limit)).fetchall()
        return [_history(r) for r in rows]

    def history_delete(self, user_id: int, entry_id: int) -> bool:
        """Delete one entry of the user's history; False when there is no such entry."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM call_history WHERE id=? AND user_id=?",
                             (entry_id, user_id))
            return cur.rowcount > 0

    def history_clear(self, user_id: int) -> int:
        """Delete a user's whole history; returns how many entries went."""
        with self._tx() as db:
            return db.execute("DELETE FROM call_history WHERE user_id=?", (user_id,)).rowcount

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
