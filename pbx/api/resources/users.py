"""``/me``, ``/tenants`` and ``/users``: who the token is, the tenants it sees, and users (list,
create, read, PATCH with ETag/If-Match, delete) — through the store, like the CLI."""

from __future__ import annotations

import asyncio

from aiohttp import web

from pbx.api.auth import Role
from pbx.api.models import (
    ListQuery,
    TenantCreate,
    TenantOut,
    TenantPage,
    UserCreate,
    UserOut,
    UserPage,
    UserPatch,
    WhoAmI,
)
from pbx.api.problems import ApiProblem
from pbx.api.resources.common import (
    USER_PARAM,
    int_param,
    page,
    target_tenant,
    tenant_of,
    user_of,
)
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.store import DEFAULT_TENANT, Tenant, User

__all__ = ["register", "user_out"]

USER_SORT = ("id", "extension", "name", "email", "language")
#: Fields of a user only a tenant admin may change.
ADMIN_FIELDS = frozenset({"permission", "premium_allowed"})


def user_out(user: User) -> UserOut:
    """The API form of a user."""
    return UserOut(id=user.id, tenant_id=user.tenant_id, extension=user.extension,
                   name=user.name, email=user.email, language=user.language,  # type: ignore[arg-type]
                   mobile_number=user.mobile_number,
                   remote_office_number=user.remote_office_number,
                   permission=user.permission.value,  # type: ignore[arg-type]
                   premium_allowed=user.premium_allowed,
                   has_voicemail_pin=user.has_voicemail_pin)


def tenant_out(t: Tenant) -> TenantOut:
    """The API form of a tenant."""
    return TenantOut(id=t.id, name=t.name, company=t.company, domain=t.domain, realm=t.realm,
                     ext_min_len=t.ext_min_len, ext_max_len=t.ext_max_len,
                     main_number=t.main_number, country_code=t.country_code,
                     area_code=t.area_code, language=t.language)  # type: ignore[arg-type]


async def whoami(req: ApiRequest) -> web.StreamResponse:
    who = req.who
    tenant = req.ctx.directory.tenant(who.tenant_id) if who.tenant_id is not None else None
    return json_response(WhoAmI(token_id=who.token_id, role=who.role.label,  # type: ignore[arg-type]
                                tenant_id=who.tenant_id, tenant=tenant.name if tenant else None,
                                user_id=who.user_id))


async def list_tenants(req: ApiRequest) -> web.StreamResponse:
    query = req.query_as(ListQuery)
    seen = [t for t in req.ctx.directory.snapshot.tenants.values()
            if req.who.sees_tenant(t.id)]
    items, total = page(seen, query, lambda t, k: getattr(t, k), ("id", "name", "domain"), "id")
    return json_response(TenantPage(items=[tenant_out(t) for t in items], total=total))


async def get_tenant(req: ApiRequest) -> web.StreamResponse:
    return json_response(tenant_out(tenant_of(req, int_param(req, "tenant"))), etag=True)


async def create_tenant(req: ApiRequest) -> web.StreamResponse:
    body = req.body_as(TenantCreate)
    t = await asyncio.to_thread(
        req.ctx.store.add_tenant, body.name, body.domain, company=body.company,
        realm=body.realm, ext_min_len=body.ext_min_len, ext_max_len=body.ext_max_len,
        main_number=body.main_number, country_code=body.country_code, area_code=body.area_code,
        language=body.language)
    return json_response(tenant_out(t), 201, etag=True,
                         headers={"Location": f"/api/v1/tenants/{t.id}"})


async def delete_tenant(req: ApiRequest) -> web.StreamResponse:
    t = tenant_of(req, int_param(req, "tenant"))
    req.check_etag(json_response(tenant_out(t), etag=True).headers["ETag"])
    if t.name == DEFAULT_TENANT:
        raise ApiProblem(409, "conflict", "the default tenant stays (single-company mode and "
                                          "requests to the server's address belong to it)")
    await asyncio.to_thread(req.ctx.store.remove_tenant, t.name)
    req.ctx.token_cache.clear()  # its tokens went with it
    return web.Response(status=204)


