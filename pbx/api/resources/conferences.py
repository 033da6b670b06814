"""``/calls/{call}/conference``: the conference of a call in progress and its participants —
add one (the PBX rings a number and joins it when it answers; a two-party call becomes a
conference, as with in-call ``*3``), drop one (BYE; the conference ends when fewer than two
remain), mute or unmute one (what it says is no longer mixed; it still hears the others).

Who may: whoever may see the call (GET /calls): the tenant's admins, the users in it; any
other call is 404. The operations are :class:`features.conference_control.ConferenceControl`'s,
which the phones' ``*3`` shares; this module only translates.
"""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from pbx.api.auth import Principal
from pbx.api.context import LiveCall
from pbx.api.models import Request
from pbx.api.problems import ApiProblem, FieldError
from pbx.api.resources.common import admin_sees, not_found
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.callcontrol import ConferenceError, ConferenceOperations, ParticipantView

__all__ = ["ConferenceOut", "ParticipantAdd", "ParticipantOut", "ParticipantPatch",
           "register"]


class ParticipantOut(BaseModel):
    """A participant: ``id`` is its leg's id, ``state`` ``joined`` (in the mix) or
    ``ringing`` (being added)."""

    id: str
    party: str
    state: Literal["joined", "ringing"]
    muted: bool


class ConferenceOut(BaseModel):
    """A call's conference."""

    call_id: str
    sample_rate: int
    participants: list[ParticipantOut]


class ParticipantAdd(Request):
    """Either ``number``: ring it (an extension or an external number, routed as the call's
    caller dials it) and join it when it answers; or ``call_id``: another live call of the
    same user — its other party joins now and the user's leg in it ends (a three-way call
    from a held call and a second one). One of the two is required (the model lets both be
    missing only so that the call is looked up first: 404 before 422)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    number: Annotated[str, Field(pattern=r"^\+?[0-9A-Za-z*#._-]{1,64}$")] | None = None
    call_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None


class ParticipantsAdded(BaseModel):
    """The legs rung for the new participant (one per device); the first to answer joins."""

    call_id: str
    legs: list[str]


class ParticipantPatch(Request):
    """Mute (``true``) or unmute a joined participant (required; missing only so that the
    call is looked up first: 404 before 422)."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"required": ["muted"]})

    muted: StrictBool | None = None


def _sees(who: Principal, call: LiveCall) -> bool:
    return admin_sees(who, call.tenant_id) or (
        who.user_id is not None and who.user_id in call.user_ids
        and who.sees_tenant(call.tenant_id))


def _control(req: ApiRequest) -> ConferenceOperations:
    control = req.ctx.conferences
    if control is None:
        raise ApiProblem(503, "unavailable", "calls are not running")
    return control


def _call_id(req: ApiRequest) -> str:
    """The path's call if the principal may see it (else 404)."""
    call_id = req.path("call")
    if not any(c.call_id == call_id and _sees(req.who, c) for c in req.ctx.live_calls()):
        raise not_found(f"call {call_id[:80]}")
    return call_id


def _problem(exc: ConferenceError) -> ApiProblem:
    if exc.reason == "not_answered":
        return ApiProblem(409, "not_answered", exc.detail)
    if exc.reason == "no_route":
        return ApiProblem(422, "no_route", exc.detail, field="/number")
    if exc.reason in ("same_call", "not_in_call"):
        return ApiProblem(422, exc.reason, exc.detail, field="/call_id")
    return ApiProblem(404, "not_found", exc.detail)


def _missing(name: str) -> ApiProblem:
    return ApiProblem(422, "validation_failed", f"{name} is required", field="/" + name,
                      errors=[FieldError(field="/" + name, code="missing",
                                         message=f"{name} is required")])


def _participant(p: ParticipantView) -> ParticipantOut:
    return ParticipantOut(id=p.leg_id, party=p.party,
                          state="ringing" if p.state == "ringing" else "joined", muted=p.muted)


