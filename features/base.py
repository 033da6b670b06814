"""The shape every feature module has (DESIGN.md principle 7).

A feature declares its ``name``, ``priority`` (lower runs first), a per-user ``settings_schema``
(setting name → :class:`Setting`), the feature codes it answers (``"*21"`` …) and hooks. A hook
gets a :class:`CallContext` and returns a :data:`Decision`:

* :class:`Continue` — not my business, ask the next feature;
* :class:`Reject` — end the call with this SIP status (486 busy, 433 anonymity disallowed …);
* :class:`Redirect` — route the call to another target instead (forwarding; loop-protected);
* :class:`Ring` — ring these targets in parallel for ``timeout`` seconds;
* :class:`Handled` — the feature did everything itself (played a confirmation, ran an IVR).

Incoming calls run ``on_terminate`` through the terminating chain; outgoing calls run
``on_originate`` through the originating chain; after a :class:`Ring` fails the chain runs
``on_no_answer`` or ``on_busy``; digits during a call go to ``on_dtmf``. Features see the
call-control API (:mod:`pbx.callcontrol`) and settings, never SIP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pbx.callcontrol import Call, Target

__all__ = [
    "BaseFeature",
    "CallContext",
    "Continue",
    "Decision",
    "Feature",
    "Handled",
    "Redirect",
    "Reject",
    "Ring",
    "Setting",
]


@dataclass(frozen=True, slots=True)
class Continue:
    """Not handled here: the next feature in the chain decides."""


@dataclass(frozen=True, slots=True)
class Reject:
    """End the call with ``status`` (and an optional reason phrase)."""

    status: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """Route the call to ``target`` (an extension or number) instead."""

    target: str
    reason: str = "unconditional"


@dataclass(frozen=True, slots=True)
class Ring:
    """Ring ``targets`` in parallel for ``timeout`` seconds (first answer wins)."""

    targets: tuple[Target, ...]
    timeout: float


@dataclass(frozen=True, slots=True)
class Handled:
    """The feature handled the call completely."""


Decision = Continue | Reject | Redirect | Ring | Handled


@dataclass(frozen=True, slots=True)
class Setting:
    """One per-user setting of a feature: its type (``bool``/``int``/``float``/``str``), its
    default, bounds for numbers, and a description for the portal/API."""

    type: type
    default: Any
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None

    def coerce(self, value: Any) -> Any:
        """``value`` checked against the type and bounds (ValueError naming the problem)."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected true/false, got {value!r}")
            return value
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"expected a number, got {value!r}")
            if self.type is int and not isinstance(value, int):
                raise ValueError(f"expected a whole number, got {value!r}")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{value} is below {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"{value} is above {self.maximum}")
            return self.type(value)
        if not isinstance(value, self.type):
            raise ValueError(f"expected {self.type.__name__}, got {value!r}")
        return value


@dataclass
class CallContext:
    """What a hook knows about the call it decides on.

    ``caller``/``callee`` are extensions or numbers; ``call`` the call-control object (features
    that answer, play or collect digits use it); ``devices`` lists the callee's reachable device
    targets; ``settings`` the callee's (terminating) or caller's (originating) per-feature
    settings: feature name → setting name → value. ``history`` holds the targets the call was
    already redirected through (loop protection). ``status`` is the final status of the last
    ring attempt for on_busy/on_no_answer.
    """

    caller: str
    callee: str
    call: Call | None = None
    devices: Sequence[Target] = ()
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    status: int = 0
    digits: str = ""

    def setting(self, feature: Feature, name: str) -> Any:
        """The value of ``feature``'s setting ``name`` for this user (its default if unset)."""
        value = self.settings.get(feature.name, {}).get(name)
        if value is None:
            return feature.settings_schema[name].default
        return value


@runtime_checkable
class Feature(Protocol):
    """A feature module's object (see the module docstring)."""

    @property
    def name(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def settings_schema(self) -> Mapping[str, Setting]: ...
    @property
    def feature_codes(self) -> Mapping[str, str]: ...

    async def on_originate(self, ctx: CallContext) -> Decision: ...
    async def on_terminate(self, ctx: CallContext) -> Decision: ...
    async def on_no_answer(self, ctx: CallContext) -> Decision: ...
    async def on_busy(self, ctx: CallContext) -> Decision: ...
    async def on_dtmf(self, ctx: CallContext) -> Decision: ...


class BaseFeature:
    """Convenience base: every hook answers :class:`Continue`; override the ones you need."""

    name: str = "base"
    priority: int = 1000
    settings_schema: Mapping[str, Setting] = {}
    feature_codes: Mapping[str, str] = {}

    async def on_originate(self, ctx: CallContext) -> Decision:
        """Outgoing call from this user."""
        return Continue()

    async def on_terminate(self, ctx: CallContext) -> Decision:
        """Incoming call to this user."""
        return Continue()

    async def on_no_answer(self, ctx: CallContext) -> Decision:
        """The ring timed out."""
        return Continue()

    async def on_busy(self, ctx: CallContext) -> Decision:
        """The callee is busy."""
        return Continue()

    async def on_dtmf(self, ctx: CallContext) -> Decision:
        """Digits during a call (``ctx.digits``)."""
        return Continue()
