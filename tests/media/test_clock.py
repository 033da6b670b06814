"""The 20 ms media clock: ``tick(now)`` (one step, explicit time) and the real-time driver on
absolute deadlines (a fake loop stands in for asyncio's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from media.clock import MediaClock, Phase


def test_tick_runs_jobs_in_phase_order_at_now() -> None:
    clock = MediaClock()
    seen: list[tuple[str, float]] = []
    clock.add(lambda now: seen.append(("output", now)), Phase.OUTPUT)
    clock.add(lambda now: seen.append(("bridge", now)))
    clock.add(lambda now: seen.append(("input", now)), Phase.INPUT)
    clock.add(lambda now: seen.append(("mix", now)), Phase.MIX)
    clock.tick(5.0)
    assert seen == [("input", 5.0), ("bridge", 5.0), ("mix", 5.0), ("output", 5.0)]
    assert clock.now == 5.0 and clock.ticks == 1


def test_tick_drops_cancelled_and_failing_jobs() -> None:
    clock = MediaClock()
    errors: list[BaseException] = []
    clock.on_error = errors.append
    got: list[float] = []
    job = clock.add(got.append)
    kept: list[float] = []
    clock.add(kept.append)

    def bad(now: float) -> None:
        raise RuntimeError("boom")

    clock.add(bad)
    assert clock.jobs == 3
    clock.tick(1.0)
    assert len(errors) == 1 and clock.jobs == 2  # the failing job is off, the others ran
    job.cancel()
    clock.tick(1.02)
    assert got == [1.0] and kept == [1.0, 1.02] and clock.jobs == 1


def test_a_clock_without_a_loop_cannot_start() -> None:
    clock = MediaClock()
    with pytest.raises(RuntimeError):
        clock.start()
    assert not clock.running


class FakeLoop:
    """Just enough of an event loop for MediaClock: a settable time and call_at."""

    def __init__(self) -> None:
        self.now = 100.0
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb: Callable[[], None]) -> Any:
        self.calls.append((when, cb))

        class Handle:
            def cancel(self) -> None:
                pass

        return Handle()

    def fire(self, at: float) -> None:
        self.now = at
        _, cb = self.calls.pop(0)
        cb()


def test_media_clock_absolute_deadlines_catch_up_and_overruns() -> None:
    loop = FakeLoop()
    clock = MediaClock(loop, max_catchup=3)  # type: ignore[arg-type]
    seen: list[float] = []
    clock.add(seen.append)
    clock.start()
    t0 = loop.calls[0][0]
    assert t0 == pytest.approx(100.02)
    # on time (with a little wake-up latency): one tick per wake, deadlines stay on the grid
    for i in range(5):
        loop.fire(t0 + i * 0.02 + 0.001)
        assert loop.calls[-1][0] == pytest.approx(t0 + (i + 1) * 0.02)  # not drifting
    assert seen == pytest.approx([t0 + i * 0.02 for i in range(5)])
    assert clock.overruns == 0
    # 45 ms late: the missed ticks run back to back, no more
    loop.fire(t0 + 5 * 0.02 + 0.045)
    assert len(seen) == 8 and clock.overruns == 1 and clock.skipped == 0
    assert loop.calls[-1][0] == pytest.approx(t0 + 8 * 0.02)
    # a 1 s stall: at most max_catchup ticks, the rest skipped and counted
    loop.fire(t0 + 8 * 0.02 + 1.0)
    assert len(seen) == 11
    assert clock.skipped == 51 - 3 and clock.overruns == 1 + 48 + 1
    assert loop.calls[-1][0] > loop.now


def test_media_clock_survives_a_failing_job() -> None:
    loop = FakeLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    errors: list[BaseException] = []
    clock.on_error = errors.append
    good: list[float] = []

    def bad(now: float) -> None:
        raise RuntimeError("boom")

    clock.add(bad)
    clock.add(good.append)
    clock.start()
    for _ in range(3):
        loop.fire(loop.calls[0][0])
    assert len(good) == 3 and len(errors) == 1
