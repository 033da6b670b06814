"""``/webhooks``: a tenant's webhook endpoints (tenant admins; a system admin of every tenant
names the tenant). The signing secret is in the answer of the POST and of a rotation only.
``/webhooks/{id}/deliveries`` is the delivery log (each delivery with its attempts: status,
latency, error); ``POST /webhooks/{id}/test`` queues a ``webhook.test`` event for the endpoint.
An endpoint another tenant owns does not exist (404). A target the SSRF guard refuses
(loopback, link-local, private addresses unless ``[webhooks] allow_private``) is a 422 naming
``/url``. PATCH ``enabled: true`` re-enables an endpoint the failure rule disabled."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field, StrictBool, StrictInt

from pbx.api.auth import Role
from pbx.api.events import EVENT_KINDS
from pbx.api.models import ListQuery, Page, Request
from pbx.api.problems import ApiProblem, FieldError
from pbx.api.resources.common import int_param, not_found, page, target_tenant
from pbx.api.routes import ApiRequest, ApiRouter, Route, etag_of, json_response
from pbx.services.events import Event
from pbx.store.webhooks import Webhook, WebhookDelivery
from pbx.webhooks import TEST_KIND, TargetRefused, check_url
from pbx.webhooks.service import event_body
from pbx.webhooks.signing import new_secret

__all__ = ["register"]

#: Kinds a webhook may subscribe to besides the WebSocket catalogue's.
EXTRA_KINDS = ("voicemail.changed", TEST_KIND)
_TYPE = re.compile(r"^(\*|[a-z_]+(\.[a-z_]+)*(\.\*)?)$")
_ID = {"webhook": {"type": "integer", "minimum": 1}}

EventTypes = Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=50)]


class WebhookOut(BaseModel):
    """An endpoint (never its secret)."""

    id: int
    tenant_id: int
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str
    consecutive_failures: int
    failing_since: float | None
    created_at: float


class WebhookPage(Page[WebhookOut]):
    """Webhook endpoints."""


class WebhookCreated(WebhookOut):
    """A new endpoint (or one with a new secret), with the secret shown this once."""

    secret: str


class WebhookCreate(Request):
    """A new endpoint: the URL events are POSTed to, the event kinds (``call.*`` a prefix;
    empty or ``*``: every kind), for which tenant (a system admin of every tenant)."""

    url: Annotated[str, Field(min_length=8, max_length=2000)]
    event_types: EventTypes = []
    description: Annotated[str, Field(max_length=200)] = ""
    tenant_id: StrictInt | None = None


class WebhookPatch(Request):
    """What to change (a field not sent stays); ``enabled: true`` re-enables a disabled
    endpoint and clears its failure record."""

    url: Annotated[str, Field(min_length=8, max_length=2000)] | None = None
    event_types: EventTypes | None = None
    description: Annotated[str, Field(max_length=200)] | None = None
    enabled: StrictBool | None = None


class AttemptOut(BaseModel):
    """One try: when, the HTTP status (null: no answer), seconds it took, the error."""

    attempt: int
    at: float
    status_code: int | None
    latency: float
    error: str


class DeliveryOut(BaseModel):
    """One event for the endpoint: its ``webhook-id``, kind, state and attempts."""

    id: int
    message_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: float | None
    last_error: str
    created_at: float
    delivered_at: float | None
    log: list[AttemptOut]


class DeliveryPage(Page[DeliveryOut]):
    """Deliveries, newest first."""


class DeliveryQuery(ListQuery):
    """Paging, and one status only."""

    status: Literal["pending", "delivered", "failed"] | None = None


class TestEventQueued(BaseModel):
    """The test event's ``webhook-id``."""

    message_id: str


def hook_out(h: Webhook) -> WebhookOut:
    """The API form of an endpoint."""
    return WebhookOut(id=h.id, tenant_id=h.tenant_id, url=h.url,
                      event_types=list(h.event_types), description=h.description,
                      enabled=h.enabled, disabled_reason=h.disabled_reason,
                      consecutive_failures=h.consecutive_failures,
                      failing_since=h.failing_since, created_at=h.created_at)


