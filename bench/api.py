"""``asyncpbx bench api``: REST requests per second while calls are up, and what they cost the
calls.

``asyncpbx serve`` runs pinned to one core with ``--calls`` (200) answered calls up through it
(a SIPp UAC with digest → PBX → a SIPp UAS registered as the callee, held open; no RTP). On the
other core run the load: an HTTP/1.1 keep-alive client in its own process (:mod:`bench._httpload`)
with a tenant-admin bearer token made by ``asyncpbx token create``, and a SIP prober whose
figure is the SIP answer time: by default (``--probe call``, :mod:`bench._callprobe`) new calls
at a fixed low rate (``--probe-rate``, 50/s) from user 100 to user 102, whom the prober itself
registers and answers at once — the time from the INVITE to its 200 OK, through the PBX both
ways, is what a caller waits for; ``--probe options`` (:mod:`bench._sipprobe`, 100/s) takes the
round trip of an out-of-dialog OPTIONS instead, the smallest thing the same event loop answers.

Two climbs of the API load, each at rising request rates (open loop, ``--conns`` connections,
``rate × seconds`` requests a step; a step holds with < 0.1 % failed requests — anything but
200 — and an end within 10 % + 0.5 s of its planned length; past the list ×1.25 a step up to
``--max-rate`` until two steps in a row miss, like the other load benches):

* **read**: ``GET /api/v1/users/{id}/forwards/busy``;
* **write**: ``PATCH`` of it with ``If-Match`` (every PATCH changes the target: stored, one
  ``settings.changed`` event).

Beside every step: the server's CPU per request (``server_cpu_ms_per_request``), the requests'
own p50/p99 latency, and the SIP prober's p99 during that step with its ratio to the p99 with no
API load measured in the same run (``sip_p99_quiet_ms``: a window of ``--quiet-seconds``
without API load before every step and one at the end, with the calls up; the median of the
windows' p99, so one window disturbed by a neighbour on a shared machine does not set it). The target: API traffic slows calls by at most 10 %
(``sip_p99_ratio`` ≤ 1.10); ``read_rate_within_target`` / ``write_rate_within_target`` are the
highest held rates that met it, ``…_all_within_target`` the highest up to which every step
did. The baseline climbs too: the same client against a bare aiohttp
server on the server's core answering the same two requests from a dict
(:data:`bench._httpload.BASELINE_SERVER`), so ``ratio_read_to_baseline`` and
``ratio_write_to_baseline`` are the figures to compare across machines.

    asyncpbx bench api [--seconds 3] [--rates 100,200,...] [--max-rate N] [--calls 200]
                       [--conns 32] [--probe call|options] [--probe-rate 50]
                       [--kinds read,write]
                       [--no-baseline] [--server-tree PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import _callprobe, _httpload, _sipprobe
from bench._compare import ratio
from bench._cpu import tree_cpu_seconds
from bench._procs import Climb, Server, SippRun, Tree, _free_udp_port, climb, cpus, pin
from bench._sipprobe import percentile
from bench.calls import PASSWORD, UAC_RTP, UAS, _RegisteredUas

MAX_RATE = 100000
DEFAULT_RATES = (100, 200, 400, 700, 1000, 1500, 2000, 3000)
REALM = "asyncpbx-bench"
#: Users whose settings the API load reads and writes (one per connection).
API_USERS = 64
TARGET_RATIO = 1.10
#: The media port range of this bench's server (other load tests use 40000-49999).
MEDIA = '[media]\nport_min = 55000\nport_max = 56999\nrtp_timeout = 0\n'


class _Proc:
    """A child process of a ``run(conn, ...)`` body, spoken to through a pipe."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        self.pipe, child = mp.Pipe()
        self.proc = mp.get_context("fork").Process(target=target, args=(child, *args),
                                                   daemon=True)
        self.proc.start()
        if not self.pipe.poll(20):
            raise RuntimeError(f"{target.__module__} did not start")
        self.hello = self.pipe.recv()

    def ask(self, *msg: Any, timeout: float = 120.0) -> Any:
        self.pipe.send(msg)
        if not self.pipe.poll(timeout):
            raise RuntimeError(f"no answer to {msg[0]!r} within {timeout} s")
        return self.pipe.recv()

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid or 0)

    def stop(self) -> None:
        try:
            self.pipe.send(("quit",))
        except OSError:
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


