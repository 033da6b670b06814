"""Call forwarding when unreachable (FEATURES.md): when none of the user's devices is registered,
or every device failed (not a ring timeout: that is no-answer forwarding), the call goes to the
target — typically the user's mobile number — instead of the caller hearing 480.

``*94`` + number on (``*94`` alone prompts for it), ``*95`` off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from features.forward_immediate import MAX_TARGET, valid_target
from pbx.callcontrol import (
    BaseFeature,
    CallContext,
    Confirm,
    Continue,
    Decision,
    FeatureCode,
    Redirect,
    Setting,
)


class ForwardUnreachable(BaseFeature):
    """Redirect when the user cannot be reached (runs in the unreachable chain only)."""

    name = "forward_unreachable"
    priority = 700
    settings_schema: Mapping[str, Setting] = {
        "enabled": Setting(bool, False, "forward calls while no device can be reached"),
        "target": Setting(str, "", "extension or number the calls go to",
                          max_length=MAX_TARGET),
    }
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("on", "*94", takes_number=True, description="forwarding when unreachable on"),
        FeatureCode("off", "*95", description="forwarding when unreachable off"),
    )

    async def on_unreachable(self, ctx: CallContext) -> Decision:
        """Redirect to the target while on."""
        target = ctx.setting(self, "target")
        if ctx.setting(self, "enabled") and target:
            return Redirect(target, "unavailable")
        return Continue()

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``*94`` + number on (routable for this user), ``*95`` off."""
        if code.action == "off":
            return Confirm(ctx.update(self, enabled=False))
        if not valid_target(number) or ctx.user is None or ctx.services is None \
                or not ctx.services.routable(ctx.user, number):
            return Confirm(ok=False)
        return Confirm(ctx.update(self, enabled=True, target=number))
