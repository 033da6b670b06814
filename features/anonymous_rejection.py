"""Reject anonymous callers (FEATURES.md §2): a caller without a presentable number — the From
anonymous, ``Privacy: id``/``header``, no user part, or a user of the PBX calling with CLIR — is
rejected with 433 Anonymity Disallowed (RFC 5079), after the announcement "anonymous calls are
not accepted" as early media where the caller has media.

``*77`` switches it on, ``*87`` off (the code table's defaults, pbx/feature_codes.toml). It runs first in the terminating chain (before DND): an
anonymous caller is refused whatever else the callee has on, and is not forwarded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from features.announce import switched
from pbx.callcontrol import (
    BaseFeature,
    CallContext,
    Continue,
    Decision,
    FeatureCode,
    Prompt,
    Reject,
    Setting,
)

#: The announcement played before the 433.
PROMPT = Prompt("anonymous_rejected")


class AnonymousRejection(BaseFeature):
    """433 for anonymous callers while on (priority 50: first in the terminating chain)."""

    name = "anonymous_rejection"
    priority = 50
    settings_schema: Mapping[str, Setting] = {
        "enabled": Setting(bool, False, "reject callers who withhold their number"),
    }
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("on"),  # *77
        FeatureCode("off"),  # *87
    )

    async def on_terminate(self, ctx: CallContext) -> Decision:
        """433 with the announcement for a caller who presents no number."""
        if ctx.setting(self, "enabled") and ctx.caller_anonymous:
            return Reject(433, "Anonymity Disallowed", prompt=PROMPT)
        return Continue()

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``*77`` on, ``*87`` off: confirmed with the "activated" / "deactivated"
        announcement ("error" when the change failed)."""
        on = code.action == "on"
        return switched(ctx.update(self, enabled=on), on)
