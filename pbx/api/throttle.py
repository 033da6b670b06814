"""Token guessing over HTTP meets the same limits as password guessing over SIP (SECURITY.md):
a source with :data:`MAX_FAILURES` failed authentications within :data:`WINDOW` seconds is
refused for :data:`BAN` seconds (429 with ``Retry-After``, before any token is looked at).

Sans-IO: every call takes ``now``. Successful requests never count, so an office of
integrations behind one NAT address with valid tokens is never locked out; only failures do.
Memory is bounded (:data:`MAX_SOURCES` sources tracked; the oldest entries go first).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

__all__ = ["BAN", "MAX_FAILURES", "WINDOW", "FailureLimiter"]

MAX_FAILURES = 5
WINDOW = 60.0
BAN = 300.0
MAX_SOURCES = 10_000


@dataclass
class _Source:
    failures: collections.deque[float] = field(default_factory=collections.deque)
    banned_until: float = 0.0


class FailureLimiter:
    """Failed authentications per source address, and the bans they lead to."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW,
                 ban: float = BAN, max_sources: int = MAX_SOURCES) -> None:
        self.max_failures = max_failures
        self.window = window
        self.ban = ban
        self.max_sources = max_sources
        self._sources: collections.OrderedDict[str, _Source] = collections.OrderedDict()

    def retry_after(self, source: str, now: float) -> float:
        """Seconds ``source`` is still banned for (0: not banned)."""
        entry = self._sources.get(source)
        if entry is None or entry.banned_until <= now:
            return 0.0
        return entry.banned_until - now

    def failed(self, source: str, now: float) -> bool:
        """Count a failure of ``source``; True when it is banned from now on."""
        entry = self._sources.get(source)
        if entry is None:
            entry = self._sources[source] = _Source()
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        while entry.failures and entry.failures[0] <= now - self.window:
            entry.failures.popleft()
        entry.failures.append(now)
        if len(entry.failures) >= self.max_failures:
            entry.failures.clear()
            entry.banned_until = now + self.ban
            return True
        return False
