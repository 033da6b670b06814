"""Call waiting (FEATURES.md): while the user is in a call, a second call is offered to them —
their phones show it, a leg that cannot (the mobile over a trunk) hears the call-waiting tone
in its call (call control does that while the second call rings). Off, the second caller finds
the user busy: the busy chain runs (busy forwarding, voicemail), else 486.

``*43`` on, ``#43`` off; ``*70`` + number places one call during which call waiting is off.
On by default, as on the phones users know.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

from features.announce import refused, switched
from pbx.callcontrol import (
    BaseFeature,
    Busy,
    Call,
    CallContext,
    Continue,
    Decision,
    Dial,
    FeatureCode,
    Setting,
)


class CallWaiting(BaseFeature):
    """Busy while the user is in a call and call waiting is off (priority 400: after immediate
    forwarding and remote office, before ringing)."""

    name = "call_waiting"
    priority = 400
    settings_schema: Mapping[str, Setting] = {
        "enabled": Setting(bool, True, "offer a second call while on the phone"),
    }
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("on"),
        FeatureCode("off"),
        FeatureCode("off_this_call", takes_number=True),
    )

    def __init__(self) -> None:
        #: the calls placed with ``*70`` (no call waiting during them), while they last: so
        #: that an incoming call scans the user's calls only when there is such a call at all
        self._without: weakref.WeakSet[Call] = weakref.WeakSet()

    async def on_terminate(self, ctx: CallContext) -> Decision:
        """Busy when the user is in a call and does not take a second one."""
        if not ctx.active:
            return Continue()
        if not ctx.setting(self, "enabled") or (self._without and any(
                a.call.per_call.get(self.name) is False for a in ctx.active)):
            return Busy()
        return Continue()

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``*43`` on, ``#43`` off; ``*70`` + number calls it without call waiting."""
        if code.action == "off_this_call":
            if ctx.call is None:
                return refused()
            ctx.call.per_call[self.name] = False
            self._without.add(ctx.call)
            return Dial(number)
        on = code.action == "on"
        return switched(ctx.update(self, enabled=on), on)
