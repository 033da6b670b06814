"""``POST /users/{user}/call-backs``: start a call-back (click-to-dial, 3PCC as in RFC 3725)
for a user the token sees — the PBX rings the user's chosen phone and, once it answers, calls
the target on their behalf (:mod:`features.call_back`). ``asyncpbx call-back USER TARGET``
is a client of this operation (:mod:`pbx.cli_callback`)."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pbx.api.models import Request
from pbx.api.problems import ApiProblem, FieldError
from pbx.api.resources.common import USER_PARAM, user_of
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response

__all__ = ["CallBackOut", "CallBackStart", "register"]


class CallBackStart(Request):
    """What to call, and (optionally) which of the user's phones rings first (default: their
    ``call_back.phone`` setting; the remote office number while remote office is on).

    ``target`` is required (the document says so); the model lets it be missing only so that
    the user is looked up first: a token that does not see the user gets 404 whatever it
    sends, never a 422 that tells it the operation exists for that user."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"required": ["target"]})

    target: Annotated[str, Field(min_length=1, max_length=32,
                                 pattern=r"^\+?[0-9*#]+$")] | None = None
    phone: Literal["mobile", "remote_office", "device"] | None = None


class CallBackOut(BaseModel):
    """The call-back started (it runs on; the call history has its outcome)."""

    call_id: str
    user_id: int
    target: str
    phone: str | None


async def start_call_back(req: ApiRequest) -> web.StreamResponse:
    user = user_of(req)
    body = req.body_as(CallBackStart)
    if body.target is None:
        raise ApiProblem(422, "validation_failed", "name the target", field="/target",
                         errors=[FieldError(field="/target", code="missing",
                                            message="the number or extension to call")])
    if body.phone == "mobile" and not user.mobile_number:
        raise ApiProblem(409, "conflict", "the user has no mobile number", field="/phone")
    if body.phone == "remote_office" and not user.remote_office_number:
        raise ApiProblem(409, "conflict", "the user has no remote office number",
                         field="/phone")
    place = req.ctx.call_back
    try:
        if place is None:
            raise RuntimeError("no calls here")
        call_id = place(user, body.target, body.phone)
    except RuntimeError as exc:
        raise ApiProblem(503, "unavailable", "calls are not running (yet)") from exc
    return json_response(CallBackOut(call_id=call_id, user_id=user.id, target=body.target,
                                     phone=body.phone), 202)


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    router.add(Route("POST", "/users/{user}/call-backs", start_call_back,
                     "Call the user's phone, then the target, and connect both", "calls",
                     "start_call_back", body=CallBackStart, response=CallBackOut, status=202,
                     path_params=USER_PARAM, errors=(409, 503),
                     description="Third-party call control (RFC 3725): the PBX first calls "
                                 "the user's chosen phone (mobile, remote office number or "
                                 "their devices); only when that answers does it call the "
                                 "target, presenting the user's business number (CLIR and "
                                 "displayed-number settings apply)."))
