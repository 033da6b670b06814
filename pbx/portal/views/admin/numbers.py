"""``/portal/admin/numbers``: the tenant's numbers (DIDs) — list, assign to a user or a group,
release."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest
from pbx.portal.views.admin import ADMIN, field, refused, users_by_id

__all__ = ["ORDER", "register"]

ORDER = 102


async def _page(pr: PortalRequest, status: int = 200, error: str = "",
                values: dict[str, str] | None = None) -> web.Response:
    numbers = (await pr.api("list_numbers", query={"limit": "500"}))["items"]
    users = await users_by_id(pr)
    return await pr.render("admin/numbers.html", status=status, numbers=numbers, users=users,
                           error=error, values=values or {})


async def list_numbers(pr: PortalRequest) -> web.StreamResponse:
    return await _page(pr)


async def assign(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    values = {k: field(form, k, 64) for k in ("number", "user_id", "group")}
    body: dict[str, Any] = {"number": values["number"]}
    if values["user_id"].isdigit():
        body["user_id"] = int(values["user_id"])
    if values["group"]:
        body["group"] = values["group"]
    try:
        await pr.api("create_number", body=body)
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err), values)
    pr.redirect("/portal/admin/numbers", notice="saved")


async def release(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    try:
        await pr.api("delete_number", number=field(form, "number", 40))
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect("/portal/admin/numbers", notice="deleted")


def register(portal: Portal) -> None:
    """``/portal/admin/numbers``."""
    portal.add_nav(NavItem("/portal/admin/numbers", N_("Numbers"), role=ADMIN, admin=True))
    portal.page("GET", "/portal/admin/numbers", list_numbers, role=ADMIN)
    portal.page("POST", "/portal/admin/numbers", assign, role=ADMIN)
    portal.page("POST", "/portal/admin/numbers/release", release, role=ADMIN)
