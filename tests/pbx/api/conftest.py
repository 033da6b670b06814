"""An API on a real store in a temporary directory, through aiohttp's test client: two
tenants (default with users 100/101, acme with 200) and tokens of every role."""

from __future__ import annotations

import time
import uuid
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from features import default_features
from pbx import api
from pbx.callcontrol import FeatureRegistry
from pbx.directory import Directory
from pbx.http import HttpService
from pbx.services import EventBus, SettingsService
from pbx.services.codes import CodesService
from pbx.store import Store, User
from pbx.store.voicemail import VoicemailMessage
from pbx.voicemail import Boxes


@dataclass
class Api:
    """The client, the store behind it, and a token per principal."""

    client: TestClient[web.Request, web.Application]
    store: Store
    ctx: api.ApiContext
    tokens: dict[str, str]
    users: dict[str, User]
    figures: dict[str, Any]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def call(self, method: str, path: str, who: str | None = "admin",
                   **kwargs: Any) -> tuple[int, Any, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers.update(self.auth(who))
        async with self.client.request(method, path, headers=headers, **kwargs) as resp:
            text = await resp.text()
            ctype = resp.headers.get("Content-Type", "")
            body: Any = text
            if "json" in ctype and text:
                import json

                body = json.loads(text)
            return resp.status, body, resp.headers


def make_ctx(store: Store, figures: dict[str, Any]) -> api.ApiContext:
    registry = FeatureRegistry(default_features())
    directory = Directory(store)
    bus = EventBus()
    settings = SettingsService(store, directory, bus, registry.schema)
    codes = CodesService(store, directory, registry, bus)
    return api.ApiContext(store=store, directory=directory, settings=settings, codes=codes,
                          features=registry, bus=bus, events=api.EventLog(bus),
                          figures=lambda: figures, version="test")


def leave_message(store: Store, user: User, tenant: str, *, seconds: float = 1.0,
                  caller: str = "+4930777", received_at: float | None = None) -> str:
    """A deposited message in ``user``'s box with a real 8 kHz WAV of ``seconds``."""
    mid = uuid.uuid4().hex
    path = Boxes(store.data_dir).message_path(tenant, user.extension, mid)
    path.parent.mkdir(parents=True, exist_ok=True)
    store.begin_voicemail(VoicemailMessage(mid, user.id, tenant, user.extension, caller,
                                           "Caller", received_at or time.time(), 0.0,
                                           str(path), "de"))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * int(8000 * seconds))
    store.finish_voicemail(mid, seconds)
    return mid


@pytest.fixture
async def pbx_api(tmp_path: Path) -> AsyncIterator[Api]:
    store = Store(tmp_path, domain="pbx.test")
    store.ensure_default_tenant("pbx.test", "pbx.test")
    store.add_tenant("acme", "acme.test")
    users = {"100": store.add_user("100", "pw-100-x", name="Anna"),
             "101": store.add_user("101", "pw-101-x", name="Ben"),
             "200": store.add_user("200", "pw-200-x", tenant="acme", name="Carl")}
    default = store.tenant("default")
    acme = store.tenant("acme")
    now = time.time()
    tokens = {
        "admin": store.create_api_token(role="tenant_admin", tenant_id=default.id, now=now)[0],
        "anna": store.create_api_token(role="user", tenant_id=default.id,
                                       user_id=users["100"].id, now=now)[0],
        "ben": store.create_api_token(role="user", tenant_id=default.id,
                                      user_id=users["101"].id, now=now)[0],
        "acme": store.create_api_token(role="tenant_admin", tenant_id=acme.id, now=now)[0],
        "carl": store.create_api_token(role="user", tenant_id=acme.id,
                                       user_id=users["200"].id, now=now)[0],
        "root": store.create_api_token(role="system_admin", tenant_id=None, now=now)[0],
    }
    figures: dict[str, Any] = {"registrations": 2, "active_calls": 1, "trunks": []}
    ctx = make_ctx(store, figures)
    app = HttpService(lambda: figures).app  # the server's application, /health included
    metrics = api.Metrics(lambda: figures, lambda: {"sip_responses_sent_2xx": 5,
                                                     "sip_transactions": 3, "parse_errors": 1,
                                                     "connections_current": 2})
    api.install(app, ctx, metrics)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Api(client, store, ctx, tokens, users, figures)
    finally:
        await client.close()
        ctx.events.close()
        store.close()
