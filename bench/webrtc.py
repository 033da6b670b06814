"""``asyncpbx bench webrtc``: browser legs (aiortc, Opus) bridged to G.711 legs on one core, beside
the same count of plain G.711 relayed calls.

The system under test (this process, pinned to one CPU, uvloop) runs a ``MediaEngine`` and, per
WebRTC call, the PBX's browser leg (:class:`media.webrtc.WebRtcLeg`: ICE, DTLS-SRTP, Opus 48 kHz)
bridged to a G.711 µ-law RTP session (the transcoding bridge: Opus ↔ PCM 48 kHz ↔ 8 kHz ↔ µ-law),
as the B2BUA does for a browser calling a desk phone. A load generator in a second process
(pinned to another CPU) plays both ends over loopback: K aiortc peers as the browsers (offer,
ICE, DTLS, a 600 Hz tone sent as Opus, what they hear decoded) and K G.711 phones (20 ms µ-law
packets, sent with ``sendmmsg`` from a handful of sockets). No SIP: the offers and answers go
over a pipe (``asyncpbx bench calls`` measures signalling).

For each K, in the same run: K relayed G.711 calls (2K phones, the packet hub's relay), then K
WebRTC↔G.711 calls. Measured over ``--duration`` seconds after a warm-up:

* loss per direction: what the phones and the browsers received against 50 packets (frames)
  per second and stream (± one per stream: the PBX's clock, not the generator's, paces them);
  relayed packets against what was sent;
* audio gaps: a stream that went more than ``GAP`` (60 ms: three frames) without a packet;
* the media clock's overruns (ticks that came late) and the server's CPU (a share of one core;
  per leg: divided by the 2K legs).

A K passes when loss < 0.1 % in every direction, no stream had a gap and overruns < 1 %; the
largest passing K of each kind is reported. The generator's own CPU is reported beside each step
(near 100 % it, not the PBX, is the limit: the browsers are aiortc too).

Usage: ``python3 -m bench.webrtc [--json] [--quick] [--duration S] [--calls K,K,…]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
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
LOOPBACK = (HOST,)
PORTS = (20000, 23999)  # the PBX's RTP sessions (bench.rtp's range; not run at the same time)
LG_SOCKETS = 8
SPREAD = 4  # send groups per 20 ms
GAP = 0.060
PASS_OVERRUN = 0.01
PASS_LOSS = 0.001
_HEADER = struct.Struct("!BBHII")


def _pin(index: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})


def _payload(freq: float) -> bytes:
    t = np.arange(160) / 8000
    return g711.ulaw_encode((8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class _Stream:
    """Arrivals of one stream within the measurement window: count and gaps."""

    __slots__ = ("count", "gaps", "last", "max_gap", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.count = 0
        self.gaps = 0
        self.last = 0.0
        self.max_gap = 0.0

    def arrive(self, now: float, start: float, end: float) -> None:
        if not start <= now < end:
            return
        if self.last:
            gap = now - self.last
            self.max_gap = max(self.max_gap, gap)
            if gap > GAP:
                self.gaps += 1
        self.count += 1
        self.last = now


# -- load generator (second process): browsers and phones -----------------------------------------


class _Browser:
    """A browser-like aiortc peer: sends a tone as Opus, counts the frames it hears."""

    def __init__(self, freq: float) -> None:
        from aiortc import MediaStreamTrack, RTCPeerConnection

        self.pc = RTCPeerConnection()
        self.stream = _Stream()
        self.window = (math.inf, math.inf)
        self._task: asyncio.Future[None] | None = None

        class Tone(MediaStreamTrack):  # type: ignore[misc]
            kind = "audio"

            def __init__(self) -> None:
                super().__init__()
                self._n = 0
                self._start: float | None = None
                t = np.arange(960) / 48000
                self._pcm = (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16).tobytes()

            async def recv(self) -> Any:
                from av import AudioFrame

                if self._start is None:
                    self._start = time.monotonic()
                else:
                    await asyncio.sleep(max(0.0, self._start + self._n / 48000
                                            - time.monotonic()))
                frame = AudioFrame(format="s16", layout="mono", samples=960)
                frame.planes[0].update(self._pcm)
                frame.pts = self._n
                frame.sample_rate = 48000
                frame.time_base = fractions.Fraction(1, 48000)
                self._n += 960
                return frame

        self.pc.addTrack(Tone())
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        self._task = asyncio.ensure_future(self._read(track))

    async def _read(self, track: Any) -> None:
        while True:
            try:
                await track.recv()
            except Exception:
                return
            self.stream.arrive(time.monotonic(), *self.window)

    async def offer(self) -> str:
        from media.webrtc import ice_host_addresses

        with ice_host_addresses(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pc.close()


async def _phones(socks: list[socket.socket], targets: list[tuple[int, int]], warmup: float,
                  duration: float) -> dict[int, _Stream]:
    """Play one G.711 phone per ``(PBX port, socket index)`` for warmup+duration seconds; what
    comes back, per PBX port (the source of the packets)."""
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    start, end = t0 + warmup, t0 + warmup + duration
    streams: dict[int, _Stream] = {port: _Stream() for port, _ in targets}
    sent = {port: 0 for port, _ in targets}

    def readable(s: socket.socket) -> None:
        now = time.monotonic()
        for _data, addr in _io.recv_batch(s, 4096):
            stream = streams.get(addr[1])
            if stream is not None:
                stream.arrive(now, start, end)

    for s in socks:
        loop.add_reader(s.fileno(), readable, s)
    payload = _payload(1000)
    groups = [targets[g::SPREAD] for g in range(SPREAD)]
    slot = 0
    try:
        while True:
            due = t0 + slot * 0.020 / SPREAD
            if due >= end:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            seq = slot // SPREAD
            per_sock: dict[int, tuple[list[bytes], list[tuple[str, int]]]] = {}
            for port, si in groups[slot % SPREAD]:
                pkt = _HEADER.pack(0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF,
                                   port) + payload
                pkts, addrs = per_sock.setdefault(si, ([], []))
                pkts.append(pkt)
                addrs.append((HOST, port))
                if start <= time.monotonic() < end:
                    sent[port] += 1
            for si, (pkts, addrs) in per_sock.items():
                _io.send_batch(socks[si], pkts, addrs)
            slot += 1
        await asyncio.sleep(0.3)  # stragglers
    finally:
        for s in socks:
            loop.remove_reader(s.fileno())
    for port, n in sent.items():
        streams[port].sent = n
    return streams


async def _loadgen_main(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(LG_SOCKETS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HOST, 0))
        s.setblocking(False)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        socks.append(s)
    conn.send([s.getsockname() for s in socks])
    browsers: list[_Browser] = []
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd[0] == "quit":
            return
        if cmd[0] == "offers":
            browsers = [_Browser(600) for _ in range(cmd[1])]
            conn.send(list(await asyncio.gather(*(b.offer() for b in browsers))))
        elif cmd[0] == "answers":
            await asyncio.gather(*(b.accept(sdp) for b, sdp in zip(browsers, cmd[1],
                                                                   strict=True)))
            deadline = time.monotonic() + 30
            while any(b.pc.connectionState != "connected" for b in browsers) and \
                    time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            conn.send(sum(b.pc.connectionState == "connected" for b in browsers))
        elif cmd[0] == "play":
            _, targets, warmup, duration = cmd
            cpu0, w0 = _cpu(), time.monotonic()
            window = (w0 + warmup, w0 + warmup + duration)
            for b in browsers:
                b.window = window
            streams = await _phones(socks, targets, warmup, duration)
            cpu = (_cpu() - cpu0) / (time.monotonic() - w0)
            phones = [(st.count, st.sent, st.gaps, st.max_gap)
                      for st in streams.values()]
            heard = [(b.stream.count, b.stream.gaps, b.stream.max_gap) for b in browsers]
            conn.send({"phones": phones, "browsers": heard, "cpu": cpu})
        elif cmd[0] == "close":
            await asyncio.gather(*(b.close() for b in browsers))
            browsers = []
            conn.send("closed")


def _loadgen(conn: Connection, cpu: int) -> None:
    _pin(cpu)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_loadgen_main(conn))


# -- system under test (this process) -------------------------------------------------------------


def _recv_within(conn: Connection, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"the load generator did not answer within {timeout:.0f} s")
    return conn.recv()


async def _recv(conn: Connection, timeout: float = 90.0) -> Any:
    """The generator's next answer (TimeoutError: it died or hangs)."""
    return await asyncio.get_running_loop().run_in_executor(None, _recv_within, conn, timeout)


