"""Call forwarding on no answer (FEATURES.md): when the user's devices ring N times unanswered
(1–20 rings of 5 s, default 4), the call goes to the target.

``*92`` + number on (``*92`` alone prompts for it), ``*93`` off, ``*610`` + rings sets N,
``*61*`` announces the state; ``*41``/``#41`` forward to the voicemail box after the N rings. While it is on, the ringing lasts N rings
(:meth:`ForwardNoAnswer.ring_time`) instead of the user's plain ring timeout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from features.announce import confirmed, refused
from features.forwarding import Forwarding
from pbx.callcontrol import CallContext, Decision, FeatureCode, Setting

#: One ring (FEATURES.md: German cadence, 1 s tone and 4 s pause).
RING_SECONDS = 5.0
DEFAULT_RINGS = 4
MAX_RINGS = 20


class ForwardNoAnswer(Forwarding):
    """Redirect after N unanswered rings (runs in the no-answer chain only)."""

    name = "forward_no_answer"
    priority = 650
    reason = "no-answer"
    settings_schema: Mapping[str, Setting] = {
        **Forwarding.settings_schema,
        "rings": Setting(int, DEFAULT_RINGS, "rings before the call is forwarded",
                         minimum=1, maximum=MAX_RINGS),
    }
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("on", takes_number=True),
        FeatureCode("off"),
        FeatureCode("voicemail_on"),
        FeatureCode("voicemail_off"),
        FeatureCode("rings", takes_number=True),
        FeatureCode("query"),
    )

    def ring_time(self, ctx: CallContext) -> float | None:
        """How long the user's devices ring before the call is forwarded (None: off)."""
        if ctx.setting(self, "enabled") and (ctx.setting(self, "target")
                                             or ctx.setting(self, "voicemail")):
            return RING_SECONDS * int(ctx.setting(self, "rings"))
        return None

    async def on_no_answer(self, ctx: CallContext) -> Decision:
        """Redirect to the target (or into the voicemail box) while on."""
        return await self.divert(ctx)

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``*610`` + rings (1-20); the on/off codes as every forwarding has them."""
        if code.action != "rings":
            return await super().on_feature_code(ctx, code, number)
        if not number.isdigit() or not 1 <= int(number) <= MAX_RINGS:
            return refused()
        return confirmed(ctx.update(self, rings=int(number)))
