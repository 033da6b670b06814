"""Suppress own number — CLIR (FEATURES.md §1, RFC 3323/3325): the callee sees "anonymous".

``*31`` withholds the user's number on every outgoing call, ``#31`` shows it again (the code
table's defaults, pbx/feature_codes.toml). For one call:
``*67`` + number withholds it, ``*65`` + number shows it even while ``*31`` is on (the per-call
choice is made on the call's presentation before the originating chain runs, and this feature
keeps a choice already made). A withheld caller reaches users and untrusted trunks as
``"Anonymous" <sip:anonymous@anonymous.invalid>`` with ``Privacy: id`` and no
P-Asserted-Identity; a trusted trunk gets the real number in P-Asserted-Identity with
``Privacy: id`` asking the carrier to withhold it. The real identity stays in the call history
and in the PBX's log.

``*67`` + number is not ``*67*`` (busy-forwarding interrogation): the registry takes the longest
code a dial string starts with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from features.announce import refused, switched
from features.forwarding import valid_target
from pbx.callcontrol import (
    BaseFeature,
    CallContext,
    Continue,
    Decision,
    Dial,
    FeatureCode,
    Setting,
)

log = structlog.get_logger("pbx.features")


class Clir(BaseFeature):
    """Withhold the caller's identity on outgoing calls (priority 150: the originating chain,
    before the displayed number and routing)."""

    name = "clir"
    priority = 150
    settings_schema: Mapping[str, Setting] = {
        "enabled": Setting(bool, False, "withhold your number on every outgoing call"),
    }
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("on"),  # *31
        FeatureCode("off"),  # #31
        FeatureCode("this_call", takes_number=True),  # *67 + number
        FeatureCode("show_this_call", takes_number=True),  # *65 + number
    )

    async def on_originate(self, ctx: CallContext) -> Decision:
        """Withhold the identity while on, unless this call already chose (``*65``/``*67``, or
        the phone's own ``Privacy: id``)."""
        call = ctx.call
        if call is None or ctx.user is None:
            return Continue()
        if call.presentation.private is None and ctx.setting(self, "enabled"):
            ctx.present(private=True)
        if call.presentation.withheld:
            log.info("call.identity_withheld", call_id=call.record.call_id, user=ctx.user.key)
        return Continue()

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``*31`` on, ``#31`` off (announced "activated" / "deactivated"); ``*67``/``*65`` +
        number: this call, withheld or shown (a number that is none: the error)."""
        if code.action in ("on", "off"):
            on = code.action == "on"
            return switched(ctx.update(self, enabled=on), on)
        if not valid_target(number):
            return refused()
        ctx.present(private=code.action == "this_call")
        return Dial(number)
