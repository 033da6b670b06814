"""``/registrations``: where the devices the token sees are registered now (read only)."""

from __future__ import annotations

import time

from aiohttp import web

from pbx.api.models import ListQuery, RegistrationOut, RegistrationPage
from pbx.api.resources.common import page
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.directory import Directory
from pbx.store import User
from sipcore.registrar import Binding

__all__ = ["register", "user_of_aor"]

SORT = ("aor", "expires_in", "user_id")


def user_of_aor(directory: Directory, aor: str) -> User | None:
    """The user an AOR (``sip:EXT@domain``) belongs to."""
    rest = aor.split(":", 1)[-1]
    ext, _, domain = rest.partition("@")
    return directory.user(domain.split(";")[0], ext) if ext else None


def registration_out(b: Binding, user: User | None, now: float) -> RegistrationOut:
    """The API form of a binding."""
    r = b.received
    return RegistrationOut(aor=b.aor, contact=b.contact, expires_in=b.remaining(now),
                           user_agent=b.user_agent,
                           source=f"{r.host}:{r.port}" if r is not None else None,
                           transport=r.transport if r is not None else None,
                           user_id=user.id if user else None,
                           tenant_id=user.tenant_id if user else None)


async def list_registrations(req: ApiRequest) -> web.StreamResponse:
    now = time.time()
    seen = []
    for b in req.ctx.bindings():
        user = user_of_aor(req.ctx.directory, b.aor)
        if user is not None and req.who.sees_user(user):
            seen.append(registration_out(b, user, now))
        elif user is None and req.who.tenant_id is None:
            seen.append(registration_out(b, None, now))
    items, total = page(seen, req.query_as(ListQuery), lambda r, k: getattr(r, k), SORT, "aor")
    return json_response(RegistrationPage(items=items, total=total))


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    router.add(Route("GET", "/registrations", list_registrations,
                     "Current registrations of the devices the token sees", "registrations",
                     "list_registrations", query=ListQuery, response=RegistrationPage))
