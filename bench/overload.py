"""``asyncpbx bench overload``: offered twice what it sustains, does the PBX degrade or collapse?

Issue 12 §2's target: offered twice the sustained call rate, the PBX still completes at least
90 % of its sustained rate, every call it accepted completes, and it rejects the excess with
503 + Retry-After in < 50 ms. This bench measures all three in one run:

1. **Sustained rate S**: the climb of ``bench calls`` (full calls: INVITE → 407 → INVITE with
   digest → 180 → 200 → ACK → BYE, two legs, a SIPp UAS as the callee) with the load coming from
   an *untrusted* address (``127.0.0.77``: overload control never refuses a trusted peer),
   against a server with ``[overload] enabled = false``: S is the capacity, so a control that
   refuses too early shows as a low completed share rather than as a lower bar. A step
   holds when every call completed within 5 % of its planned length, and it lasts as long
   as the overload step (``--climb-seconds``, default ``--seconds``): a 3 s step with a
   loose bound passed rates that the server only buffered (1,500 calls in 3.6 s passed
   as 500/s), which inflated S by up to a quarter.
2. **Overload**: ``--factor`` × S (default 2) offered for ``--seconds`` by a SIPp UAC whose
   scenario takes a 503 to either INVITE as the end of that call (ACKed, timed with an RTD from
   its INVITE). Figures: completed calls per second (as a fraction of S), calls rejected with
   503 and the 503's answer time (median, p99, max, from SIPp's ``-trace_rtt``), calls that
   failed any other way (an accepted call that did not complete counts here), server CPU per
   completed call.
3. **Baseline in the same run**: the same offer against that server without the control —
   what the PBX does without it (the figure the control is for). ``--set KEY=VALUE`` passes
   ``[overload]`` settings to the controlled server (to tune them).

4. **Pairs** (``--pairs N``): N more pairs of steps against the controlled server, S offered
   and then ``--factor`` × S; each overload step's completed rate is a share of what the S
   step just before it completed. The climb and the first overload step are minutes apart,
   and a VM's speed drifts by more than the 10 % the target leaves in that time; a pair's
   steps are seconds apart, and the median over pairs is the verdict that drift cannot move.

Ratios (completed ÷ S, with control ÷ without) are the comparable figures; rates are this
machine's.

    asyncpbx bench overload [--seconds 10] [--rates 100,200,...] [--factor 2] [--pairs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._procs import (
    Climb,
    Server,
    _children_cpu,
    _free_udp_port,
    climb,
    cpus,
    pin,
    sipp_media_port,
    sipp_uac,
)
from bench.calls import (
    _ACK_407,
    _INVITE_HEAD,
    PASSWORD,
    UAC_AUTH,
    UAS,
    _RegisteredUas,
)

LOAD_IP = "127.0.0.77"
DEFAULT_RATES = (100, 200, 300, 400, 500, 600, 700, 800, 1000)

_ACK_503 = """  <label id="{label}"/>
  <send next="done"><![CDATA[
ACK sip:101@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-{back}];rport
From: <sip:100@[remote_ip]>;tag=[pid]SIPpTag[call_number]
To: <sip:101@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
"""

#: UAC_AUTH with a 503 to either INVITE ending the call (ACKed; RTD "rejected" from the INVITE
#: to the 503). Message indices, for the ACKs' [branch-N]: 0 INVITE, 1 100, 2 503, 3 407,
#: 4 ACK, 5 INVITE, 6 100, 7 503, 8 180, 9 183, 10 200, 11 ACK, 12 BYE, 13 200, 14 nop,
#: 15 ACK of the first 503 (branch of 0), 16 ACK of the second (branch of 5).
UAC_OVERLOAD = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench call under overload">
  <send retrans="500" start_rtd="rejected"><![CDATA[
{_INVITE_HEAD.format(cseq=1, auth="")}]]></send>
  <recv response="100" optional="true"/>
  <recv response="503" optional="true" rtd="rejected" next="r1"/>
  <recv response="407" auth="true"/>
{_ACK_407.replace("[branch-3]", "[branch-4]")}  <send retrans="500" start_rtd="rejected"><![CDATA[
{_INVITE_HEAD.format(cseq=2, auth="[authentication username=100 password=" + PASSWORD + "]" + chr(10))}]]></send>
  <recv response="100" optional="true"/>
  <recv response="503" optional="true" rtd="rejected" next="r2"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:100@[remote_ip]>;tag=[pid]SIPpTag[call_number]
To: <sip:101@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:100@[remote_ip]>;tag=[pid]SIPpTag[call_number]
To: <sip:101@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 3 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
  <nop next="done"/>
{_ACK_503.format(label="r1", back=15, cseq=1)}{_ACK_503.format(label="r2", back=11, cseq=2)}  <label id="done"/>
</scenario>
"""
# the climb's scenario lives in bench.calls; it must still start with the unauthenticated INVITE
assert "CSeq: 1 INVITE" in UAC_AUTH


def _overload_step(scenario: Path, target: tuple[str, int], rate: int, seconds: float,
                   workdir: Path, cpu: int | None, server: Server) -> dict[str, Any]:
    """Offer ``rate`` calls/s for ``seconds`` with :data:`UAC_OVERLOAD`; the figures."""
    calls = max(1, int(rate * seconds))
    stat = workdir / f"overload-{rate}-{time.monotonic_ns()}.csv"
    for old in workdir.glob("*_rtt.csv"):
        old.unlink()
    args = [*(pin(cpu) if cpu is not None else []), "sipp", "-sf", str(scenario),
            "-i", LOAD_IP, "-p", str(_free_udp_port(LOAD_IP)), "-m", str(calls),
            "-r", str(rate), "-rp", "1000", "-l", str(max(400, rate * 4)),
            "-timeout", f"{int(seconds * 4 + 30)}s", "-nostdin", "-trace_stat", "-stf", str(stat),
            "-fd", "1", "-trace_rtt", "-rtt_freq", "1", "-max_recv_loops", "100000",
            "-recv_timeout", "8000", "-buff_size", "4194304", "-mp", str(sipp_media_port()),
            "-auth_uri", f"101@{target[0]}:{target[1]}", f"{target[0]}:{target[1]}"]
    log_at = _log_size(server)
    c0, cpu0, t0 = server.cpu_seconds(), _children_cpu(), time.monotonic()
    subprocess.run(args, cwd=workdir, capture_output=True, timeout=seconds * 4 + 60,
                   stdin=subprocess.DEVNULL, check=False)
    elapsed = time.monotonic() - t0
    pauses = _gc_pauses(server, log_at)
    changes = _state_changes(server, log_at)
    server_cpu, uac_cpu = server.cpu_seconds() - c0, _children_cpu() - cpu0
    ok = bad = 0
    lines = [ln for ln in stat.read_text().splitlines() if ln.strip()] if stat.exists() else []
    if len(lines) >= 2:
        row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
        ok, bad = int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))
    times = _rtt_ms(workdir)
    rejected = len(times)
    completed = ok - rejected  # a rejected call ends the scenario too (via its ACK)
    quantiles = statistics.quantiles(times, n=100) if len(times) >= 100 else None
    return {
        "offered_rate": rate, "offered": calls, "elapsed": round(elapsed, 2),
        "completed": completed, "completed_per_s": round(completed / seconds, 1),
        "rejected_503": rejected, "failed_other": bad,
        "reject_ms_p50": round(statistics.median(times), 2) if times else None,
        "reject_ms_p99": round(quantiles[98], 2) if quantiles else None,
        "reject_ms_max": round(max(times), 2) if times else None,
        "server_cpu_ms_per_completed_call": (round(server_cpu * 1000 / completed, 3)
                                             if completed > 0 else None),
        "uac_cpu_fraction": round(uac_cpu / elapsed, 3) if elapsed > 0 else None,
        # the server's gc.pause lines during the step (collector passes of ≥ 50 ms)
        "gc_pauses": len(pauses), "gc_pause_ms_max": max(pauses, default=None),
        "gc_pause_ms_total": round(sum(pauses), 1),
        # the overload state's changes during the step, in order (the server logs each)
        "overload_changes": changes,
    }


