"""Sign-in and sign-out (plain forms: no JavaScript needed) and the language switcher.

The login is the API's own (:func:`pbx.api.logins.login`: argon2, the throttle shared with the
SIP bans, one answer for every failure); the session cookie is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from pbx import i18n
from pbx.api.logins import check_origin, login, set_cookie
from pbx.api.problems import ApiProblem
from pbx.i18n import N_
from pbx.portal.core import LANG_COOKIE, Portal, PortalRequest, read_form

__all__ = ["ORDER", "register"]

#: The place in the navigation.
ORDER = 0


def _safe_next(value: str) -> str:
    """Only a path of ours (no ``//host``, no scheme): an open redirect otherwise."""
    if value.startswith("/portal") and not value.startswith("//") and "\\" not in value:
        return value
    return "/portal/"


async def login_page(pr: PortalRequest) -> web.StreamResponse:
    if pr.principal is not None:
        pr.redirect(_safe_next(pr.raw.query.get("next", "")))
    return await pr.render("login.html", next=_safe_next(pr.raw.query.get("next", "")),
                     tenant=pr.raw.query.get("tenant", ""), extension="", error="")


async def login_submit(pr: PortalRequest) -> web.StreamResponse:
    request = pr.raw
    check_origin(request, required=False)  # login CSRF: a foreign page may not log one in
    form = await read_form(request)
    tenant = str(form.get("tenant", "") or "").strip()[:64] or None
    extension = str(form.get("extension", "") or "").strip()[:160]
    password = str(form.get("password", "") or "")[:256]
    target = _safe_next(str(form.get("next", "") or ""))
    ctx = pr.portal.ctx
    try:
        if not extension or not password:
            raise ApiProblem(401, "login_failed", "")
        session_id, _ = await login(
            ctx.store, ctx.passwords, ctx.bans, ctx.sessions, source=request.remote or "",
            password=password, now=ctx.clock(), tenant=tenant,
            extension=extension if "@" not in extension else None,
            login_name=extension if "@" in extension else None)
    except ApiProblem as problem:
        message = (N_("Too many failed attempts from this address: try again later.")
                   if problem.status == 429 else N_("Wrong login or password."))
        return await pr.render("login.html", status=problem.status if problem.status == 429 else 401,
                         next=target, tenant=tenant or "", extension=extension,
                         error=pr.t(message))
    response = web.HTTPSeeOther(target)
    set_cookie(response, request, session_id, ctx.sessions.lifetime)
    raise response


async def logout(pr: PortalRequest) -> web.StreamResponse:
    await pr.form()
    who = pr.who
    if who.session_id is not None:
        await asyncio.to_thread(pr.portal.ctx.store.end_portal_session, who.session_id)
    response = web.HTTPSeeOther("/portal/login?notice=logged_out")
    set_cookie(response, pr.raw, "", 0)
    raise response


async def choose_language(pr: PortalRequest) -> web.StreamResponse:
    lang = pr.raw.query.get("to", "")
    if lang not in i18n.LANGUAGES:
        raise ApiProblem(400, "unknown_language", f"languages: {', '.join(i18n.LANGUAGES)}")
    back = _safe_next(pr.raw.query.get("next", ""))
    response = web.HTTPSeeOther(back)
    response.set_cookie(LANG_COOKIE, lang, httponly=True, samesite="Strict", path="/",
                        max_age=365 * 86400, secure=pr.raw.secure)
    raise response


async def root(pr: PortalRequest) -> web.StreamResponse:
    raise web.HTTPFound("/portal/")


def register(portal: Portal) -> None:
    """``/portal/login`` (GET form, POST sign-in), ``/portal/logout``, ``/portal/lang``."""
    portal.page("GET", "/", root, role=None)
    portal.page("GET", "/portal/login", login_page, role=None)
    portal.page("POST", "/portal/login", login_submit, role=None)
    portal.page("POST", "/portal/logout", logout)
    portal.page("GET", "/portal/lang", choose_language, role=None)
