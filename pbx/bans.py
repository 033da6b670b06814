"""Per-source bans that stop scanners and password guessers but never an office (sans-IO).

Theory of operation
-------------------
SECURITY.md and issue 12 §1: a source address that fails authentication ``failures`` times in
``failure_window`` seconds (any mix of users), or that sends more than ``requests`` messages in
``request_window`` seconds *without ever having authenticated*, is banned for ``ban_time``
seconds: the transport layer drops its datagrams unanswered and refuses its connections
(:meth:`BanTable.admit`). A source that has authenticated once is never rate-limited, so an
office of 50 phones behind one NAT address that register, re-register and call normally is
never limited — only its wrong passwords count. Trusted peers (trunks, a load balancer in
front; ``exempt``) are never counted nor banned.

Guessing spread over many addresses is slowed per account: after ``account_failures`` failures
for one account in ``failure_window`` seconds, at most one verification per
``account_interval`` seconds is let through for that account (:meth:`BanTable.may_verify`);
the others are answered with a fresh challenge unverified. The account is never locked: its
own phone still gets in on a later try.

Nothing here reads a clock or does I/O: every call takes ``now`` (seconds, one clock), and a new
ban is reported to ``on_ban`` (the server logs it as one ``security.ban`` line for fail2ban).
Memory is bounded: at most ``max_sources`` sources and accounts are tracked, the oldest
forgotten first; an entry whose window has passed is dropped when met.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["Ban", "BanPolicy", "BanTable", "TrustedNetworks"]

_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class BanPolicy:
    """The numbers of a :class:`BanTable` (the ``[security]`` config table)."""

    #: Authentication failures (wrong password or unknown user) per source ...
    failures: int = 5
    #: ... within this many seconds ban the source.
    failure_window: float = 60.0
    #: Messages from a source that never authenticated, more than this ...
    requests: int = 16
    #: ... within this many seconds ban it.
    request_window: float = 2.0
    #: How long a ban lasts (seconds).
    ban_time: float = 300.0
    #: Failures for one account (from any sources) within ``failure_window`` before its
    #: verifications are slowed to one per ``account_interval`` seconds.
    account_failures: int = 20
    account_interval: float = 2.0
    #: Most sources (and, separately, accounts) tracked at once.
    max_sources: int = 100_000
    #: How long a source counts as "has authenticated" after its last success (seconds).
    authenticated_ttl: float = 86_400.0


@dataclass(frozen=True, slots=True)
class Ban:
    """One ban: ``source`` is dropped from ``since`` until ``until`` (seconds, the table's
    clock); ``reason`` is ``"auth failures"`` or ``"request flood"``; ``count`` the failures or
    requests that triggered it."""

    source: str
    reason: str
    since: float
    until: float
    count: int


@dataclass(slots=True)
class _Window:
    """A fixed window counter: ``count`` events since ``start``."""

    start: float
    count: int = 0


@dataclass(slots=True)
class _Account:
    failures: deque[float] = field(default_factory=deque)
    last_verify: float = float("-inf")


class TrustedNetworks:
    """Addresses and networks (``"192.0.2.10"``, ``"10.0.0.0/8"``, ``"2001:db8::/32"``) whose
    hosts are trusted; ``in`` tests a host given as text."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks)

    def __contains__(self, host: object) -> bool:
        if not self.networks or not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in net for net in self.networks)


