"""Parallel ringing on the mobile (FEATURES.md): incoming calls ring the user's own mobile number
over the trunk together with their devices; the first to answer wins, the others get CANCEL
with ``Reason: SIP;cause=200;text="Call completed elsewhere"`` (call control's ring does that).

``*12`` on (only once the user has a mobile number), ``*13`` off. This feature makes no decision
of its own: ringing asks it for the extra target (:meth:`ParallelRinging.targets`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from features.announce import refused, switched
from pbx.callcontrol import (
    BaseFeature,
    CallContext,
    Decision,
    FeatureCode,
    Setting,
    Target,
)


class ParallelRinging(BaseFeature):
    """The user's mobile rings with their devices while on."""

    name = "parallel_ringing"
    priority = 490
    settings_schema: Mapping[str, Setting] = {
        "enabled": Setting(bool, False, "ring the mobile number together with the devices"),
    }
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("on"),
        FeatureCode("off"),
    )

    def targets(self, ctx: CallContext) -> tuple[Target, ...]:
        """The mobile's target (over the user's trunk) while on; none otherwise."""
        user = ctx.user
        if user is None or not user.mobile or ctx.call is None or ctx.services is None \
                or not ctx.setting(self, "enabled"):
            return ()
        return ctx.services.number_targets(ctx.call, user, user.mobile)

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``*12`` on (refused without a mobile number), ``*13`` off."""
        if code.action == "on" and (ctx.user is None or not ctx.user.mobile):
            return refused()
        on = code.action == "on"
        return switched(ctx.update(self, enabled=on), on)
