"""The portal's frame: pages as routes, the signed-in principal, forms with their CSRF check,
templates in the user's language, and the one place a page's errors become what the user sees.

A page handler gets a :class:`PortalRequest`. It reads and changes data only through
:meth:`PortalRequest.api` — the REST operation run in process (:meth:`pbx.api.routes.ApiRouter.
call`) with the session's principal — so a page can do exactly what the API lets that user do,
with the API's validation and events. Pages are plain HTML forms and links (they work without
JavaScript); ``static/portal.js`` only adds live updates and the softphone.

Errors: an :class:`~pbx.api.problems.ApiProblem` (or what the API's converter turns into one)
raised by a page is shown as an error page with the problem's status (401 sends the browser to
the login page); a form handler that wants to show the error beside the form catches
:class:`PageError` from :meth:`PortalRequest.api` instead.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import jinja2
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from pbx import i18n
from pbx.api.auth import Principal, Role
from pbx.api.logins import COOKIE, check_origin
from pbx.api.problems import ApiProblem, convert
from pbx.i18n import N_

if TYPE_CHECKING:
    from pbx.api.context import ApiContext
    from pbx.api.routes import ApiRouter

__all__ = ["LANG_COOKIE", "NavItem", "PageError", "Portal", "PortalRequest", "csp", "read_form"]

log = structlog.get_logger("pbx.portal")

HERE = Path(__file__).resolve().parent
#: The cookie of an explicitly chosen language (the switcher in the page footer).
LANG_COOKIE = "apx_lang"
#: Largest form the portal reads (uploads have their own limit in their view).
MAX_FORM = 64 * 1024

PageHandler = Callable[["PortalRequest"], Awaitable[web.StreamResponse]]


def csp(connect: Sequence[str] = ()) -> str:
    """The pages' Content-Security-Policy: everything from this server only, no inline script
    or style; ``connect`` adds the SIP WebSocket listeners the softphone talks to."""
    extra = " ".join(connect)
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"media-src 'self' blob:; connect-src 'self' {extra}".rstrip() + "; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass(frozen=True)
class NavItem:
    """An entry of the navigation: path, label (a message id), the role it needs and the
    live badge it carries (``voicemail``: the count of new messages)."""

    path: str
    label: str
    role: Role = Role.USER
    badge: str = ""
    admin: bool = False


class PageError(Exception):
    """An API operation a page ran was refused: status, stable code, detail and field."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.code = str(problem.get("code", "error"))
        self.detail = str(problem.get("detail", ""))
        self.field = problem.get("field")
        super().__init__(f"{status} {self.code}: {self.detail}")


@dataclass
class PortalRequest:
    """One request to a page: the aiohttp request, the portal, who is signed in (None on the
    login page), their session's CSRF token and the language the page speaks."""

    raw: web.Request
    portal: Portal
    principal: Principal | None
    csrf: str = ""
    lang: str = i18n.DEFAULT
    me: Mapping[str, Any] = field(default_factory=dict)
    _form: MultiDictProxy[str | bytes | Any] | None = None

    @property
    def who(self) -> Principal:
        """The principal (pages that need a login always have one)."""
        if self.principal is None:
            raise ApiProblem(401, "unauthenticated", "log in first")
        return self.principal

    @property
    def is_admin(self) -> bool:
        """Whether the signed-in user may open the administrator view."""
        return self.principal is not None and self.principal.role >= Role.TENANT_ADMIN

    def t(self, message: str) -> str:
        """``message`` in the page's language."""
        return i18n.gettext(self.lang, message)

    async def api(self, operation_id: str, *, body: Any = None,
                  query: Mapping[str, str] | None = None,
                  headers: Mapping[str, str] | None = None, data: bytes | None = None,
                  content_type: str = "application/octet-stream", **params: str | int) -> Any:
        """Run API operation ``operation_id`` as the signed-in user; its JSON answer (None
        for 204). ``data``: the raw body of an upload operation. Raises :class:`PageError`
        when the API refuses (4xx/5xx)."""
        portal = self.portal
        who = self.who

        async def run(request: web.Request) -> web.StreamResponse:
            return await portal.router.call(
                portal.ctx, who, operation_id, request=request,
                params={k: str(v) for k, v in params.items()}, body=body, query=query,
                headers=headers, data=data, content_type=content_type)

        response = await convert(self.raw, run)
        data = _json_of(response)
        if response.status >= 400:
            raise PageError(response.status, data if isinstance(data, dict) else {})
        return data

    async def api_raw(self, operation_id: str, **params: str | int) -> web.StreamResponse:
        """The operation's response itself (downloads: audio, CSV)."""
        portal = self.portal
        who = self.who

        async def run(request: web.Request) -> web.StreamResponse:
            return await portal.router.call(portal.ctx, who, operation_id, request=request,
                                            params={k: str(v) for k, v in params.items()})

        return await convert(self.raw, run)

    async def form(self) -> MultiDictProxy[str | bytes | Any]:
        """The posted form, after its CSRF check (the session's token in the ``csrf`` field
        and our own Origin): 403 otherwise."""
        if self._form is None:
            check_origin(self.raw, required=True)
            form = await read_form(self.raw)
            sent = form.get("csrf")
            if not isinstance(sent, str) or not self.csrf or \
                    not hmac.compare_digest(sent.encode(), self.csrf.encode()):
                raise ApiProblem(403, "csrf_failed", "the form is stale: reload the page")
            self._form = form
        return self._form

    async def render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        """``template`` rendered in the page's language, with the frame's values."""
        return await self.portal.render(self, template, status, values)

    def redirect(self, path: str, notice: str = "") -> NoReturn:
        """303 to ``path`` (after a form: the browser GETs the page again); ``notice`` is a
        message id the next page shows (from :data:`NOTICES`)."""
        if notice:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode({"notice": notice})
        raise web.HTTPSeeOther(path)


