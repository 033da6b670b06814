"""``/portal/admin/trunks``: the tenant's carrier trunks and their registration state — list,
add, remove. A trunk's password goes in and never comes out."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest
from pbx.portal.views.admin import ADMIN, field, refused

__all__ = ["ORDER", "register"]

ORDER = 105
BASE = "/portal/admin/trunks"
TEXT = ("name", "host", "username", "password", "realm", "allowed_sources")


async def _page(pr: PortalRequest, status: int = 200, error: str = "",
                values: dict[str, str] | None = None) -> web.Response:
    trunks = (await pr.api("list_trunks", query={"limit": "500"}))["items"]
    return await pr.render("admin/trunks.html", status=status, trunks=trunks, error=error,
                           values=values or {})


async def list_trunks(pr: PortalRequest) -> web.StreamResponse:
    return await _page(pr)


async def add(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    values = {k: field(form, k, 300) for k in (*TEXT, "kind", "port", "transport",
                                                "register_expiry")}
    body: dict[str, Any] = {k: values[k] for k in TEXT if values[k] and k != "allowed_sources"}
    body["kind"] = values["kind"] or "register"
    body["transport"] = values["transport"] or "udp"
    if values["allowed_sources"]:
        body["allowed_sources"] = [s.strip() for s in values["allowed_sources"].split(",")
                                   if s.strip()]
    for key in ("port", "register_expiry"):
        if values[key]:
            body[key] = int(values[key]) if values[key].isdigit() else values[key]
    body["trusted"] = form.get("trusted") == "on"
    try:
        await pr.api("create_trunk", body=body)
    except PageError as err:
        values.pop("password", None)
        return await _page(pr, err.status, refused(pr, err), values)
    pr.redirect(BASE, notice="created")


async def remove(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    try:
        await pr.api("delete_trunk", trunk=pr.raw.match_info["trunk"])
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect(BASE, notice="deleted")


def register(portal: Portal) -> None:
    """``/portal/admin/trunks``."""
    portal.add_nav(NavItem(BASE, N_("Trunks"), role=ADMIN, admin=True))
    portal.page("GET", BASE, list_trunks, role=ADMIN)
    portal.page("POST", BASE, add, role=ADMIN)
    portal.page("POST", BASE + r"/{trunk:\d{1,18}}/delete", remove, role=ADMIN)
