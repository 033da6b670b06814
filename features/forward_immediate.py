"""Call forwarding immediate (FEATURES.md): every incoming call goes straight to the target, an
extension or an external number (over the trunk, with the forwarding user's permissions and
number, and a Diversion header naming them).

``*72`` + number switches it on to that number (``*72`` alone prompts for it, ending with
``#``); ``*73`` switches it off and keeps the number for next time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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

#: What a forward target may look like: digits, an optional leading "+" (E.164).
MAX_TARGET = 32


def valid_target(number: str) -> bool:
    """Digits with an optional leading ``+``, at most :data:`MAX_TARGET` long."""
    digits = number.removeprefix("+")
    return 0 < len(number) <= MAX_TARGET and digits.isdigit()


class ForwardImmediate(BaseFeature):
    """Redirect every incoming call while on (priority 200: after DND, before ringing)."""

    name = "forward_immediate"
    priority = 200
    settings_schema: Mapping[str, Setting] = {
        "enabled": Setting(bool, False, "forward every incoming call"),
        "target": Setting(str, "", "extension or number the calls go to",
                          max_length=MAX_TARGET),
    }
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("on", "*72", takes_number=True, description="forwarding immediate on"),
        FeatureCode("off", "*73", description="forwarding immediate off"),
    )

    async def on_terminate(self, ctx: CallContext) -> Decision:
        """Redirect to the target while on."""
        target = ctx.setting(self, "target")
        if ctx.setting(self, "enabled") and target:
            return Redirect(target, "unconditional")
        return Continue()

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``*72`` + number on (the number must be routable for this user), ``*73`` off."""
        if code.action == "off":
            return Confirm(ctx.update(self, enabled=False))
        if not valid_target(number) or ctx.user is None or ctx.services is None \
                or not ctx.services.routable(ctx.user, number):
            return Confirm(ok=False)
        return Confirm(ctx.update(self, enabled=True, target=number))