async def get_conference(req: ApiRequest) -> web.StreamResponse:
    call_id = _call_id(req)
    try:
        view = _control(req).view(call_id)
    except ConferenceError as exc:
        raise _problem(exc) from None
    return json_response(ConferenceOut(call_id=view.call_id, sample_rate=view.sample_rate,
                                       participants=[_participant(p)
                                                     for p in view.participants]))


async def add_participant(req: ApiRequest) -> web.StreamResponse:
    call_id = _call_id(req)
    body = req.body_as(ParticipantAdd)
    if (body.number is None) == (body.call_id is None):
        raise _missing("number") if body.number is None else ApiProblem(
            422, "validation_failed", "send number or call_id, not both", field="/call_id")
    try:
        if body.number is not None:
            legs = _control(req).add(call_id, body.number)
        else:
            legs = _control(req).merge(call_id, body.call_id or "", _merging_user(req, call_id,
                                                                                  body.call_id or ""))
    except ConferenceError as exc:
        raise _problem(exc) from None
    return json_response(ParticipantsAdded(call_id=call_id, legs=legs), status=202)


def _merging_user(req: ApiRequest, call_id: str, other: str) -> int:
    """Whose two calls are merged: the signed-in user; for an administrator's token, the one
    user who is in both (422 otherwise). The other call must be visible too (404)."""
    calls = {c.call_id: c for c in req.ctx.live_calls() if _sees(req.who, c)}
    if other not in calls:
        raise not_found(f"call {other[:80]}")
    if req.who.user_id is not None:
        return req.who.user_id
    common = set(calls[call_id].user_ids) & set(calls[other].user_ids)
    if len(common) != 1:
        raise ApiProblem(422, "not_in_call", "the two calls have no one user in common",
                         field="/call_id")
    return common.pop()


async def drop_participant(req: ApiRequest) -> web.StreamResponse:
    call_id = _call_id(req)
    try:
        _control(req).drop(call_id, req.path("participant"))
    except ConferenceError as exc:
        raise _problem(exc) from None
    return web.Response(status=204)


async def patch_participant(req: ApiRequest) -> web.StreamResponse:
    call_id = _call_id(req)
    leg_id = req.path("participant")
    muted = req.body_as(ParticipantPatch).muted
    if muted is None:
        raise _missing("muted")
    control = _control(req)
    try:
        control.mute(call_id, leg_id, muted)
        view = control.view(call_id)
    except ConferenceError as exc:
        raise _problem(exc) from None
    found = next(p for p in view.participants if p.leg_id == leg_id)
    return json_response(_participant(found))


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    call = {"type": "string", "minLength": 1, "maxLength": 256,
            "description": "the caller's SIP Call-ID (from GET /calls or the events)"}
    both = {"call": call, "participant": {"type": "string", "minLength": 1, "maxLength": 40,
                                          "description": "the participant's id (its leg)"}}
    router.add(Route("GET", "/calls/{call}/conference", get_conference,
                     "A call's conference and its participants", "calls", "get_conference",
                     response=ConferenceOut, path_params={"call": call},
                     description="404 when the call is no conference (yet)."))
    router.add(Route("POST", "/calls/{call}/conference/participants", add_participant,
                     "Add a participant (ring a number, join it when it answers)", "calls",
                     "add_conference_participant", body=ParticipantAdd,
                     response=ParticipantsAdded, status=202, path_params={"call": call},
                     errors=(409,),
                     description="A two-party call becomes a conference (as in-call *3). "
                                 "Events conference.joined follow when it answers."))
    router.add(Route("DELETE", "/calls/{call}/conference/participants/{participant}",
                     drop_participant, "Drop a participant (BYE, or CANCEL while ringing)",
                     "calls", "drop_conference_participant", status=204, path_params=both,
                     description="With fewer than two left the conference (the call) ends."))
    router.add(Route("PATCH", "/calls/{call}/conference/participants/{participant}",
                     patch_participant, "Mute or unmute a participant", "calls",
                     "patch_conference_participant", body=ParticipantPatch,
                     response=ParticipantOut, path_params=both,
                     description="A muted participant is not mixed into the others' audio; "
                                 "it still hears them."))
