"""bench._procs: the rate ladder and the climb (with fake steps and fake CPU meters)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from bench._procs import SippRun, climb, next_rate, nice_rate


@pytest.mark.parametrize(("x", "want"), [(1875, 1900), (2344, 2300), (31.25, 31), (99.6, 100),
                                         (0.2, 1), (125000, 130000)])
def test_nice_rate_keeps_two_digits(x: float, want: int) -> None:
    assert nice_rate(x) == want


def test_next_rate_walks_the_list_and_stops_there_without_a_ceiling() -> None:
    rates = [100, 200, 300]
    assert next_rate(rates, []) == 100
    assert next_rate(rates, [(100, True)]) == 200
    assert next_rate(rates, [(100, True), (200, False)]) == 300  # one miss: go on
    assert next_rate(rates, [(100, True), (200, True), (300, True)]) is None


def test_next_rate_stops_after_two_misses_in_a_row() -> None:
    assert next_rate([100, 200, 300, 400], [(100, True), (200, False), (300, False)]) is None
    assert next_rate([100, 200, 300, 400], [(100, False), (200, True), (300, False)]) == 400


def test_next_rate_climbs_past_the_list_up_to_the_ceiling() -> None:
    rates = [100, 200]
    history = [(100, True), (200, True)]
    seq = []
    while (r := next_rate(rates, history, ceiling=400, growth=1.25)) is not None:
        seq.append(r)
        history.append((r, True))
    assert seq == [250, 310, 390, 400]


def test_next_rate_past_the_list_gives_a_miss_its_second_chance_then_stops() -> None:
    rates = [100]
    assert next_rate(rates, [(100, True), (130, False)], ceiling=10_000, growth=1.3) == 170
    assert next_rate(rates, [(100, True), (130, False), (170, False)], ceiling=10_000) is None


def test_next_rate_always_grows_even_when_rounding_would_not() -> None:
    assert next_rate([10], [(10, True)], ceiling=100, growth=1.01) == 11


def _fake_step(held_up_to: int) -> Callable[[int, int], SippRun]:
    def step(rate: int, count: int) -> SippRun:
        late = rate > held_up_to
        return SippRun(count, count, 0, 4.0 * (2 if late else 1), uac_cpu=2.0)
    return step


def test_climb_reports_cpu_per_operation_and_finds_the_limit() -> None:
    cpu = itertools.count(0.0, 0.4)  # each reading 0.4 s later: 0.4 s of CPU per step
    res = climb("t", _fake_step(300), [100, 200], 4.0, slack=0.5, unit="/s", quiet=True,
                op="call", meters={"server": lambda: next(cpu)}, ceiling=10_000, growth=1.5)
    assert [row["rate"] for row in res.rows] == [100, 200, 300, 450, 680]
    assert [row["sustained"] for row in res.rows] == [True, True, True, False, False]
    assert res.best == 300 and res.limit_found
    # 0.4 s over 1200 calls (300/s for 4 s)
    assert res.at_best("server_cpu_ms_per_call") == pytest.approx(0.333)
    assert res.rows[0]["server_cpu_ms_per_call"] == 1.0  # 0.4 s / 400 calls
    assert res.rows[0]["uac_cpu_fraction"] == 0.5


def test_climb_that_reaches_the_ceiling_is_a_lower_bound() -> None:
    res = climb("t", _fake_step(10**9), [100, 200], 4.0, slack=0.5, unit="/s", quiet=True,
                ceiling=300)
    assert [row["rate"] for row in res.rows] == [100, 200, 250, 300]
    assert res.best == 300 and not res.limit_found
    assert "server_cpu_ms_per_call" not in res.rows[0]
