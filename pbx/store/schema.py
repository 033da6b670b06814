"""The store's schema: versioned migrations, run at start-up by :class:`pbx.store.Store`.

``PRAGMA user_version`` is the number of migrations run; a migration is never edited once
released (existing data directories have run it), the next one is added instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from pbx.store.records import DEFAULT_TENANT

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
    # 3: the administrator's feature-code changes, laid over the seed table
    # (pbx/feature_codes.toml); system-wide, one row per changed feature action
    """
    CREATE TABLE feature_codes (
        feature       TEXT NOT NULL,
        action        TEXT NOT NULL,
        code          TEXT NOT NULL,                 -- "*78"; checked by pbx.feature_codes
        alternate     TEXT NOT NULL DEFAULT '',      -- '' for none
        updated_at    REAL NOT NULL DEFAULT (unixepoch()),
        PRIMARY KEY (feature, action)
    );
    """,
    # 4: API tokens (pbx.store.tokens): only the SHA-256 of a token is kept
    """
    CREATE TABLE api_tokens (
        id            INTEGER PRIMARY KEY,
        token_hash    TEXT NOT NULL UNIQUE,          -- SHA-256 hex of the token
        name          TEXT NOT NULL DEFAULT '',
        role          TEXT NOT NULL CHECK (role IN ('user', 'tenant_admin', 'system_admin')),
        tenant_id     INTEGER REFERENCES tenants(id) ON DELETE CASCADE,  -- NULL: every tenant
        user_id       INTEGER REFERENCES users(id) ON DELETE CASCADE,
        created_at    REAL NOT NULL,
        expires_at    REAL,                          -- NULL: never
        last_used_at  REAL,
        revoked       INTEGER NOT NULL DEFAULT 0,
        CHECK (role = 'system_admin' OR tenant_id IS NOT NULL),
        CHECK (role <> 'user' OR user_id IS NOT NULL)
    );
    """,
    # 5: a tenant's language: new users get it, and callers who are not users hear it
    """
    ALTER TABLE tenants ADD COLUMN language TEXT NOT NULL DEFAULT 'de'
        CHECK (language IN ('de', 'en'));
    """,
    # 6: chat (pbx.chat, pbx.store.chat): SIP MESSAGE between users of a tenant, kept per
    # conversation; delivered_at NULL while waiting for the recipient to register
    """
    CREATE TABLE chat_messages (
        id            INTEGER PRIMARY KEY,
        tenant_id     INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        sender_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        recipient_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        message_id    TEXT NOT NULL,                 -- the clients' duplicate filter
        content_type  TEXT NOT NULL,                 -- text/plain or message/cpim
        body          BLOB NOT NULL,
        created_at    REAL NOT NULL,
        delivered_at  REAL,
        UNIQUE (sender_id, recipient_id, message_id)
    );
    CREATE INDEX chat_pending ON chat_messages(recipient_id, delivered_at);
    CREATE INDEX chat_conversation ON chat_messages(sender_id, recipient_id, id);
    """,
    # 7: the mail outbox (pbx.store.outbox, pbx.mail): voicemail mail, queued in the transaction
    # that records the message, sent at least once with a stable Message-ID
    """
    CREATE TABLE mail_outbox (
        id            INTEGER PRIMARY KEY,
        message_id    TEXT NOT NULL UNIQUE,          -- the Message-ID header, every attempt
        kind          TEXT NOT NULL CHECK (kind IN ('forward', 'notify', 'copy')),
        recipient     TEXT NOT NULL,
        user_id       INTEGER REFERENCES users(id) ON DELETE SET NULL,
        voicemail_id  TEXT,                          -- the box's message id (may be gone)
        payload       TEXT NOT NULL,                 -- JSON: what the mail says (caller, ...)
        delete_after  INTEGER NOT NULL DEFAULT 0,    -- forward: remove the message once sent
        status        TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'sent', 'failed')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error    TEXT NOT NULL DEFAULT '',
        created_at    REAL NOT NULL,
        sent_at       REAL
    );
    CREATE INDEX mail_outbox_due ON mail_outbox(status, next_attempt_at);
    """,
    # 8: pickup groups (pbx.store.pickup): *98 takes a call ringing another member
    """
    CREATE TABLE pickup_groups (
        id            INTEGER PRIMARY KEY,
        tenant_id     INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name          TEXT NOT NULL,
        UNIQUE (tenant_id, name)
    );
    CREATE TABLE pickup_group_members (
        group_id      INTEGER NOT NULL REFERENCES pickup_groups(id) ON DELETE CASCADE,
        user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        PRIMARY KEY (group_id, user_id)
    );
    CREATE INDEX pickup_group_members_user ON pickup_group_members(user_id);
    """,
    # 9: voicemail messages (pbx.store.voicemail): a row per message of a box; "recording"
    # rows are deposits in progress (start-up recovery finishes or discards them)
    """
    CREATE TABLE voicemail_messages (
        id            TEXT PRIMARY KEY,              -- uuid4 hex: the audio file's name
        user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        tenant        TEXT NOT NULL,
        extension     TEXT NOT NULL,
        caller        TEXT NOT NULL DEFAULT '',
        caller_name   TEXT NOT NULL DEFAULT '',
        received_at   REAL NOT NULL,
        duration      REAL NOT NULL DEFAULT 0,
        audio_path    TEXT NOT NULL,
        language      TEXT NOT NULL DEFAULT 'de',
        state         TEXT NOT NULL CHECK (state IN ('recording', 'new', 'old')),
        urgent        INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX voicemail_messages_user ON voicemail_messages(user_id, state);
    """,
    # 10: voice-portal DIDs (pbx.store.portal): a company number a trunk's call to which
    # reaches the voice portal (*62)
    """
    CREATE TABLE voice_portal_numbers (
        e164          TEXT PRIMARY KEY REFERENCES numbers(e164) ON DELETE CASCADE
    );
    """,
    # 11: portal logins (pbx.store.logins): a user's portal password (argon2 hash) and role,
    # and the server-side sessions of the browser (only a session id's SHA-256 is kept)
    """
    CREATE TABLE portal_logins (
        user_id       INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        password_hash TEXT NOT NULL,                 -- argon2id, PHC string
        role          TEXT NOT NULL DEFAULT 'user'
                      CHECK (role IN ('user', 'tenant_admin', 'system_admin')),
        changed_at    REAL NOT NULL
    );
    CREATE TABLE portal_sessions (
        id            INTEGER PRIMARY KEY,
        session_hash  TEXT NOT NULL UNIQUE,          -- SHA-256 hex of the session id
        user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf_token    TEXT NOT NULL,
        created_at    REAL NOT NULL,
        last_seen     REAL NOT NULL,
        expires_at    REAL NOT NULL                  -- the absolute end
    );
    CREATE INDEX portal_sessions_user ON portal_sessions(user_id);
    """,
    # 12: webhooks (pbx.store.webhooks): a tenant's endpoints, their delivery outbox (one row per
    # event and endpoint, its webhook-id fixed at enqueue) and the log of every attempt
    """
    CREATE TABLE webhooks (
        id                   INTEGER PRIMARY KEY,
        tenant_id            INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        url                  TEXT NOT NULL,
        secret               TEXT NOT NULL,
        event_types          TEXT NOT NULL DEFAULT '[]',   -- JSON list; [] or "*": every kind
        description          TEXT NOT NULL DEFAULT '',
        enabled              INTEGER NOT NULL DEFAULT 1,
        disabled_reason      TEXT NOT NULL DEFAULT '',
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        failing_since        REAL,
        created_at           REAL NOT NULL
    );
    CREATE INDEX webhooks_tenant ON webhooks(tenant_id);
    CREATE TABLE webhook_deliveries (
        id              INTEGER PRIMARY KEY,
        webhook_id      INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
        message_id      TEXT NOT NULL,
        event_kind      TEXT NOT NULL,
        body            TEXT NOT NULL,
        status          TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error      TEXT NOT NULL DEFAULT '',
        created_at      REAL NOT NULL,
        delivered_at    REAL
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
    CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, id);
    CREATE TABLE webhook_attempts (
        id              INTEGER PRIMARY KEY,
        delivery_id     INTEGER NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
        attempt         INTEGER NOT NULL,
        at              REAL NOT NULL,
        status_code     INTEGER,
        latency         REAL NOT NULL,
        error           TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id);
    """,
    # 13: a user's personal contacts (pbx.store.contacts: name and up to four numbers) and
    # how far they read each chat conversation (pbx.store.chat: the unread counts)
    """
    CREATE TABLE contacts (
        id            INTEGER PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name          TEXT NOT NULL,
        company       TEXT NOT NULL DEFAULT '',
        numbers       TEXT NOT NULL DEFAULT '[]',    -- JSON list of {label, number}
        email         TEXT NOT NULL DEFAULT '',
        created_at    REAL NOT NULL,
        changed_at    REAL NOT NULL
    );
    CREATE INDEX contacts_user ON contacts(user_id, name);
    CREATE TABLE chat_reads (
        user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        other_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        last_read_id  INTEGER NOT NULL,              -- chat_messages.id read up to
        PRIMARY KEY (user_id, other_id)
    );
    """,
)
