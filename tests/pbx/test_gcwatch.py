"""pbx.gcwatch: collector passes timed, long ones logged once each."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from pbx.gcwatch import GcWatch


class _Clock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step  # every read is `step` later: each pass takes `step`
        return self.now


def _events(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr()
    return out.out + out.err


def test_a_long_pass_is_logged_with_its_generation(capsys: pytest.CaptureFixture[str]) -> None:
    watch = GcWatch(threshold=0.05, clock=_Clock(0.2))
    watch.start()
    try:
        gc.collect(1)
    finally:
        watch.stop()
    assert watch.passes[1] >= 1 and watch.longest == pytest.approx(0.2)
    text = _events(capsys)
    assert "gc.pause" in text and "generation=1" in text and "ms=200.0" in text


def test_short_passes_are_counted_not_logged(capsys: pytest.CaptureFixture[str]) -> None:
    watch = GcWatch(threshold=0.05, clock=_Clock(0.001))
    watch.start()
    try:
        gc.collect(0)
        gc.collect(0)
    finally:
        watch.stop()
    assert watch.passes[0] >= 2
    assert watch.seconds[0] == pytest.approx(0.001 * watch.passes[0])
    assert "gc.pause" not in _events(capsys)


def test_start_is_idempotent_and_stop_removes_the_callback() -> None:
    watch = GcWatch()
    watch.start()
    watch.start()
    assert sum(cb == watch._on_gc for cb in gc.callbacks) == 1
    watch.stop()
    assert watch._on_gc not in gc.callbacks


def test_a_stop_without_a_start_is_ignored() -> None:
    watch = GcWatch(clock=_Clock(1.0))
    info: dict[str, Any] = {"generation": 2, "collected": 0, "uncollectable": 0}
    watch._on_gc("stop", info)  # installed in the middle of a pass
    assert watch.passes == [0, 0, 0]
