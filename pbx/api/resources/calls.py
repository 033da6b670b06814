"""``/calls``: the calls in progress the token may see — its tenant's for an admin (every
tenant's for a system admin), the calls the user is in for a user token — and hanging one up
(``DELETE /calls/{call}``: every leg ends, BYE or CANCEL as each needs). A call is named by the
caller's SIP Call-ID, as in the call events and the history.

Live call control (:class:`pbx.services.live_calls.LiveCallService`, the in-call codes' call
control): ``POST /calls/{call}/hold`` and ``/resume`` put the other party of a user's leg on
hold (music on hold) and back; ``POST /calls/{call}/transfer`` with ``target`` (a number or
extension) is a blind transfer, with ``call_id`` (another call of the same user) an attended
one — the remote parties are connected and the user's legs end. The user acting is the
token's user; an admin names one (``user_id``) unless the call has one user's leg only.
404 for a call the token does not see, 409 when the call's state does not allow it (still
ringing, the user not connected in it)."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from pbx.api.auth import Principal
from pbx.api.context import CallControl, LiveCall
from pbx.api.models import ListQuery, Page, Request
from pbx.api.problems import ApiProblem
from pbx.api.resources.common import admin_sees, not_found, page
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response
from pbx.callcontrol import CallStateError

__all__ = ["CallOut", "CallPage", "HoldIn", "TransferIn", "TransferOut", "register"]

SORT = ("since", "caller", "callee", "state")


class CallOut(BaseModel):
    """A call in progress (times: POSIX seconds)."""

    call_id: str
    tenant_id: int
    user_ids: list[int]
    direction: str
    caller: str
    callee: str
    state: Literal["ringing", "answered"]
    since: float
    answered_at: float | None
    #: a conference now (GET /calls/{call}/conference lists its participants)
    conference: bool = False


class CallPage(Page[CallOut]):
    """Calls in progress."""


class HoldIn(Request):
    """Whose leg holds (or resumes): the token's user; an admin may name one of the call's
    users (default: the call's only user)."""

    user_id: Annotated[int, Field(ge=1)] | None = None


class TransferIn(Request):
    """A blind transfer (``target``: a number or extension) or an attended one (``call_id``:
    another call in progress of the same user); exactly one of them."""

    target: Annotated[str, Field(min_length=1, max_length=32,
                                 pattern=r"^\+?[0-9*#]+$")] | None = None
    call_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    user_id: Annotated[int, Field(ge=1)] | None = None


class TransferOut(BaseModel):
    """The transfer done: ``call_id`` is the call the remote party is in now (the new call of
    a blind transfer, the other call of an attended one)."""

    kind: Literal["blind", "attended"]
    call_id: str
    user_id: int


def _sees(who: Principal, call: LiveCall) -> bool:
    return admin_sees(who, call.tenant_id) or (
        who.user_id is not None and who.user_id in call.user_ids
        and who.sees_tenant(call.tenant_id))


def _out(c: LiveCall) -> CallOut:
    return CallOut(call_id=c.call_id, tenant_id=c.tenant_id, user_ids=list(c.user_ids),
                   direction=c.direction, caller=c.caller, callee=c.callee,
                   state="ringing" if c.state == "ringing" else "answered", since=c.since,
                   answered_at=c.answered_at, conference=c.conference)


def _visible(req: ApiRequest) -> list[LiveCall]:
    return [c for c in req.ctx.live_calls() if _sees(req.who, c)]


async def list_calls(req: ApiRequest) -> web.StreamResponse:
    items, total = page(_visible(req), req.query_as(ListQuery), lambda c, k: getattr(c, k),
                        SORT, "since")
    return json_response(CallPage(items=[_out(c) for c in items], total=total))


def _call(req: ApiRequest) -> LiveCall:
    call_id = req.path("call")
    found = next((c for c in _visible(req) if c.call_id == call_id), None)
    if found is None:
        raise not_found(f"call {call_id[:80]}")
    return found


async def get_call(req: ApiRequest) -> web.StreamResponse:
    return json_response(_out(_call(req)))


async def hang_up_call(req: ApiRequest) -> web.StreamResponse:
    call = _call(req)
    hang_up = req.ctx.hang_up
    if hang_up is None or not hang_up(call.call_id):
        raise not_found(f"call {call.call_id[:80]}")  # ended meanwhile
    return web.Response(status=204)


def _acting_user(req: ApiRequest, call: LiveCall, requested: int | None) -> int:
    """The user whose leg the operation is for (see the module docstring)."""
    who = req.who
    if not admin_sees(who, call.tenant_id):
        assert who.user_id is not None  # _sees let only the call's users through
        if requested is not None and requested != who.user_id:
            raise ApiProblem(403, "forbidden", "a user acts on their own legs only",
                             field="/user_id")
        return who.user_id
    if requested is not None:
        if requested not in call.user_ids:
            raise ApiProblem(409, "conflict", f"user {requested} is not in this call",
                             field="/user_id")
        return requested
    if len(call.user_ids) != 1:
        raise ApiProblem(409, "conflict", "name the user (user_id): the call has "
                         f"{len(call.user_ids)} users", field="/user_id")
    return call.user_ids[0]


def _control(req: ApiRequest) -> CallControl:
    control = req.ctx.call_control
    if control is None:
        raise ApiProblem(503, "unavailable", "calls are not running (yet)")
    return control


def _conflict(exc: Exception) -> ApiProblem:
    return ApiProblem(409, "call_state", f"the call's state does not allow it: {exc}")


async def _set_hold(req: ApiRequest, held: bool) -> web.StreamResponse:
    call = _call(req)
    user_id = _acting_user(req, call, req.body_as(HoldIn).user_id)
    try:
        _control(req).hold(call.call_id, user_id, held)
    except LookupError:
        raise not_found(f"call {call.call_id[:80]}") from None  # ended meanwhile
    except CallStateError as exc:
        raise _conflict(exc) from None
    return web.Response(status=204)


async def hold_call(req: ApiRequest) -> web.StreamResponse:
    return await _set_hold(req, True)


async def resume_call(req: ApiRequest) -> web.StreamResponse:
    return await _set_hold(req, False)


async def transfer_call(req: ApiRequest) -> web.StreamResponse:
    call = _call(req)
    body = req.body_as(TransferIn)
    if (body.target is None) == (body.call_id is None):
        raise ApiProblem(422, "validation_failed", "name either target or call_id",
                         field="/target")
    user_id = _acting_user(req, call, body.user_id)
    control = _control(req)
    try:
        if body.target is not None:
            moved = control.transfer(call.call_id, user_id, body.target)
            return json_response(TransferOut(kind="blind", call_id=moved, user_id=user_id))
        assert body.call_id is not None
        other = next((c for c in _visible(req) if c.call_id == body.call_id), None)
        if other is None:
            raise ApiProblem(409, "call_state", f"no call {body.call_id[:80]} of yours to "
                             "transfer to", field="/call_id")
        control.attended(call.call_id, user_id, other.call_id)
        return json_response(TransferOut(kind="attended", call_id=other.call_id,
                                         user_id=user_id))
    except LookupError:
        raise not_found(f"call {call.call_id[:80]}") from None
    except CallStateError as exc:
        raise _conflict(exc) from None


def register(router: ApiRouter) -> None:
    """The routes of this module."""
    param = {"call": {"type": "string", "minLength": 1, "maxLength": 256,
                      "description": "the caller's SIP Call-ID (from the list or the events)"}}
    router.add(Route("GET", "/calls", list_calls, "The calls in progress", "calls",
                     "list_calls", query=ListQuery, response=CallPage,
                     description="A tenant admin sees the tenant's calls, a user the calls "
                                 "they are in."))
    router.add(Route("GET", "/calls/{call}", get_call, "A call in progress", "calls",
                     "get_call", response=CallOut, path_params=param))
    router.add(Route("DELETE", "/calls/{call}", hang_up_call, "Hang up a call in progress",
                     "calls", "hang_up_call", status=204, path_params=param,
                     description="Every leg ends (BYE when answered, else CANCEL or a "
                                 "rejection); the history records the call as usual."))
    states = (404, 409, 503)
    router.add(Route("POST", "/calls/{call}/hold", hold_call, "Put the other party on hold",
                     "calls", "hold_call", body=HoldIn, status=204, path_params=param,
                     errors=states,
                     description="The other party of the user's leg hears music on hold and "
                                 "no longer the user (as the in-call code *4 does); 409 "
                                 "while the call rings."))
    router.add(Route("POST", "/calls/{call}/resume", resume_call,
                     "Take the other party back from hold", "calls", "resume_call",
                     body=HoldIn, status=204, path_params=param, errors=states))
    router.add(Route("POST", "/calls/{call}/transfer", transfer_call, "Transfer a call",
                     "calls", "transfer_call", body=TransferIn, response=TransferOut,
                     path_params=param, errors=states,
                     description="Blind (target: the remote party is connected to that "
                                 "number, the user's leg ends; a target that is busy or does "
                                 "not answer rings the user back) or attended (call_id: the "
                                 "user's other call; its remote party and this call's are "
                                 "connected, the user's legs end)."))
