"""``/system/health`` (the node's figures, for any token) and ``/events`` (the live events
WebSocket of :mod:`pbx.api.events`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated

from aiohttp import WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field

from pbx.api.auth import Role
from pbx.api.events import EVENT_KINDS, kinds_filter, pump, visible
from pbx.api.models import HealthOut
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response

__all__ = ["register"]


class EventsQuery(BaseModel):
    """``since``: resume after this sequence number; ``kinds``: comma-separated kinds
    (``call.*`` for a family)."""

    model_config = ConfigDict(extra="forbid")

    since: Annotated[int, Field(ge=0)] | None = None
    kinds: Annotated[str, Field(max_length=400)] | None = None


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float | str) else 0


async def health(req: ApiRequest) -> web.StreamResponse:
    figures = req.ctx.figures()
    trunks = figures.get("trunks", [])
    who = req.who
    shown = []
    if isinstance(trunks, list | tuple) and who.role >= Role.TENANT_ADMIN:
        names = {t.name for t in req.ctx.directory.snapshot.tenants.values()
                 if who.sees_tenant(t.id)}
        shown = [dict(t) for t in trunks
                 if isinstance(t, Mapping) and (who.tenant_id is None or t.get("tenant") in names)]
    return json_response(HealthOut(status="ok", registrations=_int(figures.get("registrations")),
                                   active_calls=_int(figures.get("active_calls")),
                                   event_clients=req.ctx.events.clients,
                                   last_event_seq=req.ctx.events.last_seq,
                                   trunks=[{k: v for k, v in t.items() if k != "password"}
                                           for t in shown]))


async def events(req: ApiRequest) -> web.StreamResponse:
    query = req.query_as(EventsQuery)
    # timeout: how long close() waits for the client's close frame (a stop must not hang)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096, timeout=1.0)
    if not ws.can_prepare(req.raw).ok:
        from pbx.api.problems import ApiProblem

        raise ApiProblem(400, "websocket_required",
                         "connect with a WebSocket client (Upgrade: websocket)")
    try:
        await ws.prepare(req.raw)
    except ConnectionResetError:
        # the client left before the upgrade (a page that navigated away while its socket
        # was opening): nothing to serve and nobody to answer — not a server error
        return web.Response(status=400)
    log = req.ctx.events
    who = req.who
    wanted = kinds_filter(query.kinds)
    user_by_id = req.ctx.directory.user_by_id
    client, replay, gap = log.open(query.since)
    closed = client.closed

    async def read() -> None:
        async for msg in ws:  # clients send nothing we need; pings are answered by aiohttp
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
        closed.set()

    async def send(text: str) -> None:
        try:
            await ws.send_str(text)
        except ConnectionResetError:  # the client left while we sent (a page navigated away)
            closed.set()

    try:
        if gap is not None:
            await ws.send_json({"seq": 0, "kind": "gap", "at": 0.0,
                                "data": {"first": gap[0], "last": gap[1]}})
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(read())
            why = await pump(send, client, replay,
                             lambda e: wanted(e.kind) and visible(who, e, user_by_id), closed)
            reader.cancel()
        if why == "overflow":
            await ws.close(code=4008, message=b"too slow: reconnect with since")
        elif log.stopping:
            await ws.close(code=1001, message=b"server stopping")
        else:
            await ws.close()
    finally:
        log.leave(client)
    return ws


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    router.add(Route("GET", "/system/health", health, "The node's figures", "system",
                     "system_health", response=HealthOut))
    catalogue = "\n".join(f"- `{kind}`: {text}" for kind, text in EVENT_KINDS.items())
    router.add(Route("GET", "/events", events, "Live events (WebSocket)", "events",
                     "events", query=EventsQuery,
                     content={"application/json": "WebSocket (101): one EventMessage per "
                                                  "text frame"},
                     description="A WebSocket: each text frame is an EventMessage. Resume "
                                 "with ?since=SEQ after a reconnect. Kinds:\n" + catalogue))
