"""The SQLite implementation of the store: ``data_dir/asyncpbx.sqlite3``, WAL mode, one writer.

WAL + ``synchronous=FULL`` on every transaction: a committed call record or user survives a
power cut; a crash loses at most the last second of registration refreshes (phones re-register
anyway) and never corrupts the file. Migrations (:mod:`pbx.store.schema`) run when it opens.

The store is synchronous on purpose: the CLI calls it directly and the server calls it through
``asyncio.to_thread`` (or :class:`pbx.directory.AsyncHistory`); one lock serialises use of the
single connection.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pbx.feature_codes import CodeError, check_code
from pbx.routing.dialplan import DialPlan, Permission, reserved_extension, to_e164
from pbx.settings_schema import SettingError, SettingsSchema, stored_over_defaults
from pbx.settings_schema import validate as validate_settings
from pbx.store import schema as _schema
from pbx.store.chat import ChatStoreMixin
from pbx.store.contacts import ContactStoreMixin
from pbx.store.logins import LoginStoreMixin
from pbx.store.outbox import OutboxStoreMixin
from pbx.store.pickup import PickupStoreMixin
from pbx.store.portal import PortalStoreMixin
from pbx.store.records import (
    DEFAULT_TENANT,
    Device,
    HistoryEntry,
    HistoryWrite,
    Number,
    StoreError,
    Tenant,
    Trunk,
    User,
)
from pbx.store.tokens import TokenStoreMixin
from pbx.store.validation import (
    DEVICE_KINDS,
    DOMAIN_RE,
    EMAIL_RE,
    EXTENSION_RE,
    LANGUAGES,
    NAME_RE,
    PIN_RE,
    TRUNK_KINDS,
    TRUNK_TRANSPORTS,
    USERNAME_RE,
    check_pin,
    hash_pin,
    no_control,
    parse_sources,
    trunk_host_problem,
)
from pbx.store.voicemail import DepositHook, VoicemailStoreMixin
from pbx.store.webhooks import WebhookStoreMixin
from sipcore.digest import make_credentials
from sipcore.registrar import Binding
from sipcore.transport import Peer

_TENANT_COLS = ("id, name, company, domain, realm, ext_min_len, ext_max_len, main_number, "
                "country_code, area_code, language")
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



class Store(TokenStoreMixin, ChatStoreMixin, ContactStoreMixin, OutboxStoreMixin,
            PickupStoreMixin, VoicemailStoreMixin, PortalStoreMixin, LoginStoreMixin,
            WebhookStoreMixin):
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
        self._settings_listeners: list[Callable[[int, str, dict[str, Any]], None]] = []
        #: called inside the transaction that records each deposited voicemail message
        self.voicemail_deposit_hooks: list[DepositHook] = []
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

    def add_settings_listener(self, callback: Callable[[int, str, dict[str, Any]], None]
                              ) -> None:
        """Call ``callback(user_id, feature, value)`` after every committed
        :meth:`set_feature_settings` (before the ``feature_settings`` table notice): a cache
        can put the one changed entry in instead of reloading everything."""
        self._settings_listeners.append(callback)

    def data_version(self) -> int:
        """Changes when *another* connection (e.g. the CLI in another process) commits:
        ``PRAGMA data_version``; the directory polls it."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _migrate(self) -> None:
        ctx = _schema.MigrationContext(domain=self.domain)
        with self._lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(_schema.MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this asyncpbx "
                    f"({len(_schema.MIGRATIONS)}): upgrade asyncpbx"
                )
            for number in range(version, len(_schema.MIGRATIONS)):
                migration = _schema.MIGRATIONS[number]
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
        language: str = "de",
    ) -> Tenant:
        """Create a tenant; ``realm`` defaults to the domain, ``ext_max_len`` to ``ext_min_len``;
        ``language`` is the default of its new users and what its non-user callers hear."""
        if language not in LANGUAGES:
            raise StoreError(f"language {language!r} must be one of {', '.join(LANGUAGES)}")
        if not NAME_RE.match(name):
            raise StoreError(f"tenant name {name!r} must be 1-32 of a-z 0-9 _ - (lower case)")
        if not DOMAIN_RE.match(domain):
            raise StoreError(f"domain {domain!r} is not a host name or IP address")
        realm = realm or domain
        no_control(company=company, realm=realm)
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
                    "main_number, country_code, area_code, language) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (name, company, domain, realm, ext_min_len, max_len, main, country_code,
                     area_code, language),
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
                      country_code, area_code, language)

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
        language: str | None = None,
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
        tenant's; ``language`` defaults to the tenant's. Raises StoreError for bad input or a
        duplicate.
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
        language = language or t.language
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
        no_control(name=name, email=email)
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
                no_control(**{key: str(value)})
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
            no_control(group=group)
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
        no_control(username=username, password=password, realm=realm)
        if kind == "register" and (not username or not password):
            raise StoreError("a register trunk needs --username and --password")
        if not 60 <= register_expiry <= 86400:
            raise StoreError("register expiry must lie between 60 and 86400 seconds")
        # Without a list an IP trunk is known by its host's address, or by what its DNS name
        # resolves to (pbx.trunks.TrunkManager does that): --allow is optional either way.
        sources = parse_sources(allowed_sources)
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
        for callback in list(self._settings_listeners):
            callback(user_id, feature, merged)
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

    # -- feature codes -----------------------------------------------------------------------

    def feature_codes(self) -> dict[tuple[str, str], tuple[str, str]]:
        """The administrator's feature-code changes: (feature, action) → (code, alternate)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT feature, action, code, alternate FROM feature_codes").fetchall()
        return {(f, a): (c, alt) for f, a, c, alt in rows}

    def set_feature_code(self, feature: str, action: str, code: str,
                         alternate: str = "") -> None:
        """Store ``code`` (and ``alternate``, '' for none) for ``feature.action``. Only the
        form is checked here; whether it clashes with the table is the codes service's check
        (:class:`pbx.services.codes.CodesService`), which knows the table."""
        if not NAME_RE.match(feature) or not NAME_RE.match(action):
            raise StoreError(f"{feature}.{action}: feature and action must be names")
        try:
            check_code(code)
            if alternate:
                check_code(alternate, "alternate code")
        except CodeError as exc:
            raise StoreError(f"{feature}.{action}: {exc}") from None
        if code == alternate:
            raise StoreError(f"{feature}.{action}: the alternate code must differ from {code}")
        with self._tx() as db:
            db.execute(
                "INSERT INTO feature_codes(feature, action, code, alternate) VALUES (?,?,?,?) "
                "ON CONFLICT(feature, action) DO UPDATE SET code=excluded.code, "
                "alternate=excluded.alternate, updated_at=unixepoch()",
                (feature, action, code, alternate))
        self._changed("feature_codes")

    def reset_feature_codes(self, keys: Iterable[tuple[str, str]] | None = None) -> int:
        """Drop the changes of ``keys`` ((feature, action); None: all): those actions get the
        seed table's codes again. Returns how many changes were dropped."""
        with self._tx() as db:
            if keys is None:
                dropped = db.execute("DELETE FROM feature_codes").rowcount
            else:
                dropped = sum(db.execute(
                    "DELETE FROM feature_codes WHERE feature=? AND action=?", key).rowcount
                              for key in keys)
        if dropped:
            self._changed("feature_codes")
        return int(dropped)

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
