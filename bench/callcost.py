"""``asyncpbx bench callcost``: the server's instructions per call, counted by callgrind.

Why: on a 2-core VM that shares its cores, the CPU seconds a call costs drift by ±20 % between
runs minutes apart (the same tree measured 1.94 and 2.76 ms per call at 350 calls/s in one
hour), which hides a 5 % or 10 % budget (issues 10 and 11). ``valgrind --tool=callgrind``
counts executed instructions instead: the same binary with the same input gives the same count
whatever else the machine does, so two trees compare to a fraction of a percent.

How: each tree's ``asyncpbx serve`` runs under callgrind (the bench's settings: the callee has
DND off, forwarding on no answer, call waiting on, as in ``bench calls``). Once it is up and a
SIPp UAS has registered as the callee, ``callgrind_control`` zeroes the counters, the server
idles for the length of the call window (the *idle* count: its clocks and timers), is zeroed
again, and a SIPp UAC places ``--calls`` full calls (INVITE → 407 → INVITE with digest → 180 →
200 → ACK → BYE, both legs with media ports) at ``--rate`` per second (the *calls* count).
Instructions per call = (calls − idle) ÷ calls. Every thread of the server counts (the history
writer, the SQLite threads). Under callgrind the server runs ~50× slower, hence the low rate;
what this measures is the work per call, not the rate a core sustains (``bench calls``).

    asyncpbx bench callcost --server-tree /work/wt/before --server-tree . [--rounds 2]
        [--calls 150] [--rate 15]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._compare import add_tree_args, ratio, schedule, trees_from
from bench._procs import Server, Tree, cpus, sipp_media_port, sipp_uac
from bench.calls import CALLEE_SETTINGS, PASSWORD, UAC_AUTH, UAS, _RegisteredUas

REALM = "asyncpbx-bench"


def _config(tree: Tree) -> str:
    return ('[sip]\nlisten = ["udp:127.0.0.1:0"]\ndomain = "127.0.0.1"\n'
            f'[auth]\nrealm = "{REALM}"\n[log]\nlevel = "warning"\n[http]\nlisten = ""\n'
            '[media]\nport_min = 40000\nport_max = 44999\nrtp_timeout = 0\n'
            + tree.trust_loopback())


def _control(pid: int, *args: str) -> None:
    """``callgrind_control ARGS PID``; an error names what failed."""
    proc = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode != 0 or "OK" not in proc.stdout:
        raise RuntimeError(f"callgrind_control {' '.join(args)}: {proc.stdout}{proc.stderr}")


def _total(dump: Path) -> int:
    """The instruction total of one callgrind dump (its ``summary:`` line)."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{dump}: no summary line")


def _wait_for(path: Path, seconds: float = 120.0) -> Path:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0 and "summary:" in path.read_text(
                errors="replace"):
            return path
        time.sleep(0.5)
    raise RuntimeError(f"callgrind wrote no {path.name}")


def instructions_per_call(busy: int, idle: int, elapsed: float, window: float,
                          calls: int) -> float:
    """The calls' share of ``busy`` (the count over the calls, which took ``elapsed``
    seconds), less the idle count (over ``window`` seconds) scaled to that time, per call."""
    if calls <= 0 or window <= 0:
        raise ValueError("no calls completed: nothing to divide by")
    return (busy - idle * elapsed / window) / calls


