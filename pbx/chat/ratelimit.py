"""How many chat messages a user may send: a token bucket per sender (sans-IO).

MESSAGE is authenticated (only users send), but an authenticated phone or script can still
flood a colleague's devices and the store. Each sender has ``burst`` messages in hand and
gets ``rate`` more per second; a message beyond that is refused (SIP: 503 with Retry-After,
RFC 3261 §21.5.4; API: 429) without being stored or delivered. The bookkeeping is bounded:
senders whose bucket is full again are forgotten when the table grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SenderLimit"]

#: Entries kept before full buckets are swept out.
_SWEEP_AT = 4096


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    #: The sender is over the limit now (for one log line per episode, not one per message).
    limited: bool = False


class SenderLimit:
    """``take(sender, now)`` answers whether one more message of ``sender`` goes through."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[int, _Bucket] = {}

    def take(self, sender: int, now: float) -> bool:
        """One message of ``sender`` at ``now`` (seconds): True when it is within the limit."""
        bucket = self._buckets.get(sender)
        if bucket is None:
            if len(self._buckets) >= _SWEEP_AT:
                self._sweep(now)
            bucket = self._buckets[sender] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(float(self.burst),
                                bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.limited = False
            return True
        return False

    def newly_limited(self, sender: int) -> bool:
        """True the first time after :meth:`take` refused ``sender`` in an episode (log it)."""
        bucket = self._buckets.get(sender)
        if bucket is None or bucket.limited:
            return False
        bucket.limited = True
        return True

    def retry_after(self, sender: int) -> int:
        """Whole seconds until ``sender`` has a message in hand again (at least 1)."""
        bucket = self._buckets.get(sender)
        missing = 1.0 - (bucket.tokens if bucket is not None else 1.0)
        return max(1, math.ceil(missing / self.rate))

    def _sweep(self, now: float) -> None:
        full = [s for s, b in self._buckets.items()
                if b.tokens + (now - b.at) * self.rate >= self.burst]
        for sender in full:
            del self._buckets[sender]
