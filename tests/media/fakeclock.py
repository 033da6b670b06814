"""Drive a :class:`~media.engine.MediaEngine` on a fake clock: real loopback sockets, explicit
``now``, no sleeping.

The engine is started with ``realtime=False``, so neither its hub reader nor its clock runs on
the event loop. :class:`FakeClock` then plays the loop's part one 20 ms step at a time: the
phones' packets due at this step are sent, the engine reads them (``engine.poll(now)``) — waiting
only until the kernel has delivered them, never for a period — and the graph runs one tick
(``engine.clock.tick(now)``). Arrival times are the test's to choose, so loss and jitter are
exact and repeatable, and a second of audio takes milliseconds.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from media.codecs import make_codec
from media.engine import MediaEngine
from media.port import PTIME, Frame

#: Where fake time starts (any value; not 0, so nothing passes by accident on a zero default).
T0 = 1000.0
#: Longest real wait for the kernel to deliver a loopback datagram (a loaded machine may defer
#: loopback delivery to ksoftirqd; on an idle one it is immediate).
DELIVERY_TIMEOUT = 2.0


def tone(freq: float, rate: int, n: int, start: int = 0, amp: float = 8000.0) -> Frame:
    t = (np.arange(n) + start) / rate
    out: Frame = (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    return out


class Phone:
    """An RTP phone on a plain non-blocking socket; it sends only when told to."""

    def __init__(self, codec: str = "PCMU", pt: int = 0, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.addr: tuple[str, int] = self.sock.getsockname()
        self.codec = make_codec(codec, pt)
        self.pt = pt
        self.rate = self.codec.sample_rate
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.received: list[bytes] = []

    def packet(self, frame: Frame) -> bytes:
        """The next RTP packet of this phone's stream, carrying ``frame``."""
        pkt = struct.pack("!BBHII", 0x80, self.pt, self.seq, self.ts, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + self.codec.timestamp_increment) & 0xFFFFFFFF
        return pkt + self.codec.encode(frame)

    def tone_packets(self, freq: float, count: int, amp: float = 8000.0) -> list[bytes]:
        """``count`` consecutive 20 ms packets of a continuous tone."""
        n = self.rate // 50
        return [self.packet(tone(freq, self.rate, n, start=i * n, amp=amp)) for i in range(count)]

    def send(self, pkt: bytes, target: tuple[str, int]) -> None:
        self.sock.sendto(pkt, target)

    def collect(self) -> int:
        """Read what has arrived; returns how many datagrams."""
        got = 0
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return got
            self.received.append(data)
            got += 1

    def rtp(self) -> list[bytes]:
        """RTP packets received (RTCP excluded), in arrival order."""
        return [d for d in self.received if not 192 <= d[1] <= 223]

    def audio(self, skip: float = 0.0) -> np.ndarray[Any, Any]:
        """Decoded audio received in this phone's payload type, in sequence order, without the
        first ``skip`` seconds of packets."""
        pkts = [d for d in self.rtp() if d[1] & 0x7F == self.pt]
        if not pkts:
            return np.zeros(0, dtype=np.int16)
        base = struct.unpack_from("!H", pkts[0], 2)[0]
        pkts.sort(key=lambda d: (struct.unpack_from("!H", d, 2)[0] - base) & 0xFFFF)
        pkts = pkts[round(skip / PTIME):]
        if not pkts:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([self.codec.decode(d[12:]) for d in pkts])

    def close(self) -> None:
        self.sock.close()


Send = tuple[Phone, bytes, tuple[str, int]]


class FakeClock:
    """Steps an engine started with ``realtime=False``: ``now`` advances 20 ms per step."""

    def __init__(self, engine: MediaEngine, phones: Iterable[Phone] = ()) -> None:
        self.engine = engine
        self.phones = list(phones)
        self.now = engine.clock.now  # the first step runs at the engine's current time
        self.steps = 0
        self._schedule: dict[int, list[Send]] = {}
        self._expected_rx = 0

    def at(self, step: int, phone: Phone, pkt: bytes, target: tuple[str, int]) -> None:
        """Deliver ``pkt`` from ``phone`` to ``target`` just before step ``step`` runs."""
        self._schedule.setdefault(step, []).append((phone, pkt, target))

    def talk(self, phone: Phone, target: tuple[str, int], packets: list[bytes], *,
             first: int = 0, loss: float = 0.0, jitter: int = 0, seed: int = 1,
             wrap: Callable[[bytes], bytes] | None = None) -> list[int]:
        """Schedule ``packets`` one per step from step ``first``: each is lost with probability
        ``loss`` and otherwise late by 0..``jitter`` steps (so it may overtake or be overtaken).
        Returns the indices of the lost packets."""
        rnd = random.Random(seed)
        lost = []
        for i, pkt in enumerate(packets):
            if rnd.random() < loss:
                lost.append(i)
                continue
            self.at(first + i + rnd.randint(0, jitter), phone,
                    wrap(pkt) if wrap is not None else pkt, target)
        return lost

    def run(self, steps: int) -> None:
        """Run ``steps`` ticks: due packets in, one tick, what the engine sent collected."""
        for _ in range(steps):
            due = self._schedule.pop(self.steps, [])
            for phone, pkt, target in due:
                phone.send(pkt, target)
            self._expected_rx += len(due)
            self._poll_until_delivered()
            self.engine.clock.tick(self.now)
            for phone in self.phones:
                phone.collect()
            self.now += PTIME
            self.steps += 1

    def settle(self, quiet: float = 0.05) -> None:
        """Collect what is still in flight towards the phones (a short real wait, no ticks)."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        idle_since = time.monotonic()
        socks = [p.sock for p in self.phones]
        while socks and time.monotonic() < deadline:
            ready, _, _ = select.select(socks, [], [], quiet / 5)
            if any(p.collect() for p in self.phones if p.sock in ready):
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= quiet:
                return

    def _received(self) -> int:
        hub = self.engine.hub
        total = 0
        for s in self.engine.sessions:
            total += hub.counters(s.slot)["rx_packets"]
            if s.rtcp_slot is not None:
                total += hub.counters(s.rtcp_slot)["rx_packets"]
        return total

    def _poll_until_delivered(self) -> None:
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while True:
            self.engine.poll(self.now)
            if self._received() >= self._expected_rx or time.monotonic() > deadline:
                return
            select.select([self.engine.hub.fileno()], [], [], 0.01)


@asynccontextmanager
async def fake_engine(port_range: tuple[int, int] = (30000, 30999), **kwargs: Any
                      ) -> AsyncIterator[MediaEngine]:
    """A started engine whose clock and reader do not run on the loop (see :class:`FakeClock`)."""
    engine = MediaEngine("127.0.0.1", port_range, **kwargs)
    await engine.start(realtime=False)
    engine.clock.now = T0  # media time before the first tick: what sessions created now see
    try:
        yield engine
    finally:
        await engine.close()
