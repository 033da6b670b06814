"""The API against the real server and real SIP phones (SIPp): a setting changed through the
REST API changes what a call does (PATCH /dnd → the next call gets 486), and a feature code
dialled from a SIPp phone is visible on a WebSocket client within a second and in the API."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.interop.harness import free_port, read_log, running_pbx
from tests.interop.test_calls_sipp import USERS, final_statuses, register_port
from tests.interop.test_features_sipp import dial, dial_code

pytestmark = pytest.mark.interop

CONFIG = "[media]\nport_min = 45000\nport_max = 45999\n[calls]\nring_timeout = 3.0\n"


def _tokens(into: dict[str, Any]) -> Any:
    def setup(store: Any) -> None:
        tenant = store.tenant("default")
        now = time.time()
        into["admin"] = store.create_api_token(role="tenant_admin", tenant_id=tenant.id,
                                               now=now)[0]
        into["u101"] = store.create_api_token(role="user", tenant_id=tenant.id,
                                              user_id=store.user("101").id, now=now)[0]
        into["id101"] = store.user("101").id

    return setup


async def test_api_setting_changes_a_call_and_a_code_reaches_a_websocket(
        tmp_path: Path) -> None:
    tokens: dict[str, Any] = {}
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=CONFIG,
                     store_setup=_tokens(tokens)) as pbx:
        host, port = pbx.addr("http")
        base = f"http://{host}:{port}/api/v1"
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        async with aiohttp.ClientSession() as http:
            watch = await http.ws_connect(f"{base}/events?kinds=registration.*,call.*",
                                          headers=admin)
            await asyncio.to_thread(register_port, pbx, "101", USERS[1][1], free_port())
            added = json.loads((await asyncio.wait_for(watch.receive(), 5)).data)
            assert added["kind"] == "registration.added", added
            assert added["data"]["user_id"] == tokens["id101"]
            async with http.patch(f"{base}/users/{tokens['id101']}/dnd", headers=admin,
                                  json={"enabled": True}) as resp:
                assert resp.status == 200, await resp.text()
            # the very next call sees it
            ok, failed, out = await asyncio.to_thread(dial, pbx, tmp_path, 0, "101",
                                                      "call_uac_fail.xml")
            assert (ok, failed) == (1, 0), out
            assert final_statuses(read_log(tmp_path / "dial-101.log"))[-1] == 486
            # the admin's socket saw the call begin and end (never answered: missed)
            calls = [json.loads((await asyncio.wait_for(watch.receive(), 5)).data)
                     for _ in range(2)]
            assert [c["kind"] for c in calls] == ["call.started", "call.ended"], calls
            assert calls[1]["data"]["status"] == 486 and calls[1]["data"]["missed"] is True
            assert tokens["id101"] in calls[1]["data"]["user_ids"]
            await watch.close()

            # 101 switches DND off from the phone (*79): the event reaches a WebSocket client
            user = {"Authorization": f"Bearer {tokens['u101']}"}
            async with http.ws_connect(f"{base}/events?kinds=settings.changed",
                                       headers=user) as ws:
                dialled = asyncio.ensure_future(
                    asyncio.to_thread(dial_code, pbx, tmp_path, 1, "*79"))
                try:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    received = time.time()
                    event = json.loads(msg.data)
                finally:
                    await dialled
            assert event["kind"] == "settings.changed" and event["data"]["feature"] == "dnd"
            assert event["data"]["source"] == "feature_code"
            assert event["data"]["after"]["enabled"] is False
            assert received - event["at"] < 1.0, received - event["at"]
            async with http.get(f"{base}/users/me/dnd", headers=user) as resp:
                assert (await resp.json())["enabled"] is False
            async with http.get(f"http://{host}:{port}/metrics") as resp:
                text = await resp.text()
            assert "asyncpbx_registrations 1.0" in text
            assert 'asyncpbx_sip_responses_sent_total{class="4xx"}' in text
