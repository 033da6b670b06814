"""Feature codes as data: which dialled code starts which action of which feature.

A :class:`CodeRow` names a feature action (``dnd.on``) and gives its main code, an optional
alternate code, what follows the code (``argument``: ``"number"``, ``"rings"`` …; empty: nothing)
and a description. The seed table (``feature_codes.toml`` next to this module, written from
``../shared/FEATURE_CODES.md``) is the default; an administrator's changes are stored
(:meth:`pbx.store.Store.set_feature_code`) and laid over it (:func:`overlay`). Features declare
only their actions (:class:`pbx.callcontrol.FeatureCode`); the registry gives them the codes of
this table (system-wide: one table for every tenant).

Rules every table in force keeps (:func:`check_table`), so that each code reaches exactly one
action:

* a code is ``*`` or ``#`` followed by digits, ``*`` and ``#`` (at least one digit, at most
  :data:`MAX_CODE` characters) — numbers never start with ``*``/``#``, so a code never shadows
  a number (:func:`check_code`);
* no code appears twice (main or alternate, across all rows, implemented or not);
* no code is a code that takes an argument followed by digits (``*720`` would make forwarding
  to every number starting with 0 unreachable);
* the digits-only forms (:class:`DigitsOnly`) are distinct as well.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "INCALL_SECTION",
    "MAX_CODE",
    "SEED_PATH",
    "CodeError",
    "CodeRow",
    "DigitsOnly",
    "Key",
    "check_code",
    "check_table",
    "is_code",
    "overlay",
    "parse_table",
    "seed_table",
    "split_key",
]

#: The longest code (``*21*`` is 4; room for an administrator's longer ones).
MAX_CODE = 12
#: The section of the seed file that holds the in-call codes (``[incall.ACTION]``): digits
#: during a call, not dialled codes, read by :mod:`pbx.callcontrol.incall`.
INCALL_SECTION = "incall"
#: The seed table shipped with the PBX.
SEED_PATH = Path(__file__).with_name("feature_codes.toml")

_CODE_CHARS = frozenset("0123456789*#")
_ARGUMENTS = ("", "number", "rings", "extension", "queue")

#: (feature, action)
Key = tuple[str, str]


class CodeError(ValueError):
    """A code or a table that breaks the rules (the message names the row and the code)."""


@dataclass(frozen=True, slots=True)
class CodeRow:
    """One action's codes (see the module docstring)."""

    feature: str
    action: str
    code: str
    alternate: str = ""
    argument: str = ""
    description: str = ""

    @property
    def key(self) -> str:
        """``feature.action``, as the CLI names the row."""
        return f"{self.feature}.{self.action}"

    @property
    def codes(self) -> tuple[str, ...]:
        """The main code and the alternate (when there is one)."""
        return (self.code, self.alternate) if self.alternate else (self.code,)

    @property
    def takes_argument(self) -> bool:
        """Digits follow the code (a number, a count of rings …)."""
        return bool(self.argument)


def is_code(dialled: str) -> bool:
    """Feature codes start with ``*`` or ``#`` (numbers never do)."""
    return dialled[:1] in ("*", "#")


def split_key(key: str) -> Key:
    """``"dnd.on"`` → ``("dnd", "on")`` (CodeError for anything else)."""
    feature, dot, action = key.partition(".")
    if not dot or not feature or not action or "." in action:
        raise CodeError(f"{key!r} is not FEATURE.ACTION (e.g. dnd.on)")
    return feature, action


def check_code(code: str, what: str = "feature code") -> None:
    """A code is ``*``/``#`` + digits, ``*``, ``#`` with at least one digit (CodeError)."""
    if not is_code(code) or len(code) < 2 or len(code) > MAX_CODE \
            or not set(code) <= _CODE_CHARS or not any(c.isdigit() for c in code):
        raise CodeError(f"{what} {code!r} must be * or # followed by digits, * and # "
                        f"(2 to {MAX_CODE} characters, at least one digit)")


