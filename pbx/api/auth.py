"""Who is calling the API and what they may see: ``Authorization: Bearer <token>`` →
:class:`Principal`, and the access rules every resource applies.

Roles: ``user`` (their own user, its settings, devices and history only), ``tenant_admin``
(everything of their tenant), ``system_admin`` (every tenant when the token has none, else
like a tenant admin of its tenant plus the system-wide feature-code table). An object of a
tenant the principal does not see answers 404 (its existence is not told); a visible object the
role may not change answers 403.

The browser's credential is the portal session cookie (:mod:`pbx.api.logins`): a request
without ``Authorization`` but with the cookie is the session's user, with their portal role,
exactly like a token of that role; a changing request by cookie passes the CSRF check.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import IntEnum

import structlog
from aiohttp import web

from pbx.api.logins import COOKIE, check_csrf, check_origin
from pbx.api.problems import ApiProblem
from pbx.api.token_cache import TokenCache
from pbx.bans import BanTable
from pbx.store import Store, User

__all__ = ["Principal", "Role", "authenticate"]

seclog = structlog.get_logger("security")


class Role(IntEnum):
    """Roles, ordered: a higher one may do what a lower one may."""

    USER = 1
    TENANT_ADMIN = 2
    SYSTEM_ADMIN = 3

    @property
    def label(self) -> str:
        """The role's name in tokens and the API (``tenant_admin``)."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """``"tenant_admin"`` → :attr:`TENANT_ADMIN` (ValueError otherwise)."""
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"role {text!r} must be one of "
                             f"{', '.join(r.label for r in cls)}") from None


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: token id, role, tenant (None: every tenant) and user."""

    token_id: int
    role: Role
    tenant_id: int | None
    user_id: int | None
    #: the portal session's id (None: a token); token_id is 0 then
    session_id: int | None = None
    #: the session's CSRF token (what GET /session tells the page)
    csrf_token: str | None = None

    def sees_tenant(self, tenant_id: int) -> bool:
        """Whether objects of ``tenant_id`` exist for this principal."""
        return self.tenant_id is None or self.tenant_id == tenant_id

    def sees_user(self, user: User) -> bool:
        """Whether ``user`` (and what is theirs) exists for this principal."""
        if not self.sees_tenant(user.tenant_id):
            return False
        return self.role >= Role.TENANT_ADMIN or user.id == self.user_id

    def require(self, role: Role, what: str = "this") -> None:
        """403 unless the principal has at least ``role``."""
        if self.role < role:
            raise ApiProblem(403, "forbidden", f"{what} needs the {role.label} role "
                                               f"(the token has {self.role.label})")


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiProblem(401, "unauthenticated",
                         "send an API token: Authorization: Bearer <token>",
                         headers={"WWW-Authenticate": 'Bearer realm="asyncpbx"'})
    return token.strip()


async def authenticate(request: web.Request, store: Store, *, now: float | None = None,
                       bans: BanTable | None = None, idle: float = 1800.0,
                       cache: TokenCache | None = None) -> Principal:
    """The principal of ``request``'s bearer token (401 problem when missing, unknown,
    expired or revoked — one answer for all, so a guesser learns nothing). The store is read
    (and the last use written) in a worker thread: the event loop, which carries the calls,
    never waits for the database lock.

    With ``bans`` (the server's :class:`pbx.bans.BanTable`, the one the SIP side feeds) a bad
    token counts as an authentication failure of its source, exactly like a wrong SIP
    password, and a banned source — banned for guessing over SIP or over HTTP — is refused
    (429) before its token is looked at. Requests without a token do not count, and a good
    token does not mark its source as authenticated for SIP.

    With ``cache`` (:class:`pbx.api.token_cache.TokenCache`), a token the store confirmed a
    moment ago is taken from there, on the loop."""
    at = time.time() if now is None else now
    source = request.remote or ""
    if bans is not None and bans.banned(source, at):
        raise ApiProblem(429, "too_many_failures",
                         "too many failed authentications from this address",
                         headers={"Retry-After": str(int(bans.policy.ban_time))})
    if "Authorization" not in request.headers and COOKIE in request.cookies:
        return await _by_session(request, store, at, idle)
    token = _bearer(request)
    record = cache.get(token, at) if cache is not None and len(token) <= 128 else None
    if record is None:
        record = await asyncio.to_thread(store.api_token, token, now=at) \
            if len(token) <= 128 else None
        if record is not None and cache is not None and not record.revoked:
            cache.put(token, record, at)
    if record is None or record.expired(at):
        # fail2ban: "security.auth.failed src=<ip>" (the SIP side logs the same line)
        seclog.warning("security.auth.failed", src=source, method="HTTP",
                       reason="unknown token" if record is None else "expired token")
        if bans is not None:  # a new ban is logged by the table's owner (security.ban)
            bans.failed(source, None, at)
        raise ApiProblem(401, "invalid_token", "the token is unknown, expired or revoked",
                         headers={"WWW-Authenticate": 'Bearer realm="asyncpbx", '
                                                      'error="invalid_token"'})
    return Principal(record.id, Role.parse(record.role), record.tenant_id, record.user_id)


async def _by_session(request: web.Request, store: Store, now: float, idle: float
                      ) -> Principal:
    """The principal of the session cookie (401 when the session is unknown or ended: not a
    failure that counts toward a ban — ended sessions' cookies are common, and a 256-bit id
    is not guessed)."""
    value = request.cookies[COOKIE]
    session = await asyncio.to_thread(store.portal_session, value, now=now, idle=idle) \
        if len(value) <= 128 else None
    if session is None:
        raise ApiProblem(401, "session_ended", "the session is unknown or has ended: log in "
                                               "again (POST /api/v1/session)")
    check_csrf(request, session)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        check_origin(request, required=True)  # no cross-site WebSocket on the user's cookie
    return Principal(0, Role.parse(session.role), session.tenant_id, session.user_id,
                     session_id=session.id, csrf_token=session.csrf_token)
