"""Conference mixer benchmark: participant-frames per second, Cython kernel vs numpy reference.

One participant-frame = decode one 20 ms G.711 µ-law frame (160 bytes), mix it minus the
listener's own signal, encode the listener's 160 samples — the whole per-tick work for one
participant of a conference. Layouts of ~1,000 participants in conferences of N = 3, 10, 100,
1,000, mixed either in ONE kernel call per tick (how the Mixer runs) or one call per conference
(to expose the fixed cost of a call). Usage: ``python3 -m bench.mixer [--json] [--quick]``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from media import g711, mixer

SIZES = (3, 10, 100, 1000)
TOTAL_ROWS = 1000


def _layout(module: Any, size: int, total: int) -> tuple[Any, np.ndarray, int]:
    """~``total`` µ-law participants in conferences of ``size``; returns (kernel, flags, rows)."""
    conferences = max(1, total // size)
    rows = conferences * size
    rng = np.random.default_rng(size)
    speech = (rng.standard_normal((rows, 160)) * 3000).clip(-32768, 32767).astype(np.int16)
    payload_in = np.empty((rows, 160), np.uint8)
    g711.ulaw_encode_into(speech.reshape(-1), payload_in.reshape(-1))
    arrays = (
        np.zeros((rows, 160), np.int16),
        np.zeros((rows, 160), np.int16),
        payload_in,
        np.zeros((rows, 160), np.uint8),
        np.repeat(np.arange(conferences, dtype=np.int32), size),
        np.full(rows, mixer.TALK | mixer.LISTEN | mixer.FRESH, np.uint8),
        np.full(rows, mixer.Codec.PCMU, np.uint8),
        np.full(rows, mixer.UNITY_GAIN, np.int32),
        np.full(rows, mixer.UNITY_GAIN, np.int32),
    )
    return module.MixKernel(*arrays, conferences), arrays[5], rows


def _rate(tick: Callable[[], None], frames_per_tick: int, budget: float) -> float:
    """Best participant-frames/s over three timed runs of ~``budget`` seconds each."""
    tick()  # warm-up (builds lazily made tables, faults pages in)
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        deadline = start + budget
        while True:
            tick()
            n += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n * frames_per_tick / (now - start))
    return best


def _ticks(kernel: Any, flags: np.ndarray, rows: int, size: int) -> dict[str, Callable[[], None]]:
    fresh = np.uint8(mixer.FRESH)
    starts = list(range(0, rows, size))
    mix = kernel.mix

    def batched() -> None:
        flags.__ior__(fresh)  # every frame arrived this tick
        mix(0, rows)

    def per_conference() -> None:
        flags.__ior__(fresh)
        for s in starts:
            mix(s, s + size)

    return {"one_call": batched, "per_conference": per_conference}


def _call_overhead(module: Any) -> float:
    kernel, _, _ = _layout(module, 3, 3)
    n = 200_000
    start = time.perf_counter()
    for _ in range(n):
        kernel.mix(0, 0)
    return (time.perf_counter() - start) / n


def main(argv: list[str]) -> int:
    """Run the benchmark; prints lines, then one JSON line (only that with ``--json``)."""
    as_json = "--json" in argv
    budget = 0.1 if "--quick" in argv else 0.4
    say: Callable[[str], None] = (lambda _s: None) if as_json else print
    impls = {"cython": importlib.import_module("media._mixer"), "numpy": mixer}
    results: dict[str, Any] = {}
    say(f"mixer: participant-frames/s (µ-law decode + mix-minus + encode, 160 samples), "
        f"~{TOTAL_ROWS} participants per tick")
    for size in SIZES:
        for mode in ("one_call", "per_conference"):
            if mode == "per_conference" and size >= TOTAL_ROWS:
                continue
            row: dict[str, float] = {}
            for name, module in impls.items():
                kernel, flags, rows = _layout(module, size, TOTAL_ROWS)
                tick = _ticks(kernel, flags, rows, size)[mode]
                b = budget if not (name == "numpy" and mode == "per_conference") else budget / 2
                row[name] = _rate(tick, rows, b)
            row["ratio"] = row["cython"] / row["numpy"]
            calls = 1 if mode == "one_call" else max(1, TOTAL_ROWS // size)
            row["us_per_call"] = 1e6 * (max(1, TOTAL_ROWS // size) * size) / row["cython"] / calls
            results[f"N={size} {mode}"] = row
            say(f"  N={size:>4} {mode:<14} cython {row['cython'] / 1e6:6.2f} M/s   "
                f"numpy {row['numpy'] / 1e6:6.3f} M/s   x{row['ratio']:6.1f}   "
                f"{row['us_per_call']:8.2f} µs/call")
    overhead = {name: _call_overhead(m) * 1e6 for name, m in impls.items()}
    say(f"  fixed cost of one kernel call (empty range): cython {overhead['cython']:.3f} µs, "
        f"numpy {overhead['numpy']:.1f} µs")
    print(json.dumps({"bench": "mixer", "unit": "participant-frames/s", "cases": results,
                      "call_overhead_us": overhead}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
