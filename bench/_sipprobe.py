"""A SIP answer-time prober: OPTIONS at a fixed low rate, round trips from kernel timestamps.

It runs in its own process (on the load core, beside the load generator) and sends one
out-of-dialog OPTIONS every ``1 / rate`` seconds to the server, which answers it from its event
loop — the loop that carries the calls, so whatever delays that loop (an API request being
handled) delays the answer. The send time is taken just before ``sendto``; the receive time is
the kernel's (``SO_TIMESTAMPNS``), so the prober's own scheduling delay on a busy core is not in
the figure. As root it also runs ``SCHED_FIFO`` (best effort), so it is never queued behind the
load generator.

The parent talks to it through a pipe: ``("mark",)`` answers with the round trips (seconds) of
the replies received since the previous mark and the count of requests lost (no reply within
2 s), ``("quit",)`` ends it.
"""

from __future__ import annotations

import os
import re
import select
import socket
import struct
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

#: Linux's value when the socket module does not name it (SO_TIMESTAMPNS_OLD).
SO_TIMESTAMPNS = int(getattr(socket, "SO_TIMESTAMPNS", 35))
_CSEQ = re.compile(rb"\r\nCSeq:\s*(\d+)\s+OPTIONS", re.IGNORECASE)
LOST_AFTER = 2.0


def options(target: tuple[str, int], local: tuple[str, int], seq: int) -> bytes:
    """Out-of-dialog OPTIONS number ``seq`` (its CSeq) from ``local`` to ``target``."""
    host, port = target
    lhost, lport = local
    return (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK-probe-{seq}-{os.getpid()};rport\r\n"
            f"From: <sip:probe@{lhost}>;tag=probe{os.getpid()}\r\n"
            f"To: <sip:{host}>\r\n"
            f"Call-ID: probe-{seq}-{os.getpid()}@{lhost}\r\n"
            f"CSeq: {seq} OPTIONS\r\n"
            "Max-Forwards: 70\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n").encode()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def _realtime_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (OSError, AttributeError):  # not root: the kernel timestamps still hold
        pass


def run(conn: Connection, target: tuple[str, int], rate: float, cpu: int | None) -> None:
    """The prober's process body (see the module doc)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    _realtime_priority()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("127.0.0.1", 0))
    local = sock.getsockname()
    conn.send(("ready", local[1]))
    interval = 1.0 / rate
    sent: dict[int, int] = {}  # seq -> send time (ns, CLOCK_REALTIME like the kernel stamps)
    rtts: list[float] = []
    lost = 0
    seq = 0
    next_send = time.monotonic()
    while True:
        wait = max(0.0, next_send - time.monotonic())
        waitables: list[Any] = [sock, conn]
        ready, _, _ = select.select(waitables, [], [], wait)
        if sock in ready:
            data, anc, _, _ = sock.recvmsg(65535, socket.CMSG_SPACE(16))
            stamp = time.time_ns()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("qq", value[:16])
                    stamp = sec * 1_000_000_000 + nsec
            m = _CSEQ.search(data)
            if m is not None and data.startswith(b"SIP/2.0 200"):
                t0 = sent.pop(int(m.group(1)), None)
                if t0 is not None:
                    rtts.append((stamp - t0) / 1e9)
        if conn in ready:
            msg: Any = conn.recv()
            if msg[0] == "quit":
                break
            if msg[0] == "mark":
                cutoff = time.time_ns() - int(LOST_AFTER * 1e9)
                old = [s for s, t in sent.items() if t < cutoff]
                for s in old:
                    del sent[s]
                lost += len(old)
                conn.send((rtts, lost))
                rtts, lost = [], 0
        if time.monotonic() >= next_send:
            seq += 1
            packet = options(target, local, seq)
            sent[seq] = time.time_ns()
            sock.sendto(packet, target)
            next_send += interval
            if next_send < time.monotonic() - 1.0:  # fell far behind (suspended): no burst
                next_send = time.monotonic()
    sock.close()
