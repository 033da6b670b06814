"""The product API (issue 13): REST under ``/api/v1`` on the server's one aiohttp application
(:class:`pbx.http.HttpService`), live events over WebSocket, ``/metrics``.

Modules, one job each: :mod:`~pbx.api.routes` (the route table and the request wrapper),
:mod:`~pbx.api.problems` (RFC 9457 errors: the one place errors convert),
:mod:`~pbx.api.auth` (tokens → principals, roles), :mod:`~pbx.api.models` (pydantic models),
:mod:`~pbx.api.openapi` (the OpenAPI 3.1 document, generated from the route table),
:mod:`~pbx.api.docs` (Swagger UI, offline), :mod:`~pbx.api.events` (the event log and the
WebSocket pump), :mod:`~pbx.api.metrics` (Prometheus) and :mod:`pbx.api.resources` (one module
per resource). :func:`install` puts it all on an application.

Threads: the event loop carries the calls and never waits for the database lock. Token
look-ups and the store writes of users, devices, numbers, trunks and history run in worker
threads (``asyncio.to_thread``; the directory cache swaps its snapshot whole, which is made for
that); settings and feature codes change on the event loop through their services, as feature
codes do (their caches, the code table and the event bus live there).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from pbx.api.catalogue import asyncapi_document
from pbx.api.context import ApiContext, LiveCall
from pbx.api.docs import add_docs
from pbx.api.events import EventLog
from pbx.api.metrics import Metrics
from pbx.api.openapi import openapi_document
from pbx.api.problems import problem_middleware
from pbx.api.resources import (
    call_back,
    calls,
    chat,
    codes,
    conferences,
    devices,
    directory,
    greetings,
    history,
    music_on_hold,
    numbers,
    pickup,
    registrations,
    session,
    settings,
    system,
    tokens,
    trunks,
    users,
    voicemail,
    webhooks,
)
from pbx.api.routes import ApiRouter
from pbx.callcontrol import FeatureRegistry

__all__ = ["PREFIX", "ApiContext", "EventLog", "LiveCall", "Metrics", "build_router", "install"]

PREFIX = "/api/v1"


def build_router(features: FeatureRegistry) -> ApiRouter:
    """Every route of the API (the feature settings from ``features``' schemas)."""
    router = ApiRouter()
    users.register(router)
    settings.register(router, features)
    history.register(router)
    devices.register(router)
    numbers.register(router)
    trunks.register(router)
    codes.register(router)
    registrations.register(router)
    system.register(router)
    tokens.register(router)
    call_back.register(router)
    chat.register(router)
    voicemail.register(router)
    greetings.register(router)
    pickup.register(router)
    calls.register(router)
    conferences.register(router)
    session.register(router)
    webhooks.register(router)
    music_on_hold.register(router)
    directory.register(router)
    return router


def install(app: web.Application, ctx: ApiContext, metrics: Metrics | None = None, *,
            phone: Callable[[], Mapping[str, object]] | None = None, portal: bool = True
            ) -> dict[str, Any]:
    """Add the API (and ``/metrics`` when given) and the portal (:mod:`pbx.portal`, which
    runs the API's operations in process; ``phone`` tells its softphone our SIP domain and
    WebSocket listeners) to ``app`` before it starts; returns the OpenAPI document."""
    router = build_router(ctx.features)
    document = openapi_document(router, prefix=PREFIX, version=ctx.version)
    text = json.dumps(document, indent=1)

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="application/json",
                            headers={"Cache-Control": "no-cache"})

    async def asyncapi(request: web.Request) -> web.Response:
        return web.json_response(asyncapi_document(version=ctx.version, host=request.host,
                                                   secure=request.secure),
                                 headers={"Cache-Control": "no-cache"})

    async def stop_events(app: web.Application) -> None:
        ctx.events.shutdown()

    app.on_shutdown.append(stop_events)  # open event sockets must not hold up a stop
    app.middlewares.append(problem_middleware(PREFIX))
    if metrics is not None:
        app.middlewares.insert(0, metrics.middleware())
        app.router.add_get("/metrics", metrics.handler)
    app.router.add_get(PREFIX + "/openapi.json", openapi)
    app.router.add_get(PREFIX + "/asyncapi.json", asyncapi)
    add_docs(app, PREFIX)
    router.install(app, ctx, PREFIX)
    if portal:
        from pbx import portal as portal_pages

        portal_pages.install(app, ctx, router, phone=phone)
    return document
