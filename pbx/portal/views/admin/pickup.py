"""``/portal/admin/pickup-groups``: call pickup groups (``*98``) — list, create, add and
remove members, delete."""

from __future__ import annotations

from aiohttp import web

from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest
from pbx.portal.views.admin import ADMIN, field, refused, users_by_id

__all__ = ["ORDER", "register"]

ORDER = 104
BASE = "/portal/admin/pickup-groups"


async def _page(pr: PortalRequest, status: int = 200, error: str = "", name: str = ""
                ) -> web.Response:
    groups = (await pr.api("list_pickup_groups", query={"limit": "500"}))["items"]
    users = await users_by_id(pr)
    return await pr.render("admin/pickup.html", status=status, groups=groups, users=users,
                           error=error, name=name)


async def list_groups(pr: PortalRequest) -> web.StreamResponse:
    return await _page(pr)


async def create(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    name = field(form, "name", 64)
    members = [int(v) for v in form.getall("members", []) if isinstance(v, str) and v.isdigit()]
    try:
        await pr.api("create_pickup_group", body={"name": name, "members": members})
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err), name)
    pr.redirect(BASE, notice="created")


async def add_member(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    user = field(form, "user_id", 20)
    try:
        await pr.api("add_pickup_member", group=pr.raw.match_info["group"],
                     body={"user_id": int(user) if user.isdigit() else None})
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect(BASE, notice="saved")


async def remove_member(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    try:
        await pr.api("remove_pickup_member", group=pr.raw.match_info["group"],
                     member=pr.raw.match_info["member"])
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect(BASE, notice="saved")


async def delete(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    try:
        await pr.api("delete_pickup_group", group=pr.raw.match_info["group"])
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect(BASE, notice="deleted")


def register(portal: Portal) -> None:
    """``/portal/admin/pickup-groups``."""
    portal.add_nav(NavItem(BASE, N_("Pickup groups"), role=ADMIN, admin=True))
    one = BASE + r"/{group:\d{1,18}}"
    portal.page("GET", BASE, list_groups, role=ADMIN)
    portal.page("POST", BASE, create, role=ADMIN)
    portal.page("POST", one + "/members", add_member, role=ADMIN)
    portal.page("POST", one + r"/members/{member:\d{1,18}}/remove", remove_member, role=ADMIN)
    portal.page("POST", one + "/delete", delete, role=ADMIN)
