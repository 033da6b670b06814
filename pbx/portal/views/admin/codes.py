"""``/portal/admin/feature-codes``: the feature-code table in force. Tenant admins see it;
system admins change a code (and its alternate) or reset it to the default — the table is
system-wide."""

from __future__ import annotations

from aiohttp import web

from pbx.api.auth import Role
from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest
from pbx.portal.views.admin import ADMIN, field, refused
from pbx.portal.views.codes import ARGUMENTS, DESCRIPTIONS  # the user view's words

__all__ = ["ORDER", "register"]

ORDER = 107
BASE = "/portal/admin/feature-codes"

async def _page(pr: PortalRequest, status: int = 200, error: str = "", failed: str = ""
                ) -> web.Response:
    rows = [{**r, "text": pr.t(DESCRIPTIONS[r["key"]]) if r["key"] in DESCRIPTIONS
             else r["description"],
             "argument_text": pr.t(ARGUMENTS[r["argument"]]) if r["argument"] in ARGUMENTS
             else r["argument"]}
            for r in (await pr.api("list_feature_codes", query={"limit": "500"}))["items"]]
    editable = pr.principal is not None and pr.principal.role >= Role.SYSTEM_ADMIN
    return await pr.render("admin/codes.html", status=status, rows=rows, editable=editable,
                           error=error, failed=failed)


async def table(pr: PortalRequest) -> web.StreamResponse:
    return await _page(pr)


async def change(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    key = pr.raw.match_info["key"]
    body = {"code": field(form, "code", 16), "alternate": field(form, "alternate", 16)}
    try:
        await pr.api("patch_feature_code", key=key, body=body)
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err), key)
    pr.redirect(BASE, notice="saved")


async def reset(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    key = pr.raw.match_info["key"]
    try:
        await pr.api("reset_feature_code", key=key)
    except PageError as err:
        return await _page(pr, err.status, refused(pr, err), key)
    pr.redirect(BASE, notice="saved")


def register(portal: Portal) -> None:
    """``/portal/admin/feature-codes``."""
    portal.add_nav(NavItem(BASE, N_("Feature codes"), role=ADMIN, admin=True))
    one = BASE + r"/{key:[a-z0-9_]+\.[a-z0-9_]+}"
    portal.page("GET", BASE, table, role=ADMIN)
    portal.page("POST", one, change, role=Role.SYSTEM_ADMIN)
    portal.page("POST", one + "/reset", reset, role=Role.SYSTEM_ADMIN)
