"""Live calls: hold, resume, blind and attended transfer of a user's leg in a call in
progress — the one way the REST API (``/calls/{call}/...``) does them. The work is call
control's (:mod:`pbx.callcontrol.transfer`, which the in-call codes and REFER use too); this
service finds the call and the user's leg in it, checks that the call's state allows the
operation, and publishes ``call.held``, ``call.resumed`` or ``call.transferred`` on the
:class:`~pbx.services.events.EventBus`.

A call is named by its record's Call-ID (the caller's SIP Call-ID, as in ``GET /calls``); the
user's leg is the one the call's in-call dispatcher watches for that user (installed while
the call is connected: a ringing call has none, so it is a :class:`CallStateError`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog

from pbx.callcontrol import (
    CONSULTATION,
    Call,
    CallStateError,
    Leg,
    TransferHost,
    attended_transfer,
    set_hold,
    transfer_blind,
    users_of,
)
from pbx.services.events import EventBus

__all__ = ["CallStateError", "LiveCallService", "NoSuchCall"]

log = structlog.get_logger("pbx.services")


class NoSuchCall(LookupError):
    """No call in progress has that Call-ID (or it ended meanwhile)."""


class LiveCallService:
    """Call-control verbs on calls in progress (see the module docstring). ``calls`` lists
    the calls (the B2BUA's), ``host`` is what transfers need of the PBX (None while calls do
    not run), ``describe(call)`` gives its (tenant id, user ids) for the events."""

    def __init__(self, calls: Callable[[], Iterable[Call]],
                 host: Callable[[], TransferHost | None], bus: EventBus,
                 describe: Callable[[Call], tuple[int, Sequence[int]]]) -> None:
        self._calls, self._host, self.bus, self._describe = calls, host, bus, describe

    def find(self, call_id: str) -> Call:
        """The call in progress with this Call-ID (:class:`NoSuchCall`)."""
        for call in list(self._calls()):
            if call.record.call_id == call_id and not call.released \
                    and call.record.ended is None:
                return call
        raise NoSuchCall(call_id)

    def user_leg(self, call: Call, user_id: int) -> Leg:
        """``user_id``'s connected leg in ``call`` (:class:`CallStateError`: none)."""
        if call.per_call.get(CONSULTATION) is not None:
            raise CallStateError("the user is consulting in this call")
        for leg, user in users_of(call).items():
            if user.id == user_id and not leg.ended and leg.answered:
                return leg
        raise CallStateError("the user has no connected leg in this call")

    def hold(self, call_id: str, user_id: int, held: bool = True) -> None:
        """Put the other party of the user's leg on hold (music) — or back (``held`` False)."""
        call = self.find(call_id)
        set_hold(call, self.user_leg(call, user_id), held)
        self._publish("call.held" if held else "call.resumed", call, user_id)

    def transfer(self, call_id: str, user_id: int, target: str) -> str:
        """Blind transfer: the other party of the user's leg is connected to ``target`` (routed
        on the user's behalf), the user's leg ends (BYE). Returns the new call's Call-ID."""
        call = self.find(call_id)
        leg = self.user_leg(call, user_id)
        host = self._host()
        if host is None:
            raise CallStateError("calls are not running")
        moved = transfer_blind(call, leg, target, host=host)
        leg.hangup()
        self._publish("call.transferred", call, user_id, kind="blind", target=target,
                      new_call_id=moved.record.call_id)
        return moved.record.call_id

    def attended(self, call_id: str, user_id: int, other_call_id: str) -> None:
        """Attended transfer: the remote parties of the user's two calls are connected; the
        user's legs in both end (BYE)."""
        if other_call_id == call_id:
            raise CallStateError("an attended transfer needs two different calls")
        first, second = self.find(call_id), self.find(other_call_id)
        leg, other_leg = self.user_leg(first, user_id), self.user_leg(second, user_id)
        attended_transfer(first, leg, second, other_leg)
        for own in (leg, other_leg):
            if not own.ended:
                own.hangup()
        self._publish("call.transferred", first, user_id, kind="attended",
                      target=second.record.callee, new_call_id=second.record.call_id)

    def _publish(self, event: str, call: Call, user_id: int, **extra: Any) -> None:
        tenant, users = self._describe(call)
        # no ``user_id`` key: every user in the call sees the event (pbx.api.events.visible)
        data: dict[str, Any] = {"call_id": call.record.call_id, "by_user_id": user_id, "tenant_id": tenant,
                                "user_ids": sorted({*users, user_id}), **extra}
        log.info(event.replace("call.", "call.api_"), **data)
        self.bus.publish(event, data)
