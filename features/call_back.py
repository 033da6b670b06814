"""Call-back (click-to-dial, FEATURES.md §1; third-party call control as in RFC 3725 flow I):
the PBX first calls the user's chosen phone and, only once that answers, calls the target on
the user's behalf and bridges both. The target sees the user's business number (the originating
chain — CLIR, displayed number — runs for the user once their phone answered); the call is
one call record, so the history shows one outgoing call.

Started by ``asyncpbx call-back USER TARGET`` or ``POST /api/v1/users/{user}/call-back`` (the
B2BUA's :meth:`~pbx.b2bua.B2bua.call_back`, which asks this feature which phone to ring:
:meth:`CallBackFeature.targets`), and by a device's own call while

* ``permanent`` call-back is on: every outgoing call from the user's devices is answered with a
  short announcement (prompt ``call_back_started``), hung up, and turned into a call-back;
* remote office is on (with a remote office number): the same, to the remote office number.

Settings (``call_back``): ``method`` — the default call method the user's clients start calls
with (``device``: the client's own SIP call; ``call_back``); ``permanent``; ``phone`` — which
phone the call-back rings first (``mobile``, ``remote_office`` or ``device``: the user's
registered devices). A chosen number the user has not set falls back to the devices.
Emergency calls are never turned into call-backs.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from features.ringing import OrdinaryRinging
from pbx.callcontrol import (
    BaseFeature,
    CallBack,
    CallContext,
    Continue,
    Decision,
    Prompt,
    Setting,
    Target,
)

__all__ = ["METHODS", "PHONES", "CallBackFeature"]

log = structlog.get_logger("pbx.features")

#: The phones a call-back may ring first.
PHONES = ("mobile", "remote_office", "device")
#: The call methods a client offers.
METHODS = ("device", "call_back")
#: Never turned into a call-back (pbx.routing.dialplan's emergency numbers).
EMERGENCY = frozenset({"110", "112"})


class CallBackFeature(BaseFeature):
    """Which phone a call-back rings; a device's call turned into a call-back (priority 120:
    the originating chain's first, before CLIR and the displayed number, which then run for
    the call-back's own originating chain)."""

    name = "call_back"
    priority = 120
    settings_schema: Mapping[str, Setting] = {
        "method": Setting(str, "device", "default call method of your clients",
                          choices=METHODS),
        "permanent": Setting(bool, False, "every outgoing call from your devices goes via "
                                          "call-back"),
        "phone": Setting(str, "mobile", "the phone a call-back rings first", choices=PHONES),
    }

    def __init__(self, ringing: OrdinaryRinging) -> None:
        self.ringing = ringing

    def phone(self, ctx: CallContext) -> str:
        """The phone a call-back rings for ``ctx.user``: the remote office number while remote
        office is on, else the ``phone`` setting."""
        user = ctx.user
        if user is not None and user.remote_office and _remote_office_on(ctx):
            return "remote_office"
        return str(ctx.setting(self, "phone"))

    def targets(self, ctx: CallContext, phone: str | None = None) -> tuple[Target, ...]:
        """What rings first for ``phone`` (default: :meth:`phone`): the mobile or remote office
        number over the user's trunk; empty for the devices (and for a number the user has not
        set or that routes nowhere: the devices ring then)."""
        user, call, services = ctx.user, ctx.call, ctx.services
        phone = phone or self.phone(ctx)
        number = (user.mobile if phone == "mobile" else user.remote_office
                  if phone == "remote_office" else None) if user is not None else None
        if not number or call is None or services is None or user is None:
            return ()
        targets = services.number_targets(call, user, number)
        if not targets:
            log.warning("call_back.unroutable", user=user.key, phone=phone)
        return targets

    async def on_originate(self, ctx: CallContext) -> Decision:
        """A device's call while permanent call-back or remote office is on: announce, hang up,
        call back."""
        call, user = ctx.call, ctx.user
        if call is None or user is None or call.caller is None:
            return Continue()
        if call.caller.target is not None:  # the call-back's own phone answered: go on
            return Continue()
        remote = bool(user.remote_office) and _remote_office_on(ctx)
        if not (remote or ctx.setting(self, "permanent")) or ctx.callee in EMERGENCY:
            return Continue()
        targets = self.targets(ctx, "remote_office" if remote else None)
        return CallBack(ctx.callee, targets, float(ctx.setting(self.ringing, "ring_timeout")),
                        Prompt("call_back_started"))


def _remote_office_on(ctx: CallContext) -> bool:
    return bool(ctx.settings.get("remote_office", {}).get("enabled"))