def measure(tree: Tree, calls: int, rate: int, workdir: Path, server_core: int,
            load_core: int, settings: list[tuple[str, str, dict[str, Any]]] | None = None
            ) -> dict[str, Any]:
    """One tree's instructions: idle over the call window, then ``calls`` calls
    (the callee has ``settings``, by default ``CALLEE_SETTINGS``)."""
    out = workdir / f"cg-{time.monotonic_ns()}"
    uas, uac = workdir / "uas.xml", workdir / "uac_auth.xml"
    window = calls / rate
    with Server(_config(tree), users=[("100", PASSWORD), ("101", PASSWORD)],
                settings=CALLEE_SETTINGS if settings is None else settings,
                cpu=server_core, tree=tree, wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"],
                start_timeout=900) as server:
        assert server.proc is not None
        pid = server.proc.pid
        target = server.listening["udp"]
        callee = _RegisteredUas(str(uas), workdir, load_core, target, REALM, echo=False)
        try:
            time.sleep(5.0)  # the registration's writes and the start-up's last tasks settle
            _control(pid, "-z")
            time.sleep(window)
            _control(pid, "-d", "idle")
            _control(pid, "-z")
            extra = ["-mp", str(sipp_media_port()), "-auth_uri", f"101@{target[0]}:{target[1]}"]
            run = sipp_uac(uac, target, rate=rate, calls=calls, workdir=workdir, cpu=load_core,
                           limit=max(50, rate * 4), timeout=window * 4 + 60, extra=extra)
            _control(pid, "-d", "calls")
        finally:
            callee.stop()
        idle = _total(_wait_for(Path(f"{out}.{pid}.1")))
        busy = _total(_wait_for(Path(f"{out}.{pid}.2")))
    per_call = instructions_per_call(busy, idle, run.elapsed, window, run.successful)
    return {"tree": tree.describe(), "calls": calls, "successful": run.successful,
            "failed": run.failed, "window_s": round(window, 2), "elapsed_s": round(run.elapsed, 2),
            "idle_instructions": idle, "call_window_instructions": busy,
            "instructions_per_call": round(per_call)}


def main(argv: list[str]) -> int:
    """Run the benchmark; prints one final JSON line."""
    parser = argparse.ArgumentParser(prog="asyncpbx bench callcost")
    parser.add_argument("--calls", type=int, default=150, help="calls per measurement")
    parser.add_argument("--rate", type=int, default=15, help="calls per second (under callgrind)")
    parser.add_argument("--json", action="store_true", help="print only the final JSON line")
    parser.add_argument("--no-features", dest="features", action="store_false",
                        help="the callee has no feature settings (for a tree from before them)")
    add_tree_args(parser)
    args = parser.parse_args(argv)
    for tool in ("sipp", "valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install sip-tester valgrind)",
                  file=sys.stderr)
            return 2
    try:
        trees = trees_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    cpu_list = cpus()
    server_core = cpu_list[0]
    load_core = cpu_list[1] if len(cpu_list) > 1 else cpu_list[0]
    workdir = Path(tempfile.mkdtemp(prefix="asyncpbx-bench-callcost-"))
    (workdir / "uas.xml").write_text(UAS)
    (workdir / "uac_auth.xml").write_text(UAC_AUTH)
    runs: list[tuple[int, dict[str, Any]]] = []
    try:
        for i in schedule(len(trees), args.rounds):
            row = measure(trees[i], args.calls, args.rate, workdir, server_core, load_core,
                          settings=None if args.features else [])
            runs.append((i, row))
            if not args.json:
                print(f"  [{i}] {row['tree']}: {row['instructions_per_call'] / 1e6:.3f} M "
                      f"instructions per call ({row['successful']}/{row['calls']} calls ok, "
                      f"idle {row['idle_instructions'] / 1e6:.1f} M over "
                      f"{row['window_s']} s)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    per_tree = {i: statistics.median(r["instructions_per_call"] for j, r in runs if j == i)
                for i in range(len(trees))}
    result: dict[str, Any] = {
        "bench": "callcost", "calls": args.calls, "rate": args.rate,
        "callee_settings": CALLEE_SETTINGS if args.features else [], "runs": [r for _, r in runs],
        "trees": [{"tree": trees[i].describe(), "instructions_per_call_median": per_tree[i]}
                  for i in range(len(trees))],
    }
    if len(trees) > 1:
        result["ratio_to_first"] = [ratio(per_tree[0], per_tree[i]) for i in range(len(trees))]
        if not args.json:
            for i in range(1, len(trees)):
                print(f"{trees[i].describe()} ÷ {trees[0].describe()}: "
                      f"×{result['ratio_to_first'][i]} instructions per call")
    print(json.dumps(result))
    return 0
