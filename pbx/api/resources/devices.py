"""``/devices``: users' SIP accounts. The SIP password is in the answer of the POST that made
the device, once; the store keeps only its digests (HA1), which never leave the server."""

from __future__ import annotations

import asyncio
import secrets

from aiohttp import web

from pbx.api.auth import Role
from pbx.api.models import (
    DeviceCreate,
    DeviceCreated,
    DeviceOut,
    DevicePage,
    DevicePassword,
    ListQuery,
)
from pbx.api.resources.common import int_param, not_found, page, tenant_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.store import Device

__all__ = ["register"]

SORT = ("id", "username", "user_id", "kind")


def device_out(d: Device) -> DeviceOut:
    """The API form of a device (no digests)."""
    return DeviceOut(id=d.id, user_id=d.user_id, username=d.username, realm=d.realm,
                     kind=d.kind, mobile=d.mobile)  # type: ignore[arg-type]


def _visible(req: ApiRequest) -> list[Device]:
    directory = req.ctx.directory
    out = []
    for devices in directory.snapshot.devices_of.values():
        for d in devices:
            user = directory.user_by_id(d.user_id)
            if user is not None and req.who.sees_user(user):
                out.append(d)
    return out


def _device(req: ApiRequest) -> Device:
    device_id = int_param(req, "device")
    found = next((d for d in _visible(req) if d.id == device_id), None)
    if found is None:
        raise not_found(f"device {device_id}")
    return found


async def list_devices(req: ApiRequest) -> web.StreamResponse:
    items, total = page(_visible(req), req.query_as(ListQuery), lambda d, k: getattr(d, k),
                        SORT, "username")
    return json_response(DevicePage(items=[device_out(d) for d in items], total=total))


async def get_device(req: ApiRequest) -> web.StreamResponse:
    return json_response(device_out(_device(req)), etag=True)


async def create_device(req: ApiRequest) -> web.StreamResponse:
    body = req.body_as(DeviceCreate)
    user = req.ctx.directory.user_by_id(body.user_id)
    if user is None or not req.who.sees_user(user):
        raise not_found(f"user {body.user_id}")
    tenant = tenant_of(req, user.tenant_id)
    password = body.password or secrets.token_urlsafe(18)
    d = await asyncio.to_thread(req.ctx.store.add_device, user.extension, body.username,
                                password, tenant=tenant.name, kind=body.kind)
    out = DeviceCreated(**device_out(d).model_dump(), password=password, domain=tenant.domain)
    return json_response(out, 201, headers={"Location": f"/api/v1/devices/{d.id}"})


async def new_password(req: ApiRequest) -> web.StreamResponse:
    d = _device(req)
    user = req.ctx.directory.user_by_id(d.user_id)
    assert user is not None
    tenant = tenant_of(req, user.tenant_id)
    password = req.body_as(DevicePassword).password or secrets.token_urlsafe(18)
    changed = await asyncio.to_thread(req.ctx.store.set_device_password, d.username, password,
                                      tenant=tenant.name)
    return json_response(DeviceCreated(**device_out(changed).model_dump(), password=password,
                                       domain=tenant.domain))


async def delete_device(req: ApiRequest) -> web.StreamResponse:
    d = _device(req)
    user = req.ctx.directory.user_by_id(d.user_id)
    assert user is not None
    await asyncio.to_thread(req.ctx.store.remove_device, d.username,
                            tenant=tenant_of(req, user.tenant_id).name)
    return web.Response(status=204)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    param = {"device": {"type": "integer", "minimum": 1}}
    router.add(Route("GET", "/devices", list_devices, "Devices the token sees", "devices",
                     "list_devices", query=ListQuery, response=DevicePage))
    router.add(Route("POST", "/devices", create_device,
                     "Add a SIP device to a user (the password is shown once)", "devices",
                     "create_device", body=DeviceCreate, response=DeviceCreated, status=201,
                     role=Role.TENANT_ADMIN, errors=(409,)))
    router.add(Route("GET", "/devices/{device}", get_device, "A device", "devices",
                     "get_device", response=DeviceOut, etag=True, path_params=param))
    router.add(Route("POST", "/devices/{device}/password", new_password,
                     "New SIP credentials for a device (the password is shown once); phones "
                     "with the old one must be set up again", "devices", "new_device_password",
                     body=DevicePassword, response=DeviceCreated, path_params=param))
    router.add(Route("DELETE", "/devices/{device}", delete_device, "Remove a device", "devices",
                     "delete_device", status=204, role=Role.TENANT_ADMIN, path_params=param))
