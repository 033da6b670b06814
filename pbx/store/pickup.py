"""Pickup groups in the store: a tenant's named groups of users whose ringing calls any member
may take with ``*98`` (:mod:`features.pickup`). :class:`PickupStoreMixin` is part of
:class:`pbx.store.Store`; ``asyncpbx pickup-group`` (:mod:`pbx.cli_pickup`) administers them.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from pbx.store.records import StoreError

__all__ = ["PickupGroup", "PickupStoreMixin"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class PickupGroup:
    """A group: its tenant, its name and its members (user ids, ascending)."""

    id: int
    tenant_id: int
    name: str
    members: tuple[int, ...]


class PickupStoreMixin:
    """The store's pickup-group tables (mixed into :class:`pbx.store.Store`)."""

    _lock: threading.RLock
    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _changed: Callable[[str], None]

    def add_pickup_group(self, tenant_id: int, name: str) -> PickupGroup:
        """Make an empty group; StoreError when the name is bad or taken in the tenant."""
        if not _NAME.match(name):
            raise StoreError("a pickup group name is 1-64 letters, digits, '_', '.', '-'")
        try:
            with self._tx() as db:
                cur = db.execute("INSERT INTO pickup_groups(tenant_id, name) VALUES (?,?)",
                                 (tenant_id, name))
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"pickup group {name!r} exists (or no tenant {tenant_id})") from exc
        assert cur.lastrowid is not None
        self._changed("pickup_groups")
        return PickupGroup(cur.lastrowid, tenant_id, name, ())

    def pickup_groups(self, tenant_id: int | None = None) -> list[PickupGroup]:
        """Every group (of one tenant when given), by tenant and name."""
        q = "SELECT id, tenant_id, name FROM pickup_groups"
        args: tuple[int, ...] = ()
        if tenant_id is not None:
            q += " WHERE tenant_id=?"
            args = (tenant_id,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY tenant_id, name", args).fetchall()
            members: dict[int, list[int]] = {}
            for gid, uid in self._db.execute(
                    "SELECT group_id, user_id FROM pickup_group_members ORDER BY user_id"):
                members.setdefault(gid, []).append(uid)
        return [PickupGroup(r[0], r[1], r[2], tuple(members.get(r[0], ()))) for r in rows]

    def pickup_group(self, tenant_id: int, name: str) -> PickupGroup | None:
        """The group ``name`` of the tenant."""
        return next((g for g in self.pickup_groups(tenant_id) if g.name == name), None)

    def remove_pickup_group(self, tenant_id: int, name: str) -> bool:
        """Delete a group (its memberships go with it); False when there is none."""
        with self._tx() as db:
            gone = db.execute("DELETE FROM pickup_groups WHERE tenant_id=? AND name=?",
                              (tenant_id, name)).rowcount > 0
        if gone:
            self._changed("pickup_groups")
        return gone

    def set_pickup_members(self, group_id: int, *, add: tuple[int, ...] = (),
                           remove: tuple[int, ...] = ()) -> None:
        """Add and remove members (user ids of the group's tenant; StoreError otherwise)."""
        with self._tx() as db:
            row = db.execute("SELECT tenant_id FROM pickup_groups WHERE id=?",
                             (group_id,)).fetchone()
            if row is None:
                raise StoreError(f"no pickup group with id {group_id}")
            for uid in add:
                user = db.execute("SELECT tenant_id FROM users WHERE id=?", (uid,)).fetchone()
                if user is None or user[0] != row[0]:
                    raise StoreError(f"no user with id {uid} in the group's tenant")
                db.execute("INSERT OR IGNORE INTO pickup_group_members(group_id, user_id) "
                           "VALUES (?,?)", (group_id, uid))
            for uid in remove:
                db.execute("DELETE FROM pickup_group_members WHERE group_id=? AND user_id=?",
                           (group_id, uid))
        self._changed("pickup_groups")

    def pickup_peers(self, user_id: int) -> tuple[int, ...]:
        """Every user who shares a pickup group with ``user_id`` (the user included when in a
        group), ascending."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT b.user_id FROM pickup_group_members a "
                "JOIN pickup_group_members b ON a.group_id = b.group_id "
                "WHERE a.user_id=? ORDER BY b.user_id", (user_id,)).fetchall()
        return tuple(r[0] for r in rows)
