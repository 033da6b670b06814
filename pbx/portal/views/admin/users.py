"""``/portal/admin/users``: the tenant's users — list, create (extension, name, e-mail, mobile
and remote office numbers, language), edit, delete — and each user's portal password and
role."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pbx.api.auth import Role
from pbx.i18n import N_
from pbx.portal.core import NavItem, PageError, Portal, PortalRequest
from pbx.portal.views.admin import ADMIN, field, refused

__all__ = ["ORDER", "register"]

ORDER = 101
#: The editable fields of a user: (form and API name, label, input type).
FIELDS = (("extension", N_("Extension"), "text"), ("name", N_("Name"), "text"),
          ("email", N_("E-mail"), "email"), ("mobile_number", N_("Mobile number"), "tel"),
          ("remote_office_number", N_("Remote office number"), "tel"))
ROLES = (("user", N_("User")), ("tenant_admin", N_("Company administrator")),
         ("system_admin", N_("System administrator")))


def _body(form: Mapping[str, Any], *, new: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, _label, _kind in FIELDS:
        if name == "extension" and not new:
            continue
        value = field(form, name, 200)
        if name in ("mobile_number", "remote_office_number"):
            if value or not new:
                body[name] = value or None
        elif value or not new:
            body[name] = value
    language = field(form, "language", 8)
    if language:
        body["language"] = language
    return body


async def _list(pr: PortalRequest, status: int = 200, error: str = "",
                values: Mapping[str, str] | None = None) -> web.Response:
    users = (await pr.api("list_users", query={"limit": "500"}))["items"]
    return await pr.render("admin/users.html", status=status, users=users, fields=FIELDS,
                           error=error, values=values or {})


async def list_users(pr: PortalRequest) -> web.StreamResponse:
    return await _list(pr)


async def create_user(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    try:
        user = await pr.api("create_user", body=_body(form, new=True))
    except PageError as err:
        values = {name: field(form, name, 200) for name, _l, _k in FIELDS}
        values["language"] = field(form, "language", 8)
        return await _list(pr, err.status, refused(pr, err), values)
    pr.redirect(f"/portal/admin/users/{user['id']}", notice="created")


async def _edit(pr: PortalRequest, status: int = 200, error: str = "",
                password_error: str = "") -> web.Response:
    user_id = pr.raw.match_info["user"]
    user = await pr.api("get_user", user=user_id)
    login = await pr.api("get_portal_login", user=user_id)
    devices = [d for d in (await pr.api("list_devices", query={"limit": "500"}))["items"]
               if d["user_id"] == user["id"]]
    numbers = [n for n in (await pr.api("list_numbers", query={"limit": "500"}))["items"]
               if n["user_id"] == user["id"]]
    roles = [(k, label) for k, label in ROLES
             if k != "system_admin" or (pr.principal is not None
                                        and pr.principal.role >= Role.SYSTEM_ADMIN)]
    return await pr.render("admin/user.html", status=status, user=user, login=login,
                           devices=devices, numbers=numbers, fields=FIELDS, roles=roles,
                           error=error, password_error=password_error)


async def edit_user(pr: PortalRequest) -> web.StreamResponse:
    return await _edit(pr)


async def save_user(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    user_id = pr.raw.match_info["user"]
    try:
        await pr.api("patch_user", user=user_id, body=_body(form, new=False))
    except PageError as err:
        return await _edit(pr, err.status, refused(pr, err))
    pr.redirect(f"/portal/admin/users/{user_id}", notice="saved")


async def set_password(pr: PortalRequest) -> web.StreamResponse:
    form = await pr.form()
    user_id = pr.raw.match_info["user"]
    body: dict[str, Any] = {"password": field(form, "password", 1024)}
    role = field(form, "role", 20)
    if role:
        body["role"] = role
    try:
        await pr.api("set_password", user=user_id, body=body)
    except PageError as err:
        return await _edit(pr, err.status, password_error=refused(pr, err))
    pr.redirect(f"/portal/admin/users/{user_id}", notice="saved")


async def delete_user(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    user_id = pr.raw.match_info["user"]
    try:
        await pr.api("delete_user", user=user_id)
    except PageError as err:
        return await _edit(pr, err.status, refused(pr, err))
    pr.redirect("/portal/admin/users", notice="deleted")


def register(portal: Portal) -> None:
    """``/portal/admin/users`` and ``/portal/admin/users/{id}``."""
    portal.add_nav(NavItem("/portal/admin/users", N_("Users"), role=ADMIN, admin=True))
    one = r"/portal/admin/users/{user:\d{1,18}}"
    portal.page("GET", "/portal/admin/users", list_users, role=ADMIN)
    portal.page("POST", "/portal/admin/users", create_user, role=ADMIN)
    portal.page("GET", one, edit_user, role=ADMIN)
    portal.page("POST", one, save_user, role=ADMIN)
    portal.page("POST", one + "/password", set_password, role=ADMIN)
    portal.page("POST", one + "/delete", delete_user, role=ADMIN)
