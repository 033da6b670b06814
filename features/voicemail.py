"""Voicemail ("Sprachbox", FEATURES.md §3): the box takes a call, and the user listens by phone.

When calls go to the box — the forwarding kinds switch it, each its own code:
``*21``/``#21`` always (forwarding immediate to voicemail), ``*40``/``#40`` on busy,
``*41``/``#41`` on no answer after N rings (``*610`` + rings, default 4) — see
:class:`features.forwarding.Forwarding`. Besides, with this feature's ``enabled`` setting the box
is the last step of the terminating chain: a call that busy, no-answer or unreachable would end
(no forwarding took it) goes to the box instead of getting 486/480.

``*86`` from the user's own phone opens their box's menu, ``*62`` asks for a mailbox number and
PIN (from any phone of the tenant; 3 wrong PINs end the call, logged as a security event); in
the menu ``2`` calls a message's sender back (a :class:`Dial` of their number).
The work is :class:`pbx.voicemail.VoicemailService`'s; the composition root sets
:attr:`Voicemail.service`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pbx.callcontrol import (
    BaseFeature,
    Call,
    CallContext,
    Continue,
    Decision,
    Dial,
    FeatureCode,
    Handled,
    Setting,
    UserView,
)

__all__ = ["Voicemail", "VoicemailCalls"]


class VoicemailCalls(Protocol):
    """What the feature asks of :class:`pbx.voicemail.VoicemailService`."""

    async def deposit(self, call: Call, user: UserView, *, max_length: float,
                      silence_timeout: float, caller_name: str = "") -> Any: ...
    async def menu(self, call: Call, user: UserView) -> str | None: ...
    async def portal(self, call: Call, caller: UserView | None) -> str | None: ...


class Voicemail(BaseFeature):
    """The voicemail box (priority 750: after every forwarding kind in the after-ring chains)."""

    name = "voicemail"
    priority = 750
    settings_schema: Mapping[str, Setting] = {
        "enabled": Setting(bool, False, "calls that would end busy, unanswered or unreachable "
                           "go to the box"),
        "silence_timeout": Setting(float, 5.0, "seconds of silence that end a message",
                                   minimum=1.0, maximum=60.0),
        "max_length": Setting(float, 180.0, "longest message in seconds",
                              minimum=5.0, maximum=600.0),
    }
    feature_codes: Sequence[FeatureCode] = (
        FeatureCode("listen"),
        FeatureCode("portal"),
    )

    def __init__(self) -> None:
        #: set by the composition root (None: voicemail is not available, e.g. in the CLI)
        self.service: VoicemailCalls | None = None

    async def deposit(self, ctx: CallContext) -> Decision:
        """The caller leaves a message in ``ctx.user``'s box (Handled), or Continue when there
        is no box (no service, a user the store does not know)."""
        if self.service is None or ctx.call is None or ctx.user is None or ctx.user.id is None:
            return Continue()
        name = ctx.originator.name if ctx.originator is not None else ""
        await self.service.deposit(ctx.call, ctx.user,
                                   max_length=float(ctx.setting(self, "max_length")),
                                   silence_timeout=float(ctx.setting(self, "silence_timeout")),
                                   caller_name=name)
        return Handled()

    async def _last_step(self, ctx: CallContext) -> Decision:
        return await self.deposit(ctx) if ctx.setting(self, "enabled") else Continue()

    async def on_busy(self, ctx: CallContext) -> Decision:
        """Busy and no forwarding took the call: the box, when enabled."""
        return await self._last_step(ctx)

    async def on_no_answer(self, ctx: CallContext) -> Decision:
        """Not answered and no forwarding took the call: the box, when enabled."""
        return await self._last_step(ctx)

    async def on_unreachable(self, ctx: CallContext) -> Decision:
        """No device and no forwarding took the call: the box, when enabled."""
        return await self._last_step(ctx)

    async def on_feature_code(self, ctx: CallContext, code: FeatureCode,
                              number: str) -> Decision:
        """``*86`` the own box's menu, ``*62`` the voice portal."""
        if self.service is None or ctx.call is None or ctx.user is None:
            return Continue()
        if code.action == "listen":
            if ctx.user.id is None:
                return Continue()
            back = await self.service.menu(ctx.call, ctx.user)
        elif code.action == "portal":
            back = await self.service.portal(ctx.call, ctx.user)
        else:
            return Continue()
        # "call the sender back" (2 in the menu): the call goes on to them as if dialled
        return Dial(back) if back is not None else Handled()
