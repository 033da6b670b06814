"""What a deposited voicemail message puts in the outbox: the mails its user's
``voicemail_mail`` settings ask for (features/voicemail_mail.py).

:meth:`MailOutbox.deposit_hook` is one of ``Store.voicemail_deposit_hooks``: called with the
connection of the SQLite transaction that records the message, it reads the user's settings and
address on that connection and queues the mails on it — the message and its mails are committed
together or not at all. It never sends; :class:`pbx.mail.sender.MailSender` does.

* ``forward``: the audio to ``address``; ``delete_after`` unless ``also_keep`` (the sender
  removes the message from the box once the server accepted the mail);
* ``notify``: a notification to ``address``;
* ``copy``: a notification to ``address`` and the audio to ``copy_to``.

``address`` empty: the user's own e-mail address; no address at all: no mail (logged).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from pbx.logsetup import get_logger
from pbx.settings_schema import SettingsSchema, stored_over_defaults
from pbx.store.outbox import enqueue

__all__ = ["FEATURE", "MailOutbox", "mails_for"]

#: The feature whose settings say what mail a message makes.
FEATURE = "voicemail_mail"


def mails_for(settings: dict[str, Any], own_address: str) -> list[tuple[str, str, bool]]:
    """(kind, recipient, delete_after) for each mail a message makes under ``settings``."""
    mode = settings.get("mode", "off")
    address = (settings.get("address") or own_address or "").strip()
    if mode == "off" or not address:
        return []
    if mode == "forward":
        return [("forward", address, not settings.get("also_keep", False))]
    if mode == "notify":
        return [("notify", address, False)]
    if mode == "copy":
        out = [("notify", address, False)]
        copy_to = (settings.get("copy_to") or "").strip()
        if copy_to:
            out.append(("copy", copy_to, False))
        return out
    return []


class MailOutbox:
    """Queues a deposited message's mails. ``schema`` is the ``voicemail_mail`` settings schema
    (the defaults under what is stored), ``domain`` the right-hand side of the Message-IDs."""

    def __init__(self, schema: SettingsSchema, domain: str, *,
                 clock: Callable[[], float] = time.time, log: Any = None) -> None:
        self.schema = schema
        self.domain = domain
        self.clock = clock
        self.log = log or get_logger("pbx.mail")
        #: Called after a deposit queued mail (the sender's wake-up); set by the server.
        self.on_queued: Callable[[], None] | None = None

    def deposit_hook(self, db: sqlite3.Connection, message: Any) -> None:
        """A ``Store.voicemail_deposit_hooks`` entry (see the module docstring)."""
        user_id = int(message.user_id)
        row = db.execute("SELECT value FROM feature_settings WHERE user_id=? AND feature=?",
                         (user_id, FEATURE)).fetchone()
        settings = stored_over_defaults(self.schema, json.loads(row[0]) if row else {})
        user = db.execute("SELECT email, name, language FROM users WHERE id=?",
                          (user_id,)).fetchone()
        own, name, language = (user[0] or "", user[1] or "", user[2] or "") if user else (
            "", "", "")
        mails = mails_for(settings, own)
        if not mails:
            if settings.get("mode", "off") != "off":
                self.log.warning("mail.no_address", user_id=user_id, mode=settings.get("mode"))
            return
        payload = {
            "tenant": getattr(message, "tenant", ""), "extension": message.extension,
            "user_name": name, "caller": message.caller,
            "caller_name": getattr(message, "caller_name", "") or "",
            "received_at": float(message.received_at), "duration": float(message.duration),
            "audio_path": str(message.audio_path),
            # the mail is read by the box's owner: their language (the message's otherwise)
            "language": language or getattr(message, "language", "") or "de",
        }
        now = self.clock()
        for kind, recipient, delete_after in mails:
            message_id = f"<vm.{message.id}.{kind}.{secrets.token_hex(4)}@{self.domain}>"
            enqueue(db, message_id=message_id, kind=kind, recipient=recipient, user_id=user_id,
                    voicemail_id=str(message.id), payload=payload, delete_after=delete_after,
                    now=now)
            self.log.info("mail.queued", kind=kind, user_id=user_id, voicemail_id=message.id,
                          message_id=message_id)
        if self.on_queued is not None:
            self.on_queued()