async def _run_k(conn: Connection, lg_addrs: list[tuple[str, int]], mode: str, k: int,
                 warmup: float, duration: float) -> dict[str, Any]:
    from media.aio import MediaEngine
    from media.webrtc import IceSettings, WebRtcLeg

    async with MediaEngine(HOST, PORTS) as engine:
        targets: list[tuple[int, int]] = []
        legs: list[WebRtcLeg] = []
        setup = time.monotonic()
        if mode == "relay":
            sessions = [engine.create_session(payload_type=0, codec="PCMU",
                                              remote=lg_addrs[i % len(lg_addrs)])
                        for i in range(2 * k)]
            for i in range(0, 2 * k, 2):
                engine.relay(sessions[i], sessions[i + 1])
            targets = [(s.local_port, i % len(lg_addrs)) for i, s in enumerate(sessions)]
        else:
            conn.send(("offers", k))
            offers = await _recv(conn)
            ice = IceSettings(LOOPBACK)
            legs = [WebRtcLeg(ice=ice) for _ in range(k)]
            answers = await asyncio.gather(*(leg.accept_offer(o)
                                             for leg, o in zip(legs, offers, strict=True)))
            conn.send(("answers", list(answers)))
            connected = await _recv(conn)
            if connected != k:
                raise RuntimeError(f"only {connected} of {k} browsers connected")
            sessions = []
            for i, leg in enumerate(legs):
                s = engine.create_session(payload_type=0, codec="PCMU",
                                          remote=lg_addrs[i % len(lg_addrs)])
                engine.bridge(s, leg)
                sessions.append(s)
                targets.append((s.local_port, i % len(lg_addrs)))
        setup = time.monotonic() - setup
        clock = engine.clock
        conn.send(("play", targets, warmup, duration))
        await asyncio.sleep(warmup)
        ticks0, over0 = clock.ticks, clock.overruns
        cpu0, w0 = _cpu(), time.monotonic()
        in0 = sum(leg.counters["overflow"] for leg in legs)
        await asyncio.sleep(duration)
        cpu = (_cpu() - cpu0) / (time.monotonic() - w0)
        ticks, overruns = clock.ticks - ticks0, clock.overruns - over0
        overflow = sum(leg.counters["overflow"] for leg in legs) - in0
        lg = await _recv(conn)
        if legs:
            conn.send(("close",))
            await _recv(conn)
            await asyncio.gather(*(leg.close() for leg in legs))
    expected = duration / 0.020
    phones = lg["phones"]
    out: dict[str, Any] = {"k": k, "mode": mode, "cpu": cpu, "generator_cpu": lg["cpu"],
                           "overrun_ratio": overruns / max(ticks, 1), "setup_s": setup,
                           "cpu_ms_per_leg_second": cpu * 1e3 / (2 * k)}
    if mode == "relay":
        got, sent = sum(p[0] for p in phones), sum(p[1] for p in phones)
        out["loss"] = max(0.0, 1 - got / max(sent, 1))
        out["gaps"] = sum(p[2] for p in phones)
        out["max_gap_ms"] = max((p[3] for p in phones), default=0.0) * 1e3
    else:
        heard = lg["browsers"]
        # these streams are paced by the PBX's clock, not the generator's: a window of
        # ``duration`` holds duration/20 ms of them ± one (its phase), so one is allowed
        to_phone = max(0.0, 1 - (sum(p[0] for p in phones) + k) / (k * expected))
        to_browser = max(0.0, 1 - (sum(b[0] for b in heard) + k) / (k * expected))
        out.update(loss_to_phone=to_phone, loss_to_browser=to_browser,
                   loss=max(to_phone, to_browser), overflow=overflow,
                   gaps=sum(p[2] for p in phones) + sum(b[1] for b in heard),
                   max_gap_ms=max([p[3] for p in phones] + [b[2] for b in heard]) * 1e3)
    out["pass"] = bool(out["loss"] < PASS_LOSS and out["gaps"] == 0
                       and out["overrun_ratio"] < PASS_OVERRUN)
    return out


