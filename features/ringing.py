"""Ordinary ringing: an incoming call rings all of the callee's devices at once — and their
mobile number with them while parallel ringing is on.

The ring timeout is a per-user setting, in seconds: 4 rings of 5 s (German cadence, 1 s tone and
4 s pause — FEATURES.md "one ring lasts 5 s") = 20 s by default, after which the no-answer chain
runs (forwarding, voicemail) or the caller gets 480. While no-answer forwarding is on its ring
count decides instead. The server's ``[calls] ring_timeout`` replaces the default for users who
have not chosen their own. A user with nothing to ring gets no Ring decision: the unreachable
chain runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from features.forward_no_answer import DEFAULT_RINGS, RING_SECONDS, ForwardNoAnswer
from features.parallel_ringing import ParallelRinging
from pbx.callcontrol import BaseFeature, CallContext, Continue, Decision, Ring, Setting


class OrdinaryRinging(BaseFeature):
    """Parallel ringing of every registered device of the callee (priority 500: after DND,
    immediate forwarding, remote office and call waiting; before the after-ring features)."""

    name = "ringing"
    priority = 500

    def __init__(self, default_timeout: float | None = None, *,
                 no_answer: ForwardNoAnswer | None = None,
                 parallel: ParallelRinging | None = None) -> None:
        default = default_timeout if default_timeout is not None else RING_SECONDS * DEFAULT_RINGS
        self.settings_schema: Mapping[str, Setting] = {
            "ring_timeout": Setting(float, float(default),
                                    "seconds to ring before the call counts as unanswered",
                                    minimum=5.0, maximum=300.0),
        }
        self.no_answer = no_answer
        self.parallel = parallel

    def ring_time(self, ctx: CallContext) -> float:
        """How long this user's phones ring: the no-answer forwarding's rings while it is on,
        else their ring timeout."""
        forwarded = self.no_answer.ring_time(ctx) if self.no_answer is not None else None
        return forwarded if forwarded is not None else float(ctx.setting(self, "ring_timeout"))

    async def on_terminate(self, ctx: CallContext) -> Decision:
        """Ring every device of the callee (and the mobile) for their ring time."""
        targets = (*ctx.devices, *(self.parallel.targets(ctx) if self.parallel else ()))
        if not targets:
            return Continue()
        return Ring(tuple(targets), self.ring_time(ctx))