def _log_size(server: Server) -> int:
    path = server.workdir / "server.log"
    return path.stat().st_size if path.exists() else 0


def _log_since(server: Server, since: int) -> list[str]:
    """The lines the server logged after byte ``since`` of its log."""
    path = server.workdir / "server.log"
    if not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(since)
        return f.read().decode(errors="replace").splitlines()


def _gc_pauses(server: Server, since: int) -> list[float]:
    """The ms of every ``gc.pause`` the server logged after byte ``since`` of its log."""
    return [float(m.group(1)) for line in _log_since(server, since) if "gc.pause" in line
            for m in [re.search(r"\bms=([0-9.]+)", line)] if m]


def _state_changes(server: Server, since: int) -> list[str]:
    """``started`` / ``ended`` for every change of the overload state logged since then."""
    return [("started" if "overload.started" in line else "ended")
            for line in _log_since(server, since)
            if "overload.started" in line or "overload.ended" in line]


def _rtt_ms(workdir: Path) -> list[float]:
    """The RTD times SIPp's ``-trace_rtt`` wrote (one row per rejected call)."""
    out: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    out.append(float(parts[1]))
                except ValueError:
                    continue
    return out


def _config(realm: str, *, overload: bool, settings: tuple[str, ...] = ()) -> str:
    extra = "".join(f"{line}\n" for line in settings)
    return ('[sip]\nlisten = ["udp:127.0.0.1:0"]\ndomain = "127.0.0.1"\n'
            f'[auth]\nrealm = "{realm}"\n[log]\nlevel = "warning"\n[http]\nlisten = ""\n'
            '[media]\nport_min = 40000\nport_max = 44999\nrtp_timeout = 0\n'
            # the callee (a SIPp UAS on 127.0.0.1) is trusted; the load on LOAD_IP is not
            '[security]\ntrusted = ["127.0.0.1"]\n'
            f'[overload]\nenabled = {"true" if overload else "false"}\n{extra}')


