"""The API's route table: each :class:`Route` says method, path, models and the role it needs;
:class:`ApiRouter` puts the routes on the aiohttp application and is what the OpenAPI document
is generated from (:mod:`pbx.api.openapi`), so the document cannot drift from the code.

The wrapper around every handler authenticates (bearer token), checks the role, parses the
query with the route's query model and the body with its body model (``extra="forbid"``:
unknown fields are errors), limits the body size, and hands an :class:`ApiRequest` to the
handler. Errors are raised, never answered here: :mod:`pbx.api.problems` converts them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aiohttp import web
from pydantic import BaseModel, ValidationError

from pbx.api.auth import Principal, Role, authenticate
from pbx.api.problems import ApiProblem, from_validation

if TYPE_CHECKING:
    from pbx.api.context import ApiContext

__all__ = ["MAX_BODY", "ApiRequest", "ApiRouter", "Route", "etag_of", "json_response"]

#: Largest request body the API reads (413 above).
MAX_BODY = 64 * 1024
JSON_TYPES = ("application/json", "application/merge-patch+json")

B = TypeVar("B", bound=BaseModel)


@dataclass
class ApiRequest:
    """What a handler gets: the aiohttp request, the principal (None on open routes), the
    parsed body and query models, and the API's context (store, services)."""

    raw: web.Request
    ctx: ApiContext
    principal: Principal | None
    body: BaseModel | None = None
    query: BaseModel | None = None

    @property
    def who(self) -> Principal:
        """The principal (routes that authenticate always have one)."""
        assert self.principal is not None
        return self.principal

    def path(self, name: str) -> str:
        """A path parameter."""
        return self.raw.match_info[name]

    def body_as(self, model: type[B]) -> B:
        """The body, as the route's body model."""
        assert isinstance(self.body, model)
        return self.body

    def query_as(self, model: type[B]) -> B:
        """The query, as the route's query model."""
        assert isinstance(self.query, model)
        return self.query

    def check_etag(self, current: str) -> None:
        """412 when the request's ``If-Match`` names another version than ``current``
        (``*`` and no If-Match at all accept any; a weak tag never matches: RFC 9110 §13.1.1
        compares strongly)."""
        wanted = self.raw.headers.get("If-Match")
        if wanted is None:
            return
        tags = [t.strip() for t in wanted.split(",")]
        if "*" in tags or current in tags:
            return
        raise ApiProblem(412, "precondition_failed",
                         f"the resource changed: its ETag is {current}, not {wanted}",
                         headers={"ETag": current})


