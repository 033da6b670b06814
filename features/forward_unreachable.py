"""Call forwarding when unreachable (FEATURES.md): when none of the user's devices is registered,
or every device failed (not a ring timeout: that is no-answer forwarding), the call goes to the
target — typically the user's mobile number — instead of the caller hearing 480.

``*94`` + number on (``*94`` alone prompts for it), ``*95`` off, ``*63*`` announces the state.
"""

from __future__ import annotations

from collections.abc import Sequence

from features.forwarding import Forwarding
from pbx.callcontrol import CallContext, Decision, FeatureCode


class ForwardUnreachable(Forwarding):
    """Redirect when the user cannot be reached (runs in the unreachable chain only)."""

    name = "forward_unreachable"
    priority = 700
    reason = "unavailable"
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("on", takes_number=True),
        FeatureCode("off"),
        FeatureCode("query"),
    )

    async def on_unreachable(self, ctx: CallContext) -> Decision:
        """Redirect to the target (or into the voicemail box) while on."""
        return await self.divert(ctx)
