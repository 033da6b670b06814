"""A user's personal contacts (the portal's address book beside the company directory): a
name, a company, an e-mail address and up to :data:`MAX_NUMBERS` numbers, each with a label.
Only their owner sees them. :class:`ContactStoreMixin` is part of :class:`pbx.store.Store`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_CONTACTS", "MAX_NUMBERS", "Contact", "ContactNumber", "ContactStoreMixin"]

#: Numbers per contact.
MAX_NUMBERS = 4
#: Contacts per user.
MAX_CONTACTS = 2000

_COLS = "id, user_id, name, company, numbers, email, created_at, changed_at"


@dataclass(frozen=True, slots=True)
class ContactNumber:
    """One number of a contact (``label``: work, mobile, home, ... free text)."""

    label: str
    number: str


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact of user ``user_id``."""

    id: int
    user_id: int
    name: str
    company: str
    numbers: tuple[ContactNumber, ...]
    email: str
    created_at: float
    changed_at: float


def _contact(row: tuple[Any, ...]) -> Contact:
    numbers = tuple(ContactNumber(str(n.get("label", "")), str(n.get("number", "")))
                    for n in json.loads(row[4] or "[]"))
    return Contact(row[0], row[1], row[2], row[3], numbers, row[5], float(row[6]),
                   float(row[7]))


def _numbers_json(numbers: Sequence[ContactNumber]) -> str:
    return json.dumps([{"label": n.label, "number": n.number} for n in numbers])


class ContactStoreMixin:
    """The store's ``contacts`` table (mixed into :class:`pbx.store.Store`)."""

    _lock: threading.RLock
    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def contacts(self, user_id: int) -> list[Contact]:
        """The contacts of ``user_id``, by name."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLS} FROM contacts WHERE user_id=? "
                                    "ORDER BY name COLLATE NOCASE, id", (user_id,)).fetchall()
        return [_contact(r) for r in rows]

    def contact(self, user_id: int, contact_id: int) -> Contact | None:
        """Contact ``contact_id`` of ``user_id`` (None: none of theirs)."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLS} FROM contacts WHERE id=? AND user_id=?",
                                   (contact_id, user_id)).fetchone()
        return None if row is None else _contact(row)

    def add_contact(self, user_id: int, *, name: str, company: str = "",
                    numbers: Sequence[ContactNumber] = (), email: str = "",
                    now: float) -> Contact:
        """A new contact of ``user_id``; ValueError when they have :data:`MAX_CONTACTS`."""
        with self._tx() as db:
            count = db.execute("SELECT COUNT(*) FROM contacts WHERE user_id=?",
                               (user_id,)).fetchone()[0]
            if count >= MAX_CONTACTS:
                raise ValueError(f"at most {MAX_CONTACTS} contacts")
            cur = db.execute(
                "INSERT INTO contacts(user_id, name, company, numbers, email, created_at, "
                "changed_at) VALUES (?,?,?,?,?,?,?)",
                (user_id, name, company, _numbers_json(numbers), email, now, now))
            assert cur.lastrowid is not None
            return Contact(cur.lastrowid, user_id, name, company, tuple(numbers), email, now,
                           now)

    def update_contact(self, user_id: int, contact_id: int, *, now: float,
                       **changes: Any) -> Contact | None:
        """Change fields (name, company, numbers, email) of a contact of ``user_id``."""
        allowed = {"name", "company", "numbers", "email"}
        sets, args = [], []
        for key, value in changes.items():
            if key not in allowed:
                raise ValueError(f"no field {key}")
            sets.append(f"{key}=?")
            args.append(_numbers_json(value) if key == "numbers" else value)
        with self._tx() as db:
            db.execute(f"UPDATE contacts SET {', '.join([*sets, 'changed_at=?'])} "
                       "WHERE id=? AND user_id=?", (*args, now, contact_id, user_id))
        return self.contact(user_id, contact_id)

    def remove_contact(self, user_id: int, contact_id: int) -> bool:
        """Delete a contact of ``user_id``; False when there is none."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM contacts WHERE id=? AND user_id=?",
                             (contact_id, user_id))
        return cur.rowcount > 0