def _bad(field: str, message: str) -> ApiProblem:
    return ApiProblem(422, "validation_failed", message, field=field,
                      errors=[FieldError(field=field, code="invalid", message=message)])


def _check_types(types: list[str]) -> list[str]:
    known = (*EVENT_KINDS, *EXTRA_KINDS)
    for i, kind in enumerate(types):
        ok = bool(_TYPE.match(kind)) and (
            kind == "*" or kind in known
            or (kind.endswith(".*") and any(k.startswith(kind[:-1]) for k in known)))
        if not ok:
            raise _bad(f"/event_types/{i}", f"{kind!r} is no event type (one of "
                                            f"{', '.join(known)}, a prefix like call.*, or *)")
    return list(dict.fromkeys(types))


def _check_url(req: ApiRequest, url: str) -> str:
    service = req.ctx.webhooks
    try:
        return check_url(url, allow_private=service is not None
                         and service.config.allow_private)
    except TargetRefused as exc:
        raise _bad("/url", f"the webhook URL is refused: {exc}") from None


async def _hook(req: ApiRequest) -> Webhook:
    webhook_id = int_param(req, "webhook")
    hook = await asyncio.to_thread(req.ctx.store.webhook, webhook_id)
    if hook is None or not req.who.sees_tenant(hook.tenant_id):
        raise not_found(f"webhook {webhook_id}")
    return hook


async def _reload(req: ApiRequest) -> None:
    if req.ctx.webhooks is not None:
        await req.ctx.webhooks.refresh()


async def list_hooks(req: ApiRequest) -> web.StreamResponse:
    who = req.who
    every = await asyncio.to_thread(req.ctx.store.webhooks, who.tenant_id)
    items, total = page(every, req.query_as(ListQuery), lambda h, k: getattr(h, k),
                        ("id", "url", "created_at", "enabled"), "id")
    return json_response(WebhookPage(items=[hook_out(h) for h in items], total=total))


async def create_hook(req: ApiRequest) -> web.StreamResponse:
    body = req.body_as(WebhookCreate)
    tenant = target_tenant(req, body.tenant_id)
    url = _check_url(req, body.url)
    types = _check_types(body.event_types)
    secret = new_secret()
    hook = await asyncio.to_thread(req.ctx.store.create_webhook, tenant_id=tenant.id, url=url,
                                   secret=secret, event_types=types,
                                   description=body.description, now=time.time())
    await _reload(req)
    return json_response(WebhookCreated(**hook_out(hook).model_dump(), secret=secret), 201,
                         headers={"Location": f"/api/v1/webhooks/{hook.id}"})


async def get_hook(req: ApiRequest) -> web.StreamResponse:
    return json_response(hook_out(await _hook(req)), etag=True)


async def patch_hook(req: ApiRequest) -> web.StreamResponse:
    hook = await _hook(req)
    body = req.body_as(WebhookPatch)
    req.check_etag(etag_of(hook_out(hook).model_dump(mode="json")))
    changes: dict[str, object] = {}
    if body.url is not None:
        changes["url"] = _check_url(req, body.url)
    if body.event_types is not None:
        changes["event_types"] = _check_types(body.event_types)
    if body.description is not None:
        changes["description"] = body.description
    if body.enabled is not None and body.enabled != hook.enabled:
        changes["enabled"] = body.enabled
    updated = await asyncio.to_thread(req.ctx.store.update_webhook, hook.id, **changes)
    if updated is None:
        raise not_found(f"webhook {hook.id}")
    await _reload(req)
    return json_response(hook_out(updated), etag=True)


async def delete_hook(req: ApiRequest) -> web.StreamResponse:
    hook = await _hook(req)
    await asyncio.to_thread(req.ctx.store.delete_webhook, hook.id)
    await _reload(req)
    return web.Response(status=204)


async def rotate_secret(req: ApiRequest) -> web.StreamResponse:
    hook = await _hook(req)
    secret = new_secret()
    updated = await asyncio.to_thread(req.ctx.store.update_webhook, hook.id, secret=secret)
    if updated is None:
        raise not_found(f"webhook {hook.id}")
    await _reload(req)
    return json_response(WebhookCreated(**hook_out(updated).model_dump(), secret=secret))


