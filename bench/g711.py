"""G.711 benchmark: MB/s of encode and decode, Cython kernel vs Python reference vs audioop.

Encode MB/s counts input PCM bytes (2 per sample); decode MB/s counts output PCM bytes, so the two
are comparable with audioop's figures. Measured on 20 ms frames (160 samples, the RTP hot path)
and on 1 s buffers. Usage: ``python3 -m bench.g711 [--json] [--quick]``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from media import g711


def _audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


def _mbps(fn: Callable[[], Any], nbytes: int, budget: float) -> float:
    fn()
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        while True:
            fn()
            n += 1
            now = time.perf_counter()
            if now - start >= budget:
                break
        best = max(best, n * nbytes / (now - start) / 1e6)
    return best


def main(argv: list[str]) -> int:
    """Run the benchmark; prints lines, then one JSON line (only that with ``--json``)."""
    as_json = "--json" in argv
    budget = 0.05 if "--quick" in argv else 0.25
    say: Callable[[str], None] = (lambda _s: None) if as_json else print
    ext = importlib.import_module("media._g711")
    audioop = _audioop()
    results: dict[str, dict[str, float]] = {}
    rng = np.random.default_rng(1)
    say("g711: MB/s of 16-bit PCM (encode input / decode output)")
    for label, samples in (("frame160", 160), ("buffer8000", 8000)):
        pcm = (rng.standard_normal(samples) * 4000).clip(-32768, 32767).astype(np.int16)
        raw = pcm.tobytes()
        nbytes = 2 * samples
        for law in ("ulaw", "alaw"):
            payload = bytes(getattr(g711, f"{law}_encode")(pcm))
            enc_out = bytearray(samples)
            dec_out = np.empty(samples, np.int16)
            enc_ext = getattr(ext, f"lin2{law}_into")
            dec_ext = getattr(ext, f"{law}2lin_into")
            enc_ref = getattr(g711, f"lin2{law}_into")
            dec_ref = getattr(g711, f"{law}2lin_into")
            cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
                "cython": (partial(enc_ext, pcm, enc_out), partial(dec_ext, payload, dec_out)),
                "python": (partial(enc_ref, pcm, enc_out), partial(dec_ref, payload, dec_out)),
            }
            if audioop is not None:
                cases["audioop"] = (
                    partial(getattr(audioop, f"lin2{law}"), raw, 2),
                    partial(getattr(audioop, f"{law}2lin"), payload, 2),
                )
            for direction, idx in (("encode", 0), ("decode", 1)):
                row: dict[str, float] = {}
                for name, fns in cases.items():
                    b = budget / 5 if name == "python" else budget
                    row[name] = _mbps(fns[idx], nbytes, b)
                if "audioop" in row:
                    row["x_audioop"] = row["cython"] / row["audioop"]
                row["x_python"] = row["cython"] / row["python"]
                results[f"{law} {direction} {label}"] = row
                vs = f"x{row['x_audioop']:5.1f} vs audioop" if "audioop" in row else "no audioop"
                say(f"  {law} {direction} {label:<10} cython {row['cython']:8.1f}  "
                    f"python {row['python']:6.2f}  audioop {row.get('audioop', 0.0):7.1f} MB/s  "
                    f"{vs}")
    print(json.dumps({"bench": "g711", "unit": "MB/s", "cases": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
