"""``/trunks``: a tenant's carrier connections, for its admins. A trunk's password goes in
(POST) and never out: the answer says only ``has_password``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

from pbx.api.auth import Role
from pbx.api.models import ListQuery, TrunkCreate, TrunkOut, TrunkPage
from pbx.api.resources.common import (
    admin_sees,
    int_param,
    not_found,
    page,
    target_tenant,
    tenant_of,
)
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.store import Trunk

__all__ = ["register"]

SORT = ("id", "name", "kind", "host")


def _states(req: ApiRequest) -> Mapping[tuple[str, str], str]:
    trunks = req.ctx.figures().get("trunks", [])
    out = {}
    if isinstance(trunks, list | tuple):
        for t in trunks:
            if isinstance(t, Mapping):
                out[(str(t.get("tenant", "")), str(t.get("name", "")))] = str(t.get("state"))
    return out


def trunk_out(t: Trunk, state: str | None = None) -> TrunkOut:
    """The API form of a trunk (no password)."""
    return TrunkOut(id=t.id, tenant_id=t.tenant_id, name=t.name, kind=t.kind,  # type: ignore[arg-type]
                    host=t.host, port=t.port, transport=t.transport, username=t.username,
                    realm=t.realm, allowed_sources=list(t.allowed_sources), trusted=t.trusted,
                    register_expiry=t.register_expiry, has_password=bool(t.password),
                    state=state)


def _visible(req: ApiRequest) -> list[Trunk]:
    return [t for t in req.ctx.directory.snapshot.trunks.values()
            if admin_sees(req.who, t.tenant_id)]


def _out(req: ApiRequest, t: Trunk, states: Mapping[tuple[str, str], str]) -> TrunkOut:
    tenant = req.ctx.directory.tenant(t.tenant_id)
    return trunk_out(t, states.get((tenant.name if tenant else "", t.name)))


async def list_trunks(req: ApiRequest) -> web.StreamResponse:
    items, total = page(_visible(req), req.query_as(ListQuery), lambda t, k: getattr(t, k),
                        SORT, "name")
    states = _states(req)
    return json_response(TrunkPage(items=[_out(req, t, states) for t in items], total=total))


def _trunk(req: ApiRequest) -> Trunk:
    trunk_id = int_param(req, "trunk")
    found = next((t for t in _visible(req) if t.id == trunk_id), None)
    if found is None:
        raise not_found(f"trunk {trunk_id}")
    return found


async def get_trunk(req: ApiRequest) -> web.StreamResponse:
    return json_response(_out(req, _trunk(req), _states(req)))


async def create_trunk(req: ApiRequest) -> web.StreamResponse:
    body = req.body_as(TrunkCreate)
    tenant = target_tenant(req, body.tenant_id)
    t = await asyncio.to_thread(req.ctx.store.add_trunk, body.name, tenant=tenant.name,
                                kind=body.kind, host=body.host,
                                port=body.port, transport=body.transport,
                                username=body.username, password=body.password,
                                realm=body.realm, allowed_sources=body.allowed_sources,
                                trusted=body.trusted, register_expiry=body.register_expiry)
    return json_response(trunk_out(t), 201, headers={"Location": f"/api/v1/trunks/{t.id}"})


async def delete_trunk(req: ApiRequest) -> web.StreamResponse:
    t = _trunk(req)
    await asyncio.to_thread(req.ctx.store.remove_trunk, t.name,
                            tenant=tenant_of(req, t.tenant_id).name)
    return web.Response(status=204)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    param = {"trunk": {"type": "integer", "minimum": 1}}
    admin = Role.TENANT_ADMIN
    router.add(Route("GET", "/trunks", list_trunks, "Trunks of the tenant", "trunks",
                     "list_trunks", query=ListQuery, response=TrunkPage, role=admin))
    router.add(Route("POST", "/trunks", create_trunk, "Add a trunk", "trunks", "create_trunk",
                     body=TrunkCreate, response=TrunkOut, status=201, role=admin,
                     errors=(409,)))
    router.add(Route("GET", "/trunks/{trunk}", get_trunk, "A trunk and its state", "trunks",
                     "get_trunk", response=TrunkOut, role=admin, path_params=param))
    router.add(Route("DELETE", "/trunks/{trunk}", delete_trunk, "Remove a trunk", "trunks",
                     "delete_trunk", status=204, role=admin, path_params=param))
