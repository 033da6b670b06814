"""The per-call supervisor (DESIGN.md principle 8): one TaskGroup per call, a clean release
whatever happens."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from pbx.callcontrol.call import Call

log = structlog.get_logger("pbx.callcontrol")


async def supervise(call: Call, script: Callable[[Call], Awaitable[None]],
                    on_error: Callable[[Call, BaseException], None] | None = None) -> None:
    """Run ``script(call)`` with a per-call :class:`asyncio.TaskGroup` as ``call.tasks``.

    Whatever happens — normal end, an exception in the script or one of its tasks, cancellation
    at shutdown — the call is released cleanly (:meth:`Call.release`) and nothing escapes: one
    call's failure never touches another. Cancellation is re-raised after the release.
    """
    call._notify_record()
    cause = "normal"
    try:
        async with asyncio.TaskGroup() as tg:
            call.tasks = tg
            await script(call)
    except asyncio.CancelledError:
        cause = "shutdown"
        call.release(cause)
        raise
    except Exception as exc:  # the supervisor's whole point: nothing escapes
        cause = "error"
        if on_error is not None:
            on_error(call, exc)
        else:
            log.exception("call.failed", call_id=call.record.call_id)
    finally:
        call.tasks = None
        call.release(cause)
        # The call is over: late signalling on its legs (a BYE's 200, retransmissions) is
        # dropped by Leg.post. Detaching breaks the call <-> leg reference cycles, so a call's
        # few hundred objects are freed by reference counting when the B2BUA lets go of them
        # instead of piling up for the cycle collector (long pauses at hundreds of calls/s).
        for leg in call.legs:
            leg.call = None

