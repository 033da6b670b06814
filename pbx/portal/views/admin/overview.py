"""``/portal/admin/``: the system's health now — active calls, registrations, trunk states —
refreshed live on ``call.*``, ``registration.*`` and ``trunk.state`` events."""

from __future__ import annotations

from aiohttp import web

from pbx.i18n import N_
from pbx.portal.core import NavItem, Portal, PortalRequest
from pbx.portal.views.admin import ADMIN, users_by_id

__all__ = ["ORDER", "register"]

ORDER = 100


async def overview(pr: PortalRequest) -> web.StreamResponse:
    health = await pr.api("system_health")
    registrations = (await pr.api("list_registrations", query={"limit": "500"}))["items"]
    calls = (await pr.api("list_calls", query={"limit": "500"}))["items"]
    users = await users_by_id(pr)
    return await pr.render("admin/overview.html", health=health, registrations=registrations,
                           calls=calls, users=users)


def register(portal: Portal) -> None:
    """``/portal/admin/``."""
    portal.add_nav(NavItem("/portal/admin/", N_("Overview"), role=ADMIN, admin=True))
    portal.page("GET", "/portal/admin/", overview, role=ADMIN)
    portal.page("GET", "/portal/admin", overview, role=ADMIN)