class BanTable:
    """Counts failures and requests per source, bans, and answers whether a source is let in.

    ``exempt(host)`` tells a trusted peer (never counted, never banned); ``on_ban(ban)`` is
    called once per new ban.
    """

    def __init__(
        self,
        policy: BanPolicy | None = None,
        *,
        exempt: Callable[[str], bool] | None = None,
        on_ban: Callable[[Ban], None] | None = None,
    ) -> None:
        self.policy = policy or BanPolicy()
        self.exempt = exempt or (lambda host: False)
        self.on_ban = on_ban
        self._bans: dict[str, Ban] = {}
        self._failures: dict[str, deque[float]] = {}
        self._requests: dict[str, _Window] = {}
        #: source -> time of its last successful authentication
        self._authenticated: dict[str, float] = {}
        self._accounts: dict[str, _Account] = {}
        #: Counters for statistics: messages and connections dropped, bans made and lifted.
        self.stats: dict[str, int] = {"dropped": 0, "bans": 0, "lifted": 0, "slowed": 0}

    # -- the transport's question -------------------------------------------------------------

    def admit(self, source: str, now: float) -> bool:
        """Whether a message (or connection) from ``source`` may be handled; counts it toward
        the flood limit when the source never authenticated. False: drop it unanswered."""
        ban = self._bans.get(source)
        if ban is not None:
            if now < ban.until:
                self.stats["dropped"] += 1
                return False
            del self._bans[source]
        if self._is_authenticated(source, now) or self.exempt(source):
            return True
        p = self.policy
        window = self._requests.get(source)
        if window is None or now - window.start >= p.request_window:
            window = _Window(now)
            self._remember(self._requests, source, window)
        window.count += 1
        if window.count > p.requests:
            del self._requests[source]
            self._ban(source, "request flood", window.count, now)
            self.stats["dropped"] += 1
            return False
        return True

    # -- what authentication reports ----------------------------------------------------------

    def failed(self, source: str, account: str | None, now: float) -> Ban | None:
        """A wrong password or unknown user from ``source`` (claiming ``account``); the new
        ban when this failure completes one."""
        p = self.policy
        if account:
            entry = self._accounts.get(account)
            if entry is None:
                entry = _Account()
                self._remember(self._accounts, account, entry)
            _push(entry.failures, now, p.failure_window)
        if self.exempt(source):
            return None
        times = self._failures.get(source)
        if times is None:
            times = deque()
            self._remember(self._failures, source, times)
        _push(times, now, p.failure_window)
        if len(times) < p.failures:
            return None
        del self._failures[source]
        return self._ban(source, "auth failures", len(times), now)

    def succeeded(self, source: str, now: float) -> None:
        """``source`` authenticated: from now on it is never rate-limited (its failures still
        count)."""
        self._authenticated.pop(source, None)
        self._remember(self._authenticated, source, now)
        self._requests.pop(source, None)

    def may_verify(self, account: str | None, now: float) -> bool:
        """Whether credentials for ``account`` may be verified now (False while guessing at
        that account is being slowed: answer with a fresh challenge, unverified)."""
        if not account:
            return True
        entry = self._accounts.get(account)
        if entry is None:
            return True
        p = self.policy
        _push(entry.failures, None, p.failure_window, now)
        if len(entry.failures) < p.account_failures:
            return True
        if now - entry.last_verify < p.account_interval:
            self.stats["slowed"] += 1
            return False
        entry.last_verify = now
        return True

    # -- administration -----------------------------------------------------------------------

    def bans(self, now: float) -> list[Ban]:
        """The bans in force at ``now``, oldest first (expired ones are forgotten)."""
        for source in [s for s, b in self._bans.items() if now >= b.until]:
            del self._bans[source]
        return sorted(self._bans.values(), key=lambda b: b.since)

    def lift(self, source: str) -> bool:
        """End ``source``'s ban (and forget its counts); False when it was not banned."""
        self._failures.pop(source, None)
        self._requests.pop(source, None)
        if self._bans.pop(source, None) is None:
            return False
        self.stats["lifted"] += 1
        return True

    def banned(self, source: str, now: float) -> bool:
        """Whether ``source`` is banned at ``now`` (without counting anything)."""
        ban = self._bans.get(source)
        return ban is not None and now < ban.until

    def tracked(self) -> int:
        """Entries held (sources with counts or bans, authenticated sources, accounts)."""
        return (len(self._bans) + len(self._failures) + len(self._requests)
                + len(self._authenticated) + len(self._accounts))

    # -- internals ----------------------------------------------------------------------------

    def _is_authenticated(self, source: str, now: float) -> bool:
        when = self._authenticated.get(source)
        if when is None:
            return False
        if now - when > self.policy.authenticated_ttl:
            del self._authenticated[source]
            return False
        return True

    def _ban(self, source: str, reason: str, count: int, now: float) -> Ban:
        ban = Ban(source, reason, now, now + self.policy.ban_time, count)
        self._bans[source] = ban
        while len(self._bans) > self.policy.max_sources:
            del self._bans[next(iter(self._bans))]
        self.stats["bans"] += 1
        if self.on_ban is not None:
            self.on_ban(ban)
        return ban

    def _remember(self, table: dict[str, _V], key: str, value: _V) -> None:
        """Insert ``key`` (newest last), forgetting the oldest entries beyond the bound."""
        table[key] = value
        while len(table) > self.policy.max_sources:
            del table[next(iter(table))]


def _push(times: deque[float], now: float | None, window: float, clock: float | None = None
          ) -> None:
    """Drop the times older than ``window`` before ``now`` (or ``clock``); add ``now`` unless
    it is None."""
    current = now if now is not None else clock
    assert current is not None
    while times and current - times[0] >= window:
        times.popleft()
    if now is not None:
        times.append(now)
