"""The one language feature settings are described in: a schema maps setting names to
:class:`Setting` (type, default, bounds, choices), and :func:`validate` checks a change against it.

Features declare their schema (``settings_schema``); the settings service validates every change
with it before the store keeps it; the store and the directory cache fill in defaults from it.
Errors name ``feature.setting`` so an API caller, a CLI user or a log reader knows what was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Setting", "SettingError", "SettingsSchema", "defaults", "validate"]


class SettingError(ValueError):
    """A setting value (or a schema) is not acceptable; the message names ``feature.key``."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One per-user setting: its ``type`` (``bool``, ``int``, ``float``, ``str`` or ``list`` of
    strings), its ``default``, optional ``minimum``/``maximum`` for numbers, ``choices``, a
    ``max_length`` for strings and lists, and a ``description`` for the portal and the API."""

    type: type
    default: Any
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    max_length: int | None = None

    def coerce(self, value: Any) -> Any:
        """``value`` checked against this setting (ValueError saying what is wrong)."""
        kind = self.type
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, not {value!r}")
        elif kind is int or kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"must be a number, not {value!r}")
            if kind is int and not isinstance(value, int):
                raise ValueError(f"must be a whole number, not {value!r}")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"must be at least {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"must be at most {self.maximum}")
            value = kind(value)
        elif kind is list:
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"must be a list of strings, not {value!r}")
            value = list(value)
        elif kind is str:
            if not isinstance(value, str):
                raise ValueError(f"must be a string, not {value!r}")
        else:
            raise ValueError(f"schema type {kind.__name__} is not bool, int, float, str or list")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{value!r} is not one of {list(self.choices)}")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"longer than {self.max_length}")
        return value


#: A feature's settings: name → :class:`Setting`.
SettingsSchema = Mapping[str, Setting]


def defaults(schema: SettingsSchema) -> dict[str, Any]:
    """The schema's defaults (copies of lists, so callers may change them)."""
    return {k: list(s.default) if isinstance(s.default, list | tuple) else s.default
            for k, s in schema.items()}


def validate(feature: str, schema: SettingsSchema, value: Mapping[str, Any],
             base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full settings after applying ``value`` to ``base`` (default: the schema's defaults);
    unknown keys and bad values raise :class:`SettingError` naming ``feature.key``."""
    if not isinstance(value, Mapping):
        raise SettingError(f"{feature}: settings must be an object")
    out = dict(base) if base is not None else defaults(schema)
    for key, v in value.items():
        spec = schema.get(key)
        if spec is None:
            known = ", ".join(sorted(schema)) or "none"
            raise SettingError(f"{feature}.{key}: unknown setting (known: {known})")
        try:
            out[key] = spec.coerce(v)
        except ValueError as exc:
            raise SettingError(f"{feature}.{key}: {exc}") from None
    return out


def stored_over_defaults(schema: SettingsSchema, stored: Mapping[str, Any]) -> dict[str, Any]:
    """What a user has: stored values over the defaults; keys the schema no longer has drop."""
    out = defaults(schema)
    out.update({k: v for k, v in stored.items() if k in schema})
    return out
