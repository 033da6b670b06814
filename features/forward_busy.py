"""Call forwarding on busy (FEATURES.md): when the user is busy — every device answered busy, or
the user is in a call and call waiting is off — the call goes to the target instead of the
caller hearing busy.

``*90`` + number on (``*90`` alone prompts for it), ``*91`` off, ``*67*`` announces the state
(``*67`` + number is CLIR for one call: the longest code wins).
"""

from __future__ import annotations

from collections.abc import Sequence

from features.forwarding import Forwarding
from pbx.callcontrol import CallContext, Decision, FeatureCode


class ForwardBusy(Forwarding):
    """Redirect when the user is busy (runs in the busy chain only)."""

    name = "forward_busy"
    priority = 600
    reason = "user-busy"
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("on", takes_number=True),
        FeatureCode("off"),
        FeatureCode("voicemail_on"),
        FeatureCode("voicemail_off"),
        FeatureCode("query"),
    )

    async def on_busy(self, ctx: CallContext) -> Decision:
        """Redirect to the target (or into the voicemail box) while on."""
        return await self.divert(ctx)