Handler = Callable[[ApiRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One operation of the API (path relative to ``/api/v1``)."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    operation_id: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    #: None: no token needed (the document itself, the docs page)
    role: Role | None = Role.USER
    #: the response has an ETag and a PATCH takes If-Match (412 when stale)
    etag: bool = False
    #: a response that is not JSON: media type → description (CSV, HTML, WebSocket)
    content: Mapping[str, str] = field(default_factory=dict)
    path_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""
    #: extra documented error statuses besides those every route has
    errors: tuple[int, ...] = ()
    #: a request body that is not JSON (an upload the handler reads itself): media type →
    #: its schema, or a description (a binary body)
    request_content: Mapping[str, Mapping[str, Any] | str] = field(default_factory=dict)


def etag_of(body: Any) -> str:
    """A strong ETag of a JSON body (its canonical form's SHA-256, shortened)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def json_response(body: BaseModel | Mapping[str, Any], status: int = 200, *,
                  etag: bool = False, headers: Mapping[str, str] | None = None) -> web.Response:
    """``body`` as JSON (``by_alias``), with an ETag when asked."""
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else dict(body)
    out = {"Cache-Control": "no-store", **(headers or {})}
    if etag:
        out["ETag"] = etag_of(data)
    return web.json_response(data, status=status, headers=out)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON: 413 above :data:`MAX_BODY`, 415 for another media type,
    400 ``malformed_json`` for what does not parse."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise ApiProblem(413, "body_too_large", f"the body may have at most {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiProblem(413, "body_too_large", f"the body may have at most {MAX_BODY} bytes")
    media = request.content_type
    if raw and media not in JSON_TYPES:
        raise ApiProblem(415, "unsupported_media_type",
                         f"send the body as application/json, not {media}")
    if not raw:
        raise ApiProblem(400, "malformed_json", "the request needs a JSON body")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiProblem(400, "malformed_json", f"the body is not JSON: {exc}") from None


def parse_query(model: type[B], query: Mapping[str, str]) -> B:
    """The query string as ``model`` (422 naming the parameter)."""
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        problem = from_validation(exc, where="query")
        problem.field = problem.field and "query:" + problem.field.lstrip("/")
        raise problem from None


class ApiRouter:
    """The route table; :meth:`install` adds every route to an aiohttp application."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, route: Route) -> Route:
        """Add ``route`` (an operation id used twice is a programming error)."""
        if any(r.operation_id == route.operation_id for r in self.routes):
            raise ValueError(f"operation id {route.operation_id} is used twice")
        self.routes.append(route)
        return route

    def route(self, operation_id: str) -> Route:
        """The route of ``operation_id`` (KeyError when there is none)."""
        for route in self.routes:
            if route.operation_id == operation_id:
                return route
        raise KeyError(operation_id)

    async def call(self, ctx: ApiContext, principal: Principal | None, operation_id: str, *,
                   request: web.Request, params: Mapping[str, str] | None = None,
                   body: Any = None, query: Mapping[str, str] | None = None,
                   headers: Mapping[str, str] | None = None, data: bytes | None = None,
                   content_type: str = "application/octet-stream") -> web.StreamResponse:
        """Run operation ``operation_id`` in process for ``principal``, exactly as a request
        to it would (role check, query and body models, the handler): the portal's pages do
        everything through this, so they have the API's validation, access rules and events
        and no second code path. ``request`` is the page's own request (its address, scheme
        and host); ``params`` the path parameters; ``data`` the raw body of a route that
        reads one itself (an upload), of ``content_type``. Errors are raised as by a
        handler."""
        route = self.route(operation_id)
        if route.role is not None:
            if principal is None:
                raise ApiProblem(401, "unauthenticated", "log in first")
            principal.require(route.role, f"{route.method} {route.path}")
        parsed_query = parse_query(route.query, query or {}) if route.query else None
        parsed_body = None
        if route.body is not None:
            try:
                parsed_body = route.body.model_validate(body)
            except ValidationError as exc:
                raise from_validation(exc) from None
        local = _LocalRequest(request, dict(params or {}), dict(headers or {}), data,
                              content_type)
        # the handlers read match_info, headers and remote (and hand ``raw`` to aiohttp only
        # for WebSocket and cookie routes, which the portal does not call in process)
        raw = cast(web.Request, local)
        return await route.handler(ApiRequest(raw, ctx, principal, parsed_body, parsed_query))

    def install(self, app: web.Application, ctx: ApiContext, prefix: str) -> None:
        """Put every route on ``app`` under ``prefix`` (``/api/v1``)."""
        for route in self.routes:
            app.router.add_route(route.method, prefix + route.path, self._wrap(route, ctx))

    @staticmethod
    def _wrap(route: Route, ctx: ApiContext) -> Callable[[web.Request],
                                                          Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            principal = None
            if route.role is not None:
                principal = await authenticate(request, ctx.store, bans=ctx.bans,
                                               now=ctx.clock(), idle=ctx.sessions.idle,
                                               cache=ctx.token_cache)
                principal.require(route.role, f"{route.method} {route.path}")
            query = parse_query(route.query, request.query) if route.query else None
            body = None
            if route.body is not None:
                data = await read_json(request)
                try:
                    body = route.body.model_validate(data)
                except ValidationError as exc:
                    raise from_validation(exc) from None
            return await route.handler(ApiRequest(request, ctx, principal, body, query))

        return handle


class _LocalRequest:
    """What a handler sees of a request made in process (:meth:`ApiRouter.call`): the given
    path parameters and headers; everything else is the page's own request."""

    def __init__(self, request: web.Request, match_info: dict[str, str],
                 headers: dict[str, str], data: bytes | None = None,
                 content_type: str = "application/octet-stream") -> None:
        self._request = request
        self.match_info = match_info
        self.headers = headers
        self.method = "LOCAL"
        # a raw body (an upload the page read itself): what the handler streams
        self.content = _LocalBody(data or b"")
        self.content_length = len(data or b"")
        self.content_type = content_type if data is not None else ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


class _LocalBody:
    """The raw body of an in-process call, read like aiohttp's ``request.content``."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    async def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._at + n
        chunk = self._data[self._at:end]
        self._at += len(chunk)
        return chunk
