"""What the kinds of call forwarding share (FEATURES.md: four kinds, each with its own target):
an ``enabled`` flag and a ``target`` per user, switched on with a code + number (the number must
be routable for the user; a bare code prompts for it) and off with another code that keeps the
number for next time; a ``query`` code (``*21*`` …) announces the state: "forwarding is on to"
and the number spoken digit by digit, or "forwarding is off". Switching is confirmed with the
"activated" / "deactivated" announcement, a refused number with "error" (tones where the prompt
set lacks them). Each kind decides in its own hook with :meth:`Forwarding.forward`.

Forwarding to the voicemail box (``*21``/``#21``, ``*40``/``#40``, ``*41``/``#41``: the actions
``voicemail_on``/``voicemail_off``) is the same kind with the ``voicemail`` flag instead of a
target: :meth:`Forwarding.divert` then deposits the call in the user's box
(:class:`features.voicemail.Voicemail`, handed to the kind as ``box``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from features.voicemail import Voicemail

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
        "voicemail": Setting(bool, False, "the calls go to the voicemail box instead of the "
                             "target"),
    }

    def __init__(self, box: Voicemail | None = None) -> None:
        #: the voicemail feature the calls go to while ``voicemail`` is on
        self.box = box

    def to_voicemail(self, ctx: CallContext) -> bool:
        """Forwarding to the box is on."""
        return bool(ctx.setting(self, "enabled") and ctx.setting(self, "voicemail"))

    async def divert(self, ctx: CallContext) -> Decision:
        """Into the box while forwarding to voicemail is on, else :meth:`forward`."""
        if self.to_voicemail(ctx):
            return await self.box.deposit(ctx) if self.box is not None else Continue()
        return self.forward(ctx)

    def forward(self, ctx: CallContext) -> Decision:
        """Redirect to the user's target while on."""
        target = ctx.setting(self, "target")
        if ctx.setting(self, "enabled") and target and not ctx.setting(self, "voicemail"):
            return Redirect(target, self.reason)
        return Continue()

    def query(self, ctx: CallContext) -> Confirm:
        """The interrogation's answer: "forwarding is on to <target>" or "forwarding is off"."""
        target = ctx.setting(self, "target")
        if self.to_voicemail(ctx):
            return Confirm(prompt=Prompt("forward_to_voicemail"))
        if ctx.setting(self, "enabled") and target:
            return Confirm(prompt=Prompt("forward_on_to", say=target))
        return Confirm(prompt=Prompt("forward_off"))

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``on`` + number (routable for this user), ``off``, ``query``, ``voicemail_on`` /
        ``voicemail_off``."""
        if code.action == "query":
            return self.query(ctx)
        if code.action == "off":
            return switched(ctx.update(self, enabled=False), False)
        if code.action == "voicemail_on":
            return switched(ctx.update(self, enabled=True, voicemail=True), True)
        if code.action == "voicemail_off":
            return switched(ctx.update(self, enabled=False, voicemail=False), False)
        if not valid_target(number) or ctx.user is None or ctx.services is None \
                or not ctx.services.routable(ctx.user, number):
            return refused()
        # a number replaces forwarding to the box
        changes: dict[str, Any] = {"enabled": True, "target": number}
        if ctx.setting(self, "voicemail"):
            changes["voicemail"] = False
        return switched(ctx.update(self, **changes), True)
