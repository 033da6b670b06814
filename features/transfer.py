"""Transfer and hold by in-call code (FEATURE_CODES.md): ``##`` + number blind transfer,
``*2`` + number consultation (``*2`` again or hanging up completes the transfer), ``*4`` toggle
hold. The work is call control's (:mod:`pbx.callcontrol.transfer`, which REFER and the API use
too); this module only maps the in-call actions of the code table (``[incall.*]`` in
pbx/feature_codes.toml) onto it (:func:`pbx.callcontrol.register_incall_action`).
"""

from __future__ import annotations

from pbx.callcontrol import (
    CONSULTATION,
    Consultation,
    InCallContext,
    consult,
    register_incall_action,
    toggle_hold,
    transfer_blind,
)

__all__ = ["register_actions"]


async def _blind_action(ctx: InCallContext, number: str) -> None:
    if not number or ctx.other is None or ctx.host is None:
        return
    transfer_blind(ctx.call, ctx.leg, number, host=ctx.host)
    ctx.leg.hangup()  # the transferor drops out


async def _attended_action(ctx: InCallContext, number: str) -> None:
    running = ctx.call.per_call.get(CONSULTATION)
    if isinstance(running, Consultation):
        if not number:  # *2 again: complete
            running.complete()
        return
    if not number or ctx.other is None or ctx.host is None:
        return
    consult(ctx.call, ctx.leg, number, host=ctx.host)


async def _hold_action(ctx: InCallContext, number: str) -> None:
    toggle_hold(ctx.call, ctx.leg)


def register_actions() -> None:
    """Carry out the in-call codes ``##`` (blind transfer), ``*2`` (consultation / attended
    transfer) and ``*4`` (toggle hold) with this module's actions."""
    register_incall_action("blind_transfer", _blind_action)
    register_incall_action("attended_transfer", _attended_action)
    register_incall_action("toggle_hold", _hold_action)


register_actions()