#: Notices a redirect may name (a key, never text from the URL, is shown).
NOTICES: dict[str, str] = {
    "saved": N_("Saved."),
    "deleted": N_("Deleted."),
    "sent": N_("Sent."),
    "created": N_("Created."),
    "calling": N_("Your phone rings first; answer it to be connected."),
    "logged_out": N_("You are logged out."),
    "password_changed": N_("Your password is changed."),
}


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | Any]:
    """The posted form; 400 ``malformed_body`` when it does not parse (a multipart body
    without its boundary: aiohttp raises a bare ValueError)."""
    try:
        return await request.post()
    except ValueError as exc:
        raise ApiProblem(400, "malformed_body", f"the form does not parse: {exc}") from None


def _json_of(response: web.StreamResponse) -> Any:
    if response.status == 204 or not isinstance(response, web.Response):
        return None
    body = response.body
    if not body:
        return None
    raw = body if isinstance(body, bytes) else getattr(body, "_value", b"")
    try:
        return json.loads(raw)
    except ValueError:
        return None


class Portal:
    """The portal's pages on the server's aiohttp application."""

    def __init__(self, ctx: ApiContext, router: ApiRouter, *,
                 phone: Callable[[], Mapping[str, object]] | None = None) -> None:
        self.ctx = ctx
        self.router = router
        self.phone = phone or (lambda: {})
        self.nav: list[NavItem] = []
        #: badge name → its count for the signed-in user (``voicemail``: new messages)
        self.badges: dict[str, Callable[[PortalRequest], Awaitable[int]]] = {}
        self._envs: dict[str, jinja2.Environment] = {}
        self.app: web.Application | None = None

    # -- routes -----------------------------------------------------------------------------

    def page(self, method: str, path: str, handler: PageHandler, *, role: Role | None = Role.USER
             ) -> None:
        """Add a page (``role`` None: no login needed)."""
        assert self.app is not None, "add pages in a view's register(), from install()"
        self.app.router.add_route(method, path, self._wrap(handler, role))

    def add_nav(self, item: NavItem) -> None:
        """Add an entry to the navigation (in the order views register)."""
        self.nav.append(item)

    def _wrap(self, handler: PageHandler, role: Role | None
              ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            pr = PortalRequest(request, self, None)
            try:
                await self._sign_in(pr)
                if role is not None:
                    if pr.principal is None:
                        target = "/portal/login?" + urllib.parse.urlencode(
                            {"next": request.path_qs})
                        raise web.HTTPSeeOther(target)
                    pr.principal.require(role, request.path)
                response = await handler(pr)
            except ApiProblem as problem:
                response = await self._problem_page(pr, problem.status, problem.code,
                                                    problem.detail)
            except PageError as err:
                response = await self._problem_page(pr, err.status, err.code, err.detail)
            response.headers.setdefault("Content-Security-Policy", self.csp())
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return handle

    def csp(self) -> str:
        """The policy with the softphone's WebSocket listeners."""
        sockets = self.phone().get("websockets", [])
        # a listener on every address: the page connects to the host it came from, so the
        # policy allows that port on any host (ws://*:PORT/)
        return csp([re.sub(r"//(0\.0\.0\.0|\[::\])(?=:)", "//*", str(s)) for s in sockets]
                   if isinstance(sockets, list) else [])

    async def _sign_in(self, pr: PortalRequest) -> None:
        """The session of the request's cookie, if any, and the page's language."""
        request = pr.raw
        value = request.cookies.get(COOKIE, "")
        ctx = self.ctx
        if value and len(value) <= 128:
            session = await asyncio.to_thread(ctx.store.portal_session, value, now=ctx.clock(),
                                              idle=ctx.sessions.idle)
            if session is not None:
                pr.principal = Principal(0, Role.parse(session.role), session.tenant_id,
                                         session.user_id, session_id=session.id,
                                         csrf_token=session.csrf_token)
                pr.csrf = session.csrf_token
        chosen = request.cookies.get(LANG_COOKIE, "")
        user_lang = ""
        if pr.principal is not None and pr.principal.user_id is not None:
            user = ctx.directory.user_by_id(pr.principal.user_id)
            if user is not None:
                user_lang = user.language
                pr.me = {"id": user.id, "extension": user.extension, "name": user.name,
                         "tenant_id": user.tenant_id}
        for lang in (request.query.get("lang", ""), chosen, user_lang):
            if lang in i18n.LANGUAGES:
                pr.lang = lang
                break
        else:
            pr.lang = i18n.negotiate(request.headers.get("Accept-Language", ""))

    async def _problem_page(self, pr: PortalRequest, status: int, code: str, detail: str
                            ) -> web.Response:
        if status == 401:
            raise web.HTTPSeeOther("/portal/login")
        if status >= 500:
            log.error("portal.failed", path=pr.raw.path, code=code, detail=detail)
        else:
            log.info("portal.refused", path=pr.raw.path, status=status, code=code)
        return await pr.render("error.html", status=status, code=code, detail=detail)

    # -- templates --------------------------------------------------------------------------

    def env(self, lang: str) -> jinja2.Environment:
        """The template environment of ``lang``: one per language, since a template binds
        the gettext functions of the environment that compiled it (an overlay would share
        the compiled templates, and with them the first language's texts)."""
        env = self._envs.get(lang)
        if env is None:
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(HERE / "templates"),
                autoescape=jinja2.select_autoescape(("html",)),
                undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.i18n"],
                trim_blocks=True, lstrip_blocks=True)
            env.install_gettext_translations(i18n.translations(lang), newstyle=True)  # type: ignore[attr-defined]
            env.filters["datetime"] = lambda ts, lang: i18n.format_datetime(float(ts), lang)
            env.filters["date"] = lambda ts, lang: i18n.format_date(float(ts), lang)
            env.filters["time"] = lambda ts, lang: i18n.format_time(float(ts), lang)
            env.filters["duration"] = lambda s: i18n.format_duration(float(s or 0))
            env.filters["number"] = lambda v, lang: i18n.format_number(v, lang)
            self._envs[lang] = env
        return env

    def template(self, name: str, lang: str) -> jinja2.Template:
        """``name`` compiled for ``lang`` (the gettext calls bound to its catalogue)."""
        return self.env(lang).get_template(name)

    async def render(self, pr: PortalRequest, name: str, status: int,
                     values: Mapping[str, Any]) -> web.Response:
        """The page ``name`` with the frame's values (nav, user, CSRF token, notice, the
        navigation's badges)."""
        who = pr.principal
        badges: dict[str, int] = {}
        if who is not None and who.user_id is not None:
            for key, count in self.badges.items():
                try:
                    badges[key] = await count(pr)
                except (PageError, ApiProblem):
                    badges[key] = 0
        nav = [n for n in self.nav if who is not None and who.role >= n.role]
        notice = NOTICES.get(pr.raw.query.get("notice", ""), "")
        frame = {"lang": pr.lang, "languages": i18n.LANGUAGES, "me": pr.me,
                 "principal": who, "csrf": pr.csrf, "nav": [n for n in nav if not n.admin],
                 "admin_nav": [n for n in nav if n.admin], "path": pr.raw.path,
                 "notice": notice, "is_admin": pr.is_admin, "now": time.time(),
                 "badges": badges}
        html = self.template(name, pr.lang).render({**frame, **values})
        return web.Response(text=html, status=status, content_type="text/html",
                            charset="utf-8")


def static_routes(app: web.Application, folders: Mapping[str, Path]) -> None:
    """Serve each folder under its prefix (``/portal/static`` → ``pbx/portal/static``)."""
    for prefix, folder in folders.items():
        if folder.is_dir():
            app.router.add_static(prefix, folder, append_version=False)
