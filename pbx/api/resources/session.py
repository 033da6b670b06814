"""``/session`` and ``/users/{user}/password``: portal logins for the browser.

``POST /session`` logs in (tenant + extension, or ``login`` as ``EXT@DOMAIN``, and the
password) and sets the session cookie; ``GET /session`` tells who the session is and its CSRF
token (for the page's ``X-CSRF-Token`` header); ``DELETE /session`` logs out. The rules of
logins, throttling, cookies and CSRF are in :mod:`pbx.api.logins`.

``PUT /users/{user}/password`` sets a portal password: the user themselves with their old
password, or an admin who sees the user (a tenant admin may not set the password of a login
with a higher role). A new password ends the user's other sessions.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field, model_validator

from pbx.api.auth import Role
from pbx.api.logins import SessionPolicy, account_key, check_origin, login, set_cookie
from pbx.api.passwords import MAX_PASSWORD, MIN_PASSWORD
from pbx.api.problems import ApiProblem
from pbx.api.resources.common import USER_PARAM, user_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.store.logins import PortalSession

__all__ = ["register"]

RoleName = Literal["user", "tenant_admin", "system_admin"]
Password = Annotated[str, Field(min_length=1, max_length=1024)]


class LoginRequest(BaseModel):
    """A login: ``tenant`` (default: the default tenant) and ``extension``, or ``login``
    (``EXT@DOMAIN``), and the password."""

    model_config = {"extra": "forbid", "strict": True}

    tenant: Annotated[str, Field(max_length=64)] | None = None
    extension: Annotated[str, Field(max_length=32)] | None = None
    login: Annotated[str, Field(max_length=160)] | None = None
    password: Password

    @model_validator(mode="after")
    def _one_name(self) -> LoginRequest:
        if (self.login is None) == (self.extension is None):
            raise ValueError("send either extension (and tenant) or login")
        return self


class SessionOut(BaseModel):
    """The session: who it is, the CSRF token to send as X-CSRF-Token with every change,
    and when it ends."""

    user_id: int
    tenant_id: int
    role: RoleName
    csrf_token: str
    expires_at: float
    idle_timeout: float


class PasswordSet(BaseModel):
    """A new portal password (``old_password``: required when users change their own);
    ``role``: the login's portal role (admins only, at most their own; default: unchanged,
    ``user`` for a new login)."""

    model_config = {"extra": "forbid", "strict": True}

    password: Annotated[str, Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]
    old_password: Password | None = None
    role: RoleName | None = None


class PortalLoginOut(BaseModel):
    """A user's portal login: whether a password is set, its role, when it last changed."""

    user_id: int
    has_password: bool
    role: RoleName | None
    changed_at: float | None


def _out(session: PortalSession, policy: SessionPolicy) -> SessionOut:
    return SessionOut(user_id=session.user_id, tenant_id=session.tenant_id,
                      role=session.role,  # type: ignore[arg-type]
                      csrf_token=session.csrf_token, expires_at=session.expires_at,
                      idle_timeout=policy.idle)


async def create_session(req: ApiRequest) -> web.StreamResponse:
    body = req.body_as(LoginRequest)
    check_origin(req.raw, required=False)  # login CSRF: a foreign page may not log one in
    ctx = req.ctx
    session_id, session = await login(
        ctx.store, ctx.passwords, ctx.bans, ctx.sessions, source=req.raw.remote or "",
        password=body.password, now=ctx.clock(), tenant=body.tenant,
        extension=body.extension, login_name=body.login)
    response = json_response(_out(session, ctx.sessions), 201)
    set_cookie(response, req.raw, session_id, ctx.sessions.lifetime)
    return response


def _session_of(req: ApiRequest) -> PortalSession:
    who = req.who
    if who.session_id is None:
        raise ApiProblem(404, "not_found", "no session: this request carries an API token")
    session = req.ctx.store.portal_session_by_id(who.session_id)
    if session is None:
        raise ApiProblem(404, "not_found", "no session")
    return session


