"""When to retry a delivery and when to give up on an endpoint: pure functions of the
attempt count, the endpoint's failure record and ``now`` (no I/O, no clock)."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff", "disable_reason"]


def backoff(attempts: int, initial: float, maximum: float,
            rand: Callable[[], float] = random.random) -> float:
    """Seconds before the next try after ``attempts`` failed ones: ``initial`` doubling per
    attempt up to ``maximum``, with jitter — between half of it and all of it (``rand`` in
    [0, 1)), so endpoints that failed together do not all retry in the same instant."""
    base = min(maximum, initial * 2.0 ** max(0, attempts - 1))
    return base / 2 + base / 2 * rand()


def disable_reason(consecutive_failures: int, failing_since: float | None, now: float, *,
                   max_failures: int, disable_after: float) -> str | None:
    """Why an endpoint is disabled after a failed attempt (``consecutive_failures`` counts
    it, ``failing_since`` is the first failure of the run), or None while it may go on."""
    if consecutive_failures >= max_failures:
        return f"{consecutive_failures} deliveries in a row failed"
    if failing_since is not None and now - failing_since >= disable_after:
        hours = (now - failing_since) / 3600
        return f"every delivery failed for {hours:.1f} h"
    return None
