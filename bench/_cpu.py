"""CPU time of a process and its children, read from ``/proc`` (Linux; no psutil).

``/proc/PID/stat`` gives a process's user and system time over all its threads (``utime``,
``stime``) and the time of its children it has already waited for (``cutime``, ``cstime``).
The CPU of a process tree is the sum of those four over the process and its live descendants:
a child that has been reaped has moved into its parent's ``c*`` fields, a live one is counted
by itself, so nothing is counted twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of one ``/proc/PID/stat`` line the benches use; times in clock ticks."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def ticks(self) -> int:
        """Own and reaped children's CPU, user + system, in clock ticks."""
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/PID/stat`` line (proc(5)).

    The command name (field 2) is in parentheses and may itself contain spaces and ``)``, so
    the fields after it are split from the *last* ``)``.
    """
    head, sep, tail = text.rpartition(")")
    if not sep:
        raise ValueError(f"not a /proc/PID/stat line: {text[:80]!r}")
    pid = int(head.split("(", 1)[0])
    rest = tail.split()
    # rest[0] is field 3 (state): field N is rest[N - 3]
    if len(rest) < 15:
        raise ValueError(f"short /proc/PID/stat line: {text[:80]!r}")
    return ProcStat(pid=pid, ppid=int(rest[1]), utime=int(rest[11]), stime=int(rest[12]),
                    cutime=int(rest[13]), cstime=int(rest[14]))


def descendants(root: int, stats: dict[int, ProcStat]) -> list[int]:
    """``root`` and every process below it in ``stats`` (pid → stat), parents first."""
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    out: list[int] = []
    todo = [root] if root in stats else []
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo.extend(sorted(children.get(pid, ()), reverse=True))
    return out


def tree_ticks(root: int, stats: dict[int, ProcStat]) -> int:
    """CPU clock ticks of ``root`` and its live descendants (see the module docstring)."""
    return sum(stats[pid].ticks for pid in descendants(root, stats))


def read_stats(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process's stat that can still be read (processes come and go while we read)."""
    stats: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            st = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError):
            continue
        stats[st.pid] = st
    return stats


def tree_cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """CPU seconds (user + system, all threads) of ``pid`` and its children so far."""
    try:
        root = parse_stat((proc / str(pid) / "stat").read_text())
    except OSError as exc:
        raise ProcessLookupError(pid) from exc
    stats = read_stats(proc)
    stats[root.pid] = root
    return tree_ticks(pid, stats) / os.sysconf("SC_CLK_TCK")


def ms_per_op(cpu_seconds: float, ops: int) -> float | None:
    """Milliseconds of CPU per operation, rounded to µs; ``None`` when no operation completed."""
    if ops <= 0:
        return None
    return round(cpu_seconds * 1000.0 / ops, 3)
