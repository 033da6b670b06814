"""``/feature-codes``: the feature-code table in force (everyone may read it: it is what their
phones dial), changed by a system admin through :class:`pbx.services.codes.CodesService` —
checked against the whole table, stored, in force for the next call, one ``codes.changed``.
``/in-call-codes``: the codes typed during a call (``##`` + number, ``*2``, ``*3``, ``*4`` …,
:mod:`pbx.callcontrol.incall`), read-only."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from pbx.api.auth import Role
from pbx.api.models import CodeOut, CodePage, CodePatch, ListQuery
from pbx.api.resources.common import not_found, page
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.callcontrol.incall import incall_codes
from pbx.feature_codes import CodeRow

__all__ = ["register"]

SORT = ("key", "code", "feature")


def _rows(req: ApiRequest) -> list[CodeOut]:
    registry = req.ctx.features
    changed = registry.changes
    digits = registry.digits_only
    return [CodeOut(key=row.key, feature=row.feature, action=row.action, code=row.code,
                    alternate=row.alternate, mobile=digits.encode(row.code),
                    argument=row.argument, description=row.description,
                    implemented=implemented, changed=(row.feature, row.action) in changed)
            for row, implemented in req.ctx.codes.table()]


class InCallCodeOut(BaseModel):
    """A code typed during a call: ``key`` (``incall.ACTION``), the code, whether a number
    follows it (``argument`` "number") and what it does."""

    key: str
    action: str
    code: str
    argument: str
    description: str


class InCallCodePage(BaseModel):
    """The in-call codes."""

    items: list[InCallCodeOut]
    total: int


async def list_incall_codes(req: ApiRequest) -> web.StreamResponse:
    items = [InCallCodeOut(key=f"incall.{c.action}", action=c.action, code=c.code,
                           argument="number" if c.takes_number else "",
                           description=c.description) for c in incall_codes()]
    return json_response(InCallCodePage(items=items, total=len(items)))


def _row(req: ApiRequest, key: str) -> CodeOut:
    found = next((r for r in _rows(req) if r.key == key), None)
    if found is None:
        raise not_found(f"feature code {key[:60]}")
    return found


async def list_codes(req: ApiRequest) -> web.StreamResponse:
    items, total = page(_rows(req), req.query_as(ListQuery), lambda r, k: getattr(r, k), SORT,
                        "key")
    return json_response(CodePage(items=items, total=total))


async def get_code(req: ApiRequest) -> web.StreamResponse:
    return json_response(_row(req, req.path("key")), etag=True)


async def patch_code(req: ApiRequest) -> web.StreamResponse:
    key = req.path("key")
    current = _row(req, key)
    req.check_etag(json_response(current, etag=True).headers["ETag"])
    body = req.body_as(CodePatch)
    if body.code is not None or body.alternate is not None:
        after: CodeRow = req.ctx.codes.set(key, body.code or current.code, body.alternate,
                                           source="api")
        key = after.key
    return json_response(_row(req, key), etag=True)


async def reset_code(req: ApiRequest) -> web.StreamResponse:
    key = req.path("key")
    current = _row(req, key)
    req.check_etag(json_response(current, etag=True).headers["ETag"])
    req.ctx.codes.reset([key], source="api")
    return json_response(_row(req, key), etag=True)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    param = {"key": {"type": "string", "pattern": r"^[a-z0-9_]+\.[a-z0-9_]+$",
                     "description": "feature.action, e.g. dnd.on"}}
    router.add(Route("GET", "/in-call-codes", list_incall_codes,
                     "The codes typed during a call (transfer, consultation, conference, hold)",
                     "feature codes", "list_incall_codes", response=InCallCodePage))
    router.add(Route("GET", "/feature-codes", list_codes, "The feature-code table in force",
                     "feature codes", "list_feature_codes", query=ListQuery, response=CodePage))
    router.add(Route("GET", "/feature-codes/{key}", get_code, "One row of the table",
                     "feature codes", "get_feature_code", response=CodeOut, etag=True,
                     path_params=param))
    router.add(Route("PATCH", "/feature-codes/{key}", patch_code,
                     "Give a feature action another code (system-wide)", "feature codes",
                     "patch_feature_code", body=CodePatch, response=CodeOut, etag=True,
                     role=Role.SYSTEM_ADMIN, path_params=param, errors=(412,)))
    router.add(Route("DELETE", "/feature-codes/{key}", reset_code,
                     "Give a feature action its default code back", "feature codes",
                     "reset_feature_code", response=CodeOut, etag=True, role=Role.SYSTEM_ADMIN,
                     path_params=param, errors=(412,)))
