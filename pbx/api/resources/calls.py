"""``/calls``: the calls in progress the token may see — its tenant's for an admin (every
tenant's for a system admin), the calls the user is in for a user token — and hanging one up
(``DELETE /calls/{call}``: every leg ends, BYE or CANCEL as each needs). A call is named by the
caller's SIP Call-ID, as in the call events and the history."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from pbx.api.auth import Principal
from pbx.api.context import LiveCall
from pbx.api.models import ListQuery, Page
from pbx.api.resources.common import admin_sees, not_found, page
from pbx.api.routes import ApiRequest, ApiRouter, Route, json_response

__all__ = ["CallOut", "CallPage", "register"]

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
