"""``/numbers``: the DIDs of a tenant and who owns them (a user sees their own)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from pbx.api.auth import Role
from pbx.api.models import ListQuery, NumberCreate, NumberOut, NumberPage
from pbx.api.resources.common import not_found, page, target_tenant, tenant_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.store import Number

__all__ = ["register"]

SORT = ("e164", "owner_kind", "user_id")


def number_out(n: Number) -> NumberOut:
    """The API form of a number."""
    return NumberOut(e164=n.e164, tenant_id=n.tenant_id, owner_kind=n.owner_kind,  # type: ignore[arg-type]
                     user_id=n.user_id, group_name=n.group_name)


def _visible(req: ApiRequest) -> list[Number]:
    who = req.who
    out = []
    for n in req.ctx.directory.snapshot.numbers.values():
        if not who.sees_tenant(n.tenant_id):
            continue
        if who.role >= Role.TENANT_ADMIN or (n.user_id is not None and n.user_id == who.user_id):
            out.append(n)
    return out


def _number(req: ApiRequest) -> Number:
    e164 = req.path("number")
    found = next((n for n in _visible(req) if n.e164 == e164), None)
    if found is None:
        raise not_found(f"number {e164[:40]}")
    return found


async def list_numbers(req: ApiRequest) -> web.StreamResponse:
    items, total = page(_visible(req), req.query_as(ListQuery), lambda n, k: getattr(n, k),
                        SORT, "e164")
    return json_response(NumberPage(items=[number_out(n) for n in items], total=total))


async def get_number(req: ApiRequest) -> web.StreamResponse:
    return json_response(number_out(_number(req)), etag=True)


async def create_number(req: ApiRequest) -> web.StreamResponse:
    body = req.body_as(NumberCreate)
    tenant = target_tenant(req, body.tenant_id)
    ext = None
    if body.user_id is not None:
        user = req.ctx.directory.user_by_id(body.user_id)
        if user is None or user.tenant_id != tenant.id or not req.who.sees_user(user):
            raise not_found(f"user {body.user_id}")
        ext = user.extension
    n = await asyncio.to_thread(req.ctx.store.add_number, body.number, tenant=tenant.name,
                                user=ext, group=body.group)
    return json_response(number_out(n), 201, headers={"Location": f"/api/v1/numbers/{n.e164}"})


async def delete_number(req: ApiRequest) -> web.StreamResponse:
    n = _number(req)
    await asyncio.to_thread(req.ctx.store.remove_number, n.e164,
                            tenant=tenant_of(req, n.tenant_id).name)
    return web.Response(status=204)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    param = {"number": {"type": "string", "pattern": r"^\+[0-9]{2,20}$",
                        "description": "E.164 with +"}}
    router.add(Route("GET", "/numbers", list_numbers, "Numbers the token sees", "numbers",
                     "list_numbers", query=ListQuery, response=NumberPage))
    router.add(Route("POST", "/numbers", create_number, "Assign a number", "numbers",
                     "create_number", body=NumberCreate, response=NumberOut, status=201,
                     role=Role.TENANT_ADMIN, errors=(409,)))
    router.add(Route("GET", "/numbers/{number}", get_number, "A number", "numbers",
                     "get_number", response=NumberOut, etag=True, path_params=param))
    router.add(Route("DELETE", "/numbers/{number}", delete_number, "Release a number",
                     "numbers", "delete_number", status=204, role=Role.TENANT_ADMIN,
                     path_params=param))
