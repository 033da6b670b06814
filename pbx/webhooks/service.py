"""The webhook service: events from the bus into the outbox, the outbox out to the endpoints.

:meth:`WebhookService.on_event` (an event-bus listener, on the event loop) picks the tenant's
enabled endpoints that subscribed to the event's kind and may see it (:func:`tenant_sees`:
the tenant of the event's user or ``tenant_id``; an event naming neither — ``codes.changed`` —
goes to every tenant) and keeps a row per endpoint in memory; :meth:`run` writes them to the
store (a worker thread: the event loop never waits for the database lock) and delivers what is
due: a POST of the fixed body with the Standard Webhooks headers (:mod:`pbx.webhooks.signing`)
through aiohttp's client on this loop, at most ``max_in_flight`` at once, each bounded by
``timeout``, through the SSRF guard's resolver, no redirects. A 2xx answer delivers it; anything
else is retried with back-off and jitter (:mod:`pbx.webhooks.policy`) until the endpoint is
disabled by the failure rule. The outbox is the store's: what is pending when the server stops
goes out after it starts again (at least once: a receiver drops a repeated ``webhook-id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from pbx.config import WebhooksConfig
from pbx.logsetup import get_logger
from pbx.services.events import Event
from pbx.store.webhooks import Webhook, WebhookDelivery
from pbx.webhooks.guard import GuardedResolver
from pbx.webhooks.policy import backoff, disable_reason
from pbx.webhooks.signing import headers

__all__ = ["TEST_KIND", "WebhookService", "event_body", "tenant_sees"]

#: The kind of the event POST /webhooks/{id}/test sends.
TEST_KIND = "webhook.test"
#: Delivered and failed deliveries (with their attempt log) are kept this long (seconds).
KEEP_LOG = 7 * 86400.0
PRUNE_EVERY = 3600.0


def tenant_sees(tenant_id: int, event: Event, tenant_of_user: Callable[[int], int | None]
                ) -> bool:
    """Whether ``tenant_id``'s endpoints get ``event`` (as its admins' event stream would)."""
    data = event.data
    user_id = data.get("user_id")
    if isinstance(user_id, int):
        return tenant_of_user(user_id) == tenant_id
    tenant = data.get("tenant_id")
    if isinstance(tenant, int):
        return tenant == tenant_id
    return True


def event_body(event: Event, message_id: str) -> str:
    """The JSON body of ``event`` (Standard Webhooks' ``type``/``timestamp``/``data``, plus
    the bus's ``seq`` and the ``id`` the headers carry)."""
    return json.dumps({
        "id": message_id, "type": event.kind, "seq": event.seq,
        "timestamp": datetime.fromtimestamp(event.at or time.time(), UTC).isoformat(),
        "data": dict(event.data)}, separators=(",", ":"), default=str)


class WebhookService:
    """See the module docstring. ``tenant_of_user`` maps a user id to its tenant (the
    directory's view)."""

    def __init__(self, store: Any, config: WebhooksConfig,
                 tenant_of_user: Callable[[int], int | None], *,
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] | None = None, log: Any = None) -> None:
        self.store = store
        self.config = config
        self.tenant_of_user = tenant_of_user
        self.clock = clock
        self.rand = rand
        self.log = log or get_logger("pbx.webhooks")
        self._hooks: list[Webhook] = []
        self._queued: list[tuple[int, str, str, str]] = []
        self._in_flight: dict[int, asyncio.Task[bool]] = {}
        self._wake = asyncio.Event()
        self._next_prune = 0.0
        self.stats = {"queued": 0, "delivered": 0, "failed_attempts": 0, "disabled": 0}

    # -- the endpoints ---------------------------------------------------------------------

    def reload(self) -> None:
        """Read the endpoints again, here (tests, start-up)."""
        self._hooks = list(self.store.webhooks())
        self.wake()

    async def refresh(self) -> None:
        """Read the endpoints again after the API changed one (in a worker thread: the list
        is swapped whole), then look at the outbox."""
        hooks = await asyncio.to_thread(self.store.webhooks)
        self._hooks = list(hooks)
        self.wake()

    def wake(self) -> None:
        """Look at the outbox now (from the event loop)."""
        self._wake.set()

    def figures(self) -> dict[str, int]:
        """For /metrics: deliveries done, failed attempts, endpoints disabled (since the
        start), attempts in flight, events not yet written to the outbox."""
        return {"webhook_deliveries_total": self.stats["delivered"],
                "webhook_failed_attempts_total": self.stats["failed_attempts"],
                "webhook_endpoints_disabled_total": self.stats["disabled"],
                "webhook_deliveries_in_flight": len(self._in_flight),
                "webhook_events_unwritten": len(self._queued)}

    # -- events in -------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """An event-bus listener: queue ``event`` for every endpoint that wants it."""
        if event.kind == TEST_KIND:
            return
        message_id = None
        for hook in self._hooks:
            if not hook.enabled or not hook.wants(event.kind) or not tenant_sees(
                    hook.tenant_id, event, self.tenant_of_user):
                continue
            if message_id is None:
                message_id = "msg_" + uuid.uuid4().hex
                body = event_body(event, message_id)
            self._queued.append((hook.id, message_id, event.kind, body))
        if message_id is not None:
            self.wake()

    def queue_test(self, hook: Webhook) -> str:
        """Queue a ``webhook.test`` event for ``hook`` alone; returns its message id (written
        by the caller's thread: the API calls this in a worker)."""
        message_id = "msg_" + uuid.uuid4().hex
        now = self.clock()
        body = event_body(Event(0, TEST_KIND, {"webhook_id": hook.id,
                                               "tenant_id": hook.tenant_id}, now), message_id)
        self.store.webhook_enqueue([(hook.id, message_id, TEST_KIND, body)], now)
        return message_id

    async def flush(self) -> int:
        """Write the queued rows to the store; returns how many."""
        rows, self._queued = self._queued, []
        if rows:
            try:
                await asyncio.to_thread(self.store.webhook_enqueue, rows, self.clock())
            except BaseException:
                self._queued[:0] = rows
                raise
            self.stats["queued"] += len(rows)
        return len(rows)

    # -- deliveries out --------------------------------------------------------------------

    async def run(self, poll: float = 1.0) -> None:
        """Deliver until cancelled (then the queued rows are written, the attempts in flight
        cancelled: they stay pending and go out after the next start)."""
        try:
            self._hooks = list(await asyncio.to_thread(self.store.webhooks))
            await self._deliver_until_cancelled(poll)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())

    async def _deliver_until_cancelled(self, poll: float) -> None:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.config.allow_private),
                                         limit=self.config.max_in_flight)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            try:
                while True:
                    try:
                        await self.flush()
                        await self._start_due(http)
                    except Exception:
                        self.log.exception("webhooks.pass_failed")
                    if self.clock() >= self._next_prune:
                        self._next_prune = self.clock() + PRUNE_EVERY
                        await asyncio.to_thread(self.store.webhook_prune,
                                                self.clock() - KEEP_LOG)
                    due = await asyncio.to_thread(self.store.webhook_next_due)
                    wait = poll if due is None else max(0.05, min(poll, due - self.clock()))
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
            finally:
                for task in list(self._in_flight.values()):
                    task.cancel()
                for task in list(self._in_flight.values()):
                    with contextlib.suppress(BaseException):
                        await task

    async def _start_due(self, http: aiohttp.ClientSession) -> None:
        free = self.config.max_in_flight - len(self._in_flight)
        if free <= 0:
            return
        due = await asyncio.to_thread(self.store.webhook_due, self.clock(), free,
                                      list(self._in_flight))
        for delivery in due:
            task = asyncio.get_running_loop().create_task(self.deliver(http, delivery))
            self._in_flight[delivery.id] = task
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[bool]) -> None:
        for delivery_id, t in list(self._in_flight.items()):
            if t is task:
                del self._in_flight[delivery_id]
        self.wake()

    async def deliver(self, http: aiohttp.ClientSession, delivery: WebhookDelivery) -> bool:
        """One attempt of ``delivery``, noted in the store; True when it was delivered."""
        hook = next((h for h in self._hooks if h.id == delivery.webhook_id), None)
        if hook is None:
            hook = await asyncio.to_thread(self.store.webhook, delivery.webhook_id)
            if hook is None:
                return False
        body = delivery.body.encode()
        started = self.clock()
        mono = time.monotonic()
        status: int | None = None
        error = ""
        try:
            async with http.post(hook.url, data=body, allow_redirects=False,
                                 headers=headers(hook.secret, delivery.message_id,
                                                 int(started), body)) as resp:
                status = resp.status
                await resp.content.read(4096)
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one attempt's outcome, never the service's end
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        latency = time.monotonic() - mono
        now = self.clock()
        retry_at = None
        c = self.config
        if error:
            delay = backoff(delivery.attempts + 1, c.retry_initial, c.retry_max,
                            *(() if self.rand is None else (self.rand,)))
            retry_at = now + delay

        def rule(failures: int, since: float | None, at: float) -> str | None:
            return disable_reason(failures, since, at, max_failures=c.max_failures,
                                  disable_after=c.disable_after)

        updated = await asyncio.to_thread(
            self.store.webhook_attempted, delivery, at=now, status_code=status,
            latency=latency, error=error, retry_at=retry_at, disable_rule=rule)
        reason = None
        if updated is not None:
            if hook.enabled and not updated.enabled:
                reason = updated.disabled_reason
            self._hooks = [updated if h.id == updated.id else h for h in self._hooks]
        if not error:
            self.stats["delivered"] += 1
            self.log.info("webhooks.delivered", webhook_id=hook.id, kind=delivery.event_kind,
                          message_id=delivery.message_id, attempts=delivery.attempts + 1,
                          latency=round(latency, 4))
            return True
        self.stats["failed_attempts"] += 1
        self.log.warning("webhooks.retry", webhook_id=hook.id, kind=delivery.event_kind,
                         message_id=delivery.message_id, attempts=delivery.attempts + 1,
                         retry_in=round((retry_at or now) - now, 2), error=error)
        if reason is not None:
            self.stats["disabled"] += 1
            self.log.error("webhooks.disabled", webhook_id=hook.id, reason=reason)
        return False
