"""Webhooks without SIP: the signature against the Standard Webhooks test vector, the back-off
schedule, the disable rule, the SSRF guard, the config keys, and the service delivering to a
loopback receiver (retry, disable, re-enable) on a real store."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pbx.config import ConfigError, WebhooksConfig, load_config
from pbx.services.events import Event, EventBus
from pbx.store import Store
from pbx.webhooks import TargetRefused, WebhookService, check_url
from pbx.webhooks.guard import GuardedResolver, address_refused
from pbx.webhooks.policy import backoff, disable_reason
from pbx.webhooks.service import tenant_sees
from pbx.webhooks.signing import headers, new_secret, sign

# -- signing ---------------------------------------------------------------------------------

#: The published test vector of the Standard Webhooks scheme (its reference libraries' tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_published_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG


def test_signature_is_hmac_sha256_over_id_timestamp_body() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    mac = hmac.new(base64.b64decode(secret[6:]), b"msg_1.1700000000.{}", hashlib.sha256)
    h = headers(secret, "msg_1", 1700000000, b"{}")
    assert h["webhook-signature"] == "v1," + base64.b64encode(mac.digest()).decode()
    assert h["webhook-id"] == "msg_1" and h["webhook-timestamp"] == "1700000000"
    assert sign(secret, "msg_1", 1700000000, b"{ }") != h["webhook-signature"]


# -- policy ----------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_maximum_with_jitter_in_the_upper_half() -> None:
    low = [backoff(n, 5, 60, rand=lambda: 0.0) for n in range(1, 7)]
    high = [backoff(n, 5, 60, rand=lambda: 0.999999) for n in range(1, 7)]
    assert low == [2.5, 5.0, 10.0, 20.0, 30.0, 30.0]
    assert [round(h) for h in high] == [5, 10, 20, 40, 60, 60]
    assert 2.5 <= backoff(1, 5, 60) < 5


def test_disable_rule_counts_failures_in_a_row_and_the_failing_time() -> None:
    def rule(failures: int, since: float | None, now: float) -> str | None:
        return disable_reason(failures, since, now, max_failures=5, disable_after=3600.0)

    assert rule(4, 1000.0, 2000.0) is None
    assert rule(5, 1000.0, 1001.0) == "5 deliveries in a row failed"
    reason = rule(2, 1000.0, 1000.0 + 7200)
    assert reason is not None and "2.0 h" in reason
    assert rule(1, None, 10**9) is None


# -- SSRF guard ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/x", "http://[::1]/x", "http://localhost/",
                                 "http://169.254.169.254/latest", "http://10.0.0.5/",
                                 "http://192.168.1.1/", "http://[::ffff:127.0.0.1]/",
                                 "http://0.0.0.0/", "https://[fe80::1]/"])
def test_private_targets_are_refused_by_default(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url, allow_private=False)
    assert check_url(url, allow_private=True) == url


@pytest.mark.parametrize("url", ["ftp://example.com/", "http:///x", "https://u:p@example.com/",
                                 "http://example.com:99999/", "example.com/hook"])
def test_what_is_no_http_url_is_refused_always(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url, allow_private=True)


def test_public_targets_pass() -> None:
    assert check_url("https://hooks.example.com/in", allow_private=False)
    assert address_refused("93.184.216.34") is None
    assert address_refused("127.0.0.2") == "127.0.0.2 is a loopback address"


async def test_the_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    with pytest.raises(TargetRefused, match="loopback"):
        await GuardedResolver(False).resolve("localhost", 80, socket.AF_INET)
    assert await GuardedResolver(True).resolve("localhost", 80, socket.AF_INET)


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text,key", [("allow_private = 'sometimes'", "webhooks.allow_private"),
                                      ("max_failures = 0", "webhooks.max_failures"),
                                      ("timeout = -1", "webhooks.timeout"),
                                      ("retry_max = 1", "webhooks.retry_max")])
def test_bad_webhooks_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[sip]\nlisten = ["udp:127.0.0.1:0"]\n[webhooks]\n{text}\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg, environ={})
    assert key in str(err.value)


def test_webhooks_config_reads(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[sip]\nlisten = ["udp:127.0.0.1:0"]\n[webhooks]\nallow_private = true\n'
                   'max_failures = 3\n')
    config = load_config(cfg, environ={})
    assert config.webhooks.allow_private is True and config.webhooks.max_failures == 3


# -- tenant filter ---------------------------------------------------------------------------


def test_events_go_to_the_tenant_they_belong_to() -> None:
    tenants = {1: 10, 2: 20}
    assert tenant_sees(10, Event(1, "settings.changed", {"user_id": 1}), tenants.get)
    assert not tenant_sees(20, Event(1, "settings.changed", {"user_id": 1}), tenants.get)
    assert tenant_sees(20, Event(2, "call.ended", {"tenant_id": 20}), tenants.get)
    assert not tenant_sees(10, Event(2, "call.ended", {"tenant_id": 20}), tenants.get)
    assert tenant_sees(10, Event(3, "codes.changed", {"source": "cli"}), tenants.get)


# -- the service on a store and a loopback receiver ------------------------------------------


class Sink:
    """A receiver answering with ``status`` (changeable)."""

    def __init__(self) -> None:
        self.status = 204
        self.got: list[tuple[str, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((request.headers["webhook-id"], await request.read()))
        return web.Response(status=self.status)


async def _sink() -> tuple[Sink, web.AppRunner, int]:
    sink = Sink()
    app = web.Application()
    app.router.add_post("/in", sink.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return sink, runner, runner.addresses[0][1]


async def _settle(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_service_delivers_retries_disables_and_resumes(tmp_path: Path) -> None:
    store = Store(tmp_path, domain="pbx.test")
    store.ensure_default_tenant("pbx.test", "pbx.test")
    store.add_tenant("acme", "acme.test")
    anna = store.add_user("100", "pw-100-x")
    carl = store.add_user("200", "pw-200-x", tenant="acme")
    default, acme = store.tenant("default"), store.tenant("acme")
    assert default is not None and acme is not None
    sink, runner, port = await _sink()
    url = f"http://127.0.0.1:{port}/in"
    mine = store.create_webhook(tenant_id=default.id, url=url, secret=new_secret(),
                                event_types=["settings.*"], now=time.time())
    store.create_webhook(tenant_id=acme.id, url=url, secret=new_secret(), event_types=[],
                         now=time.time())
    users = {anna.id: default.id, carl.id: acme.id}
    service = WebhookService(store, WebhooksConfig(allow_private=True, retry_initial=0.05,
                                                   retry_max=0.1, max_failures=3),
                             users.get, rand=lambda: 0.0)
    bus = EventBus()
    bus.subscribe(service.on_event)
    task = asyncio.ensure_future(service.run(poll=0.1))
    try:
        await _settle(lambda: service._hooks)
        bus.publish("settings.changed", {"user_id": anna.id, "feature": "dnd"})
        bus.publish("call.ended", {"tenant_id": default.id})  # not subscribed by anna's tenant
        await _settle(lambda: len(sink.got) == 1)
        deliveries, total = store.webhook_deliveries(mine.id)
        assert total == 1 and deliveries[0].status == "delivered"
        assert sink.got[0][0] == deliveries[0].message_id
        assert b'"type":"settings.changed"' in sink.got[0][1]
        # the receiver fails: retried, then the endpoint is disabled with the reason
        sink.status = 500
        bus.publish("settings.changed", {"user_id": anna.id, "feature": "dnd"})
        await _settle(lambda: not (store.webhook(mine.id) or mine).enabled)
        hook = store.webhook(mine.id)
        assert hook is not None and hook.disabled_reason == "3 deliveries in a row failed"
        pending = store.webhook_deliveries(mine.id, status="pending")[0][0]
        attempts = store.webhook_attempts([pending.id])
        assert [a.status_code for a in attempts] == [500, 500, 500]
        assert all(a.error == "HTTP 500" and a.latency >= 0 for a in attempts)
        # while disabled, nothing is queued for it; re-enabled, the pending one goes out
        bus.publish("settings.changed", {"user_id": anna.id, "feature": "cfu"})
        sink.status = 200
        store.update_webhook(mine.id, enabled=True)
        service.reload()
        await _settle(lambda: store.webhook_deliveries(mine.id, status="delivered")[1] == 2)
        assert store.webhook_deliveries(mine.id)[1] == 2
        hook = store.webhook(mine.id)
        assert hook is not None and hook.enabled and hook.consecutive_failures == 0
        # acme's endpoint got only what was acme's (nothing here): 1 + 3 + 1 posts in all
        assert len(sink.got) == 5
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await runner.cleanup()
        store.close()


async def test_events_queued_when_the_service_stops_are_kept(tmp_path: Path) -> None:
    store = Store(tmp_path, domain="pbx.test")
    store.ensure_default_tenant("pbx.test", "pbx.test")
    default = store.tenant("default")
    assert default is not None
    hook = store.create_webhook(tenant_id=default.id, url="http://127.0.0.1:9/", secret=new_secret(),
                                event_types=[], now=time.time())
    service = WebhookService(store, WebhooksConfig(allow_private=True), lambda _u: None)
    service.reload()
    service.on_event(Event(1, "codes.changed", {"source": "cli"}, time.time()))
    task = asyncio.ensure_future(service.run(poll=5))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.webhook_deliveries(hook.id)[1] == 1
    store.close()


async def test_the_guard_refuses_loopback_deliveries_without_allow_private(
        tmp_path: Path) -> None:
    store = Store(tmp_path, domain="pbx.test")
    store.ensure_default_tenant("pbx.test", "pbx.test")
    default = store.tenant("default")
    assert default is not None
    sink, runner, port = await _sink()
    try:
        hook = store.create_webhook(tenant_id=default.id, url=f"http://localhost:{port}/in",
                                    secret=new_secret(), event_types=[], now=time.time())
        service = WebhookService(store, WebhooksConfig(), lambda _u: None)
        store.webhook_enqueue([(hook.id, "msg_x", "codes.changed", "{}")], time.time())
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(False))
        async with aiohttp.ClientSession(connector=connector) as http:
            delivery = store.webhook_due(time.time())[0]
            assert await service.deliver(http, delivery) is False
        assert sink.got == []
        assert "loopback" in store.webhook_deliveries(hook.id)[0][0].last_error
    finally:
        await runner.cleanup()
        store.close()


def test_prune_keeps_pending_and_recent_deliveries(tmp_path: Path) -> None:
    store = Store(tmp_path, domain="pbx.test")
    store.ensure_default_tenant("pbx.test", "pbx.test")
    default = store.tenant("default")
    assert default is not None
    hook = store.create_webhook(tenant_id=default.id, url="https://x.example.com/",
                                secret=new_secret(), event_types=[], now=0.0)
    store.webhook_enqueue([(hook.id, "old-done", "k", "{}"), (hook.id, "old-pending", "k", "{}")],
                          100.0)
    store.webhook_enqueue([(hook.id, "new-done", "k", "{}")], 5000.0)
    for d in store.webhook_due(10**6):
        if d.message_id != "old-pending":
            store.webhook_attempted(d, at=5001.0, status_code=200, latency=0.1, error="",
                                    retry_at=None)
    assert store.webhook_prune(1000.0) == 1
    left = {d.message_id for d in store.webhook_deliveries(hook.id)[0]}
    assert left == {"old-pending", "new-done"}
    store.close()
