"""The feature registry: features register once; chains run their hooks in priority order, and
dialled feature codes reach the feature that owns them.

``run_chain(hook, ctx)`` asks each feature in turn and returns the first decision that is not
:class:`Continue` (``Continue`` when every feature passed). A feature whose hook raises is logged
and skipped: one broken feature must not take calls down.

The code table in force is data (:mod:`pbx.feature_codes`): the seed table with the stored
changes laid over it. Features declare their actions; ``match`` finds the action a dialled
string starts (``*``/``#`` form always, the digits-only form only when asked — a mobile's call).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import structlog

from pbx.callcontrol.context import CallContext
from pbx.callcontrol.decisions import Confirm, Continue, Decision
from pbx.callcontrol.feature import HOOKS, BaseFeature, Feature, FeatureCode, Hook
from pbx.feature_codes import (
    CodeError,
    CodeRow,
    DigitsOnly,
    Key,
    check_table,
    is_code,
    overlay,
    seed_table,
)
from pbx.settings_schema import SettingsSchema

__all__ = ["CodeMatch", "FeatureRegistry", "is_code"]

log = structlog.get_logger("pbx.features")

#: What a dialled code leads to: the owning feature and its FeatureCode (codes filled in).
_Owner = tuple[Feature, FeatureCode]


@dataclass(frozen=True, slots=True)
class CodeMatch:
    """A dialled string that is a feature code: the owner, the code and what followed it."""

    feature: Feature
    code: FeatureCode
    dialled: str
    number: str


def _implements(feature: Feature, hook: Hook) -> bool:
    """False only for a BaseFeature subclass that inherits the hook's ``Continue``."""
    if not isinstance(feature, BaseFeature):
        return True
    return getattr(type(feature), hook.value) is not getattr(BaseFeature, hook.value)


@dataclass(frozen=True, slots=True)
class _CodeTable:
    """The code table in force: every row (implemented or not), and the dialled codes of the
    implemented ones in both forms."""

    rows: Mapping[Key, CodeRow]
    codes: Mapping[str, _Owner]
    digits: Mapping[str, _Owner]


