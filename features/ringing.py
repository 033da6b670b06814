"""Ordinary ringing: an incoming call rings all of the callee's devices at once.

The ring timeout is a per-user setting, in seconds: 4 rings of 5 s (German cadence, 1 s tone
and 4 s pause — FEATURES.md "one ring lasts 5 s") = 20 s by default, after which the caller gets
480 (or the no-answer chain forwards the call). The server's ``[calls] ring_timeout`` replaces
the default for users who have not chosen their own. A user with no reachable device gets no
Ring decision: the chain falls through and the call is answered 480.
"""

from __future__ import annotations

from collections.abc import Mapping

from features.base import BaseFeature, CallContext, Continue, Decision, Ring, Setting

#: One ring (s) and the default number of rings before "no answer".
RING_SECONDS = 5.0
DEFAULT_RINGS = 4


class OrdinaryRinging(BaseFeature):
    """Parallel ringing of every registered device of the callee (priority 500: after
    DND/immediate forwarding, before no-answer forwarding and voicemail)."""

    name = "ringing"
    priority = 500
    settings_schema: Mapping[str, Setting] = {
        "ring_timeout": Setting(float, RING_SECONDS * DEFAULT_RINGS,
                                "seconds to ring before the call counts as unanswered",
                                minimum=5.0, maximum=300.0),
    }

    def __init__(self, default_timeout: float | None = None) -> None:
        self.default_timeout = default_timeout

    async def on_terminate(self, ctx: CallContext) -> Decision:
        """Ring every device of the callee for the ring timeout."""
        if not ctx.devices:
            return Continue()
        timeout = ctx.settings.get(self.name, {}).get("ring_timeout")
        if timeout is None:
            timeout = (self.default_timeout if self.default_timeout is not None
                       else self.settings_schema["ring_timeout"].default)
        return Ring(tuple(ctx.devices), float(timeout))
