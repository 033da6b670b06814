"""Pickup (FEATURES.md §2, FEATURE_CODES.md): take a call that rings a colleague.

* ``*98`` — a call ringing any other member of the user's pickup groups (groups are
  administered with ``asyncpbx pickup-group``; the oldest ring is taken);
* ``*97`` + extension — the call ringing that extension (directed pickup);
* ``*33`` + extension — directed pickup with barge-in: the extension's *answered* call becomes
  a conference the picker joins (:mod:`features.conference`).

Theory of operation
-------------------
The picker's own call (the INVITE to ``*97201``) is only the vehicle: the picker's leg is
answered, then moved into the ringing call (:meth:`~pbx.callcontrol.Call.adopt`) and
:class:`~pbx.callcontrol.PickedUp` is posted to it — that call's ring ends as if the picker had
answered (every ringing phone gets CANCEL) and its script connects the caller to the picker.
The vehicle call then ends with no leg left. Who rings whom comes from
:class:`~pbx.callcontrol.ActiveCalls` (``ctx.calls``); nothing here asks SIP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from features.conference import start_conference
from pbx.callcontrol import (
    ActiveCall,
    BaseFeature,
    CallContext,
    Confirm,
    Decision,
    FeatureCode,
    Handled,
    InCallDispatcher,
    PickedUp,
    RingingCall,
    Setting,
    UserView,
)

__all__ = ["Pickup", "user_key"]

log = structlog.get_logger("pbx.pickup")


def user_key(picker: UserView, extension: str) -> str:
    """The call-control key of ``extension`` in ``picker``'s tenant (``ext`` in the default
    tenant, ``ext@domain`` in the others, as :class:`~pbx.routing.calls.CallRouter` makes it)."""
    _, at, domain = picker.key.partition("@")
    return f"{extension}@{domain}" if at else extension


class Pickup(BaseFeature):
    """``*98`` group pickup, ``*97`` + extension directed, ``*33`` + extension barge-in."""

    name = "pickup"
    priority = 910
    settings_schema: Mapping[str, Setting] = {}
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("group"),
        FeatureCode("directed", takes_number=True),
        FeatureCode("barge_in", takes_number=True),
    )

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """Pick up (or barge in); the error tone when there is nothing to take."""
        if ctx.user is None or ctx.calls is None or ctx.call is None:
            return Confirm(ok=False)
        if code.action == "barge_in":
            return await self._barge_in(ctx, user_key(ctx.user, number))
        if code.action == "directed":
            keys: Sequence[str] = (user_key(ctx.user, number),)
        else:
            keys = [k for k in (ctx.services.pickup_peers(ctx.user)
                                if ctx.services is not None else ()) if k != ctx.user.key]
        return await self._pick_up(ctx, keys)

    @staticmethod
    def _ringing(ctx: CallContext, keys: Sequence[str]) -> RingingCall | None:
        assert ctx.calls is not None
        found = [r for key in keys for r in ctx.calls.ringing(key)
                 if r.call is not ctx.call and not r.call.released]
        return min(found, key=lambda r: r.call.record.started) if found else None

    async def _pick_up(self, ctx: CallContext, keys: Sequence[str]) -> Decision:
        call = ctx.call
        assert call is not None and ctx.calls is not None
        if self._ringing(ctx, keys) is None or call.caller is None:
            log.info("pickup.nothing_ringing", call_id=call.record.call_id, users=list(keys))
            return Confirm(ok=False)
        picker = call.caller
        if not await call.answer(picker):
            return Handled()
        ringing = self._ringing(ctx, keys)  # still ringing after the picker's ACK?
        if ringing is None:
            return Confirm(ok=False)
        target = ringing.call
        target.adopt(picker)
        target.post(PickedUp(picker))
        call.record.cause = "picked up"
        log.info("pickup.taken", call_id=target.record.call_id, by=ctx.user.key
                 if ctx.user is not None else None, ringing=ringing.user)
        return Handled()

    async def _barge_in(self, ctx: CallContext, key: str) -> Decision:
        call = ctx.call
        assert call is not None and ctx.calls is not None
        if self._answered(ctx, key) is None or call.caller is None:
            log.info("pickup.nothing_to_barge", call_id=call.record.call_id, user=key)
            return Confirm(ok=False)
        barger = call.caller
        if not await call.answer(barger):
            return Handled()
        entry = self._answered(ctx, key)
        if entry is None:
            return Confirm(ok=False)
        room = start_conference(entry.call)
        room.join(barger)
        dispatcher = entry.call.per_call.get(InCallDispatcher.KEY)
        if isinstance(dispatcher, InCallDispatcher) and ctx.user is not None:
            dispatcher.watch(barger, ctx.user)  # *3 from the barger adds participants too
        call.record.cause = "barged in"
        log.info("pickup.barge_in", call_id=entry.call.record.call_id, by=ctx.user.key
                 if ctx.user is not None else None, user=key)
        return Handled()

    @staticmethod
    def _answered(ctx: CallContext, key: str) -> ActiveCall | None:
        """``key``'s call in progress with a connected party (its own leg answered)."""
        assert ctx.calls is not None
        for entry in ctx.calls.of(key):
            c = entry.call
            if c is ctx.call or c.released or not entry.leg.answered:
                continue
            if any(not br.closed and entry.leg in (br.a, br.b) for br in c.bridges) or \
                    entry.leg in getattr(c.per_call.get("conference"), "members", ()):
                return entry
        return None
