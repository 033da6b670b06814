"""``asyncpbx bench register``: authenticated registrations per second, PBX vs SIPp-to-SIPp.

SIPp (UAC, on its own core) drives REGISTER → 401 → REGISTER with MD5 digest → 200 against
``asyncpbx serve`` pinned to the other core, at rising rates, each for a few seconds; the figure
is the highest rate with < 0.1 % failed registrations and no lag (the run ends within 20 % of its
planned length). In the same run the same SIPp UAC drives a SIPp UAS doing the same exchange
without checking anything: the ceiling of the load generator itself. The ratio of the two is the
number to compare across machines. The baseline is not held to the list of rates: while it
holds it climbs on past the list (×1.25 a step, up to ``--max-rate``, by default far above the
PBX's limit) until it misses twice.

Beside every step: the server's CPU per registration (``server_cpu_ms_per_registration``: CPU
seconds of the server process and its children during the step, from ``/proc``, divided by the
registrations that succeeded), the SIPp UAS's for the baseline, and the UAC's share of its own
core (``uac_cpu_fraction``; near 1.0 the load generator is the limit).

``--server-tree PATH`` (repeatable, see :mod:`bench._compare`) runs the PBX part against other
checkouts in the same run and reports them as ratios against the first.

    asyncpbx bench register [--seconds 4] [--rates 1000,2000,...] [--max-rate N] [--users 5000]
                            [--server-tree PATH ...] [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench._compare import add_tree_args, print_summary, ratio, schedule, summarize, trees_from
from bench._procs import Climb, Server, SippUas, climb, cpus, sipp_uac

#: Where a climb that still holds stops: far above the PBX's limit (~6,000/s on the 2-core
#: development VMs), so the SIPp-direct baseline reaches its own.
MAX_RATE = 100000
DEFAULT_RATES = (500, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 10000, 12000)
CPU_KEY = "server_cpu_ms_per_registration"


def _climb(label: str, target: tuple[str, int], rates: list[int], seconds: float, workdir: Path,
           inf: Path | None, cpu: int | None, quiet: bool, *,
           meters: Mapping[str, Callable[[], float]], ceiling: int | None) -> Climb:
    return climb(
        label,
        lambda rate, calls: sipp_uac("register_uac.xml", target, rate=rate, calls=calls,
                                     workdir=workdir, inf=inf, cpu=cpu, limit=max(200, rate // 2)),
        rates, seconds, slack=1.0, unit="/s", quiet=quiet, op="registration", meters=meters,
        ceiling=ceiling)


def main(argv: list[str]) -> int:
    """Run the benchmark; prints one final JSON line."""
    parser = argparse.ArgumentParser(prog="asyncpbx bench register")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument("--max-rate", type=int, default=None,
                        help="climbs that still hold at the end of --rates go on up to this "
                             "rate (default: 100,000 registrations/s, or 10 × the highest of --rates "
                             "if that is more)")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--json", action="store_true", help="print only the final JSON line")
    add_tree_args(parser)
    args = parser.parse_args(argv)
    if shutil.which("sipp") is None:
        print("sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    if not rates:
        parser.error("--rates is empty")
    try:
        trees = trees_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    ceiling = args.max_rate if args.max_rate is not None else max(MAX_RATE, 10 * max(rates))
    cpu_list = cpus()
    server_core = cpu_list[0]
    load_core = cpu_list[1] if len(cpu_list) > 1 else cpu_list[0]
    workdir = Path(tempfile.mkdtemp(prefix="asyncpbx-bench-register-"))
    users = [(str(100000 + i), f"pw{i:06d}") for i in range(args.users)]
    inf = workdir / "users.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(
        f"{u};{p};[authentication username={u} password={p}]\n" for u, p in users))
    config = ('[sip]\nlisten = ["udp:127.0.0.1:0"]\ndomain = "127.0.0.1"\nmax_contacts = 10\n'
              '[log]\nlevel = "warning"\n')
    runs: list[tuple[int, Climb]] = []
    idle: list[float] = []
    try:
        uas = SippUas("register_uas.xml", workdir, cpu=server_core)
        try:
            direct = _climb("sipp→sipp", ("127.0.0.1", uas.port), rates, args.seconds, workdir,
                            inf, load_core, args.json, meters={"uas": uas.cpu_seconds},
                            ceiling=ceiling)
        finally:
            uas.stop()
        for i in schedule(len(trees), args.rounds):
            label = "sipp→pbx" if len(trees) == 1 else f"sipp→pbx[{i}]"
            with Server(config + trees[i].trust_loopback(), users=users, cpu=server_core,
                        tree=trees[i]) as server:
                idle.append(server.idle_cpu_fraction())
                runs.append((i, _climb(label, server.listening["udp"], rates, args.seconds,
                                       workdir, inf, load_core, args.json,
                                       meters={"server": server.cpu_seconds}, ceiling=ceiling)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    pbx = runs[0][1]
    pbx_cpu, uas_cpu = pbx.at_best(CPU_KEY), direct.at_best("uas_cpu_ms_per_registration")
    result: dict[str, Any] = {
        "bench": "register",
        "server_tree": trees[0].describe(),
        "pbx_registrations_per_s": pbx.best,
        "pbx_limit_found": pbx.limit_found,
        CPU_KEY: pbx_cpu,
        "server_idle_cpu_fraction": idle[0],
        "sipp_direct_registrations_per_s": direct.best,
        "direct_limit_found": direct.limit_found,
        "direct_uas_cpu_ms_per_registration": uas_cpu,
        "ratio_pbx_to_direct": ratio(direct.best, pbx.best),
        "ratio_pbx_cpu_to_direct_uas_cpu": ratio(uas_cpu, pbx_cpu),
        "seconds_per_step": args.seconds,
        "max_rate": ceiling,
        "server_pinned_cpu": server_core,
        "load_pinned_cpu": load_core,
        "pbx_steps": pbx.rows,
        "direct_steps": direct.rows,
    }
    if len(runs) > 1:
        result["runs"] = [{"tree": trees[i].describe(), "pbx_registrations_per_s": c.best,
                           "ratio_pbx_to_direct": ratio(direct.best, c.best),
                           CPU_KEY: c.at_best(CPU_KEY), "server_idle_cpu_fraction": idle[n],
                           "pbx_steps": c.rows} for n, (i, c) in enumerate(runs)]
        result["compare"] = summarize(trees, [(i, c.best, c.rows) for i, c in runs], CPU_KEY)
    if not args.json:
        more = "" if pbx.limit_found else " (still holding at --max-rate: a lower bound)"
        dmore = "" if direct.limit_found else " (still holding at --max-rate: a lower bound)"
        print(f"asyncpbx sustained {pbx.best}/s authenticated registrations on one core{more}, "
              f"{pbx_cpu} ms server CPU per registration there "
              f"(idle: {idle[0] * 100:.1f} % of a core); SIPp→SIPp reached "
              f"{direct.best}/s{dmore} (ratio {result['ratio_pbx_to_direct']})")
        if "compare" in result:
            print_summary(result["compare"], CPU_KEY, "/s")
    print(json.dumps(result))
    return 0
