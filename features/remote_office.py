"""Remote office (FEATURES.md): while on, incoming calls ring only the user's remote office
number (over the trunk, with the no-answer and busy features after it), not their devices.

Switched in the portal / API (no feature code in FEATURE_CODES.md); the number is the user's
``remote_office_number``. When the number routes nowhere the devices ring as usual.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from features.ringing import OrdinaryRinging
from pbx.callcontrol import BaseFeature, CallContext, Continue, Decision, Ring, Setting

log = structlog.get_logger("pbx.features")


class RemoteOffice(BaseFeature):
    """Ring the remote office number instead of the devices (priority 300: after immediate
    forwarding, which wins, and before call waiting and ringing)."""

    name = "remote_office"
    priority = 300
    settings_schema: Mapping[str, Setting] = {
        "enabled": Setting(bool, False, "incoming calls ring the remote office number only"),
    }

    def __init__(self, ringing: OrdinaryRinging) -> None:
        self.ringing = ringing

    async def on_terminate(self, ctx: CallContext) -> Decision:
        """Ring the remote office number while on."""
        user = ctx.user
        if user is None or not user.remote_office or ctx.call is None \
                or ctx.services is None or not ctx.setting(self, "enabled"):
            return Continue()
        targets = ctx.services.number_targets(ctx.call, user, user.remote_office)
        if not targets:
            log.warning("remote_office.unroutable", user=user.key, number=user.remote_office)
            return Continue()
        return Ring(targets, self.ringing.ring_time(ctx))
