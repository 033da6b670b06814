"""``/portal/admin/webhooks``: webhook endpoints — list, create (the signing secret is shown
once), disable and (re-)enable (with the reason the failure rule gave when it disabled one),
send a test event, delete — and each endpoint's delivery log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest
from pbx.portal.views.admin import ADMIN, field, refused

__all__ = ["ORDER", "register"]

ORDER = 109
BASE = "/portal/admin/webhooks"


async def _page(pr: PortalRequest, status: int = 200, error: str = "",
                created: Mapping[str, Any] | None = None,
                values: Mapping[str, str] | None = None) -> web.Response:
    hooks = (await pr.api("list_webhooks", query={"limit": "500"}))["items"]
    return await pr.render("admin/webhooks.html", status=status, hooks=hooks, error=error,
                           created=created, values=values or {})


async def list_hooks(pr: PortalRequest) -> web.StreamResponse:
    return await _page(pr)


async def create(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    values = {k: field(form, k, 2000) for k in ("url", "event_types", "description")}
    types = [t.strip() for t in values["event_types"].replace(",", " ").split() if t.strip()]
    body = {"url": values["url"], "event_types": types, "description": values["description"]}
    try:
        created = await pr.api("create_webhook", body=body)
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err), values=values)
    return await _page(pr, 201, created=created)


async def _change(pr: PortalRequest, body: Mapping[str, Any]) -> web.StreamResponse:
    await pr.form()
    hook = pr.raw.match_info["webhook"]
    try:
        await pr.api("patch_webhook", webhook=hook, body=dict(body))
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect(BASE, notice="saved")


async def enable(pr: PortalRequest) -> web.StreamResponse:
    return await _change(pr, {"enabled": True})


async def disable(pr: PortalRequest) -> web.StreamResponse:
    return await _change(pr, {"enabled": False})


async def test(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    hook = pr.raw.match_info["webhook"]
    try:
        await pr.api("test_webhook", webhook=hook)
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect(f"{BASE}/{hook}", notice="sent")


async def delete(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    try:
        await pr.api("delete_webhook", webhook=pr.raw.match_info["webhook"])
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err))
    pr.redirect(BASE, notice="deleted")


async def deliveries(pr: PortalRequest) -> web.StreamResponse:
    hook_id = pr.raw.match_info["webhook"]
    hook = await pr.api("get_webhook", webhook=hook_id)
    log = await pr.api("list_webhook_deliveries", webhook=hook_id, query={"limit": "100"})
    return await pr.render("admin/webhook.html", hook=hook, deliveries=log["items"],
                           total=log["total"])


def register(portal: Portal) -> None:
    """``/portal/admin/webhooks`` and ``/portal/admin/webhooks/{id}`` (the delivery log)."""
    portal.add_nav(NavItem(BASE, N_("Webhooks"), role=ADMIN, admin=True))
    one = BASE + r"/{webhook:\d{1,18}}"
    portal.page("GET", BASE, list_hooks, role=ADMIN)
    portal.page("POST", BASE, create, role=ADMIN)
    portal.page("GET", one, deliveries, role=ADMIN)
    portal.page("POST", one + "/enable", enable, role=ADMIN)
    portal.page("POST", one + "/disable", disable, role=ADMIN)
    portal.page("POST", one + "/test", test, role=ADMIN)
    portal.page("POST", one + "/delete", delete, role=ADMIN)