@dataclass(frozen=True, slots=True)
class DigitsOnly:
    """The digits-only form for mobiles, whose network takes ``*``/``#`` strings for itself:
    ``star`` stands for ``*`` and ``hash`` for ``#`` (``*43`` is dialled ``78843``)."""

    star: str = "788"
    hash: str = "789"

    def problem(self) -> tuple[str, str] | None:
        """Which escape cannot work (``"star"`` or ``"hash"``) and why; None: both can. They
        are 1 to 6 digits, distinct, and neither starts the other (a dialled string must
        decode one way only)."""
        for name, value in (("star", self.star), ("hash", self.hash)):
            if not value.isdigit() or not 1 <= len(value) <= 6:
                return name, f"{value!r} must be 1 to 6 digits"
        if self.star.startswith(self.hash) or self.hash.startswith(self.star):
            return "hash", (f"{self.hash!r} must differ from the star escape {self.star!r} "
                            "and neither may start the other")
        return None

    def encode(self, code: str) -> str:
        """``code`` as a mobile dials it (``*21*`` → ``78821788``)."""
        return "".join(self.star if c == "*" else self.hash if c == "#" else c for c in code)


def check_table(rows: Iterable[CodeRow], digits_only: DigitsOnly | None = None) -> None:
    """Every rule of the module docstring, over the whole table (CodeError naming the rows)."""
    owner: dict[str, CodeRow] = {}
    for row in rows:
        if row.argument not in _ARGUMENTS:
            raise CodeError(f"{row.key}: argument {row.argument!r} is not one of "
                            f"{', '.join(a for a in _ARGUMENTS if a)}")
        for code in row.codes:
            check_code(code, f"{row.key}: feature code")
            other = owner.get(code)
            if other is not None:
                raise CodeError(f"{row.key}: feature code {code} belongs to {other.key}")
            owner[code] = row
    for code, row in owner.items():
        for end in range(2, len(code)):
            prefix = owner.get(code[:end])
            if prefix is not None and prefix.takes_argument and code[end:].isdigit():
                raise CodeError(
                    f"{row.key}: feature code {code} would make {prefix.code} + "
                    f"{prefix.argument} starting with {code[end:]} unreachable "
                    f"({prefix.key} takes a {prefix.argument})")
    if digits_only is not None:
        encoded: dict[str, str] = {}
        for code, row in owner.items():
            digits = digits_only.encode(code)
            if digits in encoded:
                raise CodeError(f"{row.key}: feature code {code} is dialled {digits} on a "
                                f"mobile, like {encoded[digits]}")
            encoded[digits] = code


def parse_table(text: str, source: str = "feature codes") -> dict[Key, CodeRow]:
    """The rows of a TOML table (``[feature.action]`` with ``code``, ``alternate``,
    ``argument``, ``description``), checked (CodeError naming the row)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CodeError(f"{source}: not valid TOML: {exc}") from None
    rows: dict[Key, CodeRow] = {}
    for feature, actions in data.items():
        if feature == INCALL_SECTION:  # in-call codes: pbx.callcontrol.incall reads them
            continue
        if not isinstance(actions, dict):
            raise CodeError(f"{source}: {feature} must be a table of actions")
        for action, fields in actions.items():
            if not isinstance(fields, dict):
                raise CodeError(f"{source}: {feature}.{action} must be a table")
            unknown = set(fields) - {"code", "alternate", "argument", "description"}
            if unknown or not all(isinstance(v, str) for v in fields.values()):
                raise CodeError(f"{source}: {feature}.{action}: give code, alternate, "
                                "argument and description as strings only")
            if "code" not in fields:
                raise CodeError(f"{source}: {feature}.{action} has no code")
            rows[(feature, action)] = CodeRow(feature, action, fields["code"],
                                              fields.get("alternate", ""),
                                              fields.get("argument", ""),
                                              fields.get("description", ""))
    check_table(rows.values())
    return rows


@functools.cache
def seed_table() -> Mapping[Key, CodeRow]:
    """The shipped default table (:data:`SEED_PATH`), read once."""
    return parse_table(SEED_PATH.read_text(encoding="utf-8"), SEED_PATH.name)


def overlay(table: Mapping[Key, CodeRow],
            changes: Mapping[Key, tuple[str, str]]) -> dict[Key, CodeRow]:
    """``table`` with stored changes ((feature, action) → (code, alternate)) laid over it; a
    change of a row the table does not have is left out (its feature may come later)."""
    out = dict(table)
    for key, (code, alternate) in changes.items():
        row = out.get(key)
        if row is not None:
            out[key] = CodeRow(row.feature, row.action, code, alternate, row.argument,
                               row.description)
    return out
