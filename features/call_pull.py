"""Call pull ``*11`` (FEATURES.md §2): a user's call in progress on one of their devices moves
to the device that dialled ``*11``; the remote party keeps its dialog.

The media is anchored in our media core, so the remote party's leg does not change at all: the
bridge swaps its other side (:meth:`~pbx.callcontrol.Call.replace`) from the old device's leg to
the new one's, and the old device gets BYE. The remote party hears the gap between the two
(a few packet times); no re-INVITE is needed while the codec stays (a codec change follows the
usual bridge rebuild). The dialling device's own call (the INVITE to ``*11``) only carries its
leg over and ends empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from pbx.callcontrol import (
    ActiveCall,
    BaseFeature,
    Bridge,
    CallContext,
    Confirm,
    Decision,
    FeatureCode,
    Handled,
    InCallDispatcher,
    Setting,
)

__all__ = ["CallPull"]

log = structlog.get_logger("pbx.call_pull")


class CallPull(BaseFeature):
    """``*11``: take over the own call in progress on another own device."""

    name = "call_pull"
    priority = 920
    settings_schema: Mapping[str, Setting] = {}
    feature_codes: Sequence[FeatureCode] = (FeatureCode("pull"),)

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """Move the user's connected call here; the error tone when there is none."""
        call = ctx.call
        if call is None or call.caller is None or ctx.user is None or ctx.calls is None:
            return Confirm(ok=False)
        if self._pullable(ctx) is None:
            log.info("call_pull.nothing", call_id=call.record.call_id, user=ctx.user.key)
            return Confirm(ok=False)
        new = call.caller
        if not await call.answer(new):
            return Handled()
        found = self._pullable(ctx)  # still connected after our ACK?
        if found is None:
            return Confirm(ok=False)
        entry, bridge = found
        target, old = entry.call, entry.leg
        target.adopt(new)
        target.replace(bridge, old, new)
        if target.caller is old:
            target.caller = new
        entry.leg = new
        dispatcher = target.per_call.get(InCallDispatcher.KEY)
        if isinstance(dispatcher, InCallDispatcher):
            dispatcher.watch(new, ctx.user)  # the user's in-call codes work on the new device
        old.hangup()
        call.record.cause = "pulled"
        log.info("call_pull.pulled", call_id=target.record.call_id, user=ctx.user.key,
                 old=old.id, new=new.id)
        return Handled()

    @staticmethod
    def _pullable(ctx: CallContext) -> tuple[ActiveCall, Bridge] | None:
        """The user's oldest connected call on another device, with its bridge."""
        assert ctx.calls is not None and ctx.user is not None
        for entry in ctx.calls.of(ctx.user.key):
            c = entry.call
            if c is ctx.call or c.released or not entry.leg.answered:
                continue
            for br in c.bridges:
                if not br.closed and entry.leg in (br.a, br.b) and br.other(entry.leg).answered:
                    return entry, br
        return None
