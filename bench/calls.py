"""``asyncpbx bench calls``: full calls per second through the B2BUA, vs SIPp-to-SIPp direct.

A SIPp UAC (on its own core) places complete calls — INVITE → 407 → INVITE with MD5 digest →
180/183 → 200 (SDP) → ACK → BYE → 200 — to ``asyncpbx serve`` pinned to the other core, which
authenticates the caller, runs the feature chain, allocates two RTP sessions (one per leg; the
caller hears our ringback during the 180), sends its own INVITE to a SIPp UAS registered as the
callee, bridges the legs and tears both down again. Rates rise step by step; the figure is the
highest rate with < 0.1 % failed calls whose step ended within 20 % of its planned length. In the
same run the same UAC calls the SIPp UAS directly (no authentication, one leg): the load
generator's own ceiling. No RTP flows (media ports are allocated and released): this measures
signalling and call set-up. The callee has feature settings of its own (``CALLEE_SETTINGS``:
DND off, no-answer forwarding on, call waiting on) so the whole terminating chain runs for every
call; ``--no-features`` leaves them out.

``--rtp K,K,...`` adds the media figure: K concurrent answered calls through the PBX with G.711
RTP both ways. A SIPp UAC places the K calls (digest, two legs, PCMU) and holds them; its SDP
points at a socket of the packet generator of ``bench.rtp`` (own process, load core), which plays
every caller (20 ms µ-law packets carrying their send time) to the PBX port of that call's
answer (read from SIPp's message trace); the PBX relays them to the callee leg, a SIPp UAS with
``-rtp_echo`` sends them back, the PBX relays them to the caller again. A K passes with loss
< 0.1 % and p99 round-trip latency (through the PBX twice) < 10 ms; the figure is the largest
passing K. Server CPU over the measurement window is reported beside it (as a share of one core,
``server_cpu_fraction``, and per call and second, ``server_cpu_ms_per_call_second``).

Beside every signalling step: the server's CPU per call (``server_cpu_ms_per_call``: CPU seconds
of the server process and its children during the step, from ``/proc``, divided by the calls
that succeeded), the SIPp UAS's for the baseline (``uas_cpu_ms_per_call``), and the UAC's share
of its own core (``uac_cpu_fraction``; near 1.0 the load generator is the limit). The baseline is
not held to the list of rates: while it holds it climbs on past the list (×1.25 a step, up to
``--max-rate``, by default far above the PBX's limit) until it misses twice, so the ratio is
against its own ceiling.

``--server-tree PATH`` (repeatable, see :mod:`bench._compare`) runs the PBX part (signalling and
RTP) against other checkouts in the same run and reports them as ratios against the first.

    asyncpbx bench calls [--seconds 4] [--rates 25,50,...] [--max-rate N] [--rtp 100,250,...]
                         [--no-features]
                         [--server-tree PATH ...] [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench._compare import add_tree_args, print_summary, ratio, schedule, summarize, trees_from
from bench._procs import (
    Climb,
    Server,
    SippUas,
    _free_udp_port,
    climb,
    cpus,
    pin,
    sipp_media_port,
    sipp_uac,
)

#: Where a climb that still holds stops: far above the PBX's limit (~1,100 calls/s on the
#: 2-core development VMs), so the SIPp-direct baseline reaches its own.
MAX_RATE = 100000
DEFAULT_RATES = (25, 50, 100, 200, 300, 400, 500, 700, 1000, 1500)
DEFAULT_RTP = (100, 250, 500, 750, 1000)
PASSWORD = "bench-caller-pw"
CPU_KEY = "server_cpu_ms_per_call"

_INVITE_HEAD = """INVITE sip:101@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:100@[remote_ip]>;tag=[pid]SIPpTag[call_number]
To: <sip:101@[remote_ip]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:100@[local_ip]:[local_port]>
Max-Forwards: 70
{auth}Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio [auto_media_port] RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv
"""

_ANSWERED = """  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:100@[remote_ip]>;tag=[pid]SIPpTag[call_number]
To: <sip:101@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:100@[remote_ip]>;tag=[pid]SIPpTag[call_number]
To: <sip:101@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {bye} BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
"""

#: The ACK for the 407 that challenges the first INVITE (same branch, RFC 3261 §17.1.1.3).
_ACK_407 = """  <send><![CDATA[
ACK sip:101@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3];rport
From: <sip:100@[remote_ip]>;tag=[pid]SIPpTag[call_number]
To: <sip:101@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
"""

UAC_AUTH = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench call with digest">
  <send retrans="500"><![CDATA[
{_INVITE_HEAD.format(cseq=1, auth="")}]]></send>
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
{_ACK_407}  <send retrans="500"><![CDATA[
{_INVITE_HEAD.format(cseq=2, auth="[authentication username=100 password=" + PASSWORD + "]" + chr(10))}]]></send>
{_ANSWERED.format(cseq=2, bye=3)}</scenario>
"""

UAC_DIRECT = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench call direct">
  <send retrans="500"><![CDATA[
{_INVITE_HEAD.format(cseq=1, auth="")}]]></send>
{_ANSWERED.format(cseq=1, bye=2)}</scenario>
"""

UAC_RTP = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench call with digest and held media">
  <send retrans="500"><![CDATA[
{_INVITE_HEAD.format(cseq=1, auth="").replace("[auto_media_port] RTP/AVP 0 8 101", "{port} RTP/AVP 0 101")}]]></send>
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
{_ACK_407}  <send retrans="500"><![CDATA[
{_INVITE_HEAD.format(cseq=2, auth="[authentication username=100 password=" + PASSWORD + "]" + chr(10)).replace("[auto_media_port] RTP/AVP 0 8 101", "{port} RTP/AVP 0 101")}]]></send>
{_ANSWERED.format(cseq=2, bye=3).replace("]]></send>", "]]></send>" + chr(10) + '  <pause milliseconds="{hold}"/>', 1)}</scenario>
"""
UAC_RTP = UAC_RTP.replace("a=rtpmap:8 PCMA/8000\n", "")

# [media_port] (SIPp's -mp socket), not [auto_media_port]: only -mp is echoed by -rtp_echo.
UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench callee">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:101@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:101@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 2 2 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv
]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


