"""Voicemail ("Sprachbox", FEATURES.md §3): the box takes a call, and the user listens by phone.

When calls go to the box — the forwarding kinds switch it, each its own code:
``*21``/``#21`` always (forwarding immediate to voicemail), ``*40``/``#40`` on busy,
``*41``/``#41`` on no answer after N rings (``*610`` + rings, default 4) — see
:class:`features.forwarding.Forwarding`. Besides, with this feature's ``enabled`` setting the box
is the last step of the terminating chain: a call that busy, no-answer or unreachable would end
(no forwarding took it) goes to the box instead of getting 486/480.

``*86`` from the user's own phone opens their box's menu, ``*62`` asks for a mailbox number and
PIN (from any phone of the tenant, and from outside: a trunk's call to a DID set up with
``asyncpbx number add NUMBER --voice-portal``; 3 wrong PINs end the call, logged as a
security event); in
the menu ``2`` calls a message's sender back (a :class:`Dial` of their number).
``*55`` + extension during a connected call (an in-call code, ``[incall.voicemail_transfer]``)
moves the other party straight into that colleague's box: greeting, beep, recording — the
colleague's phones do not ring; the user who typed it drops out.
The work is :class:`pbx.voicemail.VoicemailService`'s; the composition root sets
:attr:`Voicemail.service`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog

from pbx.callcontrol import (
    BaseFeature,
    Call,
    CallContext,
    Continue,
    Decision,
    Dial,
    FeatureCode,
    Handled,
    InCallContext,
    InCallDispatcher,
    Setting,
    UserView,
    register_incall_action,
)

log = structlog.get_logger("features.voicemail")

__all__ = ["Voicemail", "VoicemailCalls"]


class VoicemailCalls(Protocol):
    """What the feature asks of :class:`pbx.voicemail.VoicemailService`."""

    async def deposit(self, call: Call, user: UserView, *, max_length: float,
                      silence_timeout: float, caller_name: str = "") -> Any: ...
    def user_in_tenant(self, tenant_id: int | None, extension: str) -> UserView | None: ...
    async def menu(self, call: Call, user: UserView) -> str | None: ...
    async def portal(self, call: Call, caller: UserView | None, *,
                     tenant_id: int | None = None) -> str | None: ...
    def portal_tenant(self, call: Call) -> int | None: ...


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
        register_incall_action("voicemail_transfer", self.transfer_to_box)

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

    async def on_originate(self, ctx: CallContext) -> Decision:
        """A trunk's call to a voice-portal DID (no user places it): the voice portal of the
        DID's tenant. From outside, the menu's "call the sender back" ends the call instead
        (no call is placed on a caller's behalf who is no user)."""
        if self.service is None or ctx.call is None or ctx.user is not None:
            return Continue()
        tenant_id = self.service.portal_tenant(ctx.call)
        if tenant_id is None:
            return Continue()
        log.info("voicemail.portal_from_trunk", call_id=ctx.call.record.call_id,
                 caller=ctx.caller, number=ctx.callee, tenant_id=tenant_id)
        if await self.service.portal(ctx.call, None, tenant_id=tenant_id) is not None:
            ctx.call.record.cause = "voicemail menu"
            ctx.call.hangup()
        return Handled()

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

    async def transfer_to_box(self, ctx: InCallContext, number: str) -> None:
        """In-call ``*55`` + extension: the other party of the user's bridge is moved into a
        new call that deposits straight into ``number``'s box (no ringing); the user's leg is
        hung up. An unknown extension changes nothing (logged)."""
        service, host = self.service, ctx.host
        if service is None or host is None or not number:
            return
        bridge, party = ctx.bridge, ctx.other
        if bridge is None or party is None:
            return
        box_user = service.user_in_tenant(ctx.user.tenant_id, number)
        if box_user is None or box_user.id is None:
            log.info("voicemail.transfer_unknown_box", call_id=ctx.call.record.call_id,
                     user=ctx.user.key, number=number)
            return
        dispatcher = ctx.call.per_call.get(InCallDispatcher.KEY)
        party_user = (dispatcher.users.get(party)
                      if isinstance(dispatcher, InCallDispatcher) else None)
        ctx.call.unbridge(bridge)
        ctx.call.record.cause = ctx.call.record.cause or "transferred to voicemail"
        log.info("voicemail.transfer", call_id=ctx.call.record.call_id, user=ctx.user.key,
                 party=party.id, box=box_user.key)

        async def into_box(call: Call) -> None:
            box_ctx = host.script.context(call, box_user, party_user)
            await self.deposit(box_ctx)

        host.moved_call(ctx.call, party, number, into_box, user=party_user)
        ctx.leg.hangup()  # the transferor drops out
