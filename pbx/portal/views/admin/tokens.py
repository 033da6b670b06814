"""``/portal/admin/tokens``: API tokens of the tenant — list, create (the token is shown once,
on the page answering the creation), revoke."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pbx.api.auth import Role
from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest
from pbx.portal.views.admin import ADMIN, field, refused, users_by_id
from pbx.portal.views.admin.users import ROLES

__all__ = ["ORDER", "register"]

ORDER = 108
BASE = "/portal/admin/tokens"


async def _page(pr: PortalRequest, status: int = 200, error: str = "",
                created: Mapping[str, Any] | None = None) -> web.Response:
    tokens = (await pr.api("list_tokens", query={"limit": "500"}))["items"]
    users = await users_by_id(pr)
    mine = pr.principal.role if pr.principal is not None else Role.USER
    roles = [(k, label) for k, label in ROLES if Role.parse(k) <= mine]
    return await pr.render("admin/tokens.html", status=status, tokens=tokens, users=users,
                           roles=roles, error=error, created=created)


async def list_tokens(pr: PortalRequest) -> web.StreamResponse:
    return await _page(pr)


async def create(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    body: dict[str, Any] = {"name": field(form, "name", 64), "role": field(form, "role", 20)}
    user = field(form, "user_id", 20)
    if user.isdigit():
        body["user_id"] = int(user)
    days = field(form, "days", 10)
    if days:
        try:
            body["days"] = float(days)
        except ValueError:
            body["days"] = days
    try:
        created = await pr.api("create_token", body=body)
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    return await _page(pr, 201, created=created)


async def revoke(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    try:
        await pr.api("revoke_token", token=pr.raw.match_info["token"])
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect(BASE, notice="deleted")


def register(portal: Portal) -> None:
    """``/portal/admin/tokens``."""
    portal.add_nav(NavItem(BASE, N_("API tokens"), role=ADMIN, admin=True))
    portal.page("GET", BASE, list_tokens, role=ADMIN)
    portal.page("POST", BASE, create, role=ADMIN)
    portal.page("POST", BASE + r"/{token:\d{1,18}}/revoke", revoke, role=ADMIN)