async def list_users(req: ApiRequest) -> web.StreamResponse:
    query = req.query_as(ListQuery)
    seen = [u for u in req.ctx.directory.snapshot.users.values() if req.who.sees_user(u)]
    items, total = page(seen, query, lambda u, k: getattr(u, k), USER_SORT, "extension")
    return json_response(UserPage(items=[user_out(u) for u in items], total=total))


async def create_user(req: ApiRequest) -> web.StreamResponse:
    body = req.body_as(UserCreate)
    tenant = target_tenant(req, body.tenant_id)
    user = await asyncio.to_thread(
        req.ctx.store.add_user, body.extension, None, None, body.name, tenant=tenant.name,
        email=body.email,
        language=body.language, voicemail_pin=body.voicemail_pin,
        mobile_number=body.mobile_number, remote_office_number=body.remote_office_number,
        permission=body.permission, premium_allowed=body.premium_allowed)
    return json_response(user_out(user), 201, etag=True,
                         headers={"Location": f"/api/v1/users/{user.id}"})


async def get_user(req: ApiRequest) -> web.StreamResponse:
    return json_response(user_out(user_of(req)), etag=True)


async def patch_user(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    body = req.body_as(UserPatch)
    sent = body.model_fields_set
    if sent & ADMIN_FIELDS:
        req.who.require(Role.TENANT_ADMIN, "changing " + ", ".join(sorted(sent & ADMIN_FIELDS)))
    req.check_etag(json_response(user_out(user), etag=True).headers["ETag"])
    for key in sent & {"name", "email", "language", "permission", "premium_allowed"}:
        if getattr(body, key) is None:
            raise ApiProblem(422, "validation_failed", f"{key} cannot be null", field=f"/{key}")
    tenant = tenant_of(req, user.tenant_id)
    changes = {k: getattr(body, k) for k in sent}
    updated = await asyncio.to_thread(req.ctx.store.update_user, user.extension,
                                      tenant=tenant.name, **changes) if changes else user
    return json_response(user_out(updated), etag=True)


async def delete_user(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    req.check_etag(json_response(user_out(user), etag=True).headers["ETag"])
    tenant = tenant_of(req, user.tenant_id)
    await asyncio.to_thread(req.ctx.store.remove_user, user.extension, tenant=tenant.name)
    req.ctx.token_cache.clear()  # the user's tokens went with them
    return web.Response(status=204)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    tenant_param = {"tenant": {"type": "integer", "minimum": 1}}
    for route in (
        Route("GET", "/me", whoami, "The token's role, tenant and user", "accounts", "whoami",
              response=WhoAmI),
        Route("GET", "/tenants", list_tenants, "Tenants the token sees", "accounts",
              "list_tenants", query=ListQuery, response=TenantPage),
        Route("GET", "/tenants/{tenant}", get_tenant, "A tenant", "accounts", "get_tenant",
              response=TenantOut, etag=True, path_params=tenant_param),
        Route("POST", "/tenants", create_tenant, "Create a tenant", "accounts",
              "create_tenant", body=TenantCreate, response=TenantOut, status=201,
              role=Role.SYSTEM_ADMIN, errors=(409,)),
        Route("DELETE", "/tenants/{tenant}", delete_tenant,
              "Delete a tenant with all its users, numbers and trunks", "accounts",
              "delete_tenant", status=204, role=Role.SYSTEM_ADMIN, etag=True,
              path_params=tenant_param, errors=(409, 412)),
        Route("GET", "/users", list_users, "Users the token sees", "users", "list_users",
              query=ListQuery, response=UserPage),
        Route("POST", "/users", create_user, "Create a user", "users", "create_user",
              body=UserCreate, response=UserOut, status=201, role=Role.TENANT_ADMIN,
              errors=(409,)),
        Route("GET", "/users/{user}", get_user, "A user", "users", "get_user",
              response=UserOut, etag=True, path_params=USER_PARAM),
        Route("PATCH", "/users/{user}", patch_user, "Change a user", "users", "patch_user",
              body=UserPatch, response=UserOut, etag=True, path_params=USER_PARAM,
              errors=(412,)),
        Route("DELETE", "/users/{user}", delete_user,
              "Delete a user with their devices, numbers, settings and history", "users",
              "delete_user", status=204, role=Role.TENANT_ADMIN, path_params=USER_PARAM,
              errors=(412,)),
    ):
        router.add(route)