def _search(conn: Connection, lg_addrs: list[tuple[str, int]], ks: list[int], warmup: float,
            duration: float, say: Any) -> tuple[dict[str, int], list[dict[str, Any]]]:
    best = {"relay": 0, "webrtc": 0}
    rows: list[dict[str, Any]] = []
    fails = {"relay": 0, "webrtc": 0}
    for k in ks:
        for mode in ("relay", "webrtc"):
            if fails[mode] >= 2:
                continue
            r = asyncio.run(_run_k(conn, lg_addrs, mode, k, warmup, duration))
            if not r["pass"]:
                # The machine is shared: one retry separates a noisy neighbour from a limit.
                again = asyncio.run(_run_k(conn, lg_addrs, mode, k, warmup, duration))
                again["retried"] = 1
                r = again if again["pass"] else r
            rows.append(r)
            say(f"  {mode:6s} K={k:4d}: loss {r['loss'] * 100:6.3f} %  gaps {r['gaps']:3d} "
                f"(max {r['max_gap_ms']:5.1f} ms)  overruns {r['overrun_ratio'] * 100:5.2f} %  "
                f"cpu {r['cpu'] * 100:5.1f} % = {r['cpu_ms_per_leg_second']:5.2f} ms/leg/s  "
                f"(generator {r['generator_cpu'] * 100:3.0f} %)  "
                f"{'PASS' if r['pass'] else 'fail'}")
            if r["pass"]:
                best[mode] = max(best[mode], k)
                fails[mode] = 0
            else:
                fails[mode] += 1
        if all(f >= 2 for f in fails.values()):
            break
    return best, rows


