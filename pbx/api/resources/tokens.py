"""``/tokens``: API tokens managed through the API — an admin makes tokens of at most their own
role for what they see (a tenant admin: their tenant and its users); the token is in the
answer of the POST once, only its SHA-256 is stored. Everyone may list and revoke their
tenant's tokens as an admin; a plain user sees only their own."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field, StrictInt

from pbx.api.auth import Role
from pbx.api.models import ListQuery, Page, Request
from pbx.api.problems import ApiProblem
from pbx.api.resources.common import int_param, not_found, page, target_tenant
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.store import ApiToken

__all__ = ["register"]

RoleName = Literal["user", "tenant_admin", "system_admin"]


class TokenOut(BaseModel):
    """A token's record (never the token)."""

    id: int
    name: str
    role: RoleName
    tenant_id: int | None
    user_id: int | None
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked: bool


class TokenPage(Page[TokenOut]):
    """Tokens."""


class TokenCreate(Request):
    """A new token: its role (at most the caller's), tenant (default: the caller's), user
    (for a user token), lifetime and what it is for."""

    role: RoleName
    tenant_id: StrictInt | None = None
    user_id: StrictInt | None = None
    days: Annotated[float, Field(gt=0, le=3650)] | None = None
    name: Annotated[str, Field(max_length=64)] = ""


class TokenCreated(TokenOut):
    """The new token, shown this once."""

    token: str


def token_out(t: ApiToken) -> TokenOut:
    """The API form of a token record."""
    return TokenOut(id=t.id, name=t.name, role=t.role,  # type: ignore[arg-type]
                    tenant_id=t.tenant_id, user_id=t.user_id, created_at=t.created_at,
                    expires_at=t.expires_at, last_used_at=t.last_used_at, revoked=t.revoked)


async def _visible(req: ApiRequest) -> list[ApiToken]:
    who = req.who
    every = await asyncio.to_thread(req.ctx.store.api_tokens, who.tenant_id)
    if who.role >= Role.TENANT_ADMIN:
        return [t for t in every if who.tenant_id is None or t.tenant_id == who.tenant_id]
    return [t for t in every if t.id == who.token_id]


async def list_tokens(req: ApiRequest) -> web.StreamResponse:
    items, total = page(await _visible(req), req.query_as(ListQuery),
                        lambda t, k: getattr(t, k), ("id", "name", "role", "created_at"), "id")
    return json_response(TokenPage(items=[token_out(t) for t in items], total=total))


async def create_token(req: ApiRequest) -> web.StreamResponse:
    body = req.body_as(TokenCreate)
    who = req.who
    role = Role.parse(body.role)
    if role > who.role:
        raise ApiProblem(403, "forbidden", f"a {who.role.label} token cannot make a "
                                           f"{role.label} token")
    tenant_id = None if role == Role.SYSTEM_ADMIN and body.tenant_id is None \
        and who.tenant_id is None else target_tenant(req, body.tenant_id).id
    if body.user_id is not None:
        user = req.ctx.directory.user_by_id(body.user_id)
        if user is None or user.tenant_id != tenant_id or not who.sees_user(user):
            raise not_found(f"user {body.user_id}")
    now = time.time()
    expires = now + body.days * 86400 if body.days is not None else None
    token, record = await asyncio.to_thread(
        req.ctx.store.create_api_token, role=role.label, tenant_id=tenant_id,
        user_id=body.user_id, name=body.name, expires_at=expires, now=now)
    return json_response(TokenCreated(**token_out(record).model_dump(), token=token), 201,
                         headers={"Location": f"/api/v1/tokens/{record.id}"})


async def revoke_token(req: ApiRequest) -> web.StreamResponse:
    token_id = int_param(req, "token")
    if not any(t.id == token_id for t in await _visible(req)):
        raise not_found(f"token {token_id}")
    await asyncio.to_thread(req.ctx.store.revoke_api_token, token_id)
    req.ctx.token_cache.forget(token_id)  # at once: not after the cache's few seconds
    return web.Response(status=204)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    router.add(Route("GET", "/tokens", list_tokens, "API tokens the caller manages",
                     "accounts", "list_tokens", query=ListQuery, response=TokenPage))
    router.add(Route("POST", "/tokens", create_token,
                     "Make an API token (shown once; at most the caller's role)", "accounts",
                     "create_token", body=TokenCreate, response=TokenCreated, status=201,
                     role=Role.TENANT_ADMIN))
    router.add(Route("DELETE", "/tokens/{token}", revoke_token, "Revoke an API token",
                     "accounts", "revoke_token", status=204,
                     path_params={"token": {"type": "integer", "minimum": 1}}))