def _delivery_out(d: WebhookDelivery, log: list[AttemptOut]) -> DeliveryOut:
    return DeliveryOut(id=d.id, message_id=d.message_id, event_type=d.event_kind,
                       status=d.status,  # type: ignore[arg-type]
                       attempts=d.attempts,
                       next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
                       last_error=d.last_error, created_at=d.created_at,
                       delivered_at=d.delivered_at, log=log)


async def list_deliveries(req: ApiRequest) -> web.StreamResponse:
    hook = await _hook(req)
    q = req.query_as(DeliveryQuery)
    store = req.ctx.store
    items, total = await asyncio.to_thread(store.webhook_deliveries, hook.id, status=q.status,
                                           limit=q.limit, offset=q.offset)
    attempts = await asyncio.to_thread(store.webhook_attempts, [d.id for d in items])
    by_delivery: dict[int, list[AttemptOut]] = {}
    for a in attempts:
        by_delivery.setdefault(a.delivery_id, []).append(AttemptOut(
            attempt=a.attempt, at=a.at, status_code=a.status_code, latency=a.latency,
            error=a.error))
    return json_response(DeliveryPage(
        items=[_delivery_out(d, by_delivery.get(d.id, [])) for d in items], total=total))


async def send_test(req: ApiRequest) -> web.StreamResponse:
    hook = await _hook(req)
    message_id = "msg_" + uuid.uuid4().hex
    now = time.time()
    body = event_body(Event(0, TEST_KIND, {"webhook_id": hook.id, "tenant_id": hook.tenant_id},
                            now), message_id)
    await asyncio.to_thread(req.ctx.store.webhook_enqueue,
                            [(hook.id, message_id, TEST_KIND, body)], now)
    if req.ctx.webhooks is not None:
        req.ctx.webhooks.wake()
    return json_response(TestEventQueued(message_id=message_id), 202)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    admin = Role.TENANT_ADMIN
    router.add(Route("GET", "/webhooks", list_hooks, "The tenant's webhook endpoints",
                     "webhooks", "list_webhooks", query=ListQuery, response=WebhookPage,
                     role=admin))
    router.add(Route("POST", "/webhooks", create_hook,
                     "Add a webhook endpoint (its signing secret is shown once)", "webhooks",
                     "create_webhook", body=WebhookCreate, response=WebhookCreated,
                     status=201, role=admin))
    router.add(Route("GET", "/webhooks/{webhook}", get_hook, "A webhook endpoint", "webhooks",
                     "get_webhook", response=WebhookOut, role=admin, etag=True,
                     path_params=_ID))
    router.add(Route("PATCH", "/webhooks/{webhook}", patch_hook,
                     "Change a webhook endpoint (enabled: true re-enables it)", "webhooks",
                     "patch_webhook", body=WebhookPatch, response=WebhookOut, role=admin,
                     etag=True, path_params=_ID))
    router.add(Route("DELETE", "/webhooks/{webhook}", delete_hook,
                     "Remove a webhook endpoint and its delivery log", "webhooks",
                     "delete_webhook", status=204, role=admin, path_params=_ID))
    router.add(Route("POST", "/webhooks/{webhook}/secret", rotate_secret,
                     "Rotate the signing secret (the new one is shown once)", "webhooks",
                     "rotate_webhook_secret", response=WebhookCreated, role=admin,
                     path_params=_ID))
    router.add(Route("GET", "/webhooks/{webhook}/deliveries", list_deliveries,
                     "The delivery log: each event with its attempts", "webhooks",
                     "list_webhook_deliveries", query=DeliveryQuery, response=DeliveryPage,
                     role=admin, path_params=_ID))
    router.add(Route("POST", "/webhooks/{webhook}/test", send_test,
                     "Queue a webhook.test event for the endpoint", "webhooks",
                     "test_webhook", response=TestEventQueued, status=202, role=admin,
                     path_params=_ID))