def _climb(label: str, scenario: Path, target: tuple[str, int], rates: list[int], seconds: float,
           workdir: Path, cpu: int | None, quiet: bool, *,
           meters: Mapping[str, Callable[[], float]], ceiling: int | None) -> Climb:
    # -auth_uri: SIPp's digest-uri defaults to remote_ip:port, ours must be the Request-URI
    extra = ["-mp", str(sipp_media_port()), "-auth_uri", f"101@{target[0]}:{target[1]}"]
    return climb(
        label,
        lambda rate, calls: sipp_uac(scenario, target, rate=rate, calls=calls, workdir=workdir,
                                     cpu=cpu, limit=max(200, rate * 2),
                                     timeout=max(30.0, seconds * 4), extra=extra),
        # held = no backlog: SIPp → SIPp ends its steps on time (+ 0.01 s), so a step that
        # ends more than 10 % + 0.5 s late means the server fell behind the offered rate
        rates, seconds, slack=0.5, factor=1.1, unit=" calls/s", quiet=quiet, op="call",
        meters=meters, ceiling=ceiling)


def _register(server: tuple[str, int], port: int, realm: str) -> None:
    """REGISTER 101 from the UDP port the SIPp UAS binds next (Binding.received = the UAS)."""
    register_contact(server, port, realm, "101", PASSWORD)


