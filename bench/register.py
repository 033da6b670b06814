"""``asyncpbx bench register``: authenticated registrations per second, PBX vs SIPp-to-SIPp.

SIPp (UAC, on its own core) drives REGISTER → 401 → REGISTER with MD5 digest → 200 against
``asyncpbx serve`` pinned to the other core, at rising rates, each for a few seconds; the figure
is the highest rate with < 0.1 % failed registrations and no lag (the run ends within 20 % of its
planned length). In the same run the same SIPp UAC drives a SIPp UAS doing the same exchange
without checking anything: the ceiling of the load generator itself. The ratio of the two is the
number to compare across machines.

    asyncpbx bench register [--seconds 4] [--rates 1000,2000,...] [--users 5000] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench._procs import Server, SippUas, climb, cpus, sipp_uac

DEFAULT_RATES = (500, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 10000, 12000)


def _climb(label: str, target: tuple[str, int], rates: list[int], seconds: float, workdir: Path,
           inf: Path | None, cpu: int | None, quiet: bool) -> tuple[int, list[dict[str, float]]]:
    return climb(
        label,
        lambda rate, calls: sipp_uac("register_uac.xml", target, rate=rate, calls=calls,
                                     workdir=workdir, inf=inf, cpu=cpu, limit=max(200, rate // 2)),
        rates, seconds, slack=1.0, unit="/s", quiet=quiet)


def main(argv: list[str]) -> int:
    """Run the benchmark; prints one final JSON line."""
    parser = argparse.ArgumentParser(prog="asyncpbx bench register")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--json", action="store_true", help="print only the final JSON line")
    args = parser.parse_args(argv)
    if shutil.which("sipp") is None:
        print("sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    cpu_list = cpus()
    server_cpu = cpu_list[0]
    load_cpu = cpu_list[1] if len(cpu_list) > 1 else cpu_list[0]
    workdir = Path(tempfile.mkdtemp(prefix="asyncpbx-bench-register-"))
    users = [(str(100000 + i), f"pw{i:06d}") for i in range(args.users)]
    inf = workdir / "users.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(
        f"{u};{p};[authentication username={u} password={p}]\n" for u, p in users))
    config = ('[sip]\nlisten = ["udp:127.0.0.1:0"]\ndomain = "127.0.0.1"\nmax_contacts = 10\n'
              '[log]\nlevel = "warning"\n')
    try:
        uas = SippUas("register_uas.xml", workdir, cpu=server_cpu)
        try:
            direct, direct_rows = _climb("sipp→sipp", ("127.0.0.1", uas.port), rates,
                                         args.seconds, workdir, inf, load_cpu, args.json)
        finally:
            uas.stop()
        with Server(config, users=users, cpu=server_cpu) as server:
            pbx, pbx_rows = _climb("sipp→pbx", server.listening["udp"], rates, args.seconds,
                                   workdir, inf, load_cpu, args.json)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "bench": "register",
        "pbx_registrations_per_s": pbx,
        "sipp_direct_registrations_per_s": direct,
        "ratio_pbx_to_direct": round(pbx / direct, 3) if direct else None,
        "seconds_per_step": args.seconds,
        "server_cpu": server_cpu,
        "pbx_steps": pbx_rows,
        "direct_steps": direct_rows,
    }
    if not args.json:
        print(f"asyncpbx sustained {pbx}/s authenticated registrations on one core; "
              f"SIPp→SIPp reached {direct}/s")
    print(json.dumps(result))
    return 0
