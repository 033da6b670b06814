"""Portal logins: a user's password → a server-side session for the browser, and the checks
every request authenticated by the session cookie passes.

Login (:func:`login`): by tenant and extension, or by ``EXT@DOMAIN`` (the tenant's SIP domain
or name). Unknown user, no portal password and wrong password answer alike — the same 401, the
same message, after the same argon2 work (:class:`pbx.api.passwords.Passwords` verifies a
dummy hash for a missing user). Throttling is the SIP side's :class:`pbx.bans.BanTable`: a
failed login counts as an authentication failure of its source (5 in 60 s ban the source for
SIP and HTTP alike, one ``security.auth.failed`` line each, a ban one ``security.ban`` line
from the table's owner) and of the account (``portal:TENANT/EXT``), whose verifications are
slowed to one per ``account_interval`` seconds across all sources after
``account_failures`` failures — a slowed attempt is answered like a wrong password, unverified.

Sessions (:class:`SessionPolicy`): the cookie holds a random id (the store keeps its SHA-256),
``HttpOnly; SameSite=Strict; Path=/`` and ``Secure`` over HTTPS; a session ends after
``idle`` seconds without use, ``lifetime`` seconds after login at the latest, or at logout.
A request authenticated by the cookie that changes something (not GET/HEAD/OPTIONS) must come
from the server's own origin (``Origin``, else ``Referer``) and carry the session's CSRF token
in ``X-CSRF-Token`` (:func:`check_csrf`); bearer tokens need neither (no browser sends them by
itself).
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from pbx.api.passwords import Passwords
from pbx.api.problems import ApiProblem
from pbx.bans import BanTable
from pbx.store import Store, StoreError, User
from pbx.store.logins import PortalSession

__all__ = ["COOKIE", "CSRF_HEADER", "SAFE_METHODS", "SessionPolicy", "account_key",
           "check_csrf", "check_origin", "login", "set_cookie"]

seclog = structlog.get_logger("security")

COOKIE = "apx_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FAILED = "wrong login or password"


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long sessions last (seconds): ``idle`` without a request, ``lifetime`` at most."""

    idle: float = 1800.0
    lifetime: float = 12 * 3600.0


def account_key(tenant: str, extension: str) -> str:
    """The name under which a portal account's failures are counted in the ban table."""
    return f"portal:{tenant}/{extension}"


def find_user(store: Store, *, tenant: str | None, extension: str | None,
              login_name: str | None) -> tuple[str, User | None]:
    """(the account key, the user or None) for a login by tenant+extension or EXT@DOMAIN."""
    if login_name is not None:
        extension, _, where = login_name.partition("@")
        found = None
        for t in store.tenants():
            if where and where.lower() in (t.name.lower(), t.domain.lower()):
                found = t
                break
        tenant = found.name if found is not None else where
    tenant = tenant or "default"
    extension = extension or ""
    key = account_key(tenant, extension)
    if store.find_tenant(tenant) is None:
        return key, None
    try:
        return key, store.user(extension, tenant=tenant)
    except StoreError:  # no such user
        return key, None


async def login(store: Store, passwords: Passwords, bans: BanTable, policy: SessionPolicy, *,
                source: str, password: str, now: float, tenant: str | None = None,
                extension: str | None = None, login_name: str | None = None
                ) -> tuple[str, PortalSession]:
    """Check the password and start a session: (the session id for the cookie, its record).
    401 ``login_failed`` for every kind of failure, 429 while ``source`` is banned. The store
    and argon2 run in a worker thread."""
    if bans.banned(source, now):
        raise ApiProblem(429, "too_many_failures",
                         "too many failed authentications from this address",
                         headers={"Retry-After": str(int(bans.policy.ban_time))})
    key, user = await asyncio.to_thread(find_user, store, tenant=tenant, extension=extension,
                                        login_name=login_name)
    record = None if user is None else await asyncio.to_thread(store.portal_login, user.id)
    stored = record.password_hash if record is not None else None
    verify = bans.may_verify(key, now)
    # the argon2 work is done in every case, so the answer time tells nothing
    ok = await asyncio.to_thread(passwords.verify, stored, password) and verify
    if not ok or user is None or record is None:
        seclog.warning("security.auth.failed", src=source, method="HTTP", account=key,
                       reason="portal login" if verify else "portal login slowed")
        bans.failed(source, key, now)  # a new ban is logged by the table's owner
        raise ApiProblem(401, "login_failed", FAILED)
    if passwords.needs_rehash(record.password_hash):
        new_hash = await asyncio.to_thread(passwords.hasher.hash, password)
        await asyncio.to_thread(store.rehash_portal_password, user.id, new_hash)
    return await asyncio.to_thread(store.create_portal_session, user.id, now=now,
                                   lifetime=policy.lifetime)


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(request: web.Request, *, required: bool) -> None:
    """403 ``csrf_failed`` when ``Origin`` (else ``Referer``) names another origin than the
    server's; with ``required``, also when neither is sent."""
    own = f"{request.scheme}://{request.host}".lower()
    origin = request.headers.get("Origin")
    claimed = _origin_of(origin) if origin and origin != "null" else None
    if claimed is None and request.headers.get("Referer"):
        claimed = _origin_of(request.headers["Referer"])
    if claimed is None and not required and origin is None:
        return
    if claimed != own:
        raise ApiProblem(403, "csrf_failed",
                         f"a change by cookie must come from {own} (Origin or Referer)")


def check_csrf(request: web.Request, session: PortalSession) -> None:
    """The cookie's CSRF defence for a changing request (see the module doc)."""
    if request.method in SAFE_METHODS:
        return
    check_origin(request, required=True)
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        raise ApiProblem(403, "csrf_failed",
                         f"a change by cookie needs the session's {CSRF_HEADER} header")


def set_cookie(response: web.StreamResponse, request: web.Request, value: str,
               max_age: float) -> None:
    """The session cookie on ``response`` (``max_age`` 0: delete it)."""
    response.set_cookie(COOKIE, value, httponly=True, samesite="Strict", path="/",
                        secure=request.secure, max_age=int(max_age))
