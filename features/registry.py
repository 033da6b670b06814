"""The feature registry: features register once; chains run their hooks in priority order.

``run_chain(hook, ctx)`` asks each feature's ``hook`` in turn and returns the first decision
that is not :class:`~features.base.Continue` (or ``Continue`` when every feature passed).
A feature whose hook raises is logged and skipped: one broken feature must not take calls down.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from features.base import CallContext, Continue, Decision, Feature

log = logging.getLogger("features")

HOOKS = ("on_originate", "on_terminate", "on_no_answer", "on_busy", "on_dtmf")


class FeatureRegistry:
    """Registered features, kept sorted by (priority, name)."""

    def __init__(self, features: Iterable[Feature] = ()) -> None:
        self._features: list[Feature] = []
        for f in features:
            self.register(f)

    def register(self, feature: Feature) -> None:
        """Add a feature (a second one with the same name is an error)."""
        if any(f.name == feature.name for f in self._features):
            raise ValueError(f"feature {feature.name!r} is already registered")
        self._features.append(feature)
        self._features.sort(key=lambda f: (f.priority, f.name))

    def unregister(self, name: str) -> None:
        """Remove the feature called ``name`` (no error when absent)."""
        self._features = [f for f in self._features if f.name != name]

    def get(self, name: str) -> Feature | None:
        """The feature called ``name``."""
        return next((f for f in self._features if f.name == name), None)

    @property
    def features(self) -> list[Feature]:
        """All features in chain order."""
        return list(self._features)

    def chain(self, hook: str) -> list[Feature]:
        """The features in the order ``hook`` runs them."""
        if hook not in HOOKS:
            raise ValueError(f"unknown hook {hook!r}")
        return list(self._features)

    def feature_codes(self) -> dict[str, str]:
        """Every feature code → the feature that owns it."""
        return {code: f.name for f in self._features for code in f.feature_codes}

    async def run_chain(self, hook: str, ctx: CallContext) -> Decision:
        """The first non-Continue decision of ``hook`` along the chain."""
        for feature in self.chain(hook):
            try:
                decision: Decision = await getattr(feature, hook)(ctx)
            except Exception:
                log.exception("feature.failed", extra={"feature": feature.name, "hook": hook})
                continue
            if not isinstance(decision, Continue):
                return decision
        return Continue()


def default_registry() -> FeatureRegistry:
    """The features every PBX runs (ordinary ringing today)."""
    from features.ringing import OrdinaryRinging

    return FeatureRegistry([OrdinaryRinging()])
