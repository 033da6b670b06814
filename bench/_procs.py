"""Processes for load benchmarks: the PBX server pinned to one core, SIPp runs, the clock."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def pin(cpu: int) -> list[str]:
    """A ``taskset`` prefix pinning a command to ``cpu`` (empty when taskset is missing)."""
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []


@dataclass
class Server:
    """``asyncpbx serve`` in a subprocess with its own data directory."""

    config: str
    users: list[tuple[str, str]] = field(default_factory=list)
    cpu: int | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="asyncpbx-bench-")))
    listening: dict[str, tuple[str, int]] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None

    def start(self) -> Server:
        cfg = self.workdir / "asyncpbx.toml"
        cfg.write_text(self.config)
        data = self.workdir / "data"
        if self.users:
            from pbx.config import load_config
            from pbx.store import Store

            realm = load_config(cfg, data_dir=str(data), environ={}).realm
            store = Store(data)
            for ext, pw in self.users:
                store.add_user(ext, pw, realm)
            store.close()
        prefix = pin(self.cpu) if self.cpu is not None else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "pbx", "serve", "--config", str(cfg), "--data-dir",
             str(data)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=(self.workdir / "server.log").open("w"),
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
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
        self.stop()
        raise RuntimeError("server did not start: " + (self.workdir / "server.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
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
    """Outcome of one SIPp UAC run."""

    attempted: int
    successful: int
    failed: int
    elapsed: float

    @property
    def rate(self) -> float:
        """Successful calls per second over the run."""
        return self.successful / self.elapsed if self.elapsed > 0 else 0.0


def sipp_uac(scenario: str | Path, target: tuple[str, int], *, rate: int, calls: int,
             workdir: Path, inf: Path | None = None, cpu: int | None = None, limit: int = 2000,
             timeout: float = 60.0, extra: Sequence[str] = ()) -> SippRun:
    """Run SIPp as UAC at ``rate`` calls/s until ``calls`` calls ended. ``scenario`` is a file
    of bench/scenarios or a path; ``extra`` goes on SIPp's command line before the target."""
    path = Path(scenario)
    if not path.is_absolute():
        path = SCENARIOS / path
    stat = workdir / f"stat-{rate}-{time.monotonic_ns()}.csv"
    args = [*(pin(cpu) if cpu is not None else []), "sipp", "-sf", str(path),
            "-i", "127.0.0.1", "-p", str(_free_udp_port()), "-m", str(calls), "-r", str(rate),
            "-rp", "1000", "-l", str(limit), "-timeout", f"{int(timeout)}s", "-nostdin",
            "-trace_stat", "-stf", str(stat), "-fd", "1", "-max_recv_loops", "100000",
            "-recv_timeout", "8000", "-buff_size", "4194304"]
    if inf is not None:
        args += ["-inf", str(inf)]
    args += [*extra, f"{target[0]}:{target[1]}"]
    t0 = time.monotonic()
    subprocess.run(args, cwd=workdir, capture_output=True, timeout=timeout + 30,
                   stdin=subprocess.DEVNULL, check=False)
    elapsed = time.monotonic() - t0
    ok = bad = 0
    lines = [ln for ln in stat.read_text().splitlines() if ln.strip()] if stat.exists() else []
    if len(lines) >= 2:
        row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
        ok, bad = int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))
    return SippRun(calls, ok, bad, elapsed)


def sustained(run: SippRun, seconds: float, slack: float, factor: float = 1.2) -> bool:
    """A step held its rate: < 0.1 % failed, >= 99.9 % succeeded, and it took at most
    ``factor`` times the planned time plus ``slack`` seconds (a step that ends later had a
    backlog: the server fell behind the offered rate even if every call completed)."""
    return (
        run.failed <= run.attempted * 0.001
        and run.successful >= run.attempted * 0.999
        and run.elapsed <= seconds * factor + slack
    )


def climb(label: str, step: Callable[[int, int], SippRun], rates: Sequence[int], seconds: float,
          *, slack: float, unit: str, quiet: bool,
          factor: float = 1.2) -> tuple[int, list[dict[str, float]]]:
    """Run ``step(rate, count)`` at each rate (``rate * seconds`` attempts) until two steps in
    a row miss (see :func:`sustained`); returns the best sustained rate and a row per step."""
    best = 0
    rows: list[dict[str, float]] = []
    misses = 0
    for rate in rates:
        count = max(1, int(rate * seconds))
        run = step(rate, count)
        ok = sustained(run, seconds, slack, factor)
        rows.append({"rate": rate, "successful": run.successful, "failed": run.failed,
                     "elapsed": round(run.elapsed, 2), "sustained": ok})
        if not quiet:
            print(f"{label:>12} {rate:>6}{unit}: {run.successful}/{count} ok, {run.failed} "
                  f"failed, {run.elapsed:.1f} s {'✓' if ok else '✗'}", flush=True)
        if ok:
            best = rate
            misses = 0
        else:
            misses += 1
            if misses >= 2:
                break
    return best, rows


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
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

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
