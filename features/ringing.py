"""Ordinary ringing: an incoming call rings all of the callee's devices at once.

The ring timeout is a per-user setting, in seconds: 4 rings of 5 s (German cadence, 1 s tone and
4 s pause — FEATURES.md "one ring lasts 5 s") = 20 s by default, after which the no-answer chain
runs (forwarding, voicemail) or the caller gets 480. The server's ``[calls] ring_timeout``
replaces the default for users who have not chosen their own. A user with no reachable device
gets no Ring decision: the unreachable chain runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from pbx.callcontrol import BaseFeature, CallContext, Continue, Decision, Ring, Setting

#: One ring (s) and the default number of rings before "no answer".
RING_SECONDS = 5.0
DEFAULT_RINGS = 4


class OrdinaryRinging(BaseFeature):
    """Parallel ringing of every registered device of the callee (priority 500: after DND and
    immediate forwarding, before the after-ring features)."""

    name = "ringing"
    priority = 500

    def __init__(self, default_timeout: float | None = None) -> None:
        default = default_timeout if default_timeout is not None else RING_SECONDS * DEFAULT_RINGS
        self.settings_schema: Mapping[str, Setting] = {
            "ring_timeout": Setting(float, float(default),
                                    "seconds to ring before the call counts as unanswered",
                                    minimum=5.0, maximum=300.0),
        }

    async def on_terminate(self, ctx: CallContext) -> Decision:
        """Ring every device of the callee for their ring timeout."""
        if not ctx.devices:
            return Continue()
        return Ring(tuple(ctx.devices), float(ctx.setting(self, "ring_timeout")))
