"""Dead-call reaping: an answered call whose leg receives no RTP for ``rtp_timeout`` seconds
(while not on hold) is hung up — the far end has crashed or lost its network, and nobody will
ever send a BYE.

One sweeper task watches every answered call (it runs while any is watched) instead of a task
and a timer per call on the call set-up path; it belongs to the B2BUA's task scope.
"""

from __future__ import annotations

import asyncio
from typing import Any

from media.aio import RtpSession
from pbx.callcontrol import Call, Leg
from sipcore.aio.tasks import Child, TaskScope

__all__ = ["RTP_CHECK_INTERVAL", "RtpWatch", "rtp_dead"]

#: How often watched calls are checked, at most (s).
RTP_CHECK_INTERVAL = 5.0


def rtp_dead(legs: tuple[Leg, ...], last: dict[str, tuple[float, float]], now: float,
             timeout: float) -> Leg | None:
    """The first leg that has received no RTP for ``timeout`` (answered, not held), if any.
    ``last`` keeps per leg (packets received, since when) between sweeps."""
    for leg in legs:
        session = leg.media
        if not isinstance(session, RtpSession) or session.closed or not leg.answered:
            continue
        rx = float(session.statistics().get("rx_packets", 0))
        seen, since = last.get(leg.id, (-1.0, now))
        if rx != seen or leg.held:
            last[leg.id] = (rx, now)
            continue
        if now - since >= timeout:
            return leg
    return None


class RtpWatch:
    """Watches answered calls for dead media and hangs up the leg that went silent."""

    def __init__(self, scope: TaskScope, timeout: float, log: Any) -> None:
        self.scope = scope
        self.timeout = timeout
        self.log = log
        #: call -> (its legs, per-leg (rx packets, since))
        self.watched: dict[Call, tuple[tuple[Leg, ...], dict[str, tuple[float, float]]]] = {}
        self._sweeper: Child | None = None

    def watch(self, call: Call, legs: tuple[Leg, ...]) -> None:
        """Watch ``call`` until :meth:`forget`."""
        self.watched[call] = (legs, {})
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = self.scope.spawn(self._sweep(), "rtp-sweeper")

    def forget(self, call: Call) -> None:
        """The call ended."""
        self.watched.pop(call, None)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        interval = min(RTP_CHECK_INTERVAL, max(0.2, self.timeout / 4))
        while self.watched:
            await asyncio.sleep(interval)
            now = loop.time()
            for call, (legs, last) in list(self.watched.items()):
                try:
                    dead = rtp_dead(legs, last, now, self.timeout)
                except Exception:  # one call's fault must not stop the watch over the others
                    self.log.exception("call.rtp_watch_failed", call_id=call.record.call_id)
                    dead = None
                if dead is None:
                    continue
                del self.watched[call]
                self.log.info("call.rtp_timeout", call_id=call.record.call_id, leg=dead.id,
                              party=dead.party, seconds=self.timeout)
                call.record.cause = "rtp timeout"
                dead.hangup("rtp-timeout")