def main(argv: list[str]) -> int:
    """Run the benchmark; prints lines, then one JSON line (``--json``: only that line)."""
    quiet = "--json" in argv
    quick = "--quick" in argv
    duration = 3.0 if not quick else 1.5
    if "--duration" in argv:
        duration = float(argv[argv.index("--duration") + 1])
    ks = [5, 10, 15, 20, 25, 30, 40] if not quick else [5, 10]
    if "--calls" in argv:
        ks = [int(x) for x in argv[argv.index("--calls") + 1].split(",") if x]

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
        say(f"webrtc bench: {loop_name}, {len(os.sched_getaffinity(0))} CPU(s) for the PBX, "
            f"browsers and phones in pid {proc.pid}; {duration:.1f} s per step")
        best, rows = _search(parent, lg_addrs, ks, 1.0, duration, say)
        parent.send(("quit",))
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()

    def at(mode: str) -> dict[str, Any]:
        return next((r for r in rows if r["mode"] == mode and r["k"] == best[mode]
                     and r["pass"]), {})

    web, relay = at("webrtc"), at("relay")
    say(f"  webrtc: {best['webrtc']} browser↔G.711 calls in real time on one core "
        f"({web.get('cpu', 0) * 100:.0f} % CPU, {web.get('cpu_ms_per_leg_second', 0):.2f} ms "
        f"CPU per leg and second); relay: {best['relay']} G.711 calls "
        f"({relay.get('cpu', 0) * 100:.0f} % CPU, "
        f"{relay.get('cpu_ms_per_leg_second', 0):.3f} ms per leg and second)")
    print(json.dumps({
        "bench": "webrtc",
        "webrtc_calls": best["webrtc"],
        "relay_calls": best["relay"],
        "webrtc_cpu_ms_per_leg_second": web.get("cpu_ms_per_leg_second"),
        "relay_cpu_ms_per_leg_second": relay.get("cpu_ms_per_leg_second"),
        "runs": rows,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
