"""``/pickup-groups``: a tenant's call pickup groups (``*98`` takes a ringing call of a fellow
member, :mod:`features.pickup`) and their members, for the tenant's admins. Every change goes
through the store (:class:`pbx.store.pickup.PickupStoreMixin`), as ``asyncpbx pickup-group``
does; a group and its members are always of one tenant (404 for anything of another)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from pbx.api.auth import Role
from pbx.api.models import ListQuery, Page, Request
from pbx.api.problems import ApiProblem, FieldError
from pbx.api.resources.common import admin_sees, int_param, not_found, page, target_tenant
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.store import StoreError
from pbx.store.pickup import PickupGroup

__all__ = ["PickupGroupCreate", "PickupGroupOut", "PickupMemberAdd", "register"]

SORT = ("id", "name", "tenant_id")


class PickupGroupOut(BaseModel):
    """A pickup group and its members (user ids, ascending)."""

    id: int
    tenant_id: int
    name: str
    members: list[int]


class PickupGroupPage(Page[PickupGroupOut]):
    """Pickup groups."""


class PickupGroupCreate(Request):
    """A new group of the tenant (a system admin of every tenant names ``tenant_id``), with
    its first members."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    members: Annotated[list[StrictInt], Field(max_length=500)] = []
    tenant_id: StrictInt | None = None


class PickupMemberAdd(Request):
    """A user of the group's tenant who joins it. Required (the model lets it be missing only
    so that the group is looked up first: 404 before 422)."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"required": ["user_id"]})

    user_id: StrictInt | None = None


def _out(g: PickupGroup) -> PickupGroupOut:
    return PickupGroupOut(id=g.id, tenant_id=g.tenant_id, name=g.name, members=list(g.members))


def _visible(req: ApiRequest) -> list[PickupGroup]:
    return [g for g in req.ctx.store.pickup_groups() if admin_sees(req.who, g.tenant_id)]


async def _group(req: ApiRequest) -> PickupGroup:
    group_id = int_param(req, "group")
    groups = await asyncio.to_thread(_visible, req)
    found = next((g for g in groups if g.id == group_id), None)
    if found is None:
        raise not_found(f"pickup group {group_id}")
    return found


def _members_of_tenant(req: ApiRequest, tenant_id: int, user_ids: list[int]) -> None:
    for uid in user_ids:
        user = req.ctx.directory.user_by_id(uid)
        if user is None or user.tenant_id != tenant_id:
            raise ApiProblem(422, "validation_failed", f"no user {uid} in the tenant",
                             field="/members" if len(user_ids) != 1 else "/user_id")


async def list_pickup_groups(req: ApiRequest) -> web.StreamResponse:
    groups = await asyncio.to_thread(_visible, req)
    items, total = page(groups, req.query_as(ListQuery), lambda g, k: getattr(g, k), SORT,
                        "name")
    return json_response(PickupGroupPage(items=[_out(g) for g in items], total=total))


async def get_pickup_group(req: ApiRequest) -> web.StreamResponse:
    return json_response(_out(await _group(req)))


def _create(req: ApiRequest, tenant_id: int, body: PickupGroupCreate) -> PickupGroup:
    store = req.ctx.store
    if store.pickup_group(tenant_id, body.name) is not None:
        raise ApiProblem(409, "conflict", f"pickup group {body.name} exists already",
                         field="/name")
    group = store.add_pickup_group(tenant_id, body.name)
    if body.members:
        store.set_pickup_members(group.id, add=tuple(body.members))
    return next(g for g in store.pickup_groups(tenant_id) if g.id == group.id)


async def create_pickup_group(req: ApiRequest) -> web.StreamResponse:
    body = req.body_as(PickupGroupCreate)
    tenant = target_tenant(req, body.tenant_id)
    _members_of_tenant(req, tenant.id, body.members)
    try:
        group = await asyncio.to_thread(_create, req, tenant.id, body)
    except StoreError as exc:  # taken meanwhile
        raise ApiProblem(409, "conflict", str(exc), field="/name") from None
    return json_response(_out(group), 201,
                         headers={"Location": f"/api/v1/pickup-groups/{group.id}"})


async def delete_pickup_group(req: ApiRequest) -> web.StreamResponse:
    group = await _group(req)
    await asyncio.to_thread(req.ctx.store.remove_pickup_group, group.tenant_id, group.name)
    return web.Response(status=204)


async def add_pickup_member(req: ApiRequest) -> web.StreamResponse:
    group = await _group(req)
    user_id = req.body_as(PickupMemberAdd).user_id
    if user_id is None:
        raise ApiProblem(422, "validation_failed", "name the user (user_id)", field="/user_id",
                         errors=[FieldError(field="/user_id", code="missing",
                                            message="a user of the group's tenant")])
    _members_of_tenant(req, group.tenant_id, [user_id])
    await asyncio.to_thread(req.ctx.store.set_pickup_members, group.id, add=(user_id,))
    return json_response(_out(await _group(req)))


async def remove_pickup_member(req: ApiRequest) -> web.StreamResponse:
    group = await _group(req)
    user_id = int_param(req, "member")
    if user_id not in group.members:
        raise not_found(f"member {user_id} of pickup group {group.id}")
    await asyncio.to_thread(req.ctx.store.set_pickup_members, group.id, remove=(user_id,))
    return web.Response(status=204)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    group = {"group": {"type": "integer", "minimum": 1, "description": "a pickup group's id"}}
    member = {**group, "member": {"type": "integer", "minimum": 1,
                                  "description": "a member's user id"}}
    admin = Role.TENANT_ADMIN
    router.add(Route("GET", "/pickup-groups", list_pickup_groups, "Pickup groups of the tenant",
                     "pickup", "list_pickup_groups", query=ListQuery,
                     response=PickupGroupPage, role=admin))
    router.add(Route("POST", "/pickup-groups", create_pickup_group, "Add a pickup group",
                     "pickup", "create_pickup_group", body=PickupGroupCreate,
                     response=PickupGroupOut, status=201, role=admin, errors=(409,)))
    router.add(Route("GET", "/pickup-groups/{group}", get_pickup_group,
                     "A pickup group and its members", "pickup", "get_pickup_group",
                     response=PickupGroupOut, role=admin, path_params=group))
    router.add(Route("DELETE", "/pickup-groups/{group}", delete_pickup_group,
                     "Remove a pickup group", "pickup", "delete_pickup_group", status=204,
                     role=admin, path_params=group))
    router.add(Route("POST", "/pickup-groups/{group}/members", add_pickup_member,
                     "Add a member to a pickup group", "pickup", "add_pickup_member",
                     body=PickupMemberAdd, response=PickupGroupOut, role=admin,
                     path_params=group))
    router.add(Route("DELETE", "/pickup-groups/{group}/members/{member}", remove_pickup_member,
                     "Remove a member from a pickup group", "pickup", "remove_pickup_member",
                     status=204, role=admin, path_params=member))
