"""bench._compare: runs of several checkouts pooled and compared against the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._compare import compare_cpu, pool, ratio, schedule, summarize
from bench._procs import Tree

KEY = "server_cpu_ms_per_call"


def _rows(*steps: tuple[int, bool, float | None]) -> list[dict[str, object]]:
    return [{"rate": r, "sustained": ok, KEY: cpu} for r, ok, cpu in steps]


def test_schedule_interleaves_the_trees() -> None:
    assert schedule(2, 1) == [0, 1]
    assert schedule(2, 3) == [0, 1, 0, 1, 0, 1]
    assert schedule(1, 0) == [0]


def test_pool_takes_the_median_of_held_steps_only() -> None:
    runs = [_rows((100, True, 1.0), (200, True, 0.9), (300, False, 2.0)),
            _rows((100, True, 1.2), (200, True, None), (300, True, 0.8)),
            _rows((100, True, 1.1))]
    assert pool(runs, KEY) == {100: 1.1, 200: 0.9, 300: 0.8}


def test_ratio() -> None:
    assert ratio(800, 1000) == 1.25
    assert ratio(0, 5) is None
    assert ratio(None, 5) is None


def test_compare_cpu_at_common_rates() -> None:
    cmp = compare_cpu({100: 1.0, 200: 0.8, 300: 0.7}, {100: 1.1, 200: 0.88, 400: 0.5})
    assert cmp["common_rates"] == [100, 200]
    assert cmp["cpu_ratio_per_rate"] == {100: 1.1, 200: 1.1}
    assert cmp["cpu_ratio_geomean"] == pytest.approx(1.1)
    assert compare_cpu({100: 1.0}, {200: 1.0})["cpu_ratio_geomean"] is None


def test_summarize_two_trees(tmp_path: Path) -> None:
    a, b = Tree(tmp_path / "a", "pa"), Tree(tmp_path / "b", "pb")
    runs = [(0, 1000, _rows((800, True, 1.0), (1000, True, 0.9))),
            (1, 900, _rows((800, True, 1.05), (1000, False, 1.4))),
            (0, 1100, _rows((800, True, 1.0))),
            (1, 900, _rows((800, True, 1.05)))]
    s = summarize([a, b], runs, KEY)
    assert [t["best_rates"] for t in s["trees"]] == [[1000, 1100], [900, 900]]
    assert s["trees"][0][KEY + "_by_rate"] == {"800": 1.0, "1000": 0.9}
    (c,) = s["against_reference"]
    assert c["rate_ratio"] == ratio(1050, 900)
    assert c["common_rates"] == [800]
    assert c["cpu_ratio_geomean"] == 1.05


def test_tree_at_needs_a_checkout_with_a_venv(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an asyncpbx checkout"):
        Tree.at(tmp_path)
    (tmp_path / "pbx").mkdir()
    with pytest.raises(ValueError, match=r"\.venv"):
        Tree.at(tmp_path)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")
    tree = Tree.at(tmp_path)
    assert tree.python == str(tmp_path / ".venv" / "bin" / "python")
    assert tree.describe().startswith(str(tmp_path) + "@")