def register_contact(server: tuple[str, int], port: int, realm: str, ext: str,
                     password: str) -> None:
    """REGISTER ``ext`` from the UDP ``port`` a callee binds next (Binding.received = it)."""
    from sipcore.digest import DigestClient
    from sipcore.message import Request, Response, parse_message

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.settimeout(5)
        call_id = os.urandom(6).hex()

        def request(cseq: int) -> Request:
            text = (f"REGISTER sip:{server[0]} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{os.urandom(5).hex()};rport\r\n"
                    f"From: <sip:{ext}@{server[0]}>;tag={os.urandom(4).hex()}\r\n"
                    f"To: <sip:{ext}@{server[0]}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
                    f"Contact: <sip:{ext}@127.0.0.1:{port}>\r\nExpires: 3600\r\n"
                    "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            msg = parse_message(text.encode())
            assert isinstance(msg, Request)
            return msg

        s.sendto(request(1).serialize(), server)
        challenge = parse_message(s.recv(65535))
        assert isinstance(challenge, Response) and challenge.status == 401, challenge
        s.sendto(DigestClient().authorize(request(2), challenge, ext, password, realm=realm)
                 .serialize(), server)
        ok = parse_message(s.recv(65535))
        if not isinstance(ok, Response) or ok.status != 200:
            raise RuntimeError(f"callee registration failed: {ok}")


class _RegisteredUas(SippUas):
    """A SIPp UAS on a port registered as 101 first (``echo``: it sends RTP back)."""

    def __init__(self, scenario: str, workdir: Path, cpu: int | None,
                 server: tuple[str, int], realm: str, *, echo: bool = False,
                 extra: Sequence[str] = ()) -> None:
        self.port = _free_udp_port()
        _register(server, self.port, realm)
        self.proc = subprocess.Popen(
            [*(pin(cpu) if cpu is not None else []), "sipp", "-sf", scenario, "-i", "127.0.0.1",
             "-p", str(self.port), "-nostdin", "-buff_size", "4194304",
             "-max_recv_loops", "100000", "-mp", str(_free_udp_port()),
             *(["-rtp_echo"] if echo else []), *extra],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        time.sleep(0.5)


def _rtp_step(k: int, target: tuple[str, int], gen: Any, gen_port: int, workdir: Path,
              cpu: int | None, server_cpu: Callable[[], float], warmup: float, duration: float,
              quiet: bool) -> dict[str, Any]:
    """K concurrent answered calls with G.711 both ways through the PBX (see the module doc)."""
    setup_rate = 200
    hold_s = k / setup_rate + 4.0 + warmup + duration + 1.0
    scenario = workdir / f"uac_rtp_{k}.xml"
    scenario.write_text(UAC_RTP.replace("{port}", str(gen_port))
                        .replace("{hold}", str(int(hold_s * 1000))))
    trace = workdir / f"msgs_{k}.log"
    stat = workdir / f"stat_rtp_{k}.csv"
    args = [*(pin(cpu) if cpu is not None else []), "sipp", "-sf", str(scenario),
            "-i", "127.0.0.1", "-p", str(_free_udp_port()), "-m", str(k), "-r", str(setup_rate),
            "-l", str(k + 10), "-nostdin", "-trace_msg", "-message_file", str(trace),
            "-trace_stat", "-stf", str(stat), "-fd", "1", "-buff_size", "4194304",
            "-max_recv_loops", "100000", "-timeout", f"{int(hold_s + 60)}s",
            "-auth_uri", f"101@{target[0]}:{target[1]}", f"{target[0]}:{target[1]}"]
    proc = subprocess.Popen(args, cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ports: set[int] = set()
    answered = 0
    deadline = time.monotonic() + k / setup_rate + 4.0
    pattern = re.compile(r"m=audio (\d+)")
    while time.monotonic() < deadline:
        time.sleep(0.25)
        text = trace.read_text(errors="replace") if trace.exists() else ""
        ports = {int(p) for p in pattern.findall(text)} - {gen_port}
        answered = text.count("SIP/2.0 200 OK") - text.count("CSeq: 3 BYE")
        if len(ports) >= k and answered >= k:
            break
    row: dict[str, Any] = {"k": k, "answered": min(answered, k), "media_ports": len(ports)}
    if len(ports) < k:
        proc.terminate()
        proc.wait(30)
        row.update(loss=1.0, p50_ms=0.0, p99_ms=0.0, server_cpu_fraction=None,
                   server_cpu_ms_per_call_second=None, generator_cpu_fraction=None,
                   sent=0, received=0, **{"pass": False})
        if not quiet:
            print(f"{'rtp':>12} K={k:5d}: only {len(ports)} of {k} calls answered ✗", flush=True)
        return row
    time.sleep(0.5)  # the last ACKs
    gen.send(("phones", "relay", [(p, 0) for p in sorted(ports)], warmup, duration))
    time.sleep(warmup)
    c0, w0 = server_cpu(), time.monotonic()
    time.sleep(duration)
    c1, w1 = server_cpu(), time.monotonic()
    lg = gen.recv()
    proc.wait(hold_s + 90)
    loss = 1 - lg["received"] / max(lg["sent"], 1)
    row.update(
        sent=lg["sent"], received=lg["received"], loss=round(loss, 6),
        p50_ms=round(lg["p50"] * 1e3, 3), p99_ms=round(lg["p99"] * 1e3, 3),
        server_cpu_fraction=round((c1 - c0) / (w1 - w0), 3),
        server_cpu_ms_per_call_second=round((c1 - c0) * 1e3 / ((w1 - w0) * k), 4),
        generator_cpu_fraction=round(lg["cpu_total"] / max(lg["t_total"], 1e-9), 3),
    )
    row["pass"] = bool(loss < 0.001 and lg["p99"] < 0.010 and lg["sent"] > 0)
    if not quiet:
        print(f"{'rtp':>12} K={k:5d}: loss {loss * 100:6.3f} %  p50 {row['p50_ms']:6.2f} ms  "
              f"p99 {row['p99_ms']:6.2f} ms  server cpu {row['server_cpu_fraction'] * 100:5.1f} %  "
              f"(generator {row['generator_cpu_fraction'] * 100:3.0f} %)  "
              f"{'✓' if row['pass'] else '✗'}", flush=True)
    return row


def _rtp_climb(ks: list[int], target: tuple[str, int], workdir: Path, cpu: int | None,
               server_cpu: Callable[[], float], warmup: float, duration: float,
               quiet: bool) -> tuple[int, list[dict[str, Any]]]:
    from bench.rtp import _loadgen

    parent, child = mp.Pipe()
    gen = mp.get_context("fork").Process(target=_loadgen, args=(child, 1), daemon=True)
    gen.start()
    try:
        gen_port = int(parent.recv()[0][1])
        best, rows, misses = 0, [], 0
        for k in ks:
            row = _rtp_step(k, target, parent, gen_port, workdir, cpu, server_cpu, warmup,
                            duration, quiet)
            rows.append(row)
            if row["pass"]:
                best, misses = k, 0
            else:
                misses += 1
                if misses >= 2:
                    break
        return best, rows
    finally:
        parent.send(("quit",))
        gen.join(10)
        if gen.is_alive():
            gen.terminate()


def _pbx_run(server: Server, uac_auth: Path, uas: Path, workdir: Path, rates: list[int],
             rtp_ks: list[int], args: argparse.Namespace, load_core: int, realm: str,
             ceiling: int, label: str) -> tuple[Climb | None, int, list[dict[str, Any]]]:
    """The PBX part against one running server: the signalling climb, then the RTP climb."""
    target = server.listening["udp"]
    pbx: Climb | None = None
    rtp, rtp_rows = 0, list[dict[str, Any]]()
    # -rtp_echo: the callee returns the RTP of the media part (idle while no RTP flows)
    callee = _RegisteredUas(str(uas), workdir, load_core, target, realm, echo=True)
    try:
        if rates:
            pbx = _climb(label, uac_auth, target, rates, args.seconds, workdir, load_core,
                         args.json, meters={"server": server.cpu_seconds}, ceiling=ceiling)
        if rtp_ks:
            rtp, rtp_rows = _rtp_climb(rtp_ks, target, workdir, load_core, server.cpu_seconds,
                                       1.0, args.rtp_seconds, args.json)
    finally:
        callee.stop()
    return pbx, rtp, rtp_rows


#: What the callee has set (issue 11): the terminating chain runs every feature for each call
#: and decides at ringing — DND off, no-answer forwarding on (never reached: the callee
#: answers), call waiting on.
CALLEE_SETTINGS: list[tuple[str, str, dict[str, Any]]] = [
    ("101", "dnd", {"enabled": False}),
    ("101", "forward_no_answer", {"enabled": True, "target": "0301234567", "rings": 4}),
    ("101", "call_waiting", {"enabled": True}),
]


def main(argv: list[str]) -> int:
    """Run the benchmark; prints one final JSON line."""
    parser = argparse.ArgumentParser(prog="asyncpbx bench calls")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument("--max-rate", type=int, default=None,
                        help="climbs that still hold at the end of --rates go on up to this "
                             "rate (default: 100,000 calls/s, or 10 × the highest of --rates "
                             "if that is more)")
    parser.add_argument("--rtp", default=",".join(map(str, DEFAULT_RTP)),
                        help="concurrent RTP calls to try (empty: skip)")
    parser.add_argument("--rtp-seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true", help="print only the final JSON line")
    parser.add_argument("--no-features", dest="features", action="store_false",
                        help="the callee has no settings of its own (by default it has "
                             "DND off, no-answer forwarding on, call waiting on)")
    add_tree_args(parser)
    args = parser.parse_args(argv)
    if shutil.which("sipp") is None:
        print("sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    rtp_ks = [int(k) for k in args.rtp.split(",") if k.strip()]
    try:
        trees = trees_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    ceiling = (args.max_rate if args.max_rate is not None
               else max(MAX_RATE, 10 * max(rates, default=0)))
    cpu_list = cpus()
    server_core = cpu_list[0]
    load_core = cpu_list[1] if len(cpu_list) > 1 else cpu_list[0]
    workdir = Path(tempfile.mkdtemp(prefix="asyncpbx-bench-calls-"))
    uac_auth, uac_direct, uas = (workdir / "uac_auth.xml", workdir / "uac_direct.xml",
                                 workdir / "uas.xml")
    uac_auth.write_text(UAC_AUTH)
    uac_direct.write_text(UAC_DIRECT)
    uas.write_text(UAS)
    realm = "asyncpbx-bench"
    config = ('[sip]\nlisten = ["udp:127.0.0.1:0"]\ndomain = "127.0.0.1"\n'
              f'[auth]\nrealm = "{realm}"\n[log]\nlevel = "warning"\n'
              '[http]\nlisten = ""\n'
              '[media]\nport_min = 40000\nport_max = 44999\nrtp_timeout = 0\n')
    direct: Climb | None = None
    runs: list[tuple[int, Climb | None, int, list[dict[str, Any]]]] = []
    idle: list[float] = []
    try:
        if rates:
            direct_uas = SippUas(str(uas), workdir, cpu=server_core)
            try:
                direct = _climb("sipp→sipp", uac_direct, ("127.0.0.1", direct_uas.port), rates,
                                args.seconds, workdir, load_core, args.json,
                                meters={"uas": direct_uas.cpu_seconds}, ceiling=ceiling)
            finally:
                direct_uas.stop()
        for i in schedule(len(trees), args.rounds):
            label = "sipp→pbx→sipp" if len(trees) == 1 else f"sipp→pbx[{i}]→sipp"
            with Server(config + trees[i].trust_loopback(),
                        users=[("100", PASSWORD), ("101", PASSWORD)],
                        settings=CALLEE_SETTINGS if args.features else [],
                        cpu=server_core, tree=trees[i]) as server:
                idle.append(server.idle_cpu_fraction())
                runs.append((i, *_pbx_run(server, uac_auth, uas, workdir, rates, rtp_ks, args,
                                          load_core, realm, ceiling, label)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _, pbx, rtp, rtp_rows = runs[0]
    pbx_best = pbx.best if pbx else 0
    direct_best = direct.best if direct else 0
    pbx_cpu = pbx.at_best(CPU_KEY) if pbx else None
    uas_cpu = direct.at_best("uas_cpu_ms_per_call") if direct else None
    result: dict[str, Any] = {
        "bench": "calls",
        "server_tree": trees[0].describe(),
        "pbx_calls_per_s": pbx_best,
        "pbx_limit_found": pbx.limit_found if pbx else None,
        CPU_KEY: pbx_cpu,
        "server_idle_cpu_fraction": idle[0],
        "sipp_direct_calls_per_s": direct_best,
        "direct_limit_found": direct.limit_found if direct else None,
        "direct_uas_cpu_ms_per_call": uas_cpu,
        "ratio_pbx_to_direct": ratio(direct_best, pbx_best),
        "ratio_pbx_cpu_to_direct_uas_cpu": ratio(uas_cpu, pbx_cpu),
        "seconds_per_step": args.seconds,
        "callee_settings": CALLEE_SETTINGS if args.features else [],
        "max_rate": ceiling,
        "server_pinned_cpu": server_core,
        "load_pinned_cpu": load_core,
        "rtp_concurrent_calls": rtp if rtp_ks else None,
        "pbx_steps": pbx.rows if pbx else [],
        "direct_steps": direct.rows if direct else [],
        "rtp_steps": rtp_rows,
    }
    if len(runs) > 1:
        result["runs"] = [
            {"tree": trees[i].describe(), "pbx_calls_per_s": c.best if c else 0,
             "ratio_pbx_to_direct": ratio(direct_best, c.best if c else 0),
             CPU_KEY: c.at_best(CPU_KEY) if c else None,
             "server_idle_cpu_fraction": idle[n],
             "rtp_concurrent_calls": k if rtp_ks else None,
             "pbx_steps": c.rows if c else [], "rtp_steps": rows}
            for n, (i, c, k, rows) in enumerate(runs)]
        if rates:
            result["compare"] = summarize(
                trees, [(i, c.best, c.rows) for i, c, _, _ in runs if c], CPU_KEY)
    if not args.json:
        if pbx and direct:
            more = "" if pbx.limit_found else " (still holding at --max-rate: a lower bound)"
            dmore = "" if direct.limit_found else " (still holding at --max-rate: a lower bound)"
            print(f"asyncpbx sustained {pbx_best} full calls/s (two legs, digest, media ports) "
                  f"on one core{more}, {pbx_cpu} ms server CPU per call there "
                  f"(idle: {idle[0] * 100:.1f} % of a core); SIPp→SIPp direct "
                  f"reached {direct_best}/s{dmore} (ratio {result['ratio_pbx_to_direct']})")
        if rtp_ks:
            print(f"asyncpbx held {rtp} concurrent calls with G.711 both ways (loss < 0.1 %, "
                  "p99 < 10 ms)")
        if "compare" in result:
            print_summary(result["compare"], CPU_KEY, "calls/s")
    print(json.dumps(result))
    return 0
