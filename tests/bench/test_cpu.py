"""bench._cpu: the /proc/PID/stat parser and the CPU of a process tree."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench._cpu import ProcStat, descendants, ms_per_op, parse_stat, tree_cpu_seconds, tree_ticks


def _line(pid: int, comm: str, ppid: int, utime: int, stime: int, cutime: int = 0,
          cstime: int = 0) -> str:
    # fields 1..17 of proc(5), then the rest of a real line
    return (f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 "
            f"{utime} {stime} {cutime} {cstime} 20 0 3 0 12345 1000000 500 "
            "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n")


def test_parse_stat_reads_the_time_fields() -> None:
    st = parse_stat(_line(4242, "python", 1, utime=150, stime=30, cutime=7, cstime=3))
    assert st == ProcStat(pid=4242, ppid=1, utime=150, stime=30, cutime=7, cstime=3)
    assert st.ticks == 190


def test_parse_stat_command_with_spaces_and_parentheses() -> None:
    st = parse_stat(_line(7, "evil) 1 2 (name", 3, utime=11, stime=22))
    assert (st.pid, st.ppid, st.utime, st.stime) == (7, 3, 11, 22)


@pytest.mark.parametrize("text", ["", "123 python S 1", "1 (x) S 1 2 3"])
def test_parse_stat_rejects_what_is_not_a_stat_line(text: str) -> None:
    with pytest.raises(ValueError):
        parse_stat(text)


def test_tree_ticks_counts_the_process_and_its_live_descendants_once() -> None:
    stats = {
        10: ProcStat(10, 1, 100, 50, 5, 5),  # the server (10 ticks of reaped children)
        11: ProcStat(11, 10, 20, 10, 0, 0),  # its child
        12: ProcStat(12, 11, 3, 2, 0, 0),    # a grandchild
        20: ProcStat(20, 1, 999, 999, 0, 0),  # unrelated
        21: ProcStat(21, 20, 999, 0, 0, 0),   # child of the unrelated one
    }
    assert descendants(10, stats) == [10, 11, 12]
    assert tree_ticks(10, stats) == 160 + 30 + 5
    assert tree_ticks(99, stats) == 0


def test_tree_cpu_seconds_from_a_fake_proc(tmp_path: Path) -> None:
    for pid, ppid, ut in ((500, 1, 200), (501, 500, 100), (600, 1, 7777)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(_line(pid, "p", ppid, utime=ut, stime=0))
    (tmp_path / "self").mkdir()  # non-numeric entries are skipped
    hz = os.sysconf("SC_CLK_TCK")
    assert tree_cpu_seconds(500, tmp_path) == pytest.approx(300 / hz)
    with pytest.raises(ProcessLookupError):
        tree_cpu_seconds(502, tmp_path)


def test_tree_cpu_seconds_of_this_process_grows_with_work() -> None:
    before = tree_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    after = tree_cpu_seconds(os.getpid())
    assert after - before >= 0.05


def test_ms_per_op() -> None:
    assert ms_per_op(1.5, 1000) == 1.5
    assert ms_per_op(0.0123456, 10) == 1.235
    assert ms_per_op(1.0, 0) is None
