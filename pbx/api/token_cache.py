"""Recently verified API tokens, so that a busy integration's requests are authenticated on
the event loop instead of a worker thread's database read each (issue 13's API benchmark: the
read was one of two thread hops of every write).

An entry is trusted for :data:`TTL` seconds after the store confirmed it; expiry is checked on
every use. A token revoked through the API leaves the cache at once (:meth:`TokenCache.forget`);
one revoked by the CLI — another process — stops working within :data:`TTL`. Only tokens the
store knew are kept, by their hash: an unknown token always goes to the store (and counts as
a failed authentication there).
"""

from __future__ import annotations

from pbx.store import ApiToken
from pbx.store.tokens import hash_token

__all__ = ["MAX_ENTRIES", "TTL", "TokenCache"]

#: How long a confirmed token is trusted without asking the store again.
TTL = 5.0
#: Tokens kept at most (the oldest confirmed is dropped first).
MAX_ENTRIES = 10_000


class TokenCache:
    """token hash → (record, when the store confirmed it)."""

    def __init__(self, ttl: float = TTL, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[ApiToken, float]] = {}

    def get(self, token: str, now: float) -> ApiToken | None:
        """The record of ``token`` if the store confirmed it less than ``ttl`` ago."""
        found = self._entries.get(hash_token(token))
        if found is None or now - found[1] >= self.ttl or now < found[1]:
            return None
        return found[0]

    def put(self, token: str, record: ApiToken, now: float) -> None:
        """Remember ``record`` as confirmed at ``now``."""
        key = hash_token(token)
        self._entries.pop(key, None)
        self._entries[key] = (record, now)
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]

    def forget(self, token_id: int) -> None:
        """Drop the token with this id (it was revoked)."""
        for key in [k for k, (r, _) in self._entries.items() if r.id == token_id]:
            del self._entries[key]

    def clear(self) -> None:
        """Drop every entry (a user or tenant was removed, and their tokens with them)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
