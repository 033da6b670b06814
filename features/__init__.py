"""The features users get, one module each, written against :mod:`pbx.callcontrol` only.

Adding a feature: (1) write a module with a :class:`~pbx.callcontrol.BaseFeature` subclass
(name, priority, settings schema, feature codes, the hooks it needs); (2) add it to
:func:`default_features`; (3) test it through the real call script (tests/features) and over SIP
from a phone (tests/interop). Call control dispatches its codes, fills its settings and runs its
hooks; the settings service stores what it changes.

Feature codes are data (:mod:`pbx.feature_codes`, seeded from ``pbx/feature_codes.toml``). A
feature names its actions only — the codes come from the table row ``<feature name>.<action>``::

    name = "call_waiting"
    feature_codes = (FeatureCode("on"), FeatureCode("off"))          # rows call_waiting.on/off
    # a code followed by a number: FeatureCode("on", takes_number=True)

and ``on_feature_code(ctx, code, number)`` gets that FeatureCode with ``code.code`` /
``code.alternate`` filled in from the table in force (what the administrator set with
``asyncpbx codes set``); decide on ``code.action``, never on the digits. Every row of
FEATURE_CODES.md is in the seed table already (``asyncpbx codes list`` shows those no feature
implements yet); a new action gets a new row there. ``takes_number`` must agree with the row's
``argument`` (tests/pbx/test_feature_codes.py checks the default features). The digits-only
form for mobiles (``78843`` for ``*43``) is call control's business: the feature sees the same
FeatureCode either way.
"""

from __future__ import annotations

from pbx.callcontrol import Feature

__all__ = ["default_features"]


def default_features(*, ring_timeout: float | None = None) -> list[Feature]:
    """Every feature the PBX runs, configured from the server's settings (``ring_timeout``:
    the ``[calls] ring_timeout`` default for users who chose none)."""
    from features.dnd import DoNotDisturb
    from features.forward_immediate import ForwardImmediate
    from features.forward_unreachable import ForwardUnreachable
    from features.ringing import OrdinaryRinging

    return [DoNotDisturb(), ForwardImmediate(), OrdinaryRinging(ring_timeout),
            ForwardUnreachable()]