def main(argv: list[str]) -> int:
    """Run the benchmark; prints one final JSON line."""
    parser = argparse.ArgumentParser(prog="asyncpbx bench overload")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the overload step")
    parser.add_argument("--climb-seconds", type=float, default=None,
                        help="length of a climb step (default: --seconds, so S is held "
                             "as long as the overload step lasts)")
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument("--factor", type=float, default=2.0,
                        help="offered rate as a multiple of the sustained one")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an [overload] setting of the controlled server (repeatable), "
                             "e.g. --set queue_threshold=262144")
    parser.add_argument("--pairs", type=int, default=0,
                        help="after the overload step, N more pairs of steps against the "
                             "controlled server: S offered, then factor × S; each overload "
                             "step is judged against the S step just before it (a machine "
                             "whose speed drifts between the climb and the overload step "
                             "cannot move the verdict then)")
    parser.add_argument("--json", action="store_true", help="print only the final JSON line")
    args = parser.parse_args(argv)
    settings = tuple(args.set)
    climb_seconds = args.climb_seconds or args.seconds
    for line in settings:
        if "=" not in line:
            parser.error(f"--set {line!r}: expected KEY=VALUE")
    if shutil.which("sipp") is None:
        print("sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOAD_IP, 0))
        except OSError:
            print(f"cannot bind {LOAD_IP} (the untrusted load source)", file=sys.stderr)
            return 2
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    cpu_list = cpus()
    server_core = cpu_list[0]
    load_core = cpu_list[1] if len(cpu_list) > 1 else cpu_list[0]
    workdir = Path(tempfile.mkdtemp(prefix="asyncpbx-bench-overload-"))
    uac_auth, uac_over, uas = (workdir / "uac_auth.xml", workdir / "uac_overload.xml",
                               workdir / "uas.xml")
    uac_auth.write_text(UAC_AUTH)
    uac_over.write_text(UAC_OVERLOAD)
    uas.write_text(UAS)
    realm = "asyncpbx-bench"
    users = [("100", PASSWORD), ("101", PASSWORD)]
    result: dict[str, Any] = {"bench": "overload", "load_ip": LOAD_IP, "factor": args.factor,
                              "seconds": args.seconds, "overload_settings": list(settings)}
    try:
        # the sustained rate is the server's capacity: measured with the control off, so a
        # control that refuses too early shows as completed < 90 % instead of lowering the bar
        with Server(_config(realm, overload=False), users=users, cpu=server_core) as server:
            target = server.listening["udp"]
            callee = _RegisteredUas(str(uas), workdir, load_core, target, realm, echo=False)
            try:
                extra = ["-mp", str(sipp_media_port()), "-auth_uri",
                         f"101@{target[0]}:{target[1]}"]
                found: Climb = climb(
                    "sustained", lambda rate, calls: sipp_uac(
                        uac_auth, target, rate=rate, calls=calls, workdir=workdir,
                        cpu=load_core, limit=max(200, rate * 2),
                        timeout=max(30.0, climb_seconds * 4), extra=extra,
                        local_ip=LOAD_IP),
                    # held means held: within 5 % of the step's length (a short step with a
                    # loose bound passes rates the server only buffers, which inflates S)
                    rates, climb_seconds, slack=0.3, factor=1.02, unit=" calls/s",
                    quiet=args.json, op="call", meters={"server": server.cpu_seconds},
                    ceiling=10000)
                sustained_rate = found.best
                result["sustained_calls_per_s"] = sustained_rate
                result["climb_steps"] = found.rows
                if sustained_rate <= 0:
                    raise RuntimeError("no rate held: nothing to overload")
                offered = int(sustained_rate * args.factor)
                time.sleep(3.0)  # the climb's last (missed) steps drain
                result["without_control"] = _overload_step(
                    uac_over, target, offered, args.seconds, workdir, load_core, server)
                log = (server.workdir / "server.log").read_text(errors="replace")
                result["without_control"]["ports_exhausted_lines"] = log.count("ports_exhausted")
            finally:
                callee.stop()
        with Server(_config(realm, overload=True, settings=settings), users=users,
                    cpu=server_core) as server:
            target = server.listening["udp"]
            callee = _RegisteredUas(str(uas), workdir, load_core, target, realm, echo=False)
            try:
                time.sleep(1.0)
                result["with_control"] = _overload_step(
                    uac_over, target, offered, args.seconds, workdir, load_core, server)
                log = (server.workdir / "server.log").read_text(errors="replace")
                result["with_control"]["overload_started_lines"] = log.count("overload.started")
                result["with_control"]["ports_exhausted_lines"] = log.count("ports_exhausted")
                result["pairs"] = [_pair(uac_over, target, sustained_rate, offered,
                                         args.seconds, workdir, load_core, server)
                                   for _ in range(args.pairs)]
            finally:
                callee.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with_c, without = result["with_control"], result["without_control"]
    result["completed_fraction_of_sustained"] = round(
        with_c["completed_per_s"] / sustained_rate, 3)
    result["completed_fraction_without_control"] = round(
        without["completed_per_s"] / sustained_rate, 3)
    result["targets"] = {
        "completed_at_least_90_percent": result["completed_fraction_of_sustained"] >= 0.9,
        "accepted_calls_all_complete": with_c["failed_other"] == 0,
        "rejects_p99_under_50_ms": (with_c["reject_ms_p99"] is not None
                                    and with_c["reject_ms_p99"] < 50),
    }
    if result["pairs"]:
        shares = [p["completed_fraction"] for p in result["pairs"]]
        result["pairs_completed_fraction_median"] = statistics.median(shares)
        result["targets"]["pairs_median_at_least_90_percent"] = \
            result["pairs_completed_fraction_median"] >= 0.9
        result["targets"]["pairs_accepted_calls_all_complete"] = all(
            p["overload"]["failed_other"] == 0 for p in result["pairs"])
    if not args.json:
        print(f"sustained {sustained_rate} calls/s; offered {offered}/s for {args.seconds} s:")
        for name in ("with_control", "without_control"):
            r = result[name]
            print(f"  {name:16} completed {r['completed_per_s']}/s "
                  f"({r['completed_per_s'] / sustained_rate:.0%} of sustained), "
                  f"503 {r['rejected_503']} (p50 {r['reject_ms_p50']} ms, p99 "
                  f"{r['reject_ms_p99']} ms), other failures {r['failed_other']}, "
                  f"server {r['server_cpu_ms_per_completed_call']} ms CPU per completed call, "
                  f"took {r['elapsed']} s, gc pauses ≥ 50 ms: {r['gc_pauses']} "
                  f"(longest {r['gc_pause_ms_max']} ms)")
        for i, pair in enumerate(result["pairs"], 1):
            over = pair["overload"]
            print(f"  pair {i}: at S completed {pair['reference_per_s']}/s, at "
                  f"{offered}/s completed {over['completed_per_s']}/s "
                  f"({pair['completed_fraction']:.0%}), 503 p99 {over['reject_ms_p99']} ms, "
                  f"other failures {over['failed_other']}, gc pauses ≥ 50 ms: "
                  f"{pair['at_sustained']['gc_pauses']} / {over['gc_pauses']} "
                  f"(longest {over['gc_pause_ms_max']} ms), overload state "
                  f"{pair['at_sustained']['overload_changes']} / {over['overload_changes']}")
        if result["pairs"]:
            print(f"  pairs: median completed share {result['pairs_completed_fraction_median']:.0%}")
    print(json.dumps(result))
    return 0


def _pair(scenario: Path, target: tuple[str, int], sustained: int, offered: int, seconds: float,
          workdir: Path, cpu: int | None, server: Server) -> dict[str, Any]:
    """S offered, then ``offered``: the overload step's completed rate as a share of what the
    server completed at S just before (at most S: a step at S that completes more is the
    planned S plus the previous step's stragglers)."""
    # the previous step's calls end, and the control recovers: its admitted share climbs back
    # by `increase` per `control_interval` and must then stay calm for `recover_after` (2 s)
    time.sleep(8.0)
    at_s = _overload_step(scenario, target, sustained, seconds, workdir, cpu, server)
    time.sleep(8.0)
    over = _overload_step(scenario, target, offered, seconds, workdir, cpu, server)
    reference = min(float(sustained), at_s["completed_per_s"])
    return {"at_sustained": at_s, "overload": over, "reference_per_s": reference,
            "completed_fraction": round(over["completed_per_s"] / reference, 3)
            if reference > 0 else 0.0}
