"""What the kinds of call forwarding share (FEATURES.md: four kinds, each with its own target):
an ``enabled`` flag and a ``target`` per user, switched on with a code + number (the number must
be routable for the user; a bare code prompts for it) and off with another code that keeps the
number for next time; a ``query`` code (``*21*`` …) announces the state: "forwarding is on to"
and the number spoken digit by digit, or "forwarding is off". Switching is confirmed with the
"activated" / "deactivated" announcement, a refused number with "error" (tones where the prompt
set lacks them). Each kind decides in its own hook with :meth:`Forwarding.forward`.
"""

from __future__ import annotations

from collections.abc import Mapping

from features.announce import refused, switched
from pbx.callcontrol import (
    BaseFeature,
    CallContext,
    Confirm,
    Continue,
    Decision,
    FeatureCode,
    Prompt,
    Redirect,
    Setting,
)

__all__ = ["MAX_TARGET", "Forwarding", "valid_target"]

#: The longest forward target (digits, an optional leading "+").
MAX_TARGET = 32


def valid_target(number: str) -> bool:
    """Digits with an optional leading ``+``, at most :data:`MAX_TARGET` long."""
    digits = number.removeprefix("+")
    return 0 < len(number) <= MAX_TARGET and digits.isdigit()


class Forwarding(BaseFeature):
    """A kind of forwarding: subclasses set ``name``, ``priority``, ``reason`` (RFC 5806),
    ``feature_codes`` (actions ``on`` with a number, ``off``) and call :meth:`forward` from
    the hook their kind runs in."""

    reason = "unconditional"
    settings_schema: Mapping[str, Setting] = {
        "enabled": Setting(bool, False, "forward the calls"),
        "target": Setting(str, "", "extension or number the calls go to",
                          max_length=MAX_TARGET),
    }

    def forward(self, ctx: CallContext) -> Decision:
        """Redirect to the user's target while on."""
        target = ctx.setting(self, "target")
        if ctx.setting(self, "enabled") and target:
            return Redirect(target, self.reason)
        return Continue()

    def query(self, ctx: CallContext) -> Confirm:
        """The interrogation's answer: "forwarding is on to <target>" or "forwarding is off"."""
        target = ctx.setting(self, "target")
        if ctx.setting(self, "enabled") and target:
            return Confirm(prompt=Prompt("forward_on_to", say=target))
        return Confirm(prompt=Prompt("forward_off"))

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``on`` + number (routable for this user), ``off``, ``query``."""
        if code.action == "query":
            return self.query(ctx)
        if code.action == "off":
            return switched(ctx.update(self, enabled=False), False)
        if not valid_target(number) or ctx.user is None or ctx.services is None \
                or not ctx.services.routable(ctx.user, number):
            return refused()
        return switched(ctx.update(self, enabled=True, target=number), True)
