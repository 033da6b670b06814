"""``asyncpbx bench soak``: an hour (by default) of mixed load with faults; does anything leak?

Issue 12 §3's long soak, as a separate command (too long for CI). Against one ``asyncpbx
serve`` (UDP and TCP, overload control and bans on, the load generators' 127.0.0.1 trusted):

* **calls**: a SIPp UAC places full calls (digest, two legs) at ``--call-rate`` to a SIPp UAS
  registered as the callee, for the whole run;
* **registrations**: a second SIPp UAC re-registers ``--users`` users at ``--register-rate``;
* **faults**, one every ``--fault-every`` seconds, in turn: the callee stalls (SIGSTOP for 5 s:
  calls to it time out, then it comes back), a burst of 2,000 malformed datagrams, a REGISTER
  flood (2,000/s for 5 s, unauthenticated: banned), and TCP churn (300 connections opened, a
  half-written request, dropped). Every attacking fault uses a fresh loopback address
  (127.0.0.50 and up), so each is a new stranger.

Every ``--sample`` seconds: the server's RSS, open file descriptors and CPU share, and the calls
and registrations that succeeded or failed since the last sample (SIPp's periodic statistics),
with the fault active in that window, if any. At the end: what the server logged (tracebacks,
errors, bans), RSS and descriptors before and after. What passes: the server is alive and
logged no traceback; calls in windows without a fault fail < 0.1 %; RSS grows < 50 MB from the
end of the first round of faults (the warm-up) to the last sample; descriptors are no more
than 5 above their count after the warm-up.

    asyncpbx bench soak [--minutes 60] [--call-rate 20] [--register-rate 50] [--users 200]
                        [--fault-every 60] [--sample 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._procs import SCENARIOS, Server, _free_udp_port, cpus, sipp_media_port
from bench.calls import PASSWORD, UAC_AUTH, UAS, _RegisteredUas

FAULTS = ("callee_stalls", "malformed_burst", "register_flood", "tcp_churn")

_MALFORMED = (
    b"INVITE sip:101@x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n\r\n",
    b"\x00\xff" * 200,
    b"REGISTER sip:x SIP/2.0\r\nContent-Length: 99999\r\n\r\nshort",
    b"SIP/2.0 200 OK\r\nVia: \r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\r\n" + b"X-Long: " + b"a" * 4000 + b"\r\n\r\n",
    b"INVITE sip:101@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:101@c>\r\nCall-ID: m\r\nCSeq: x INVITE\r\n\r\n",
)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _sipp_totals(stat: Path) -> tuple[int, int]:
    """(successful, failed) so far from SIPp's periodic statistics file (its last row)."""
    if not stat.exists():
        return 0, 0
    lines = [ln for ln in stat.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        return 0, 0
    row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
    try:
        return int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))
    except ValueError:
        return 0, 0