async def get_session(req: ApiRequest) -> web.StreamResponse:
    session = await asyncio.to_thread(_session_of, req)
    return json_response(_out(session, req.ctx.sessions))


async def delete_session(req: ApiRequest) -> web.StreamResponse:
    session = await asyncio.to_thread(_session_of, req)
    await asyncio.to_thread(req.ctx.store.end_portal_session, session.id)
    response = web.Response(status=204)
    set_cookie(response, req.raw, "", 0)
    return response


async def set_password(req: ApiRequest) -> web.StreamResponse:
    body = req.body_as(PasswordSet)
    who = req.who
    user = user_of(req)
    ctx = req.ctx
    current = await asyncio.to_thread(ctx.store.portal_login, user.id)
    if body.role is not None:
        who.require(Role.TENANT_ADMIN, "setting a portal role")
        if Role.parse(body.role) > who.role:
            raise ApiProblem(403, "forbidden", f"a {who.role.label} cannot give the "
                                               f"{body.role} role", field="/role")
        if who.user_id == user.id and Role.parse(body.role) < who.role:
            raise ApiProblem(409, "conflict", "you cannot lower your own role", field="/role")
    if who.role >= Role.TENANT_ADMIN and (who.user_id != user.id or body.old_password is None):
        if current is not None and Role.parse(current.role) > who.role:
            raise ApiProblem(403, "forbidden", "this login has a higher role than yours")
    else:
        if body.old_password is None:
            raise ApiProblem(422, "old_password_required",
                             "changing your own password needs old_password",
                             field="/old_password")
        ok = await asyncio.to_thread(ctx.passwords.verify,
                                     current.password_hash if current else None,
                                     body.old_password)
        if not ok:
            now = ctx.clock()
            tenant = ctx.directory.tenant(user.tenant_id)
            ctx.bans.failed(req.raw.remote or "", account_key(
                tenant.name if tenant else "", user.extension), now)
            raise ApiProblem(403, "wrong_password", "old_password is wrong",
                             field="/old_password")
    new_hash = await asyncio.to_thread(ctx.passwords.hash, body.password)
    await asyncio.to_thread(ctx.store.set_portal_password, user.id, new_hash, now=ctx.clock(),
                            role=body.role,
                            keep_session=who.session_id if who.user_id == user.id else None)
    return web.Response(status=204)


async def get_portal_login(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    found = await asyncio.to_thread(req.ctx.store.portal_login, user.id)
    return json_response(PortalLoginOut(
        user_id=user.id, has_password=found is not None,
        role=found.role if found is not None else None,  # type: ignore[arg-type]
        changed_at=found.changed_at if found is not None else None))


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    router.add(Route("POST", "/session", create_session,
                     "Log in to the portal (sets the session cookie)", "accounts",
                     "login", body=LoginRequest, response=SessionOut, status=201, role=None,
                     errors=(401, 403, 429),
                     description="Same answer for an unknown user and a wrong password; "
                                 "failures count toward the source's ban like SIP ones."))
    router.add(Route("GET", "/session", get_session,
                     "The portal session: who, its CSRF token, when it ends", "accounts",
                     "get_session", response=SessionOut))
    router.add(Route("DELETE", "/session", delete_session, "Log out (ends the session)",
                     "accounts", "logout", status=204))
    router.add(Route("PUT", "/users/{user}/password", set_password,
                     "Set a user's portal password", "users", "set_password",
                     body=PasswordSet, status=204, path_params=USER_PARAM,
                     description="Users change their own with old_password; an admin sets "
                                 "any of their tenant's, and with role the login's portal "
                                 "role (at most their own). Ends the user's other sessions."))
    router.add(Route("GET", "/users/{user}/portal-login", get_portal_login,
                     "Whether a user has a portal password, and their portal role", "users",
                     "get_portal_login", response=PortalLoginOut, path_params=USER_PARAM))
