"""Live events over WebSocket: a settings change made through the API (or any other way) is
on the socket, numbered; a client resumes with ?since= without gap or duplicate; each token
sees only what it may (a user their own changes, an admin their tenant, nobody another
tenant's); a lost range is announced as a gap."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import ClientWebSocketResponse

from tests.pbx.api.conftest import Api


async def _next(ws: ClientWebSocketResponse, timeout: float = 2.0) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def _nothing(ws: ClientWebSocketResponse) -> None:
    try:
        msg = await asyncio.wait_for(ws.receive(), 0.2)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {msg.data}")


async def test_settings_change_arrives_filtered_and_resumable(pbx_api: Api) -> None:
    client = pbx_api.client
    async with client.ws_connect("/api/v1/events", headers=pbx_api.auth("anna")) as anna, \
            client.ws_connect("/api/v1/events", headers=pbx_api.auth("acme")) as acme, \
            client.ws_connect("/api/v1/events?kinds=codes.*",
                              headers=pbx_api.auth("admin")) as codes_only:
        status, _, _ = await pbx_api.call("PATCH", "/api/v1/users/me/dnd", who="anna",
                                          json={"enabled": True})
        assert status == 200
        event = await _next(anna)
        assert event["kind"] == "settings.changed" and event["data"]["feature"] == "dnd"
        assert event["data"]["after"]["enabled"] is True and event["data"]["source"] == "api"
        first = event["seq"]
        # Ben's change is not Anna's business; acme sees neither
        await pbx_api.call("PATCH", "/api/v1/users/me/call-waiting", who="ben",
                           json={"enabled": False})
        await _nothing(anna)
        await _nothing(acme)
        await _nothing(codes_only)
        # a change made without the API (the settings service, as a feature code does)
        pbx_api.ctx.settings.update(pbx_api.users["100"].id, "dnd", {"enabled": False},
                                    source="feature_code")
        event = await _next(anna)
        assert event["data"]["source"] == "feature_code" and event["seq"] > first
    # reconnect after the first event: the second comes again, nothing else
    async with client.ws_connect(f"/api/v1/events?since={first}",
                                 headers=pbx_api.auth("anna")) as again:
        event = await _next(again)
        assert event["data"]["source"] == "feature_code"
        await _nothing(again)
        pbx_api.ctx.settings.update(pbx_api.users["100"].id, "dnd", {"enabled": True},
                                    source="cli")
        live = await _next(again)
        assert live["seq"] == event["seq"] + 1 and live["data"]["source"] == "cli"


async def test_gap_is_announced_when_events_were_dropped(pbx_api: Api) -> None:
    log = pbx_api.ctx.events
    log.recent = type(log.recent)(maxlen=2)
    for _ in range(5):
        pbx_api.ctx.bus.publish("codes.changed", {"source": "test"})
    async with pbx_api.client.ws_connect("/api/v1/events?since=1",
                                         headers=pbx_api.auth("admin")) as ws:
        gap = await _next(ws)
        assert gap["kind"] == "gap" and gap["data"] == {"first": 2, "last": 3}
        assert [(await _next(ws))["seq"] for _ in range(2)] == [4, 5]


async def test_events_need_a_token_and_a_websocket(pbx_api: Api) -> None:
    status, body, _ = await pbx_api.call("GET", "/api/v1/events", who=None)
    assert status == 401
    status, body, _ = await pbx_api.call("GET", "/api/v1/events", who="anna")
    assert status == 400 and body["code"] == "websocket_required"
    status, body, _ = await pbx_api.call("GET", "/api/v1/events?since=-1", who="anna")
    assert status == 422


async def test_call_events_go_to_the_users_involved(pbx_api: Api) -> None:
    from pbx.api.events import CallEvents
    from pbx.callcontrol import CallRecord

    anna, ben = pbx_api.users["100"], pbx_api.users["101"]

    class Party:
        def __init__(self, user_id: int) -> None:
            self.user_id = user_id

    hook = CallEvents(pbx_api.ctx.bus, lambda r: [Party(anna.id)], lambda r: anna.tenant_id)
    record = CallRecord("call-1", "internal", "100", "555", started=1.0)
    async with pbx_api.client.ws_connect("/api/v1/events", headers=pbx_api.auth("anna")) as a, \
            pbx_api.client.ws_connect("/api/v1/events", headers=pbx_api.auth("ben")) as b, \
            pbx_api.client.ws_connect("/api/v1/events", headers=pbx_api.auth("admin")) as adm:
        hook(record)
        hook(record)  # the same state twice: one event
        record.answered = 2.0
        hook(record)
        record.ended = 3.0
        hook(record)
        kinds = [(await _next(a))["kind"] for _ in range(3)]
        assert kinds == ["call.started", "call.answered", "call.ended"]
        assert [(await _next(adm))["kind"] for _ in range(3)] == kinds
        await _nothing(b)
    assert ben.id != anna.id


async def test_an_open_event_socket_does_not_hold_up_a_stop(tmp_path: object) -> None:
    """The server stopping closes event sockets with 1001 at once (aiohttp would otherwise wait
    for them to end: a stop that took ~47 s with one idle client)."""
    import time
    from pathlib import Path

    import aiohttp

    from pbx import api
    from pbx.http import HttpService
    from pbx.store import Store
    from tests.pbx.api.conftest import make_ctx

    assert isinstance(tmp_path, Path)
    store = Store(tmp_path, domain="pbx.test")
    store.ensure_default_tenant("pbx.test", "pbx.test")
    token = store.create_api_token(role="system_admin", tenant_id=None, now=time.time())[0]
    ctx = make_ctx(store, {})
    http = HttpService(lambda: {})
    api.install(http.app, ctx)
    _, port = await http.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as client:
            ws = await client.ws_connect(f"http://127.0.0.1:{port}/api/v1/events",
                                         headers={"Authorization": f"Bearer {token}"})
            received = asyncio.ensure_future(ws.receive())
            started = time.monotonic()
            await http.close()
            took = time.monotonic() - started
            msg = await asyncio.wait_for(received, 5)
    finally:
        ctx.events.close()
        store.close()
    assert took < 3.0, took
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001


async def test_a_client_gone_before_the_upgrade_is_not_a_server_error(
        pbx_api: Api, monkeypatch: Any, capsys: Any) -> None:
    from aiohttp import WSServerHandshakeError, web

    async def gone(self: web.WebSocketResponse, request: web.Request) -> None:
        raise ConnectionResetError("Connection lost")  # what aiohttp raises then

    monkeypatch.setattr(web.WebSocketResponse, "prepare", gone)
    try:
        async with pbx_api.client.ws_connect("/api/v1/events", headers=pbx_api.auth("anna")):
            raise AssertionError("the upgrade cannot have succeeded")
    except WSServerHandshakeError as exc:
        assert exc.status == 400
    out = capsys.readouterr()
    assert "api.internal_error" not in out.out + out.err
    # the server goes on serving events to the next client
    monkeypatch.undo()
    async with pbx_api.client.ws_connect("/api/v1/events", headers=pbx_api.auth("anna")) as ws:
        await pbx_api.call("PATCH", "/api/v1/users/me/dnd", who="anna", json={"enabled": True})
        assert (await _next(ws))["kind"] == "settings.changed"
