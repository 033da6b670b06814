"""Garbage-collector pauses, measured and logged when they are long enough to hurt calls.

A collector pass stops the event loop that carries every call: a pass of 100 ms lets the
SIP receive buffers fill and holds every RTP packet for that long (bench/results/overload.md
traced such passes as one cause of late 503s and lost calls under overload). The server
therefore times every pass (``gc.callbacks``: a start and a stop per pass, two clock reads)
and logs one ``gc.pause`` warning for each that took ``threshold`` seconds or more, with its
generation and what it freed. Short passes are only counted: no per-pass logging.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from pbx.logsetup import get_logger

__all__ = ["GcWatch"]

log = get_logger("pbx.gc")


class GcWatch:
    """Times collector passes; logs the long ones (install with :meth:`start`)."""

    def __init__(self, threshold: float = 0.05,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.threshold = threshold
        self.clock = clock
        #: passes and their total seconds per generation, and the longest pass (seconds)
        self.passes = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = 0.0
        self._started: float | None = None

    def start(self) -> None:
        """Listen to the collector (idempotent)."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        """Stop listening."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self.clock()
            return
        if self._started is None:  # installed during a pass
            return
        took, self._started = self.clock() - self._started, None
        generation = int(info.get("generation", 0))
        if 0 <= generation < 3:
            self.passes[generation] += 1
            self.seconds[generation] += took
        self.longest = max(self.longest, took)
        if took >= self.threshold:
            log.warning("gc.pause", generation=generation, ms=round(took * 1000, 1),
                        collected=info.get("collected"),
                        uncollectable=info.get("uncollectable"))