class FeatureRegistry:
    """Registered features, kept sorted by (priority, name), and the code table in force.

    ``codes`` is the seed code table (default: :func:`pbx.feature_codes.seed_table`);
    administrators' changes are laid over it with :meth:`apply_changes`. ``digits_only`` gives
    the escapes of the digits-only form mobiles dial (``788`` for ``*``, ``789`` for ``#``).
    """

    def __init__(self, features: Iterable[Feature] = (),
                 codes: Mapping[Key, CodeRow] | None = None, *,
                 digits_only: DigitsOnly | None = None) -> None:
        self._features: list[Feature] = []
        self._seed: dict[Key, CodeRow] = dict(seed_table() if codes is None else codes)
        self.digits_only = digits_only or DigitsOnly()
        #: (feature, action) -> (code, alternate): the stored changes in force
        self._changes: dict[Key, tuple[str, str]] = {}
        self._table = self._build(self._features, self._changes)
        #: Per hook, the features that implement it (a BaseFeature's inherited Continue is
        #: skipped: no coroutine per feature and hook on every call for nothing).
        self._chains: dict[Hook, list[Feature]] = {hook: [] for hook in Hook}
        for f in features:
            self.register(f)

    def register(self, feature: Feature) -> None:
        """Add a feature (a second one with its name, or a code another action owns, is an
        error: a code must reach exactly one action)."""
        if any(f.name == feature.name for f in self._features):
            raise ValueError(f"feature {feature.name!r} is already registered")
        features = sorted([*self._features, feature], key=lambda f: (f.priority, f.name))
        self._table = self._build(features, self._changes)  # raises: nothing changed
        self._features = features
        self._chains = {hook: [f for f in self._features if _implements(f, hook)]
                        for hook in Hook}

    # -- the code table --------------------------------------------------------------------------

    def _build(self, features: Iterable[Feature],
               changes: Mapping[Key, tuple[str, str]]) -> _CodeTable:
        """The table for ``features`` with ``changes`` over the seed (CodeError when a rule of
        :mod:`pbx.feature_codes` breaks). An action the table has no row for keeps the code
        its feature declares (none: it cannot be dialled)."""
        rows = dict(self._seed)
        declared: dict[Key, _Owner] = {}
        for feature in features:
            for fc in feature.feature_codes:
                key = (feature.name, fc.action)
                declared[key] = (feature, fc)
                row = rows.get(key)
                argument = "number" if fc.takes_number else ""
                if row is None and fc.code:
                    rows[key] = CodeRow(feature.name, fc.action, fc.code, fc.alternate,
                                        argument, fc.description)
                elif row is not None and row.takes_argument != fc.takes_number:
                    # the feature decides whether a number follows; the table documents it
                    rows[key] = CodeRow(row.feature, row.action, row.code, row.alternate,
                                        argument, row.description)
        rows = overlay(rows, changes)
        check_table(rows.values(), self.digits_only)
        codes: dict[str, _Owner] = {}
        digits: dict[str, _Owner] = {}
        for key, (feature, fc) in declared.items():
            row = rows.get(key)
            if row is None:
                continue
            filled = FeatureCode(fc.action, row.code, row.alternate, fc.takes_number,
                                 row.description or fc.description)
            for code in row.codes:
                codes[code] = (feature, filled)
                digits[self.digits_only.encode(code)] = (feature, filled)
        return _CodeTable(rows, codes, digits)

    def rows(self) -> list[tuple[CodeRow, bool]]:
        """The code table in force, in table order: each row and whether a registered
        feature implements it."""
        implemented = {(f.name, fc.action) for f, fc in self._table.codes.values()}
        return [(row, key in implemented) for key, row in self._table.rows.items()]

    def row(self, key: Key) -> CodeRow | None:
        """The row in force for (feature, action)."""
        return self._table.rows.get(key)

    @property
    def changes(self) -> dict[Key, tuple[str, str]]:
        """The stored changes in force ((feature, action) → (code, alternate))."""
        return dict(self._changes)

    def check_changes(self, changes: Mapping[Key, tuple[str, str]]) -> dict[Key, CodeRow]:
        """The table ``changes`` (all stored changes) would put in force — checked as a whole,
        nothing applied (CodeError: a change of a row the table has not, or a rule breaks)."""
        for key in changes:
            if key not in self._table.rows:
                raise CodeError(f"{key[0]}.{key[1]}: no such feature code "
                                "(see asyncpbx codes list)")
        return dict(self._build(self._features, changes).rows)

    def apply_changes(self, changes: Mapping[Key, tuple[str, str]]) -> list[str]:
        """Make ``changes`` (the stored ones, all of them) the changes in force. A change that
        breaks a rule together with the others is left out, its row keeps the seed's code;
        returns why, one message per change left out."""
        try:
            self._table = self._build(self._features, changes)
            self._changes = dict(changes)
            return []
        except CodeError:
            pass
        good: dict[Key, tuple[str, str]] = {}
        problems = []
        for key, change in sorted(changes.items()):
            try:
                self._build(self._features, {**good, key: change})
            except CodeError as exc:
                problems.append(str(exc))
                continue
            good[key] = change
        self._table = self._build(self._features, good)
        self._changes = good
        return problems

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
        """Every dialable code → (owning feature, its :class:`FeatureCode`), by code."""
        return {code: (f.name, fc) for code, (f, fc) in sorted(self._table.codes.items())}

    def match(self, dialled: str, *, digits_only: bool = False) -> CodeMatch | None:
        """The feature code ``dialled`` is, if any: the longest code it starts with; the rest is
        the number for a code that takes one and must be empty otherwise (``*7`` + digits is
        not ``*78``). With ``digits_only`` (a mobile's call) an all-digits string is matched
        against the codes' digits-only form too (``78843`` is ``*43``); without it, digits are
        never a code — they are a number for the dial plan."""
        if is_code(dialled):
            table = self._table.codes
        elif digits_only and dialled.isdigit():
            table = self._table.digits
        else:
            return None
        for end in range(len(dialled), 1, -1):
            found = table.get(dialled[:end])
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
