"""RTP capacity of one core: relayed calls and conference participants in real time.

The system under test (this process, pinned to one CPU, uvloop) runs a ``MediaEngine``; a load
generator in a second process (pinned to another CPU) plays the phones over loopback: G.711 µ-law
RTP every 20 ms per phone, spread evenly over the 20 ms, from a handful of sockets with
``sendmmsg``/``recvmmsg``. For each K the run lasts ``--duration`` seconds after a warm-up.

* relay: K calls = 2K legs relayed in pairs (the packet hub's fast path); each phone's payload
  carries its send time, so the generator measures loss and the latency added by the PBX.
* conference: K participants in conferences of 10 (one mixer kernel call per tick; fused G.711);
  loss is counted both ways (packets into the PBX vs. sent, mixes out vs. 50/s per participant),
  latency is the tick lateness + tick duration (when the last mix leaves, after its deadline).

A K passes when tick overruns < 1 %, loss < 0.1 % and p99 latency < 10 ms; the largest passing K
is reported. Baseline in the same run: a bare uvloop UDP echo server driven by the same generator
as hard as it can (packets/s relayed on one core).

Usage: ``python3 -m bench.rtp [--json] [--quick] [--duration S] [--relay K,K…] [--conference K,…]``
(``asyncpbx bench rtp``). Targets: ≥ 500 relayed calls, ≥ 300 conference participants.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import resource
import socket
import struct
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from media import g711
from media._accel import load

_io: Any = load("media._batchio", "media.batchio")

HOST = "127.0.0.1"
PORTS = (20000, 29999)  # room for 2,500 relayed calls (tests use 30000–32999)
LG_SOCKETS = 16
SPREAD = 10  # send groups per 20 ms
CONF_SIZE = 10
PASS_OVERRUN = 0.01
PASS_LOSS = 0.001
PASS_P99 = 0.010
_STAMP = struct.Struct("!Q")


def _pin(index: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})


def _payload() -> bytes:
    t = np.arange(160) / 8000
    return g711.ulaw_encode((8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))


def _big_buffers(s: socket.socket) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        except OSError:
            pass


# -- load generator (second process) --------------------------------------------------------------


def _loadgen(conn: Connection, cpu: int) -> None:
    _pin(cpu)
    socks = []
    for _ in range(LG_SOCKETS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HOST, 0))
        s.setblocking(False)
        _big_buffers(s)
        socks.append(s)
    conn.send([s.getsockname() for s in socks])
    while True:
        cmd = conn.recv()
        if cmd[0] == "quit":
            return
        if cmd[0] == "echo":
            conn.send(_echo_blast(socks, cmd[1], cmd[2]))
        else:
            conn.send(_phones(socks, *cmd[1:]))


def _drain(socks: list[socket.socket]) -> list[tuple[bytes, tuple[str, int]]]:
    out: list[tuple[bytes, tuple[str, int]]] = []
    for s in socks:
        out.extend(_io.recv_batch(s, 4096))
    return out


def _echo_blast(socks: list[socket.socket], target: tuple[str, int], duration: float) -> float:
    """Drive an echo server as hard as possible, with a bounded number in flight."""
    pkt = b"\x80\x00" + bytes(170)
    window = 2000
    sent = received = 0
    counted = 0
    t_start = time.monotonic()
    t_count = t_start + 0.5
    t_end = t_count + duration
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        if sent - received < window:
            n = min(256, window - (sent - received))
            s = socks[sent % len(socks)]
            sent += _io.send_batch(s, [pkt] * n, [target] * n)
        got = sum(len(_io.recv_batch(s, 4096)) for s in socks)
        received += got
        if now >= t_count:
            counted += got
        if sent - received >= window:
            time.sleep(0.0002)
        if now - t_start > 1.0 and received == 0:
            break
    return counted / duration


def _phones(
    socks: list[socket.socket],
    mode: str,
    legs: list[tuple[int, int]],  # (PBX leg port, generator socket index)
    warmup: float,
    duration: float,
) -> dict[str, float]:
    """Play one phone per leg for warmup+duration seconds; measure what comes back."""
    payload = _payload()[8:]
    n = len(legs)
    seq = [0] * n
    ssrc = [0x10000 + i for i in range(n)]
    by_group: list[list[int]] = [list(range(g, n, SPREAD)) for g in range(SPREAD)]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = ru0.ru_utime + ru0.ru_stime
    t0 = time.monotonic()
    t_meas = t0 + warmup
    t_end = t_meas + duration
    sent_meas = 0
    recv_meas = 0
    recv_all = 0
    lat: list[int] = []
    meas_ns = int(t_meas * 1e9)
    end_ns = int(t_end * 1e9)
    slot = 0
    pack = struct.Struct("!BBHII").pack
    while True:
        due = t0 + slot * (0.020 / SPREAD)
        if due >= t_end:
            break
        # receive until the next send slot
        while True:
            for data, _addr in _drain(socks):
                recv_all += 1
                if mode == "relay":
                    if len(data) >= 20:
                        stamp = _STAMP.unpack_from(data, 12)[0]
                        if meas_ns <= stamp < end_ns:
                            recv_meas += 1
                            lat.append(time.monotonic_ns() - stamp)
                elif t_meas <= time.monotonic() < t_end:
                    recv_meas += 1
            if time.monotonic() >= due:
                break
            time.sleep(0.0003)
        group = by_group[slot % SPREAD]
        stamp = time.monotonic_ns()
        stamp_b = _STAMP.pack(stamp)
        per_sock: dict[int, tuple[list[bytes], list[tuple[str, int]]]] = {}
        for i in group:
            port, si = legs[i]
            s = seq[i]
            seq[i] = (s + 1) & 0xFFFF
            pkt = pack(0x80, 0, s, (s * 160) & 0xFFFFFFFF, ssrc[i]) + stamp_b + payload
            entry = per_sock.get(si)
            if entry is None:
                entry = per_sock[si] = ([], [])
            entry[0].append(pkt)
            entry[1].append((HOST, port))
        sent = 0
        for si, (pkts, addrs) in per_sock.items():
            sent += _io.send_batch(socks[si], pkts, addrs)
        if meas_ns <= stamp < end_ns:
            sent_meas += sent
        slot += 1
    # collect stragglers
    t_tail = time.monotonic() + 0.3
    while time.monotonic() < t_tail:
        for data, _ in _drain(socks):
            if mode == "relay" and len(data) >= 20:
                stamp = _STAMP.unpack_from(data, 12)[0]
                if meas_ns <= stamp < end_ns:
                    recv_meas += 1
                    lat.append(time.monotonic_ns() - stamp)
        time.sleep(0.001)
    lat_arr = np.asarray(lat, dtype=np.float64) / 1e9 if lat else np.zeros(1)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_total": ru.ru_utime + ru.ru_stime - cpu0,
        "t_total": time.monotonic() - t0,
        "sent": sent_meas,
        "received": recv_meas,
        "p50": float(np.percentile(lat_arr, 50)),
        "p99": float(np.percentile(lat_arr, 99)),
    }


# -- system under test (this process) -------------------------------------------------------------


async def _echo_server(conn: Connection, duration: float) -> float:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.t.sendto(data, addr)

    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=(HOST, 0))
    _big_buffers(transport.get_extra_info("socket"))
    target = transport.get_extra_info("sockname")[:2]
    conn.send(("echo", target, duration))
    rate: float = await loop.run_in_executor(None, conn.recv)
    transport.close()
    return rate


async def _run_k(
    conn: Connection, lg_addrs: list[tuple[str, int]], mode: str, k: int, warmup: float,
    duration: float,
) -> dict[str, float]:
    from media.aio import MediaEngine

    loop = asyncio.get_running_loop()
    async with MediaEngine(HOST, PORTS) as engine:
        legs = []
        n_legs = 2 * k if mode == "relay" else k
        sessions = []
        for i in range(n_legs):
            remote = lg_addrs[i % len(lg_addrs)]
            s = engine.create_session(payload_type=0, codec="PCMU", remote=remote)
            sessions.append(s)
            legs.append((s.local_port, i % len(lg_addrs)))
        if mode == "relay":
            for i in range(0, n_legs, 2):
                engine.relay(sessions[i], sessions[i + 1])
        else:
            conf = None
            for i, s in enumerate(sessions):
                if i % CONF_SIZE == 0:
                    conf = engine.conference()
                assert conf is not None
                conf.add(s)
        clock = engine.clock
        conn.send(("phones", mode, legs, warmup, duration))
        # measure the PBX over the generator's measurement window
        await asyncio.sleep(warmup)
        ticks0, over0 = clock.ticks, clock.overruns
        times0 = len(clock.tick_times)
        late: list[float] = []
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.monotonic()
        rx0 = sum(engine.hub.counters(s.slot)["rx_packets"] for s in sessions)
        orig_tick = clock.tick

        def timed_tick(now: float) -> None:
            orig_tick(now)
            # loop.time() has 1 ms resolution under uvloop; monotonic() is the same clock, finer
            late.append(time.monotonic() - now)

        clock.tick = timed_tick  # type: ignore[method-assign]
        await asyncio.sleep(duration)
        clock.tick = orig_tick  # type: ignore[method-assign]
        rx1 = sum(engine.hub.counters(s.slot)["rx_packets"] for s in sessions)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - w0
        ticks = clock.ticks - ticks0
        overruns = clock.overruns - over0
        busy = clock.tick_times[times0:]
        lg: dict[str, float] = await loop.run_in_executor(None, conn.recv)
    cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / wall
    out = {
        "k": k,
        "overrun_ratio": overruns / max(ticks, 1),
        "cpu": cpu,
        "generator_cpu": lg["cpu_total"] / max(lg["t_total"], 1e-9),
        "tick_p99_ms": float(np.percentile(busy, 99) * 1e3) if busy else 0.0,
    }
    if mode == "relay":
        out["loss"] = 1 - lg["received"] / max(lg["sent"], 1)
        out["p50_ms"] = lg["p50"] * 1e3
        out["p99_ms"] = lg["p99"] * 1e3
    else:
        expected_out = k * duration / 0.020
        loss_in = 1 - (rx1 - rx0) / max(lg["sent"], 1)
        loss_out = 1 - lg["received"] / expected_out
        out["loss"] = max(loss_in, loss_out, 0.0)
        out["loss_in"] = loss_in
        out["loss_out"] = loss_out
        out["p99_ms"] = float(np.percentile(late, 99) * 1e3) if late else 0.0
        out["p50_ms"] = float(np.percentile(late, 50) * 1e3) if late else 0.0
    out["pass"] = bool(
        out["overrun_ratio"] < PASS_OVERRUN and out["loss"] < PASS_LOSS
        and out["p99_ms"] < PASS_P99 * 1e3
    )
    return out


def _search(
    conn: Connection, lg_addrs: list[tuple[str, int]], mode: str, ks: list[int], warmup: float,
    duration: float, say: Any,
) -> tuple[int, list[dict[str, float]]]:
    best = 0
    rows = []
    fails = 0
    for k in ks:
        r = asyncio.run(_run_k(conn, lg_addrs, mode, k, warmup, duration), debug=False)
        if not r["pass"]:
            # The machine is shared: one retry separates a noisy neighbour from a real limit.
            again = asyncio.run(_run_k(conn, lg_addrs, mode, k, warmup, duration), debug=False)
            again["retried"] = 1
            r = again if again["pass"] or again["p99_ms"] < r["p99_ms"] else r
        rows.append(r)
        say(
            f"  {mode:10s} K={k:5d}: loss {r['loss'] * 100:6.3f} %  p50 {r['p50_ms']:6.2f} ms  "
            f"p99 {r['p99_ms']:6.2f} ms  overruns {r['overrun_ratio'] * 100:5.2f} %  "
            f"tick p99 {r['tick_p99_ms']:5.2f} ms  cpu {r['cpu'] * 100:5.1f} %  "
            f"(generator {r['generator_cpu'] * 100:3.0f} %)  "
            f"{'PASS' if r['pass'] else 'fail'}"
        )
        if r["pass"]:
            best = max(best, k)
            fails = 0
        else:
            fails += 1
            if fails >= 2:
                break
    return best, rows


def main(argv: list[str]) -> int:
    """Run the benchmark; prints lines, then one JSON line (``--json``: only that line)."""
    quiet = "--json" in argv
    quick = "--quick" in argv
    duration = 3.0 if not quick else 1.5
    if "--duration" in argv:
        duration = float(argv[argv.index("--duration") + 1])
    warmup = 1.0

    def say(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    try:
        import uvloop

        uvloop.install()
        loop_name = "uvloop"
    except ImportError:  # pragma: no cover
        loop_name = "asyncio"
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_loadgen, args=(child, 1), daemon=True)
    proc.start()
    _pin(0)
    try:
        lg_addrs = [tuple(a) for a in parent.recv()]
        say(f"rtp bench: {loop_name}, hub {_io.__name__}, {len(os.sched_getaffinity(0))} CPU(s)"
            f" for the PBX, generator in pid {proc.pid}; {duration:.1f} s per step")
        echo_pps = asyncio.run(_echo_server(parent, duration))
        say(f"  baseline: bare UDP echo relays {echo_pps:,.0f} packets/s on one core")
        relay_ks = [250, 500, 1000, 1500, 2000] if not quick else [100, 500]
        conf_ks = [100, 200, 300, 400, 600, 800] if not quick else [100, 300]
        if "--relay" in argv:
            relay_ks = [int(x) for x in argv[argv.index("--relay") + 1].split(",") if x]
        if "--conference" in argv:
            conf_ks = [int(x) for x in argv[argv.index("--conference") + 1].split(",") if x]
        best_relay, relay_rows = _search(parent, lg_addrs, "relay", relay_ks, warmup, duration,
                                         say)
        best_conf, conf_rows = _search(parent, lg_addrs, "conference", conf_ks, warmup,
                                       duration, say)
        parent.send(("quit",))
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
    relay_pps = best_relay * 2 * 50  # packets relayed (each in once, out once) per second
    cpu_at_best = next((r["cpu"] for r in relay_rows if r["k"] == best_relay), 0.0)
    per_core = relay_pps / cpu_at_best if cpu_at_best else 0.0
    say(f"  relay: {best_relay} calls in real time (target 500) = {relay_pps:,.0f} packets/s "
        f"relayed at {cpu_at_best * 100:.0f} % CPU (≈ {per_core:,.0f}/s per core extrapolated);"
        f" bare echo {echo_pps:,.0f}/s → ratio {relay_pps / max(echo_pps, 1):.2f}")
    say(f"  conference: {best_conf} participants in real time (target 300)")
    figures = {
        "bench": "rtp",
        "echo_pps": round(echo_pps),
        "relay_calls": best_relay,
        "conference_participants": best_conf,
        "relay_pps": relay_pps,
        "relay_pps_per_core_extrapolated": round(per_core),
        "relay_vs_echo": round(relay_pps / max(echo_pps, 1), 3),
        "relay_runs": relay_rows,
        "conference_runs": conf_rows,
        "targets": {"relay_calls": 500, "conference_participants": 300},
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
