"""``/portal/admin/devices``: users' devices (SIP accounts) — list (all, or one user's), add a
device, new credentials, remove. The SIP password is shown once, on the page that answers the
creation (or the new password), with what a phone needs besides: the SIP domain, the server
and the username. The store keeps only digests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest
from pbx.portal.views.admin import ADMIN, field, refused, users_by_id

__all__ = ["ORDER", "register"]

ORDER = 103
KINDS = (("softphone", N_("Software phone")), ("desk", N_("Desk phone")),
         ("mobile", N_("Mobile phone")), ("browser", N_("Browser phone")))


def _servers(pr: PortalRequest) -> list[str]:
    sip = pr.portal.phone().get("sip", [])
    return [str(s) for s in sip] if isinstance(sip, list) else []


async def _page(pr: PortalRequest, status: int = 200, error: str = "",
                created: Mapping[str, Any] | None = None,
                values: Mapping[str, str] | None = None) -> web.Response:
    users = await users_by_id(pr)
    chosen = pr.raw.query.get("user", "")
    if created is not None:
        chosen = str(created["user_id"])
    devices = (await pr.api("list_devices", query={"limit": "500"}))["items"]
    shown = [d for d in devices if not chosen or str(d["user_id"]) == chosen]
    return await pr.render("admin/devices.html", status=status, users=users, devices=shown,
                           chosen=chosen, kinds=KINDS, error=error, created=created,
                           servers=_servers(pr), values=values or {})


async def list_devices(pr: PortalRequest) -> web.StreamResponse:
    return await _page(pr)


async def add_device(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    values = {k: field(form, k, 64) for k in ("user_id", "username", "kind")}
    body: dict[str, Any] = {"username": values["username"], "kind": values["kind"] or "softphone",
                            "user_id": int(values["user_id"]) if values["user_id"].isdigit()
                            else 0}
    try:
        created = await pr.api("create_device", body=body)
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err), values=values)
    # the password is on this answer only: a reload does not show it again
    return await _page(pr, 201, created=created)


async def new_password(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    try:
        created = await pr.api("new_device_password", device=pr.raw.match_info["device"],
                               body={})
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    return await _page(pr, created=created)


async def remove(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    device = await pr.api("get_device", device=pr.raw.match_info["device"])
    try:
        await pr.api("delete_device", device=device["id"])
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect(f"/portal/admin/devices?user={device['user_id']}", notice="deleted")


def register(portal: Portal) -> None:
    """``/portal/admin/devices``."""
    portal.add_nav(NavItem("/portal/admin/devices", N_("Devices"), role=ADMIN, admin=True))
    one = r"/portal/admin/devices/{device:\d{1,18}}"
    portal.page("GET", "/portal/admin/devices", list_devices, role=ADMIN)
    portal.page("POST", "/portal/admin/devices", add_device, role=ADMIN)
    portal.page("POST", one + "/password", new_password, role=ADMIN)
    portal.page("POST", one + "/delete", remove, role=ADMIN)