def _sipp(scenario: Path, target: tuple[str, int], workdir: Path, name: str, rate: float,
          seconds: float, cpu: int, extra: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    stat = workdir / f"{name}.csv"
    args = ["taskset", "-c", str(cpu), "sipp", "-sf", str(scenario), "-i", "127.0.0.1",
            "-p", str(_free_udp_port()), "-m", str(max(1, int(rate * seconds))), "-r", str(rate),
            "-rp", "1000", "-l", "2000", "-nostdin", "-trace_stat", "-stf", str(stat),
            "-fd", "5", "-max_recv_loops", "100000", "-recv_timeout", "8000",
            "-buff_size", "4194304", *extra, f"{target[0]}:{target[1]}"]
    if shutil.which("taskset") is None:
        args = args[3:]
    proc = subprocess.Popen(args, cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, stat


class Faults:
    """The fault injector: one fault per call of :meth:`run`, in turn (see the module doc)."""

    def __init__(self, target: tuple[str, int], tcp: tuple[str, int] | None,
                 callee: _RegisteredUas) -> None:
        self.target, self.tcp, self.callee = target, tcp, callee
        self.count = 0
        self.next_host = 50

    def _stranger(self) -> str:
        host = f"127.0.0.{self.next_host}"
        self.next_host = 50 + (self.next_host - 49) % 200
        return host

    def run(self) -> str:
        name = FAULTS[self.count % len(FAULTS)]
        self.count += 1
        getattr(self, name)()
        return name

    def callee_stalls(self) -> None:
        self.callee.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(5.0)
        finally:
            self.callee.proc.send_signal(signal.SIGCONT)

    def malformed_burst(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((self._stranger(), 0))
            for i in range(2000):
                s.sendto(_MALFORMED[i % len(_MALFORMED)], self.target)
                if i % 200 == 199:
                    time.sleep(0.01)

    def register_flood(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            host = self._stranger()
            s.bind((host, 0))
            port = s.getsockname()[1]
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < 5.0:
                for _ in range(20):
                    s.sendto((f"REGISTER sip:{self.target[0]} SIP/2.0\r\n"
                              f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKsoak{n}\r\n"
                              f"From: <sip:{1000 + n % 9000}@x>;tag={n}\r\n"
                              f"To: <sip:{1000 + n % 9000}@x>\r\nCall-ID: soak-{n}\r\n"
                              "CSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n"
                              "\r\n").encode(), self.target)
                    n += 1
                time.sleep(0.01)

    def tcp_churn(self) -> None:
        if self.tcp is None:
            return
        host = self._stranger()
        for _ in range(300):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                try:
                    s.bind((host, 0))
                    s.connect(self.tcp)
                    s.sendall(b"INVITE sip:101@x SIP/2.0\r\nVia: SIP/2.0/TCP ")
                except OSError:
                    continue


def main(argv: list[str]) -> int:
    """Run the soak; prints one final JSON line."""
    parser = argparse.ArgumentParser(prog="asyncpbx bench soak")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--call-rate", type=float, default=20.0)
    parser.add_argument("--register-rate", type=float, default=50.0)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--fault-every", type=float, default=60.0)
    parser.add_argument("--sample", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print only the final JSON line")
    args = parser.parse_args(argv)
    if shutil.which("sipp") is None:
        print("sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    seconds = args.minutes * 60
    cpu_list = cpus()
    server_core, load_core = cpu_list[0], cpu_list[-1]
    workdir = Path(tempfile.mkdtemp(prefix="asyncpbx-bench-soak-"))
    realm = "asyncpbx-bench"
    users = [("100", PASSWORD), ("101", PASSWORD)] + [
        (str(2000 + i), f"soak-{i}-pw") for i in range(args.users)]
    inf = workdir / "users.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(
        f"{u};{p};[authentication username={u} password={p}]\n" for u, p in users[2:]))
    (workdir / "uac.xml").write_text(UAC_AUTH)
    (workdir / "uas.xml").write_text(UAS)
    config = ('[sip]\nlisten = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]\ndomain = "127.0.0.1"\n'
              f'[auth]\nrealm = "{realm}"\n[log]\nlevel = "warning"\n[http]\nlisten = ""\n'
              '[media]\nport_min = 40000\nport_max = 44999\nrtp_timeout = 0\n'
              '[security]\ntrusted = ["127.0.0.1"]\nban_time = 120\n')
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] = {"bench": "soak", "minutes": args.minutes,
                              "call_rate": args.call_rate, "register_rate": args.register_rate}
    try:
        with Server(config, users=users, cpu=server_core) as server:
            assert server.proc is not None
            pid = server.proc.pid
            target = server.listening["udp"]
            # SIPp's watchdog aborts it after 10 stalls of > 3 s (-watchdog_major_maxtriggers):
            # the callee_stalls fault is one every four minutes, so it would die after 40
            callee = _RegisteredUas(str(workdir / "uas.xml"), workdir, load_core, target, realm,
                                    extra=["-watchdog_major_maxtriggers", "1000000"])
            try:
                calls, calls_stat = _sipp(
                    workdir / "uac.xml", target, workdir, "calls", args.call_rate, seconds,
                    load_core, ["-mp", str(sipp_media_port()),
                                "-auth_uri", f"101@{target[0]}:{target[1]}"])
                regs, regs_stat = _sipp(SCENARIOS / "register_uac.xml", target, workdir,
                                        "registrations", args.register_rate, seconds,
                                        load_core, ["-inf", str(inf)])
                faults = Faults(target, server.listening.get("tcp"), callee)
                start = time.monotonic()
                next_fault = start + args.fault_every / 2
                last = (0, 0, 0, 0, server.cpu_seconds(), start)
                fds_start = _fds(pid)
                while time.monotonic() - start < seconds:
                    window_end = min(time.monotonic() + args.sample, start + seconds)
                    fault = None
                    if time.monotonic() >= next_fault:
                        fault = faults.run()
                        next_fault += args.fault_every
                    time.sleep(max(0.0, window_end - time.monotonic()))
                    c_ok, c_bad = _sipp_totals(calls_stat)
                    r_ok, r_bad = _sipp_totals(regs_stat)
                    cpu_now, t_now = server.cpu_seconds(), time.monotonic()
                    row = {"t": round(t_now - start, 1), "fault": fault,
                           "calls_ok": c_ok - last[0], "calls_failed": c_bad - last[1],
                           "registrations_ok": r_ok - last[2],
                           "registrations_failed": r_bad - last[3],
                           "server_cpu_fraction": round((cpu_now - last[4]) / (t_now - last[5]), 3),
                           "rss_mib": _rss_mib(pid), "fds": _fds(pid),
                           # the load itself must hold: a SIPp that died makes the run invalid
                           "load_alive": all(p.poll() is None
                                             for p in (callee.proc, calls, regs))}
                    samples.append(row)
                    last = (c_ok, c_bad, r_ok, r_bad, cpu_now, t_now)
                    if not args.json:
                        print(json.dumps(row), flush=True)
                    if server.proc.poll() is not None:
                        result["server_died"] = server.proc.returncode
                        break
                for proc in (calls, regs):
                    proc.terminate()
                    proc.wait(30)
                time.sleep(5.0)
                alive = server.proc.poll() is None
                result.update({
                    "server_alive": alive,
                    "rss_mib_first": samples[0]["rss_mib"] if samples else None,
                    "rss_mib_last": _rss_mib(pid) if alive else None,
                    "rss_mib_max": max((s["rss_mib"] for s in samples), default=None),
                    "fds_start": fds_start, "fds_end": _fds(pid) if alive else None,
                })
            finally:
                callee.stop()
            log = (server.workdir / "server.log").read_text(errors="replace")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    quiet = [s for s in samples if s["fault"] is None]
    ok = sum(s["calls_ok"] for s in quiet)
    bad = sum(s["calls_failed"] for s in quiet)
    result.update({
        "faults_injected": sum(1 for s in samples if s["fault"]),
        "calls_ok": sum(s["calls_ok"] for s in samples),
        "calls_failed": sum(s["calls_failed"] for s in samples),
        "calls_failed_fraction_without_fault": round(bad / (ok + bad), 5) if ok + bad else None,
        "registrations_ok": sum(s["registrations_ok"] for s in samples),
        "registrations_failed": sum(s["registrations_failed"] for s in samples),
        "tracebacks": log.count("Traceback"),
        "error_lines": sum(1 for line in log.splitlines() if "[error" in line or '"error"' in line),
        "ban_lines": log.count("security.ban"),
        "samples": samples,
    })
    # Growth counts from the end of the first round of faults (the warm-up: caches, the media
    # engine's pool of spare sockets, which fills to the peak concurrency the stall causes and
    # then stays bounded by its spare_max); a leak shows as growth after it.
    warm = next((i + 1 for i, _ in enumerate(samples)
                 if sum(1 for x in samples[:i + 1] if x["fault"]) >= len(FAULTS)), 0)
    warm = min(warm, max(0, len(samples) - 1))
    base = samples[warm] if samples else None
    result["warm_up_samples"] = warm
    result["rss_mib_after_warm_up"] = base["rss_mib"] if base else None
    result["fds_after_warm_up"] = base["fds"] if base else None
    growth = (result["rss_mib_last"] - base["rss_mib"]
              if result.get("rss_mib_last") is not None and base else None)
    result["rss_growth_mib_after_warm_up"] = round(growth, 1) if growth is not None else None
    result["load_held"] = all(s["load_alive"] for s in samples)
    result["passed"] = bool(
        result.get("server_alive") and result["tracebacks"] == 0 and result["load_held"]
        and (result["calls_failed_fraction_without_fault"] or 0) < 0.001
        and growth is not None and growth < 50
        and base is not None and result["fds_end"] is not None
        and result["fds_end"] <= base["fds"] + 5)
    if not args.json:
        print(f"soak of {args.minutes} min: server alive {result.get('server_alive')}, "
              f"tracebacks {result['tracebacks']}, calls {result['calls_ok']} ok / "
              f"{result['calls_failed']} failed (without a fault: "
              f"{result['calls_failed_fraction_without_fault']}), RSS "
              f"{result['rss_mib_first']} → {result['rss_mib_after_warm_up']} (warm) → "
              f"{result.get('rss_mib_last')} MiB, fds {result['fds_start']} → "
              f"{result['fds_after_warm_up']} (warm) → {result.get('fds_end')}, "
              f"faults {result['faults_injected']}, bans {result['ban_lines']}, load held "
              f"{result['load_held']}: "
              f"{'passed' if result['passed'] else 'FAILED'}")
    print(json.dumps(result))
    return 0 if result["passed"] else 1
