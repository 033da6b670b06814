"""Webhooks in the store: a tenant's endpoints, the delivery outbox and the attempt log.

The outbox follows the mail outbox (:mod:`pbx.store.outbox`): one durable row per event and
endpoint, its ``message_id`` (the ``webhook-id`` header) fixed when the row is queued, so every
attempt — also one after a restart — sends the same id and body and a receiver can drop a
duplicate. The sender takes :meth:`WebhookStoreMixin.webhook_due` rows and notes each attempt
(:meth:`WebhookStoreMixin.webhook_attempted`): delivered, or a retry at a later time, and the
endpoint's failure count, which disables it (``disabled_reason``) once the rule says so.
Unlike a mail, an endpoint's secret is stored as is: signing needs it (the API shows it once).
:class:`WebhookStoreMixin` is part of :class:`pbx.store.Store`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

__all__ = ["Webhook", "WebhookAttempt", "WebhookDelivery", "WebhookStoreMixin"]

_HOOK_COLS = ("id, tenant_id, url, secret, event_types, description, enabled, disabled_reason, "
              "consecutive_failures, failing_since, created_at")
_DELIVERY_COLS = ("id, webhook_id, message_id, event_kind, body, status, attempts, "
                  "next_attempt_at, last_error, created_at, delivered_at")


@dataclass(frozen=True, slots=True)
class Webhook:
    """An endpoint of a tenant: where events of ``event_types`` (empty: every kind; ``call.*``
    a prefix) go, signed with ``secret``; ``enabled`` False with a ``disabled_reason`` after
    repeated failure (or when switched off)."""

    id: int
    tenant_id: int
    url: str
    secret: str
    event_types: tuple[str, ...]
    description: str
    enabled: bool
    disabled_reason: str
    consecutive_failures: int
    failing_since: float | None
    created_at: float

    def wants(self, kind: str) -> bool:
        """Whether this endpoint subscribed to events of ``kind``."""
        if not self.event_types or "*" in self.event_types:
            return True
        return any(kind == t or (t.endswith(".*") and kind.startswith(t[:-1]))
                   for t in self.event_types)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event for one endpoint: its fixed ``message_id`` and ``body`` and where it stands."""

    id: int
    webhook_id: int
    message_id: str
    event_kind: str
    body: str
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str
    created_at: float
    delivered_at: float | None


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One try of a delivery: the HTTP status (None: no answer), how long it took, the error."""

    id: int
    delivery_id: int
    attempt: int
    at: float
    status_code: int | None
    latency: float
    error: str


def _hook(row: tuple[Any, ...]) -> Webhook:
    return Webhook(int(row[0]), int(row[1]), row[2], row[3], tuple(json.loads(row[4])), row[5],
                   bool(row[6]), row[7], int(row[8]),
                   None if row[9] is None else float(row[9]), float(row[10]))


def _delivery(row: tuple[Any, ...]) -> WebhookDelivery:
    return WebhookDelivery(int(row[0]), int(row[1]), row[2], row[3], row[4], row[5],
                           int(row[6]), float(row[7]), row[8], float(row[9]),
                           None if row[10] is None else float(row[10]))


class WebhookStoreMixin:
    """The store's webhook tables (mixed into :class:`pbx.store.Store`)."""

    _lock: threading.RLock
    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    # -- endpoints --------------------------------------------------------------------------

    def create_webhook(self, *, tenant_id: int, url: str, secret: str,
                       event_types: Sequence[str], description: str = "",
                       now: float) -> Webhook:
        """A new endpoint of ``tenant_id``."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO webhooks(tenant_id, url, secret, event_types, description, "
                "created_at) VALUES (?,?,?,?,?,?)",
                (tenant_id, url, secret, json.dumps(list(event_types)), description, now))
            assert cur.lastrowid is not None
            row = db.execute(f"SELECT {_HOOK_COLS} FROM webhooks WHERE id=?",
                             (cur.lastrowid,)).fetchone()
        return _hook(row)

    def webhook(self, webhook_id: int) -> Webhook | None:
        """The endpoint with ``webhook_id``."""
        with self._lock:
            row = self._db.execute(f"SELECT {_HOOK_COLS} FROM webhooks WHERE id=?",
                                   (webhook_id,)).fetchone()
        return None if row is None else _hook(row)

    def webhooks(self, tenant_id: int | None = None) -> list[Webhook]:
        """Every endpoint (of one tenant when given), by id."""
        q, args = f"SELECT {_HOOK_COLS} FROM webhooks", ()  # type: tuple[str, tuple[int, ...]]
        if tenant_id is not None:
            q, args = q + " WHERE tenant_id=?", (tenant_id,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        return [_hook(r) for r in rows]

    def update_webhook(self, webhook_id: int, **fields: Any) -> Webhook | None:
        """Change ``url``, ``event_types``, ``description``, ``secret`` or ``enabled``
        (enabling clears the failure count and the reason); None: no such endpoint."""
        allowed = {"url", "event_types", "description", "secret", "enabled"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
        sets, args = [], []  # type: list[str], list[Any]
        for name, value in fields.items():
            if name == "event_types":
                value = json.dumps(list(value))
            elif name == "enabled":
                value = int(bool(value))
                if value:
                    sets += ["disabled_reason=''", "consecutive_failures=0",
                             "failing_since=NULL"]
                else:
                    sets.append("disabled_reason='disabled through the API'")
            sets.append(f"{name}=?")
            args.append(value)
        with self._tx() as db:
            if sets:
                db.execute(f"UPDATE webhooks SET {', '.join(sets)} WHERE id=?",
                           (*args, webhook_id))
            row = db.execute(f"SELECT {_HOOK_COLS} FROM webhooks WHERE id=?",
                             (webhook_id,)).fetchone()
        return None if row is None else _hook(row)

    def delete_webhook(self, webhook_id: int) -> bool:
        """Remove an endpoint with its deliveries and their log."""
        with self._tx() as db:
            db.execute("DELETE FROM webhook_attempts WHERE delivery_id IN "
                       "(SELECT id FROM webhook_deliveries WHERE webhook_id=?)", (webhook_id,))
            db.execute("DELETE FROM webhook_deliveries WHERE webhook_id=?", (webhook_id,))
            return db.execute("DELETE FROM webhooks WHERE id=?", (webhook_id,)).rowcount > 0

    # -- the outbox ------------------------------------------------------------------------

    def webhook_enqueue(self, rows: Sequence[tuple[int, str, str, str]], now: float) -> None:
        """Queue (webhook id, message id, event kind, body) rows in one transaction."""
        if not rows:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO webhook_deliveries(webhook_id, message_id, event_kind, body, "
                "next_attempt_at, created_at) VALUES (?,?,?,?,?,?)",
                [(*r, now, now) for r in rows])

    def webhook_prune(self, before: float) -> int:
        """Forget delivered and failed deliveries created before ``before`` (and their log);
        returns how many."""
        with self._tx() as db:
            old = "SELECT id FROM webhook_deliveries WHERE status!='pending' AND created_at<?"
            db.execute(f"DELETE FROM webhook_attempts WHERE delivery_id IN ({old})", (before,))
            return int(db.execute(f"DELETE FROM webhook_deliveries WHERE id IN ({old})",
                                  (before,)).rowcount)

    def webhook_due(self, now: float, limit: int = 50,
                    exclude: Sequence[int] = ()) -> list[WebhookDelivery]:
        """Pending deliveries of enabled endpoints that are due, oldest first (not those in
        ``exclude``: in flight)."""
        skip = ",".join(str(int(i)) for i in exclude) or "0"
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join('d.' + c.strip() for c in _DELIVERY_COLS.split(','))} "
                "FROM webhook_deliveries d JOIN webhooks w ON w.id=d.webhook_id "
                f"WHERE d.status='pending' AND w.enabled=1 AND d.next_attempt_at<=? "
                f"AND d.id NOT IN ({skip}) ORDER BY d.next_attempt_at, d.id LIMIT ?",
                (now, limit)).fetchall()
        return [_delivery(r) for r in rows]

    def webhook_next_due(self) -> float | None:
        """When the earliest pending delivery of an enabled endpoint is due."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(d.next_attempt_at) FROM webhook_deliveries d JOIN webhooks w "
                "ON w.id=d.webhook_id WHERE d.status='pending' AND w.enabled=1").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def webhook_deliveries(self, webhook_id: int, *, status: str | None = None,
                           limit: int = 100, offset: int = 0
                           ) -> tuple[list[WebhookDelivery], int]:
        """An endpoint's deliveries, newest first, and how many there are."""
        where, args = "webhook_id=?", [webhook_id]  # type: str, list[Any]
        if status is not None:
            where, args = where + " AND status=?", [*args, status]
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM webhook_deliveries WHERE {where}",
                                     args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT {_DELIVERY_COLS} FROM webhook_deliveries WHERE {where} "
                "ORDER BY id DESC LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
        return [_delivery(r) for r in rows], int(total)

    def webhook_attempts(self, delivery_ids: Sequence[int]) -> list[WebhookAttempt]:
        """The attempt log of these deliveries, in order."""
        if not delivery_ids:
            return []
        marks = ",".join("?" * len(delivery_ids))
        with self._lock:
            rows = self._db.execute(
                "SELECT id, delivery_id, attempt, at, status_code, latency, error FROM "
                f"webhook_attempts WHERE delivery_id IN ({marks}) ORDER BY id",
                tuple(delivery_ids)).fetchall()
        return [WebhookAttempt(int(r[0]), int(r[1]), int(r[2]), float(r[3]),
                               None if r[4] is None else int(r[4]), float(r[5]), r[6])
                for r in rows]

    def webhook_attempted(self, delivery: WebhookDelivery, *, at: float,
                          status_code: int | None, latency: float, error: str,
                          retry_at: float | None,
                          disable_rule: Callable[[int, float | None, float], str | None]
                          | None = None) -> Webhook | None:
        """Note one attempt of ``delivery`` in one transaction: ``error`` empty — delivered
        (the endpoint's failure count reset); otherwise pending again at ``retry_at`` (None:
        failed for good), the endpoint's failure count raised and, when ``disable_rule``
        (failures in a row, failing since, now) gives a reason, the endpoint disabled with it
        — decided on the row inside the transaction, so attempts that end together count
        right. Returns the endpoint as it is now."""
        attempt = delivery.attempts + 1
        with self._tx() as db:
            db.execute("INSERT INTO webhook_attempts(delivery_id, attempt, at, status_code, "
                       "latency, error) VALUES (?,?,?,?,?,?)",
                       (delivery.id, attempt, at, status_code, latency, error[:500]))
            if not error:
                db.execute("UPDATE webhook_deliveries SET status='delivered', attempts=?, "
                           "delivered_at=?, last_error='' WHERE id=?",
                           (attempt, at, delivery.id))
                db.execute("UPDATE webhooks SET consecutive_failures=0, failing_since=NULL "
                           "WHERE id=?", (delivery.webhook_id,))
            else:
                if retry_at is None:
                    db.execute("UPDATE webhook_deliveries SET status='failed', attempts=?, "
                               "last_error=? WHERE id=?", (attempt, error[:500], delivery.id))
                else:
                    db.execute("UPDATE webhook_deliveries SET attempts=?, next_attempt_at=?, "
                               "last_error=? WHERE id=?",
                               (attempt, retry_at, error[:500], delivery.id))
                db.execute("UPDATE webhooks SET consecutive_failures=consecutive_failures+1, "
                           "failing_since=COALESCE(failing_since, ?) WHERE id=?",
                           (at, delivery.webhook_id))
                row = db.execute("SELECT consecutive_failures, failing_since, enabled FROM "
                                 "webhooks WHERE id=?", (delivery.webhook_id,)).fetchone()
                reason = None if row is None or not row[2] or disable_rule is None else \
                    disable_rule(int(row[0]), None if row[1] is None else float(row[1]), at)
                if reason is not None:
                    db.execute("UPDATE webhooks SET enabled=0, disabled_reason=? WHERE id=?",
                               (reason, delivery.webhook_id))
            row = db.execute(f"SELECT {_HOOK_COLS} FROM webhooks WHERE id=?",
                             (delivery.webhook_id,)).fetchone()
        return None if row is None else _hook(row)
