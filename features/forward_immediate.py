"""Call forwarding immediate (FEATURES.md): every incoming call goes straight to the target, an
extension or an external number (over the trunk, with the forwarding user's permissions and
number, and a Diversion header naming them).

``*72`` + number switches it on to that number (``*72`` alone prompts for it, ending with
``#``); ``*73`` switches it off and keeps the number for next time; ``*21*`` announces whether
it is on and to which number. With ``ring_reminder`` on, the user's phones ring briefly for each
forwarded call (so a forgotten forwarding is noticed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from features.forwarding import Forwarding
from pbx.callcontrol import CallContext, Decision, FeatureCode, Redirect, Setting

#: How long the ring reminder rings the user's phones.
RING_REMINDER_SECONDS = 1.5


class ForwardImmediate(Forwarding):
    """Redirect every incoming call while on (priority 200: after DND, before ringing)."""

    name = "forward_immediate"
    priority = 200
    reason = "unconditional"
    settings_schema: Mapping[str, Setting] = {
        **Forwarding.settings_schema,
        "ring_reminder": Setting(bool, False, "ring the phones briefly for each forwarded call"),
    }
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("on", takes_number=True),
        FeatureCode("off"),
        FeatureCode("voicemail_on"),
        FeatureCode("voicemail_off"),
        FeatureCode("query"),
    )

    async def on_terminate(self, ctx: CallContext) -> Decision:
        """Redirect to the target (or into the voicemail box) while on (with the ring
        reminder when chosen)."""
        decision = await self.divert(ctx)
        if isinstance(decision, Redirect) and ctx.call is not None \
                and ctx.setting(self, "ring_reminder"):
            ctx.call.ring_burst(ctx.devices, RING_REMINDER_SECONDS)
        return decision
