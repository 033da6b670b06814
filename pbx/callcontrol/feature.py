"""The shape every feature module has (DESIGN.md principle 7).

A feature declares its ``name``, ``priority`` (lower runs first in every chain), a per-user
``settings_schema`` (:mod:`pbx.settings_schema`), the feature codes it owns and the hooks it
needs. A hook gets a :class:`~pbx.callcontrol.context.CallContext` and returns a
:data:`~pbx.callcontrol.decisions.Decision`. Features see call control, never SIP.

A feature whose settings depend on the user (a number they own) refuses a change in
:meth:`BaseFeature.check_settings`.

Hooks (:class:`Hook`): ``on_originate`` (a user's outgoing call), ``on_terminate`` (an incoming
call to a user), after a ring ``on_busy`` / ``on_no_answer`` / ``on_unreachable`` (no device, or
every device failed — it runs before any 480 reaches the caller), ``on_dtmf`` (digits during a
connected call), and ``on_feature_code`` for a dialled code the feature owns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pbx.callcontrol.decisions import Continue, Decision
from pbx.settings_schema import Setting
from sipcore.enums import FastEnum

if TYPE_CHECKING:
    from pbx.callcontrol.context import CallContext, UserView

__all__ = ["HOOKS", "BaseFeature", "Feature", "FeatureCode", "Hook"]


class Hook(FastEnum):
    """The points of a call where features decide."""

    ORIGINATE = "on_originate"
    TERMINATE = "on_terminate"
    BUSY = "on_busy"
    NO_ANSWER = "on_no_answer"
    UNREACHABLE = "on_unreachable"
    DTMF = "on_dtmf"


@dataclass(frozen=True, slots=True)
class FeatureCode:
    """An action a user starts by dialling a code: ``action`` names what it does inside its
    feature (``"on"``, ``"off"``); ``takes_number`` codes take a number appended (``*72`` +
    ``0301234567``) or, dialled bare, prompt for one ending with ``#``.

    A feature declares only the action (``FeatureCode("on", takes_number=True)``): the code and
    its alternate come from the code table (:mod:`pbx.feature_codes`, row ``feature.action``),
    and the registry hands the feature its FeatureCode with them filled in. A ``code`` given
    here is used only when the table has no row for the action (a feature outside the table)."""

    action: str
    code: str = ""
    alternate: str = ""
    takes_number: bool = False
    description: str = ""

    @property
    def codes(self) -> tuple[str, ...]:
        """The code and its alternate."""
        return (self.code, self.alternate) if self.alternate else (self.code,)


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
    def feature_codes(self) -> Sequence[FeatureCode]: ...

    async def on_originate(self, ctx: CallContext) -> Decision: ...
    async def on_terminate(self, ctx: CallContext) -> Decision: ...
    async def on_busy(self, ctx: CallContext) -> Decision: ...
    async def on_no_answer(self, ctx: CallContext) -> Decision: ...
    async def on_unreachable(self, ctx: CallContext) -> Decision: ...
    async def on_dtmf(self, ctx: CallContext) -> Decision: ...
    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision: ...


class BaseFeature:
    """Every hook answers :class:`Continue`; a feature overrides the ones it needs."""

    name: str = "base"
    priority: int = 1000
    settings_schema: Mapping[str, Setting] = {}
    feature_codes: Sequence[FeatureCode] = ()

    async def on_originate(self, ctx: CallContext) -> Decision:
        """An outgoing call from ``ctx.user``."""
        return Continue()

    async def on_terminate(self, ctx: CallContext) -> Decision:
        """An incoming call to ``ctx.user``."""
        return Continue()

    async def on_busy(self, ctx: CallContext) -> Decision:
        """``ctx.user`` is busy (or declined)."""
        return Continue()

    async def on_no_answer(self, ctx: CallContext) -> Decision:
        """The ring timed out."""
        return Continue()

    async def on_unreachable(self, ctx: CallContext) -> Decision:
        """No device of ``ctx.user`` could be reached."""
        return Continue()

    async def on_dtmf(self, ctx: CallContext) -> Decision:
        """Digits during a connected call (``ctx.digits``, oldest first)."""
        return Continue()

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``ctx.user`` dialled one of this feature's codes (``number``: what followed it)."""
        return Continue()

    def check_settings(self, user: UserView, settings: Mapping[str, Any]) -> None:
        """What the schema cannot check because it depends on ``user`` (a number they own):
        raise :class:`~pbx.settings_schema.SettingError` naming ``feature.key`` to refuse
        ``settings`` (the full settings after a change; a value of the wrong type is left to
        the schema check that follows). The settings service asks before it stores anything;
        every change passes by default."""


HookMethod = Callable[[Feature, "CallContext"], Awaitable[Decision]]

#: Which method each hook calls (typed: no method looked up by its name).
HOOKS: dict[Hook, HookMethod] = {
    Hook.ORIGINATE: lambda f, ctx: f.on_originate(ctx),
    Hook.TERMINATE: lambda f, ctx: f.on_terminate(ctx),
    Hook.BUSY: lambda f, ctx: f.on_busy(ctx),
    Hook.NO_ANSWER: lambda f, ctx: f.on_no_answer(ctx),
    Hook.UNREACHABLE: lambda f, ctx: f.on_unreachable(ctx),
    Hook.DTMF: lambda f, ctx: f.on_dtmf(ctx),
}
