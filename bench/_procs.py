"""Processes for load benchmarks: the PBX server pinned to one core, SIPp runs, the clock."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._cpu import ms_per_op, tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def pin(cpu: int) -> list[str]:
    """A ``taskset`` prefix pinning a command to ``cpu`` (empty when taskset is missing)."""
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []


#: Adds the benchmark's users to a data directory, run by the server tree's own interpreter
#: (its ``pbx.store`` is the one that must read them): argv = config, data dir, users JSON file.
_ADD_USERS = """
import json, sys
from pbx.config import load_config
from pbx.store import Store
cfg, data, users, settings = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
realm = load_config(cfg, data_dir=data, environ={}).realm
store = Store(data)
with open(users) as f:
    for ext, pw in json.load(f):
        store.add_user(ext, pw, realm)
with open(settings) as f:
    wanted = json.load(f)
if wanted:  # a tree from before the features has no features package to ask
    from features import default_features
    # each tree stores the settings of the features it has (an older tree lacks some)
    schemas = {f.name: f.settings_schema for f in default_features()}
    for ext, feature, value in wanted:
        if feature in schemas:
            store.set_feature_settings(store.user(ext).id, feature, schemas[feature], value)
store.close()
"""


@dataclass(frozen=True)
class Tree:
    """A checkout whose ``asyncpbx serve`` a bench runs: its root and its interpreter (the
    bench's own by default; ``PATH/.venv/bin/python`` for another checkout)."""

    root: Path = ROOT
    python: str = sys.executable

    @classmethod
    def at(cls, path: str | Path) -> Tree:
        """The checkout at ``path``, with the interpreter of its ``.venv``."""
        root = Path(path).resolve()
        python = root / ".venv" / "bin" / "python"
        if not (root / "pbx").is_dir():
            raise ValueError(f"{root} is not an asyncpbx checkout (no pbx/)")
        if not python.exists():
            raise ValueError(f"{root} has no .venv/bin/python (run scripts/bootstrap.sh there)")
        return cls(root, str(python))

    def trust_loopback(self) -> str:
        """The config lines that make the load generator's loopback address trusted (it is no
        attacker: its first burst is no flood, pbx/bans.py), or ``""`` for a checkout from
        before the ``[security]`` table (which would refuse the unknown table)."""
        config = self.root / "pbx" / "config.py"
        if "class SecurityConfig" not in config.read_text(encoding="utf-8"):
            return ""
        return '[security]\ntrusted = ["127.0.0.0/8"]\n'

    def describe(self) -> str:
        """``PATH@COMMIT`` (``+dirty`` with uncommitted changes to tracked files)."""
        def git(*args: str) -> str:
            proc = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True,
                                  text=True, check=False)
            return proc.stdout.strip() if proc.returncode == 0 else ""

        commit = git("rev-parse", "--short", "HEAD") or "?"
        dirty = "+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
        return f"{self.root}@{commit}{dirty}"


