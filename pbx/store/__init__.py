"""The embedded store (schema version 4), a package of one job per module.

Model: **tenants** (a company with its SIP domain, extension plan, main number, country and
area code) have **users** (extension, name, e-mail, language, voicemail PIN, mobile and remote
office numbers, call permission); a user has **devices** (SIP accounts: a username and the HA1
digests for one realm, never the password), **numbers** (E.164 DIDs owned by a user, a group or
the company), per-user **feature settings** (JSON checked against the feature's schema, in
the one schema language of :mod:`pbx.settings_schema`) and a
**call history**. **Trunks** connect a tenant to carriers. **Feature codes** the administrator
changed (system-wide) are laid over the seed table of :mod:`pbx.feature_codes`.

Hot paths never wait on the database (DESIGN.md "Storage"): the server reads a
:class:`pbx.directory.Directory` cache that store mutations keep current (write-through via
:meth:`Store.add_listener`), keeps registrations in memory and writes their changes behind,
batched once a second.

Modules: :mod:`~pbx.store.records` (the dataclasses and :class:`StoreError`),
:mod:`~pbx.store.schema` (versioned migrations), :mod:`~pbx.store.validation` (input checks,
PIN hashing), :mod:`~pbx.store.interface` (:class:`PbxStore`, the narrow interface a PostgreSQL
implementation fills) and :mod:`~pbx.store.sqlite` (:class:`Store`, the SQLite one). Import
from ``pbx.store``; the names below are its public surface.
"""

from __future__ import annotations

from pbx.settings_schema import SettingsSchema
from pbx.settings_schema import validate as validate_settings
from pbx.store.interface import PbxStore
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
from pbx.store.schema import MIGRATIONS, Migration, MigrationContext
from pbx.store.sqlite import Store, default_data_dir
from pbx.store.tokens import ROLES, ApiToken, hash_token
from pbx.store.validation import (
    DEVICE_KINDS,
    DOMAIN_RE,
    E164_RE,
    EMAIL_RE,
    EXTENSION_RE,
    LANGUAGES,
    NAME_RE,
    OWNER_KINDS,
    PIN_RE,
    TRUNK_KINDS,
    TRUNK_TRANSPORTS,
    USERNAME_RE,
    check_pin,
    hash_pin,
    source_network,
    trunk_host_problem,
)

__all__ = [
    "DEFAULT_TENANT",
    "DEVICE_KINDS",
    "DOMAIN_RE",
    "E164_RE",
    "EMAIL_RE",
    "EXTENSION_RE",
    "LANGUAGES",
    "MIGRATIONS",
    "NAME_RE",
    "OWNER_KINDS",
    "PIN_RE",
    "ROLES",
    "TRUNK_KINDS",
    "TRUNK_TRANSPORTS",
    "USERNAME_RE",
    "ApiToken",
    "Device",
    "HistoryEntry",
    "HistoryWrite",
    "Migration",
    "MigrationContext",
    "Number",
    "PbxStore",
    "SettingsSchema",
    "Store",
    "StoreError",
    "Tenant",
    "Trunk",
    "User",
    "check_pin",
    "default_data_dir",
    "hash_pin",
    "hash_token",
    "source_network",
    "trunk_host_problem",
    "validate_settings",
]
