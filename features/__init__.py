"""The features users get, one module each, written against :mod:`pbx.callcontrol` only.

Adding a feature: (1) write a module with a :class:`~pbx.callcontrol.BaseFeature` subclass
(name, priority, settings schema, feature codes, the hooks it needs); (2) add it to
:func:`default_features`; (3) test it through the real call script (tests/features) and over SIP
from a phone (tests/interop). Call control dispatches its codes, fills its settings and runs its
hooks; the settings service stores what it changes.
"""

from __future__ import annotations

from pbx.callcontrol import Feature

__all__ = ["default_features"]


def default_features(*, ring_timeout: float | None = None) -> list[Feature]:
    """Every feature the PBX runs, configured from the server's settings (``ring_timeout``:
    the ``[calls] ring_timeout`` default for users who chose none)."""
    from features.anonymous_rejection import AnonymousRejection
    from features.clir import Clir
    from features.displayed_number import DisplayedNumber
    from features.dnd import DoNotDisturb
    from features.forward_immediate import ForwardImmediate
    from features.forward_unreachable import ForwardUnreachable
    from features.ringing import OrdinaryRinging

    return [AnonymousRejection(), DoNotDisturb(), ForwardImmediate(), OrdinaryRinging(ring_timeout),
            ForwardUnreachable(), Clir(), DisplayedNumber()]
