"""The start page: who is signed in and what is switched on (live)."""

from __future__ import annotations

from aiohttp import web

from pbx.i18n import N_
from pbx.portal.core import NavItem, Portal, PortalRequest

__all__ = ["FORWARDS", "ORDER", "register"]

#: The place in the navigation.
ORDER = 10

#: The four forwardings: (API path name, label).
FORWARDS = (("immediate", N_("Forward all calls")), ("busy", N_("Forward when busy")),
            ("no-answer", N_("Forward on no answer")),
            ("unreachable", N_("Forward when unreachable")))


async def home(pr: PortalRequest) -> web.StreamResponse:
    if pr.who.user_id is None:  # an administrator's login without a user of their own
        pr.redirect("/portal/admin/")
    settings = await pr.api("get_all_settings", user="me")
    forward_state = {}
    for key, _label in FORWARDS:
        entry = settings.get("forward_" + key.replace("-", "_"), {})
        forward_state[key] = entry.get("target") if entry.get("enabled") else ""
    dnd = bool(settings.get("dnd", {}).get("enabled"))
    return await pr.render("home.html", forwards=FORWARDS, forward_state=forward_state, dnd=dnd)


def register(portal: Portal) -> None:
    """``/portal/``."""
    portal.add_nav(NavItem("/portal/", N_("Start")))
    portal.page("GET", "/portal/", home)