@dataclass
class Server:
    """``asyncpbx serve`` of ``tree`` in a subprocess with its own data directory."""

    config: str
    users: list[tuple[str, str]] = field(default_factory=list)
    #: per-user feature settings stored before the start: (extension, feature, values)
    settings: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    cpu: int | None = None
    tree: Tree = field(default_factory=Tree)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="asyncpbx-bench-")))
    listening: dict[str, tuple[str, int]] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    #: A command the server's interpreter runs under (e.g. valgrind; bench/callcost.py) ...
    wrapper: Sequence[str] = ()
    #: ... and how long it may take to start (seconds).
    start_timeout: float = 60.0

    def start(self) -> Server:
        cfg = self.workdir / "asyncpbx.toml"
        cfg.write_text(self.config)
        data = self.workdir / "data"
        if self.users:
            users = self.workdir / "users.json"
            users.write_text(json.dumps(self.users))
            settings = self.workdir / "settings.json"
            settings.write_text(json.dumps(self.settings))
            added = subprocess.run([self.tree.python, "-c", _ADD_USERS, str(cfg), str(data),
                                    str(users), str(settings)], cwd=self.tree.root,
                                   capture_output=True,
                                   text=True, check=False)
            if added.returncode != 0:
                raise RuntimeError(f"adding users in {self.tree.root} failed: "
                                   + added.stderr[-3000:])
        prefix = pin(self.cpu) if self.cpu is not None else []
        profile = os.environ.get("BENCH_PROFILE_DIR")
        if profile:  # cProfile the server: where a before/after difference comes from
            out = Path(profile) / f"{self.tree.root.name}-{os.getpid()}-{time.time_ns()}.prof"
            out.parent.mkdir(parents=True, exist_ok=True)
            prefix = [*prefix, *self.wrapper, self.tree.python, "-m", "cProfile", "-o",
                      str(out)]
        else:
            prefix = [*prefix, *self.wrapper, self.tree.python]
        self.proc = subprocess.Popen(
            [*prefix, "-m", "pbx", "serve", "--config", str(cfg),
             "--data-dir", str(data)],
            cwd=self.tree.root, stdout=subprocess.PIPE,
            stderr=(self.workdir / "server.log").open("w"),
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.match(r"listening (\w+) (\S+) (\d+)", line)
            if m:
                self.listening[m.group(1)] = (m.group(2), int(m.group(3)))
            if line.strip() == "ready":
                threading.Thread(target=_drain, args=(self.proc.stdout,), daemon=True).start()
                return self
        log = (self.workdir / "server.log").read_text()[-3000:]
        self.stop()
        raise RuntimeError("server did not start: " + log)

    def cpu_seconds(self) -> float:
        """CPU seconds the server process and its children have used so far."""
        assert self.proc is not None, "server not started"
        return tree_cpu_seconds(self.proc.pid)

    def idle_cpu_fraction(self, seconds: float = 2.0) -> float:
        """The server's CPU, as a share of one core, over ``seconds`` with no load (its timers
        and clocks): part of every step's CPU per operation, most visible at low rates."""
        c0, t0 = self.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        return round((self.cpu_seconds() - c0) / (time.monotonic() - t0), 4)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(max(20.0, self.start_timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _drain(stream: object) -> None:
    """Read a pipe to its end so the child never blocks writing to it."""
    for _ in stream:  # type: ignore[attr-defined]
        pass


@dataclass
class SippRun:
    """Outcome of one SIPp UAC run; ``uac_cpu`` is the UAC process's CPU seconds."""

    attempted: int
    successful: int
    failed: int
    elapsed: float
    uac_cpu: float = 0.0

    @property
    def rate(self) -> float:
        """Successful calls per second over the run."""
        return self.successful / self.elapsed if self.elapsed > 0 else 0.0


def _children_cpu() -> float:
    """CPU seconds of this process's waited-for children so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def sipp_uac(scenario: str | Path, target: tuple[str, int], *, rate: int, calls: int,
             workdir: Path, inf: Path | None = None, cpu: int | None = None, limit: int = 2000,
             timeout: float = 60.0, extra: Sequence[str] = (),
             local_ip: str = "127.0.0.1") -> SippRun:
    """Run SIPp as UAC at ``rate`` calls/s until ``calls`` calls ended, from ``local_ip``.
    ``scenario`` is a file of bench/scenarios or a path; ``extra`` goes on SIPp's command line
    before the target."""
    path = Path(scenario)
    if not path.is_absolute():
        path = SCENARIOS / path
    stat = workdir / f"stat-{rate}-{time.monotonic_ns()}.csv"
    args = [*(pin(cpu) if cpu is not None else []), "sipp", "-sf", str(path),
            "-i", local_ip, "-p", str(_free_udp_port(local_ip)), "-m", str(calls), "-r", str(rate),
            "-rp", "1000", "-l", str(limit), "-timeout", f"{int(timeout)}s", "-nostdin",
            "-trace_stat", "-stf", str(stat), "-fd", "1", "-max_recv_loops", "100000",
            "-recv_timeout", "8000", "-buff_size", "4194304"]
    if inf is not None:
        args += ["-inf", str(inf)]
    args += [*extra, f"{target[0]}:{target[1]}"]
    c0, t0 = _children_cpu(), time.monotonic()
    subprocess.run(args, cwd=workdir, capture_output=True, timeout=timeout + 30,
                   stdin=subprocess.DEVNULL, check=False)
    elapsed, uac_cpu = time.monotonic() - t0, _children_cpu() - c0
    ok = bad = 0
    lines = [ln for ln in stat.read_text().splitlines() if ln.strip()] if stat.exists() else []
    if len(lines) >= 2:
        row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
        ok, bad = int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))
    return SippRun(calls, ok, bad, elapsed, uac_cpu)


def sustained(run: SippRun, seconds: float, slack: float, factor: float = 1.2) -> bool:
    """A step held its rate: < 0.1 % failed, >= 99.9 % succeeded, and it took at most
    ``factor`` times the planned time plus ``slack`` seconds (a step that ends later had a
    backlog: the server fell behind the offered rate even if every call completed)."""
    return (
        run.failed <= run.attempted * 0.001
        and run.successful >= run.attempted * 0.999
        and run.elapsed <= seconds * factor + slack
    )


def nice_rate(x: float) -> int:
    """``x`` rounded to two significant digits (1875 → 1900, 2344 → 2300, 31.25 → 31)."""
    if x < 1:
        return 1
    step = int(10 ** max(0, len(str(int(x))) - 2))
    return max(1, int(x / step + 0.5) * step)  # half up (round() would go to even)


def next_rate(rates: Sequence[int], history: Sequence[tuple[int, bool]], *,
              ceiling: int | None = None, growth: float = 1.25, misses: int = 2) -> int | None:
    """The rate of the next climb step, or ``None`` when the climb is over.

    ``history`` is ``(rate, sustained)`` per step run so far. The climb runs ``rates`` in order
    and ends after ``misses`` steps in a row did not hold. With a ``ceiling`` it does not end
    with the list: it goes on above its last rate, ``growth`` times higher each step (rounded
    to two digits), up to and including ``ceiling`` — so a load that still holds at the end
    of the list climbs to its own limit instead of being reported as the list's top.
    """
    if misses > 0 and len(history) >= misses and not any(ok for _, ok in history[-misses:]):
        return None
    if len(history) < len(rates):
        return rates[len(history)]
    if ceiling is None or not rates:
        return None
    top = max(max(rates), *(r for r, _ in history))
    if top >= ceiling:
        return None
    return min(ceiling, max(top + 1, nice_rate(top * growth)))


@dataclass
class Climb:
    """Outcome of :func:`climb`: the best sustained rate, one row per step, and whether the
    climb ended because the load stopped holding (``False``: the list or ceiling ran out first,
    so ``best`` is a lower bound of the real limit)."""

    best: int
    rows: list[dict[str, Any]]
    limit_found: bool

    def at_best(self, key: str) -> Any:
        """``key`` of the (last) step run at the best sustained rate, ``None`` if none held."""
        held = [row for row in self.rows if row["sustained"] and row["rate"] == self.best]
        return held[-1].get(key) if held else None


def climb(label: str, step: Callable[[int, int], SippRun], rates: Sequence[int], seconds: float,
          *, slack: float, unit: str, quiet: bool, factor: float = 1.2, op: str = "call",
          meters: Mapping[str, Callable[[], float]] | None = None,
          ceiling: int | None = None, growth: float = 1.25) -> Climb:
    """Run ``step(rate, count)`` (``rate * seconds`` attempts) at the rates of
    :func:`next_rate` until two steps in a row miss (see :func:`sustained`).

    ``meters`` name processes whose CPU seconds so far each callable returns (e.g.
    ``{"server": ...}``); each row gets ``NAME_cpu_ms_per_OP`` (CPU of that process tree during
    the step / successful operations) and ``uac_cpu_fraction`` (the load generator's CPU over
    the step's wall time: near 1.0 the generator, not the server, is what limits the step).
    """
    rows: list[dict[str, Any]] = []
    history: list[tuple[int, bool]] = []
    best = 0
    while (rate := next_rate(rates, history, ceiling=ceiling, growth=growth)) is not None:
        count = max(1, int(rate * seconds))
        before = {name: meter() for name, meter in (meters or {}).items()}
        run = step(rate, count)
        after = {name: meter() for name, meter in (meters or {}).items()}
        ok = sustained(run, seconds, slack, factor)
        history.append((rate, ok))
        row: dict[str, Any] = {"rate": rate, "successful": run.successful, "failed": run.failed,
                               "elapsed": round(run.elapsed, 2), "sustained": ok}
        cpu_text = ""
        for name in before:
            per_op = ms_per_op(after[name] - before[name], run.successful)
            row[f"{name}_cpu_ms_per_{op}"] = per_op
            cpu_text += f", {name} {per_op if per_op is not None else '-'} ms/{op}"
        row["uac_cpu_fraction"] = round(run.uac_cpu / run.elapsed, 3) if run.elapsed > 0 else None
        rows.append(row)
        if not quiet:
            print(f"{label:>14} {rate:>6}{unit}: {run.successful}/{count} ok, {run.failed} "
                  f"failed, {run.elapsed:.1f} s{cpu_text}, uac cpu "
                  f"{(row['uac_cpu_fraction'] or 0) * 100:.0f} % {'✓' if ok else '✗'}",
                  flush=True)
        if ok:
            best = rate
    limit_found = len(history) >= 2 and not history[-1][1] and not history[-2][1]
    return Climb(best, rows, limit_found)


def _free_udp_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def sipp_media_port() -> int:
    """A free even UDP port in 10000-19998 for SIPp's ``-mp``.

    A UAC scenario's ``[auto_media_port]`` is ``-mp`` plus an offset that grows with the call
    number (up to 40,000); from an OS-picked ephemeral port (32768-60999) that runs past 65535
    after some thousands of calls and the PBX rightly refuses the SDP ("Bad SDP port", 400) —
    a benchmark artefact that showed up as ~10 % failed calls in long steps.
    """
    import random
    import socket

    for _ in range(200):
        port = random.randrange(10000, 20000, 2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port in 10000-19998 for SIPp -mp")


class SippUas:
    """A SIPp UAS on a free UDP port, pinned to ``cpu``."""

    def __init__(self, scenario: str, workdir: Path, cpu: int | None = None) -> None:
        self.port = _free_udp_port()
        self.proc = subprocess.Popen(
            [*(pin(cpu) if cpu is not None else []), "sipp", "-sf", str(SCENARIOS / scenario),
             "-i", "127.0.0.1", "-p", str(self.port), "-nostdin",
             "-buff_size", "4194304", "-max_recv_loops", "100000"],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)

    def cpu_seconds(self) -> float:
        """CPU seconds this SIPp has used so far."""
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
