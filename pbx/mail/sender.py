"""The sender: drains the outbox through the ``[smtp]`` server (aiosmtplib), at least once.

Each due mail is composed from its row (the row's fixed Message-ID: a mail sent again after a
crash between the server's "250" and our note of it is the same mail, recognisable as such),
sent, then marked ``sent``; a forward without "also keep" then removes the message from the box
(``Store.delete_voicemail``). A connection failure, a timeout or a 4xx reply is temporary: the
mail is retried after ``retry_initial`` seconds, doubling up to ``retry_max``; a 5xx reply, a
missing recording, or a mail still not out after ``give_up_after`` seconds fail it for good —
logged (``mail.failed``) and listed by ``asyncpbx mail outbox``. The outbox is the store's table,
so what was pending when the server stopped is sent after it starts again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtplib

from pbx.config import SmtpConfig
from pbx.logsetup import get_logger
from pbx.mail.audio import opus_ogg
from pbx.mail.compose import compose
from pbx.store.outbox import OutboxMail

__all__ = ["MailSender", "PermanentFailure", "backoff"]


class PermanentFailure(Exception):
    """This mail will never go out (the server refused it for good, the audio is gone)."""


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones (1: ``initial``)."""
    return float(min(maximum, initial * 2 ** max(0, attempts - 1)))


def _permanent(exc: BaseException) -> bool:
    """Whether an SMTP error is a final refusal (5xx) rather than a temporary one."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(r.code >= 500 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException) and not isinstance(
            exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPTimeoutError):
        return exc.code >= 500
    return False


class MailSender:
    """Sends the store's outbox through ``config`` (see the module docstring); ``sender`` is
    the From address, ``send`` the transport (aiosmtplib's; a test may replace it)."""

    def __init__(self, store: Any, config: SmtpConfig, sender: str, *,
                 clock: Callable[[], float] = time.time, log: Any = None,
                 send: Callable[..., Any] | None = None,
                 on_deleted: Callable[[OutboxMail], None] | None = None) -> None:
        self.store = store
        self.config = config
        self.sender = sender
        self.clock = clock
        self.log = log or get_logger("pbx.mail")
        self._send = send or aiosmtplib.send
        #: Called after a forwarded message was removed from its box (the server publishes
        #: the box's ``voicemail.changed``: the lamp follows).
        self.on_deleted = on_deleted
        self._wake = asyncio.Event()
        self.stats = {"sent": 0, "retried": 0, "failed": 0}

    def wake(self) -> None:
        """New mail was queued: look at the outbox now (from the event loop's thread)."""
        self._wake.set()

    async def run(self, poll: float = 1.0) -> None:
        """Send what is due, then wait for the next due time, a wake-up or ``poll`` seconds;
        until cancelled."""
        if not self.config.host:
            pending = len(self.store.outbox("pending"))
            self.log.warning("mail.off", reason="no [smtp] host", pending=pending)
            return
        while True:
            try:
                await self.send_due()
            except Exception:
                self.log.exception("mail.sender_failed")
            due = self.store.outbox_next_due()
            wait = poll if due is None else max(0.05, min(poll, due - self.clock()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    async def send_due(self) -> int:
        """One pass over the due mails; returns how many went out."""
        sent = 0
        for mail in self.store.outbox_due(self.clock()):
            if await self.send_one(mail):
                sent += 1
        return sent

    async def send_one(self, mail: OutboxMail) -> bool:
        """Try ``mail`` once and note the outcome; True when the server accepted it."""
        c = self.config
        try:
            audio = None
            if mail.with_audio:
                path = Path(str(mail.payload.get("audio_path", "")))
                if not path.is_file():
                    raise PermanentFailure(f"the recording {path} is gone")
                audio = await asyncio.to_thread(opus_ogg, path)
            message = compose(kind=mail.kind, payload=mail.payload, sender=self.sender,
                              recipient=mail.recipient, message_id=mail.message_id,
                              created_at=mail.created_at, audio=audio)
            await self._send(message, hostname=c.host, port=c.port, use_tls=c.tls,
                             start_tls=c.starttls,
                             username=c.username or None, password=c.password or None,
                             timeout=c.timeout)
        except Exception as exc:  # the outcome of one mail; never the sender's end
            self._failed(mail, exc)
            return False
        now = self.clock()
        self.store.outbox_sent(mail.id, now)
        self.stats["sent"] += 1
        self.log.info("mail.sent", kind=mail.kind, message_id=mail.message_id,
                      attempts=mail.attempts + 1, voicemail_id=mail.voicemail_id)
        if mail.delete_after and mail.voicemail_id is not None:
            delete = getattr(self.store, "delete_voicemail", None)
            if delete is not None:
                try:
                    delete(mail.voicemail_id)
                    # the row first, then the file (a crash in between leaves an orphan file,
                    # which the box's start-up recovery removes)
                    Path(str(mail.payload.get("audio_path", ""))).unlink(missing_ok=True)
                    self.log.info("mail.message_removed", voicemail_id=mail.voicemail_id)
                    if self.on_deleted is not None:
                        self.on_deleted(mail)
                except Exception as exc:
                    self.log.error("mail.delete_failed", voicemail_id=mail.voicemail_id,
                                   error=repr(exc))
        return True

    def _failed(self, mail: OutboxMail, exc: BaseException) -> None:
        now = self.clock()
        error = f"{type(exc).__name__}: {exc}"
        too_old = now - mail.created_at >= self.config.give_up_after
        if isinstance(exc, PermanentFailure) or _permanent(exc) or too_old:
            self.store.outbox_failed(mail.id, error)
            self.stats["failed"] += 1
            self.log.error("mail.failed", kind=mail.kind, message_id=mail.message_id,
                           recipient=mail.recipient, attempts=mail.attempts + 1, error=error,
                           gave_up=too_old)
            return
        delay = backoff(mail.attempts + 1, self.config.retry_initial, self.config.retry_max)
        self.store.outbox_retry(mail.id, now + delay, error)
        self.stats["retried"] += 1
        self.log.warning("mail.retry", kind=mail.kind, message_id=mail.message_id,
                         attempts=mail.attempts + 1, retry_in=delay, error=error)
