"""Do not disturb (FEATURES.md): callers get busy, the call is logged as missed.

``*78`` switches it on, ``*79`` off (the code table's defaults, pbx/feature_codes.toml). It runs
first in the terminating chain, so no device rings; the busy chain does not run either (a user
who does not want to be disturbed is not forwarded on busy by accident — forwarding immediate,
which they chose, runs after DND only when DND is off). With ``ring_burst`` on, the user's
phones ring briefly for each call they were not disturbed with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from features.announce import switched
from pbx.callcontrol import (
    BaseFeature,
    CallContext,
    Continue,
    Decision,
    FeatureCode,
    Reject,
    Setting,
)

#: How long the notification rings the user's phones.
RING_BURST_SECONDS = 1.5


class DoNotDisturb(BaseFeature):
    """Reject incoming calls with 486 Busy Here while on."""

    name = "dnd"
    priority = 100
    settings_schema: Mapping[str, Setting] = {
        "enabled": Setting(bool, False, "callers get busy; no device rings"),
        "ring_burst": Setting(bool, False, "ring the phones briefly for each rejected call"),
    }
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("on"),
        FeatureCode("off"),
    )

    async def on_terminate(self, ctx: CallContext) -> Decision:
        """Busy while on."""
        if ctx.setting(self, "enabled"):
            if ctx.call is not None and ctx.setting(self, "ring_burst"):
                ctx.call.ring_burst(ctx.devices, RING_BURST_SECONDS)
            return Reject(486, "Busy Here")
        return Continue()

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``*78`` on, ``*79`` off: confirmed with the "activated" / "deactivated"
        announcement ("error" when the change failed)."""
        on = code.action == "on"
        return switched(ctx.update(self, enabled=on), on)
