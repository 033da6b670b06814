"""The 20 ms media clock: one tick pulls the whole media graph (DESIGN.md principle 5).

Theory of operation
-------------------
Work registers as :class:`ClockJob` callbacks in a :class:`Phase`; one tick runs them in phase
order — inputs (e.g. WebRTC frame queues) → bridges, links and conferences (pull frames, push
frames: encoders → RTP out) → the one mixer call for all conferences → outputs (recorders, RTCP).

:meth:`MediaClock.tick` is that step with an explicit ``now`` (the sans-IO seam: tests drive the
graph on a fake clock, tick by tick, without sleeping). :meth:`MediaClock.start` runs it in real
time on an event loop, on absolute deadlines against ``loop.time()``: a late wake-up runs the
missed ticks back to back (jitter buffers and RTP timestamps keep real time), but never more than
``max_catchup`` at once — after a longer stall the clock skips ahead rather than burst a second of
audio. A job that raises is disabled and reported to ``on_error``; the other jobs keep running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from media.port import PTIME

__all__ = ["ClockJob", "EventLoop", "MediaClock", "Phase"]


class Phase(IntEnum):
    """Order of work inside one tick."""

    INPUT = 0  # sources that must be pulled first (e.g. WebRTC frame queues)
    BRIDGE = 1  # bridges, links, conferences: pull frames, push frames (encoders → RTP out)
    MIX = 2  # the one mixer call for all conferences
    OUTPUT = 3  # recorders flushing, RTCP reports


@dataclass(slots=True)
class ClockJob:
    """A callback the clock runs every tick; ``cancel()`` stops it."""

    phase: Phase
    callback: Callable[[float], None]
    active: bool = True

    def cancel(self) -> None:
        self.active = False
        # The callback is usually a bound method of the job's owner, which holds the job: drop
        # it so the owner is freed by reference counting, not left to the cycle collector.
        self.callback = _no_tick


def _no_tick(now: float) -> None:
    """The callback of a cancelled :class:`ClockJob`."""


class EventLoop(Protocol):
    """What the real-time clock needs of an asyncio event loop."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> Any: ...


class MediaClock:
    """One 20 ms tick for the whole media graph.

    ``tick(now)`` runs one step; ``start()`` runs the steps in real time on ``loop`` (a clock
    made without a loop is driven by its owner's ``tick`` calls only). ``overruns`` counts ticks
    that started more than one period late; ``skipped`` counts ticks dropped by skipping ahead.
    """

    def __init__(self, loop: EventLoop | None = None, ptime: float = PTIME,
                 max_catchup: int = 3) -> None:
        self.loop = loop
        self.ptime = ptime
        self.max_catchup = max_catchup
        self._jobs: list[ClockJob] = []
        self._handle: Any = None
        self._t0 = 0.0
        self._n = 0
        self.ticks = 0
        self.overruns = 0
        self.skipped = 0
        self.busy = 0.0  # seconds spent inside ticks
        self.max_lateness = 0.0
        self.tick_times: list[float] = []  # recent tick durations (bench); bounded
        self.now = 0.0  # deadline of the tick being run (media time for timestamps)
        self.on_error: Callable[[BaseException], None] | None = None

    def add(self, callback: Callable[[float], None], phase: Phase = Phase.BRIDGE) -> ClockJob:
        """Run ``callback(now)`` every tick in ``phase``; ``.cancel()`` the result to stop."""
        job = ClockJob(phase, callback)
        self._jobs.append(job)
        self._jobs.sort(key=lambda j: j.phase)
        return job

    @property
    def jobs(self) -> int:
        """Jobs still active."""
        return sum(1 for j in self._jobs if j.active)

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        """Start ticking in real time at the next period boundary of ``loop.time()``."""
        if self.loop is None:
            raise RuntimeError("a MediaClock without a loop is driven by tick(now)")
        if self._handle is None:
            self._t0 = self.loop.time() + self.ptime
            self._n = 0
            self._handle = self.loop.call_at(self._t0, self._wake)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def tick(self, now: float) -> None:
        """Run one 20 ms step of every active job, in phase order, at media time ``now``."""
        start = time.perf_counter()
        self.now = now
        for job in self._jobs:
            if job.active:
                try:
                    job.callback(now)
                except Exception as exc:  # one broken port must not stop the clock
                    job.active = False
                    if self.on_error is not None:
                        self.on_error(exc)
        if any(not j.active for j in self._jobs):
            self._jobs = [j for j in self._jobs if j.active]
        spent = time.perf_counter() - start
        self.busy += spent
        self.ticks += 1
        if len(self.tick_times) < 100_000:
            self.tick_times.append(spent)

    def _wake(self) -> None:
        assert self.loop is not None
        now = self.loop.time()
        # ticks whose deadline has passed (the epsilon keeps an exact deadline from rounding down)
        due = int((now - self._t0) / self.ptime + 1e-9) - self._n + 1
        lateness = now - (self._t0 + self._n * self.ptime)
        self.max_lateness = max(self.max_lateness, lateness)
        if due > self.max_catchup:
            self.skipped += due - self.max_catchup
            self.overruns += due - self.max_catchup
            self._n += due - self.max_catchup
            due = self.max_catchup
        if lateness > self.ptime:
            self.overruns += 1
        for _ in range(max(due, 1)):
            self.tick(self._t0 + self._n * self.ptime)
            self._n += 1
        if self._handle is not None:
            self._handle = self.loop.call_at(self._t0 + self._n * self.ptime, self._wake)
