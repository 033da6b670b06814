"""Webhooks against the real server, real SIPp calls and feature codes: a receiver on loopback
(aiohttp, port 0) gets each event signed per Standard Webhooks (verified with the reference
``standardwebhooks`` package) exactly once per ``webhook-id`` — across a restart of the
receiver (down → retried → delivered) and across a restart of the PBX with deliveries pending;
none is missing from what the delivery log says was sent."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from tests.interop.harness import PbxProcess, free_port, read_log, running_pbx
from tests.interop.test_calls_sipp import USERS, SippUas, caller, register_port
from tests.interop.test_features_sipp import dial_code

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

CONFIG = ("[media]\nport_min = 52000\nport_max = 52999\n"
          "[webhooks]\nallow_private = true\nretry_initial = 0.2\nretry_max = 0.5\n"
          "timeout = 2.0\n")


class Receiver:
    """A webhook receiver on 127.0.0.1 that verifies every POST and keeps what it got; it can
    go down and come back on the same port."""

    def __init__(self) -> None:
        self.secret = ""
        self.received: list[dict[str, Any]] = []
        self.ids: collections.Counter[str] = collections.Counter()
        self.bad: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = Verifier(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.bad.append(str(exc))
            return web.Response(status=400)
        message_id = request.headers["webhook-id"]
        assert payload["id"] == message_id
        self.ids[message_id] += 1
        self.received.append(payload)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for p in self.received if p["type"] == kind]


async def until(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _admin_token(into: dict[str, Any]) -> Any:
    def setup(store: Any) -> None:
        tenant = store.tenant("default")
        into["admin"] = store.create_api_token(role="tenant_admin", tenant_id=tenant.id,
                                               now=time.time())[0]
        into["id101"] = store.user("101").id

    return setup


def _base(pbx: PbxProcess) -> str:
    host, port = pbx.addr("http")
    return f"http://{host}:{port}/api/v1"


async def test_signed_events_arrive_once_across_receiver_and_pbx_restarts(
        tmp_path: Path) -> None:
    tokens: dict[str, Any] = {}
    receiver = Receiver()
    await receiver.start()
    try:
        with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=CONFIG,
                         store_setup=_admin_token(tokens)) as pbx:
            admin = {"Authorization": f"Bearer {tokens['admin']}"}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                async def deliveries(hook_id: int) -> list[dict[str, Any]]:
                    async with http.get(f"{_base(pbx)}/webhooks/{hook_id}/deliveries?limit=500",
                                        headers=admin) as resp:
                        assert resp.status == 200, await resp.text()
                        return list((await resp.json())["items"])

                # set up as a tenant admin does: through the API (the secret shown once)
                async with http.post(f"{_base(pbx)}/webhooks", headers=admin, json={
                        "url": f"http://127.0.0.1:{receiver.port}/hook",
                        "event_types": ["call.*", "settings.changed"]}) as resp:
                    created = await resp.json()
                    assert resp.status == 201, created
                receiver.secret = created["secret"]
                assert created["secret"].startswith("whsec_")
                hook_id = created["id"]
                async with http.get(f"{_base(pbx)}/webhooks/{hook_id}", headers=admin) as resp:
                    assert "secret" not in await resp.json()

                # 1. a real call: 100 calls 101 (a SIPp UAS that answers), 100 hangs up
                port = free_port()
                await asyncio.to_thread(register_port, pbx, "101", USERS[1][1], port)
                uas = SippUas(tmp_path, "call_uas_answer.xml", port,
                              keys={"rtp_port": str(free_port())})
                try:
                    ok, failed, out = await asyncio.to_thread(caller, pbx, tmp_path,
                                                              pause_ms=500)
                    rc, uas_out = await asyncio.to_thread(uas.result)
                finally:
                    uas.stop()
                assert (ok, failed) == (1, 0), out
                assert rc == 0, uas_out
                await until("the call's three events", lambda: len(receiver.received) >= 3, 10)
                # delivered concurrently, so in any order: the bus's seq orders them
                first = [p["type"] for p in sorted(receiver.received, key=lambda p: p["seq"])]
                assert first == ["call.started", "call.answered", "call.ended"], first
                ended = receiver.of("call.ended")[0]
                assert ended["data"]["status"] == 200
                assert tokens["id101"] in ended["data"]["user_ids"]
                assert len({p["data"]["call_id"] for p in receiver.received}) == 1

                # 2. a feature code from a phone: 101 dials *78 (DND on)
                await asyncio.to_thread(dial_code, pbx, tmp_path, 1, "*78")
                change = (await until("the DND change",
                                      lambda: receiver.of("settings.changed"), 10))[0]
                assert change["data"]["feature"] == "dnd"
                assert change["data"]["source"] == "feature_code"
                assert change["data"]["after"]["enabled"] is True

                # 3. the receiver goes down: *79 is retried until it is back, then delivered
                await receiver.stop()
                await asyncio.to_thread(dial_code, pbx, tmp_path, 1, "*79")

                async def retried() -> bool:
                    return any(d["event_type"] == "settings.changed" and d["attempts"] >= 2
                               and d["status"] == "pending" and d["last_error"]
                               for d in await deliveries(hook_id))

                await until("failed attempts while the receiver is down", retried, 10)
                await receiver.start()
                await until("*79's change after the receiver is back",
                            lambda: len(receiver.of("settings.changed")) == 2, 10)
                assert receiver.of("settings.changed")[1]["data"]["after"]["enabled"] is False

                # 4. the receiver down again, *78 pending; the PBX restarts; it is delivered
                await receiver.stop()
                await asyncio.to_thread(dial_code, pbx, tmp_path, 1, "*78")

                async def pending() -> bool:
                    waiting = [d for d in await deliveries(hook_id)
                               if d["event_type"] == "settings.changed"
                               and d["attempts"] >= 1 and d["status"] == "pending"]
                    return len(waiting) == 1

                await until("the pending delivery", pending, 10)
                before_restart = len(receiver.received)
                assert await asyncio.to_thread(pbx.stop) in (0, None)
                pbx.users = ()  # the data directory keeps them
                await asyncio.to_thread(pbx.start)
                await receiver.start()
                await until("the change queued before the restart",
                            lambda: len(receiver.of("settings.changed")) == 3, 15)

                async def all_delivered() -> list[dict[str, Any]] | None:
                    log = await deliveries(hook_id)
                    return log if all(d["status"] == "delivered" for d in log) else None

                log = await until("every delivery", all_delivered, 10)
                host, port = pbx.addr("http")
                async with http.get(f"http://{host}:{port}/metrics") as resp:
                    metrics = await resp.text()
                # since the restart: what was pending before it (the change, its call's end)
                since = len(receiver.received) - before_restart
                assert f"asyncpbx_webhook_deliveries_total {since}.0" in metrics, (since,
                                                                                  metrics)
                async with http.get(f"{_base(pbx)}/webhooks/{hook_id}", headers=admin) as resp:
                    hook = await resp.json()
        assert receiver.bad == [], receiver.bad
        # exactly once per event id, and none missing from what the log says was sent
        assert all(n == 1 for n in receiver.ids.values()), receiver.ids
        # the call, then per feature code its own call (dialling *78 is one) and the change
        kinds = [p["type"] for p in receiver.received]
        assert sorted(kinds[:3]) == ["call.answered", "call.ended", "call.started"], kinds
        assert kinds.count("settings.changed") == 3, kinds
        per_call = collections.defaultdict(list)
        for p in receiver.received:
            if p["type"].startswith("call."):
                per_call[p["data"]["call_id"]].append(p["type"])
        assert len(per_call) == 4, per_call
        # (retries need not keep the order: the body's seq says it)
        assert all(sorted(k) in (["call.answered", "call.ended", "call.started"],
                                 ["call.ended", "call.started"]) for k in per_call.values()), \
            per_call
        assert {d["message_id"] for d in log} == set(receiver.ids)
        assert all(d["status"] == "delivered" for d in log), json.dumps(log, indent=1)
        # *79's change and its call's end (the receiver was down), *78's and its call's end
        # (pending across the restart); the logged attempts failed until the last one
        retried_ones = [d for d in log if d["attempts"] > 1]
        assert {d["event_type"] for d in retried_ones} >= {"settings.changed"}, log
        assert sum(d["event_type"] == "settings.changed" for d in retried_ones) == 2, log
        for d in retried_ones:
            assert [a["status_code"] for a in d["log"]][-1] == 204
            assert all(a["error"] for a in d["log"][:-1])
            assert all(a["latency"] >= 0 for a in d["log"])
        assert hook["enabled"] is True and hook["consecutive_failures"] == 0
    finally:
        await receiver.stop()
        if receiver.bad:
            print(read_log(tmp_path / "server.log")[-3000:])
