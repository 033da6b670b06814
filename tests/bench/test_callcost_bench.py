"""bench/callcost.py: reading callgrind's dumps and the per-call arithmetic (the bench itself
runs servers under valgrind for minutes: bench/README.md, not CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.callcost import _total, instructions_per_call


def test_the_total_comes_from_the_dump_summary(tmp_path: Path) -> None:
    dump = tmp_path / "cg.1"
    dump.write_text("# callgrind format\nversion: 1\nevents: Ir\nsummary: 571708686\n"
                    "fn=(1) main\n3 10\ntotals: 1\n")
    assert _total(dump) == 571_708_686
    bad = tmp_path / "cg.2"
    bad.write_text("events: Ir\n")
    with pytest.raises(RuntimeError, match="no summary"):
        _total(bad)


def test_idle_work_over_the_calls_time_is_taken_out() -> None:
    # 100 calls in 12 s counted 600 M; idling 10 s counted 30 M: 36 M of the 600 are idle work
    assert instructions_per_call(600_000_000, 30_000_000, 12.0, 10.0, 100) == 5_640_000
    with pytest.raises(ValueError):
        instructions_per_call(1, 1, 1.0, 1.0, 0)