def _api(base: str, path: str, token: str) -> Any:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _token(server: Server) -> str:
    """A tenant-admin token made as an operator does: ``asyncpbx token create``."""
    out = subprocess.run(
        [server.tree.python, "-m", "pbx", "token", "create", "--role", "tenant_admin",
         "--name", "bench", "--config", str(server.workdir / "asyncpbx.toml"),
         "--data-dir", str(server.workdir / "data")],
        cwd=server.tree.root, capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError("asyncpbx token create failed: " + out.stderr[-2000:])
    return out.stdout.split()[0]


class _Calls:
    """``n`` answered calls held open through the PBX (SIPp UAC with digest → PBX → UAS)."""

    def __init__(self, n: int, target: tuple[str, int], workdir: Path, cpu: int | None,
                 base: str, token: str, quiet: bool) -> None:
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the callers' SDP port
        self.sink.bind(("127.0.0.1", 0))
        self.callee = _RegisteredUas(str(workdir / "uas.xml"), workdir, cpu, target, REALM)
        scenario = workdir / "uac_held.xml"
        scenario.write_text(UAC_RTP.replace("{port}", str(self.sink.getsockname()[1]))
                            .replace("{hold}", str(3_600_000)))
        self.proc: subprocess.Popen[bytes] | None = None
        self.up = 0
        if n <= 0:
            return
        self.proc = subprocess.Popen(
            [*(pin(cpu) if cpu is not None else []), "sipp", "-sf", str(scenario),
             "-i", "127.0.0.1", "-p", str(_free_udp_port()), "-m", str(n), "-r", "100",
             "-l", str(n + 10), "-nostdin", "-buff_size", "4194304", "-timeout", "3700s",
             "-auth_uri", f"101@{target[0]}:{target[1]}", f"{target[0]}:{target[1]}"],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + n / 100 + 15
        while time.monotonic() < deadline:
            time.sleep(0.25)
            calls = _api(base, "/api/v1/calls?limit=1", token)
            self.up = int(calls["total"])
            if self.up >= n:
                break
        if not quiet:
            print(f"{'calls':>14}: {self.up} of {n} calls up through the PBX", flush=True)

    def count(self, base: str, token: str) -> int:
        return int(_api(base, "/api/v1/calls?limit=1", token)["total"])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.callee.stop()
        self.sink.close()


def _probe_window(probe: _Proc | None, seconds: float) -> list[float]:
    """The prober's round trips over ``seconds`` of no API load."""
    if probe is None:
        return []
    probe.ask("mark")
    time.sleep(seconds)
    rtts, _ = probe.ask("mark")
    return list(rtts)


def _api_climb(label: str, kind: str, host: str, port: int, token: str, users: list[int],
               gen: _Proc, probe: _Proc | None, args: argparse.Namespace, rates: list[int],
               meters: dict[str, Callable[[], float]], ceiling: int, quiet: bool,
               quiet_windows: list[list[float]], quiet_s: float = 0.0,
               ) -> tuple[Climb, list[dict[str, Any]]]:
    """One climb; besides the climb's rows, per step the requests' latency and the prober's
    round trips during the step. With a ``probe`` every step follows a window of ``quiet_s``
    seconds without API load whose round trips go to ``quiet_windows``."""
    extra: list[dict[str, Any]] = []

    def step(rate: int, count: int) -> SippRun:
        if probe is not None:  # the same figure without API load, right before the step
            quiet_windows.append(_probe_window(probe, quiet_s))
            probe.ask("mark")
        spec = {"host": host, "port": port, "token": token, "kind": kind, "rate": rate,
                "count": count, "conns": args.conns, "users": users}
        out = gen.ask("run", spec, timeout=count / rate * 4 + 60)
        rtts, lost = probe.ask("mark") if probe is not None else ([], 0)
        extra.append({"request_p50_ms": out["p50_ms"], "request_p99_ms": out["p99_ms"],
                      "statuses": out["statuses"], "rtts": rtts, "probe_lost": lost})
        return SippRun(out["attempted"], out["successful"], out["failed"], out["elapsed"],
                       out["cpu"])

    result = climb(label, step, rates, args.seconds, slack=0.5, factor=1.1, unit=" req/s",
                   quiet=quiet, op="request", meters=meters, ceiling=ceiling)
    return result, extra


def _merge(rows: list[dict[str, Any]], extra: list[dict[str, Any]], quiet_p99: float | None,
           quiet: bool) -> None:
    """Add the latency and SIP figures to the climb's rows (and print them)."""
    for row, more in zip(rows, extra, strict=True):
        rtts = more.pop("rtts")
        row.update(more)
        row["generator_cpu_fraction"] = row.pop("uac_cpu_fraction")
        if quiet_p99 is not None:
            p99 = percentile(rtts, 0.99) * 1e3
            row["sip_probes"] = len(rtts)
            row["sip_p50_ms"] = round(percentile(rtts, 0.5) * 1e3, 3)
            row["sip_p99_ms"] = round(p99, 3)
            row["sip_p99_ratio"] = round(p99 / quiet_p99, 3) if quiet_p99 > 0 else None
            if not quiet:
                print(f"{'':>14} {row['rate']:>6} req/s: requests p99 {row['request_p99_ms']} "
                      f"ms; SIP answer p99 {row['sip_p99_ms']} ms = ×{row['sip_p99_ratio']} "
                      f"of quiet ({row['sip_probes']} probes, {row['probe_lost']} lost)",
                      flush=True)


def _met(row: dict[str, Any]) -> bool:
    return bool(row["sustained"] and row.get("sip_p99_ratio") is not None
                and row["sip_p99_ratio"] <= TARGET_RATIO)


def _within(rows: list[dict[str, Any]]) -> int:
    """The highest held rate whose SIP p99 stayed within the target."""
    return max((r["rate"] for r in rows if _met(r)), default=0)


def _all_within(rows: list[dict[str, Any]]) -> int:
    """The highest rate up to which every step met the target (0: the lowest did not)."""
    best = 0
    for row in sorted(rows, key=lambda r: r["rate"]):
        if not _met(row):
            break
        best = row["rate"]
    return best


def _baseline(args: argparse.Namespace, rates: list[int], server_core: int, load_core: int,
              gen: _Proc, ceiling: int, quiet: bool) -> dict[str, Climb]:
    """The client against the bare aiohttp server on the server's core."""
    token = "bench-baseline"
    users = list(range(1, API_USERS + 1))
    proc = subprocess.Popen(
        [*pin(server_core), sys.executable, "-c", _httpload.BASELINE_SERVER, token,
         ",".join(map(str, users))], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        m = re.match(r"listening (\d+)", proc.stdout.readline())
        if m is None:
            raise RuntimeError("the baseline server did not start")
        port = int(m.group(1))
        meters = {"server": lambda: tree_cpu_seconds(proc.pid)}
        out = {}
        for kind in args.kinds:
            out[kind], extra = _api_climb(f"aiohttp {kind}", kind, "127.0.0.1", port, token,
                                          users, gen, None, args, rates, meters, ceiling, quiet,
                                          [])
            _merge(out[kind].rows, extra, None, quiet)
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str]) -> int:
    """Run the benchmark; prints one final JSON line."""
    parser = argparse.ArgumentParser(prog="asyncpbx bench api")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument("--max-rate", type=int, default=None,
                        help="climbs that still hold at the end of --rates go on up to this "
                             "rate (default: 100,000 requests/s, or 10 × the highest of --rates "
                             "if that is more)")
    parser.add_argument("--calls", type=int, default=200, help="calls held up through the PBX")
    parser.add_argument("--conns", type=int, default=32,
                        help=f"HTTP keep-alive connections (at most {API_USERS})")
    parser.add_argument("--probe", choices=("call", "options"), default="call",
                        help="what the SIP answer time is: a new call's INVITE → 200 through "
                             "the PBX (call, the default) or an OPTIONS round trip (options)")
    parser.add_argument("--probe-rate", type=float, default=None,
                        help="probes per second (default: 50 calls/s, 100 OPTIONS/s)")
    parser.add_argument("--quiet-seconds", type=float, default=None,
                        help="length of each no-API-load window (default: --seconds)")
    parser.add_argument("--kinds", default="read,write",
                        help="which API loads to climb (read, write or both)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the bare aiohttp baseline")
    parser.add_argument("--server-tree", metavar="PATH",
                        help="run the PBX of this checkout (with its own .venv) instead of this "
                             "one: a before/after comparison is two runs, one per tree")
    parser.add_argument("--json", action="store_true", help="print only the final JSON line")
    args = parser.parse_args(argv)
    try:
        tree = Tree.at(args.server_tree) if args.server_tree else Tree()
    except ValueError as exc:
        parser.error(str(exc))
    if not 1 <= args.conns <= API_USERS:
        parser.error(f"--conns must be 1 to {API_USERS} (one user per connection)")
    if shutil.which("sipp") is None:
        print("sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    if args.probe_rate is None:
        args.probe_rate = 50.0 if args.probe == "call" else 100.0
    if args.probe_rate <= 0:
        parser.error("--probe-rate must be positive")
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - {"read", "write"}:
        parser.error("--kinds takes read, write or read,write")
    args.kinds = kinds
    if not rates:
        parser.error("--rates is empty")
    ceiling = args.max_rate if args.max_rate is not None else max(MAX_RATE, 10 * max(rates))
    quiet_s = args.quiet_seconds if args.quiet_seconds is not None else args.seconds
    cpu_list = cpus()
    server_core = cpu_list[0]
    load_core = cpu_list[1] if len(cpu_list) > 1 else cpu_list[0]
    workdir = Path(tempfile.mkdtemp(prefix="asyncpbx-bench-api-"))
    (workdir / "uas.xml").write_text(UAS)
    api_users = [(str(3000 + i), f"api-pw-{i}") for i in range(API_USERS)]
    config = ('[sip]\nlisten = ["udp:127.0.0.1:0"]\ndomain = "127.0.0.1"\n'
              f'[auth]\nrealm = "{REALM}"\n[log]\nlevel = "warning"\n'
              '[http]\nlisten = "127.0.0.1:0"\n' + MEDIA)
    gen = _Proc(_httpload.run, load_core)
    base: dict[str, Climb] = {}
    quiet_windows: list[list[float]] = []
    try:
        if args.baseline:
            base = _baseline(args, rates, server_core, load_core, gen, ceiling, args.json)
        server = Server(config + tree.trust_loopback(),
                        users=[("100", PASSWORD), ("101", PASSWORD), ("102", PASSWORD),
                               *api_users], cpu=server_core,
                        tree=tree)
        with server:
            host, port = server.listening["http"]
            url = f"http://{host}:{port}"
            token = _token(server)
            listed = _api(url, f"/api/v1/users?limit={API_USERS + 10}", token)["items"]
            users = [u["id"] for u in listed if u["extension"].startswith("3")]
            calls = _Calls(args.calls, server.listening["udp"], workdir, load_core, url, token,
                           args.json)
            if args.probe == "call":
                probe = _Proc(_callprobe.run, server.listening["udp"], args.probe_rate,
                              load_core, REALM, ("100", PASSWORD), ("102", PASSWORD))
            else:
                probe = _Proc(_sipprobe.run, server.listening["udp"], args.probe_rate,
                              load_core)
            try:
                idle = server.idle_cpu_fraction()
                meters = {"server": server.cpu_seconds}
                climbs: dict[str, tuple[Climb, list[dict[str, Any]]]] = {}
                for kind in args.kinds:
                    climbs[kind] = _api_climb(f"pbx {kind}", kind, host, port, token, users,
                                              gen, probe, args, rates, meters, ceiling,
                                              args.json, quiet_windows, quiet_s)
                quiet_windows.append(_probe_window(probe, quiet_s))
                probe.stop()  # its calls have ended then: only the held ones are counted
                calls_after = calls.count(url, token)
            finally:
                probe.stop()
                calls.stop()
    finally:
        gen.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    quiet_rtts = [r for w in quiet_windows for r in w]
    # the median of the windows' p99: one window hit by a neighbour's burst on the shared
    # machine does not move it (the pooled p99 is reported beside it)
    quiet_p99 = statistics.median([percentile(w, 0.99) * 1e3 for w in quiet_windows if w]
                                  or [0.0])
    for climb_, extra in climbs.values():
        _merge(climb_.rows, extra, quiet_p99, args.json)
    result: dict[str, Any] = {
        "bench": "api",
        "server_tree": server.tree.describe(),
        "calls_up": calls.up,
        "calls_up_after": calls_after,
        "probe": args.probe,
        "probe_rate": args.probe_rate,
        "sip_p99_quiet_ms": round(quiet_p99, 3),
        "sip_p99_quiet_pooled_ms": round(percentile(quiet_rtts, 0.99) * 1e3, 3),
        "sip_p50_quiet_ms": round(percentile(quiet_rtts, 0.5) * 1e3, 3),
        "sip_p99_quiet_windows_ms": [round(percentile(w, 0.99) * 1e3, 3) for w in quiet_windows],
        "sip_quiet_probes": len(quiet_rtts),
        "target_sip_p99_ratio": TARGET_RATIO,
        "server_idle_cpu_fraction": idle,
        "seconds_per_step": args.seconds,
        "conns": args.conns,
        "max_rate": ceiling,
        "server_pinned_cpu": server_core,
        "load_pinned_cpu": load_core,
    }
    for kind, (c, _) in climbs.items():
        b = base.get(kind)
        result.update({
            f"pbx_{kind}s_per_s": c.best,
            f"pbx_{kind}_limit_found": c.limit_found,
            f"server_cpu_ms_per_{kind}": c.at_best("server_cpu_ms_per_request"),
            f"sip_p99_ms_at_best_{kind}": c.at_best("sip_p99_ms"),
            f"sip_p99_ratio_at_best_{kind}": c.at_best("sip_p99_ratio"),
            f"{kind}_rate_within_target": _within(c.rows),
            f"{kind}_rate_all_within_target": _all_within(c.rows),
            f"baseline_{kind}s_per_s": b.best if b else None,
            f"baseline_{kind}_limit_found": b.limit_found if b else None,
            f"baseline_server_cpu_ms_per_{kind}": b.at_best("server_cpu_ms_per_request")
            if b else None,
            f"ratio_{kind}_to_baseline": ratio(b.best, c.best) if b else None,
        })
    result["pbx_steps"] = {kind: c.rows for kind, (c, _) in climbs.items()}
    result["baseline_steps"] = {kind: c.rows for kind, c in base.items()}
    if not args.json:
        for kind in args.kinds:
            b_text = (f"; bare aiohttp {result[f'baseline_{kind}s_per_s']}/s "
                      f"(ratio {result[f'ratio_{kind}_to_baseline']})" if base else "")
            print(f"asyncpbx held {result[f'pbx_{kind}s_per_s']} API {kind}s/s with "
                  f"{calls.up} calls up, {result[f'server_cpu_ms_per_{kind}']} ms server CPU "
                  f"per request; SIP answer p99 there ×{result[f'sip_p99_ratio_at_best_{kind}']} "
                  f"of quiet ({quiet_p99:.3f} ms); every step within +10 % up to "
                  f"{result[f'{kind}_rate_all_within_target']}/s (the highest step within: "
                  f"{result[f'{kind}_rate_within_target']}/s){b_text}")
    print(json.dumps(result))
    return 0
