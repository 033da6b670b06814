"""The feature registry: features register once; chains run their hooks in priority order, and
dialled feature codes reach the feature that owns them.

``run_chain(hook, ctx)`` asks each feature in turn and returns the first decision that is not
:class:`Continue` (``Continue`` when every feature passed). A feature whose hook raises is logged
and skipped: one broken feature must not take calls down.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from pbx.callcontrol.context import CallContext
from pbx.callcontrol.decisions import Confirm, Continue, Decision
from pbx.callcontrol.feature import HOOKS, BaseFeature, Feature, FeatureCode, Hook
from pbx.settings_schema import SettingsSchema

__all__ = ["CodeMatch", "FeatureRegistry"]

log = structlog.get_logger("pbx.features")


@dataclass(frozen=True, slots=True)
class CodeMatch:
    """A dialled string that is a feature code: the owner, the code and what followed it."""

    feature: Feature
    code: FeatureCode
    dialled: str
    number: str


def is_code(dialled: str) -> bool:
    """Feature codes start with ``*`` or ``#`` (numbers never do)."""
    return dialled[:1] in ("*", "#")


def _implements(feature: Feature, hook: Hook) -> bool:
    """False only for a BaseFeature subclass that inherits the hook's ``Continue``."""
    if not isinstance(feature, BaseFeature):
        return True
    return getattr(type(feature), hook.value) is not getattr(BaseFeature, hook.value)


class FeatureRegistry:
    """Registered features, kept sorted by (priority, name), and their code table."""

    def __init__(self, features: Iterable[Feature] = ()) -> None:
        self._features: list[Feature] = []
        self._codes: dict[str, tuple[Feature, FeatureCode]] = {}
        #: Per hook, the features that implement it (a BaseFeature's inherited Continue is
        #: skipped: no coroutine per feature and hook on every call for nothing).
        self._chains: dict[Hook, list[Feature]] = {hook: [] for hook in Hook}
        for f in features:
            self.register(f)

    def register(self, feature: Feature) -> None:
        """Add a feature (a second one with its name, or a code another feature owns, is an
        error: a code must reach exactly one feature)."""
        if any(f.name == feature.name for f in self._features):
            raise ValueError(f"feature {feature.name!r} is already registered")
        for fc in feature.feature_codes:
            for code in fc.codes:
                if not is_code(code) or not code[1:].replace("*", "").isdigit():
                    raise ValueError(f"{feature.name}: feature code {code!r} must be * or # "
                                     "followed by digits")
                if code in self._codes:
                    raise ValueError(f"{feature.name}: feature code {code} belongs to "
                                     f"{self._codes[code][0].name}")
        for fc in feature.feature_codes:
            for code in fc.codes:
                self._codes[code] = (feature, fc)
        self._features.append(feature)
        self._features.sort(key=lambda f: (f.priority, f.name))
        self._chains = {hook: [f for f in self._features if _implements(f, hook)]
                        for hook in Hook}

    def get(self, name: str) -> Feature | None:
        """The feature called ``name``."""
        return next((f for f in self._features if f.name == name), None)

    def schema(self, name: str) -> SettingsSchema | None:
        """The settings schema of feature ``name`` (None: no such feature, or no settings)."""
        feature = self.get(name)
        return feature.settings_schema if feature is not None and feature.settings_schema \
            else None

    @property
    def features(self) -> list[Feature]:
        """All features in chain order."""
        return list(self._features)

    def chain(self, hook: Hook) -> list[Feature]:
        """The features ``hook`` runs, in order (those that implement it)."""
        return list(self._chains[hook])

    def code_table(self) -> dict[str, tuple[str, FeatureCode]]:
        """Every code → (owning feature, its :class:`FeatureCode`), for the portal and docs."""
        return {code: (f.name, fc) for code, (f, fc) in sorted(self._codes.items())}

    def match(self, dialled: str) -> CodeMatch | None:
        """The feature code ``dialled`` is, if any: the longest code it starts with; the rest is
        the number for a code that takes one and must be empty otherwise (``*7` + digits is not
        ``*78``)."""
        if not is_code(dialled):
            return None
        for end in range(len(dialled), 1, -1):
            found = self._codes.get(dialled[:end])
            if found is None:
                continue
            feature, fc = found
            rest = dialled[end:]
            if rest and not fc.takes_number:
                continue
            return CodeMatch(feature, fc, dialled[:end], rest.removesuffix("#"))
        return None

    async def run_chain(self, hook: Hook, ctx: CallContext) -> Decision:
        """The first non-Continue decision of ``hook`` along the chain."""
        method = HOOKS[hook]
        for feature in self._chains[hook]:
            try:
                decision = await method(feature, ctx)
            except Exception:
                log.exception("feature.failed", feature=feature.name, hook=hook.value,
                              user=ctx.user.key if ctx.user is not None else None)
                continue
            if not isinstance(decision, Continue):
                log.debug("feature.decided", feature=feature.name, hook=hook.value,
                          decision=type(decision).__name__)
                return decision
        return Continue()

    async def dispatch_code(self, match: CodeMatch, ctx: CallContext) -> Decision:
        """Hand a dialled code to its feature (a feature that raises gets the error tone)."""
        try:
            decision = await match.feature.on_feature_code(ctx, match.code, match.number)
        except Exception:
            log.exception("feature.code_failed", feature=match.feature.name,
                          code=match.dialled)
            return Confirm(ok=False)
        log.info("feature.code", feature=match.feature.name, code=match.dialled,
                 action=match.code.action, user=ctx.user.key if ctx.user is not None else None,
                 decision=type(decision).__name__)
        return decision
