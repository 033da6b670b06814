"""Jitter-buffer benchmark: packets per second through ``put`` + ``get``, against a plain heap.

Both builds of the one jitter-buffer source are measured in the same run: the Cython extension
``media._jitter`` (what ``media.jitter`` uses) and the same file interpreted, ``media._jitter_py``
(the reference that ``ASYNCPBX_NO_EXTENSIONS=1`` selects).

The trace is one 8 kHz stream with 20 ms packets, 2 % loss, 1 % duplicates and 60 ms of uniform
jitter (so packets arrive reordered), pre-parsed so only the buffer is measured. Each packet is
``put`` at its arrival time and ``get`` is called once per 20 ms tick, as the media clock does.
The baseline in the same run pushes the same packets into a dict + ``heapq`` keyed by sequence
number and pops one per tick: the floor of any buffer that orders packets in Python. The ratio
``baseline_pps / jitter_pps`` is the figure to compare across machines; ``compiled / reference``
is what Cython buys. It also times RTP
parsing (``RtpPacket.parse`` and the ``parse_header`` fast path) against a bare
``struct.unpack_from`` of the fixed header.

    python3 -m bench.jitter [--json] [--quick]
"""

from __future__ import annotations

import heapq
import json
import random
import struct
import time
from collections.abc import Callable
from types import ModuleType

import media._jitter_py as reference
from media import jitter
from media.rtp import RtpPacket, parse_header

TICK = 0.020


def _trace(n: int, seed: int = 1) -> list[tuple[float, RtpPacket]]:
    rng = random.Random(seed)
    events: list[tuple[float, RtpPacket]] = []
    payload = bytes(160)
    for i in range(n):
        if rng.random() < 0.02:
            continue
        packet = RtpPacket(0, i & 0xFFFF, (i * 160) & 0xFFFFFFFF, 0x1234, payload)
        t = i * TICK + rng.uniform(0, 0.06)
        events.append((t, packet))
        if rng.random() < 0.01:
            events.append((t + 0.005, packet))
    events.sort(key=lambda e: e[0])
    return events


def _run_jitter(impl: ModuleType, events: list[tuple[float, RtpPacket]], ticks: int) -> int:
    jb = impl.JitterBuffer(8000)
    put, get = jb.put, jb.get
    k = 0
    n = len(events)
    now = 0.003
    for _ in range(ticks):
        while k < n and events[k][0] <= now:
            t, p = events[k]
            put(p, t)
            k += 1
        get(now)
        now += TICK
    emitted: int = jb.stats.emitted
    return emitted


def _run_heap(events: list[tuple[float, RtpPacket]], ticks: int) -> int:
    heap: list[int] = []
    packets: dict[int, RtpPacket] = {}
    k = 0
    n = len(events)
    now = 0.003
    emitted = 0
    for _ in range(ticks):
        while k < n and events[k][0] <= now:
            p = events[k][1]
            seq = p.sequence_number
            if seq not in packets:
                packets[seq] = p
                heapq.heappush(heap, seq)
            k += 1
        if len(heap) > 3:
            del packets[heapq.heappop(heap)]
            emitted += 1
        now += TICK
    return emitted


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str]) -> int:
    """Run the benchmark; prints lines, then one JSON line (only that with ``--json``)."""
    as_json = "--json" in argv
    quick = "--quick" in argv
    say: Callable[[str], None] = (lambda _s: None) if as_json else print
    n = 5_000 if quick else 50_000
    repeat = 2 if quick else 5
    events = _trace(n)
    ticks = n + 50
    packets = len(events)

    kernel: ModuleType = jitter._kernel
    emitted = _run_jitter(kernel, events, ticks)
    if _run_jitter(reference, events, ticks) != emitted:
        raise AssertionError("the two builds emitted different packet counts")
    t_jb = _best(lambda: _run_jitter(kernel, events, ticks), repeat)
    t_ref = _best(lambda: _run_jitter(reference, events, ticks), repeat)
    t_heap = _best(lambda: _run_heap(events, ticks), repeat)
    jb_pps = packets / t_jb
    ref_pps = packets / t_ref
    heap_pps = packets / t_heap
    say(f"jitter: {packets} packets ({n} sent, 2 % loss, 1 % dup, 60 ms jitter), {ticks} ticks")
    say(f"  JitterBuffer ({kernel.__name__}) put+get {jb_pps:12,.0f} packets/s  ({emitted} emitted)")
    say(f"  reference (media._jitter_py) put+get  {ref_pps:12,.0f} packets/s")
    say(f"  dict+heapq baseline                   {heap_pps:12,.0f} packets/s")
    say(f"  compiled / reference                  {jb_pps / ref_pps:12.2f} x")
    say(f"  slowdown vs baseline                  {heap_pps / jb_pps:12.2f} x")

    wire = RtpPacket(0, 1, 160, 0x1234, bytes(160)).serialize()
    fixed = struct.Struct("!BBHII")
    loops = 20_000 if quick else 200_000
    rng = range(loops)

    def parse_full() -> None:
        parse = RtpPacket.parse
        for _ in rng:
            parse(wire)

    def parse_fast() -> None:
        for _ in rng:
            parse_header(wire)

    def unpack() -> None:
        u = fixed.unpack_from
        for _ in rng:
            u(wire)

    ns_full = _best(parse_full, repeat) / loops * 1e9
    ns_fast = _best(parse_fast, repeat) / loops * 1e9
    ns_unpack = _best(unpack, repeat) / loops * 1e9
    say(f"rtp parse: RtpPacket.parse {ns_full:.0f} ns, parse_header {ns_fast:.0f} ns, "
        f"bare struct.unpack_from {ns_unpack:.0f} ns per packet")

    figures: dict[str, object] = {
        "jitter_pps": round(jb_pps),
        "jitter_kernel": kernel.__name__,
        "reference_pps": round(ref_pps),
        "ratio_compiled_over_reference": round(jb_pps / ref_pps, 2),
        "baseline_heap_pps": round(heap_pps),
        "ratio_baseline_over_jitter": round(heap_pps / jb_pps, 3),
        "rtp_parse_ns": round(ns_full, 1),
        "rtp_parse_header_ns": round(ns_fast, 1),
        "struct_unpack_ns": round(ns_unpack, 1),
        "ratio_parse_over_unpack": round(ns_full / ns_unpack, 2),
    }
    print(json.dumps({"bench": "jitter", **figures}))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
