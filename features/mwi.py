"""Message waiting indication settings and ``*99`` (FEATURES.md §3; the lamp itself is
:mod:`pbx.mwi`).

``*99`` clears the indication: the phones' lamps go off (``Messages-Waiting: no``) until the box
changes next (a new message, one heard or deleted), which lights them as the box says again.
``unsolicited`` sends NOTIFYs also to the user's registered phones that never subscribed (phones
configured for unsolicited MWI); off by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from features.announce import confirmed
from pbx.callcontrol import BaseFeature, CallContext, Decision, FeatureCode, Setting


class MessageWaiting(BaseFeature):
    """The ``mwi`` settings and the ``*99`` code (``mwi.clear``)."""

    name = "mwi"
    priority = 900
    settings_schema: Mapping[str, Setting] = {
        "unsolicited": Setting(bool, False, "NOTIFY the phones that do not subscribe too"),
        "cleared": Setting(bool, False, "the lamp is off until the box changes next (*99)"),
    }
    feature_codes: Sequence[FeatureCode] = (FeatureCode("clear"),)

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``*99``: the lamp off; "confirm" (the error announcement when nothing changed)."""
        return confirmed(ctx.update(self, cleared=True))
