"""Displayed number (FEATURES.md §1): the user picks which of their numbers outgoing calls
present — one of their own DIDs or the company's main number. Toward trunks it is the From user
part (and the P-Asserted-Identity toward a trusted trunk); users inside the PBX keep seeing the
extension. Empty: the default, the user's first DID (else the main number).

Set from the portal, the REST API or ``asyncpbx settings set EXT displayed_number number=…``,
all through the settings service, which asks :meth:`DisplayedNumber.check_settings`: a number
the user does not own is refused with a SettingError naming it. A number the user no longer owns
when they call is not presented (the default is).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from pbx.callcontrol import (
    BaseFeature,
    CallContext,
    Continue,
    Decision,
    Setting,
    SettingError,
    UserView,
)

log = structlog.get_logger("pbx.features")


def presentable_numbers(user: UserView) -> tuple[str, ...]:
    """The numbers ``user`` may present: their DIDs, then the company's main number."""
    company = (user.company_number,) if user.company_number else ()
    return tuple(dict.fromkeys((*user.numbers, *company)))


class DisplayedNumber(BaseFeature):
    """Present the user's chosen number on outgoing calls (priority 160: the originating chain,
    after CLIR — a withheld call presents no number at all, only a trusted trunk learns it)."""

    name = "displayed_number"
    priority = 160
    settings_schema: Mapping[str, Setting] = {
        "number": Setting(str, "", "the number outgoing calls show: one of your DIDs or the "
                                   "company's main number (empty: your first DID)",
                          max_length=16),
    }

    def check_settings(self, user: UserView, settings: Mapping[str, Any]) -> None:
        """Refuse a number ``user`` does not own."""
        chosen = settings.get("number")
        if isinstance(chosen, str) and chosen and chosen not in presentable_numbers(user):
            owned = ", ".join(presentable_numbers(user)) or "none"
            raise SettingError(f"{self.name}.number: {chosen} is not a number of user "
                               f"{user.key} (theirs: {owned})")

    async def on_originate(self, ctx: CallContext) -> Decision:
        """Present the chosen number while the user owns it."""
        chosen = ctx.setting(self, "number")
        if not chosen or ctx.user is None:
            return Continue()
        if chosen in presentable_numbers(ctx.user):
            ctx.present(number=chosen)
        else:
            log.warning("displayed_number.not_owned", user=ctx.user.key, number=chosen)
        return Continue()
