"""RFC 9457 problem details: every error the API answers, and the one place errors convert.

A handler raises :class:`ApiProblem` (or lets a :class:`pydantic.ValidationError`, a
:class:`~pbx.settings_schema.SettingError`, a :class:`~pbx.store.StoreError`, a
:class:`~pbx.feature_codes.CodeError` or an aiohttp HTTP error escape); :func:`problem_middleware`
turns each into ``application/problem+json`` with a stable ``code`` (the ``type`` is
``urn:asyncpbx:problem:<code>``), the HTTP ``status``, a human ``detail`` and, for bad input,
``field`` (the first offending field as a JSON pointer, ``/enabled``) and ``errors`` (every one).
Anything else is logged and answered 500 ``internal_error`` without internals.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from pbx.feature_codes import CodeError
from pbx.settings_schema import SettingError
from pbx.store import StoreError

__all__ = ["PROBLEM_TYPE", "ApiProblem", "FieldError", "Problem", "problem_middleware",
           "problem_response"]

log = structlog.get_logger("pbx.api")

#: ``type`` of a problem is this prefix + its code.
PROBLEM_TYPE = "urn:asyncpbx:problem:"
CONTENT_TYPE = "application/problem+json"

#: Status → (code, title) for errors aiohttp raises itself (routing, body size).
_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    412: ("precondition_failed", "Precondition failed"),
    413: ("body_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_failed", "Invalid input"),
    428: ("precondition_required", "Precondition required"),
    429: ("too_many_failures", "Too many failed authentications"),
}


class FieldError(BaseModel):
    """One offending field of a request."""

    field: str
    code: str
    message: str


class Problem(BaseModel):
    """The body of every error response (RFC 9457 plus ``code``, ``field``, ``errors``)."""

    type: str
    title: str
    status: int
    code: str
    detail: str = ""
    instance: str = ""
    field: str | None = None
    errors: list[FieldError] = []


@dataclass
class ApiProblem(Exception):
    """Raise to answer a problem: ``status``, stable ``code``, ``detail``; ``field`` names the
    offending input (JSON pointer) when there is one."""

    status: int
    code: str
    detail: str = ""
    field: str | None = None
    errors: Sequence[FieldError] = ()
    headers: dict[str, str] = dc_field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"


def _title(status: int, code: str) -> str:
    found = _HTTP_CODES.get(status)
    if found is not None and found[0] == code:
        return found[1]
    return code.replace("_", " ").capitalize()


def problem_response(request: web.Request | None, problem: ApiProblem) -> web.Response:
    """The problem+json response for ``problem``."""
    body = Problem(type=PROBLEM_TYPE + problem.code, title=_title(problem.status, problem.code),
                   status=problem.status, code=problem.code, detail=problem.detail,
                   instance=request.path if request is not None else "", field=problem.field,
                   errors=list(problem.errors))
    headers = {"Cache-Control": "no-store", **problem.headers}
    return web.Response(status=problem.status, content_type=CONTENT_TYPE,
                        text=body.model_dump_json(exclude_none=True), headers=headers)


def _pointer(loc: Sequence[int | str]) -> str:
    return "/" + "/".join(str(p) for p in loc) if loc else ""


def from_validation(exc: ValidationError, *, where: str = "body") -> ApiProblem:
    """A pydantic error → 422 (``unknown_field`` when the only trouble is extra fields)."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        kind = str(err.get("type", "invalid"))
        code = "unknown_field" if kind == "extra_forbidden" else kind
        errors.append(FieldError(field=_pointer(loc), code=code, message=str(err.get("msg"))))
    codes = {e.code for e in errors}
    code = "unknown_field" if codes == {"unknown_field"} else "validation_failed"
    first = errors[0] if errors else None
    detail = f"{where}: " + "; ".join(f"{e.field or '/'}: {e.message}" for e in errors)
    return ApiProblem(422, code, detail, field=first.field if first else None, errors=errors)


_SETTING_KEY = re.compile(r"^[a-z0-9_]+\.([a-z0-9_]+): ")


def from_setting_error(exc: ValueError) -> ApiProblem:
    """A settings/store/codes refusal (the message names ``feature.key``) → 422."""
    text = str(exc)
    m = _SETTING_KEY.match(text)
    pointer = f"/{m.group(1)}" if m else None
    errors = [FieldError(field=pointer or "", code="refused", message=text)]
    return ApiProblem(422, "refused", text, field=pointer, errors=errors)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_middleware(prefix: str) -> Any:
    """The middleware that turns errors of requests under ``prefix`` (``/api/v1``) into
    problem+json (other paths — ``/health`` — are left as they are)."""

    @web.middleware
    async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(prefix):
            return await handler(request)
        return await convert(request, handler)

    return problems


async def convert(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place errors become problem+json."""
    try:
        return await handler(request)
    except ApiProblem as problem:
        return problem_response(request, problem)
    except ValidationError as exc:
        return problem_response(request, from_validation(exc))
    except (SettingError, CodeError) as exc:
        return problem_response(request, from_setting_error(exc))
    except StoreError as exc:
        text = str(exc)
        status, code = (404, "not_found") if text.startswith("no ") else (
            (409, "conflict") if "exists already" in text or "assigned already" in text
            or "belongs to another" in text else (422, "refused"))
        return problem_response(request, ApiProblem(status, code, text))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, ("http_error", ""))[0]
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return problem_response(request, ApiProblem(exc.status, code, exc.reason,
                                                    headers=headers))
    except Exception:
        log.exception("api.internal_error", method=request.method, path=request.path)
        return problem_response(request, ApiProblem(500, "internal_error",
                                                    "the server failed; the log says why"))


def problem_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`Problem` (for the OpenAPI document)."""
    return Problem.model_json_schema()
