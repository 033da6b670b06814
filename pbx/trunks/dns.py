"""DNS names of trunk hosts: the resolver, the query loops, what is known about each name.

A trunk ``host`` that is a name (``sip.carrier.de``) is resolved A/AAAA (no SRV/NAPTR: the
port is configured): :class:`DnsWatcher` runs one query loop per named trunk in the task scope
of its owner, :class:`pbx.trunks.TrunkManager`, which applies the answers (:class:`DnsOwner`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pbx.trunks.config import normal_ip
from sipcore.aio.tasks import Child, TaskScope
from sipcore.transport import TransportName

#: Resolves a trunk's DNS name: ``(host, port, transport)`` → its addresses (A/AAAA), best
#: first; raises OSError (or returns nothing) when the name does not resolve.
Resolver = Callable[[str, int, TransportName], Awaitable[Sequence[str]]]


async def resolve_host(host: str, port: int, transport: TransportName) -> list[str]:
    """The default :data:`Resolver`: A/AAAA through the event loop's ``getaddrinfo`` (a thread,
    never the loop itself), in the system's order of preference (RFC 6724), duplicates
    dropped. No SRV/NAPTR (RFC 3263): the trunk's port is configured. OSError when the name
    does not resolve to any address."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=kind)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos
                                   if info[0] in (socket.AF_INET, socket.AF_INET6)))
    if not addresses:
        raise OSError(f"{host} has no IPv4/IPv6 address")
    return addresses


@dataclass(slots=True)
class HostQuery:
    """What we know about one named trunk's host: its query loop and the last outcome."""

    #: (host, port, transport) being resolved: a trunk whose host changes gets a new query.
    query: tuple[str, int, TransportName]
    #: The query loop (a child of the manager's task scope).
    loop: Child | None = None
    #: Wakes the query task: to resolve at once when ``urgent`` (a registration failed,
    #: :meth:`TrunkManager.resolve_now`), else to plan the next query anew (a refresh is due).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    urgent: bool = False
    #: When the last query started (loop time).
    queried_at: float | None = None
    #: The last error ("cannot resolve …"); None after a success.
    error: str | None = None
    failures: int = 0
    resolved_at: float | None = None
    #: When the next query runs (loop time).
    next_at: float | None = None


class DnsOwner(Protocol):
    """What a :class:`DnsWatcher` asks of the trunk manager it resolves for."""

    #: Re-resolve every ``resolve_interval`` seconds; after a failure in ``resolve_retry``
    #: seconds doubling up to ``resolve_interval``; a query taking longer than
    #: ``resolve_timeout`` has failed (read at each query: they may change while running).
    resolver: Resolver
    resolve_interval: float
    resolve_retry: float
    resolve_timeout: float

    def dns_resolved(self, key: str, dns: HostQuery, addresses: tuple[str, ...]) -> None:
        """A query of trunk ``key`` answered ``addresses`` (normalised, deduplicated);
        ``dns`` still holds the previous outcome."""

    def dns_failed(self, key: str, dns: HostQuery, error: str, retry_in: float) -> None:
        """A query of trunk ``key`` failed with ``error`` (new when it differs from
        ``dns.error``); the next one runs in ``retry_in`` seconds."""

    def refresh_deadline(self, key: str) -> float | None:
        """When trunk ``key``'s registration refreshes next (loop time; None: not bound)."""


class DnsWatcher:
    """Keeps resolving the DNS-named hosts of trunks: one query loop per trunk key.

    Each loop resolves, waits (``resolve_interval`` after a success, a growing retry delay
    after a failure; until just before the registration's next refresh when that comes sooner;
    not at all when woken urgently) and resolves again, until :meth:`unwatch`. Outcomes go to
    the owner (:class:`DnsOwner`); what a name resolved to before a failure stays in use.
    """

    def __init__(self, owner: DnsOwner, tasks: TaskScope, log: Any) -> None:
        self.owner = owner
        #: Where the query loops run (the owner's task scope).
        self.tasks = tasks
        self.log = log
        #: The query state of each watched trunk key (for ``/health``).
        self.queries: dict[str, HostQuery] = {}

    def get(self, key: str) -> HostQuery | None:
        """The query state of trunk ``key`` (None when it is not watched)."""
        return self.queries.get(key)

    def watch(self, key: str, query: tuple[str, int, TransportName]) -> None:
        """Resolve ``query`` for trunk ``key`` from now on (a new loop when it changed)."""
        current = self.queries.get(key)
        if current is not None and current.query == query:
            return
        self.unwatch(key)
        dns = HostQuery(query)
        self.queries[key] = dns
        dns.loop = self.tasks.spawn(self._loop(key, dns), f"trunk-dns {key}")

    def unwatch(self, key: str) -> None:
        """Stop resolving for trunk ``key``."""
        dns = self.queries.pop(key, None)
        if dns is not None and dns.loop is not None:
            dns.loop.cancel()
            dns.wake.set()  # a loop that missed the cancellation sees it is unwatched and ends

    def resolve_now(self, key: str | None = None) -> None:
        """Resolve trunk ``key``'s name (every watched name: None) now, not at the next time."""
        for name, dns in self.queries.items():
            if key is None or name == key:
                dns.urgent = True
                dns.wake.set()

    def replan(self, key: str) -> None:
        """Plan trunk ``key``'s next query anew (its registration was (re)bound)."""
        dns = self.queries.get(key)
        if dns is not None:
            dns.wake.set()

    def stop(self) -> None:
        """Stop every loop (they end once the task scope has delivered the cancellation; the
        owner's :meth:`TaskScope.close` waits for that, bounded)."""
        for key in list(self.queries):
            self.unwatch(key)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _loop(self, key: str, dns: HostQuery) -> None:
        host, port, transport = dns.query
        owner = self.owner
        while self.queries.get(key) is dns:  # until unwatched (or cancelled)
            dns.urgent = False
            dns.queried_at = self._now()
            try:
                async with asyncio.timeout(owner.resolve_timeout):
                    found = await owner.resolver(host, port, transport)
                addresses = tuple(dict.fromkeys(normal_ip(a) for a in found))
                if not addresses:
                    raise OSError("no address")
            except TimeoutError:
                delay = self._failed(key, dns, f"no answer in {owner.resolve_timeout:g} s")
            except Exception as exc:  # any resolver failure means "not resolved", retried
                delay = self._failed(key, dns, str(exc) or type(exc).__name__)
            else:
                delay = owner.resolve_interval
                try:
                    owner.dns_resolved(key, dns, addresses)
                except Exception:  # a bug must not end the trunk's queries for good
                    self.log.exception("trunk.dns.apply_failed", trunk=key)
                    delay = owner.resolve_retry
            await self._wait(key, dns, self._now() + delay)

    async def _wait(self, key: str, dns: HostQuery, due: float) -> None:
        """Sleep until ``due`` or until just before the registration's refresh, whichever
        comes first — the refresh then goes where the name points now; re-planned whenever
        the registration is (re)bound, cut short by :meth:`resolve_now`."""
        while not dns.urgent and self.queries.get(key) is dns:
            at = due
            deadline = self.owner.refresh_deadline(key)
            if deadline is not None:
                before = deadline - self.owner.resolve_timeout  # a query may take that long
                if dns.queried_at is None or before > dns.queried_at:
                    at = min(at, before)
            dns.next_at = at
            dns.wake.clear()
            try:
                async with asyncio.timeout(max(0.0, at - self._now())):
                    await dns.wake.wait()
            except TimeoutError:
                return

    def _failed(self, key: str, dns: HostQuery, reason: str) -> float:
        """Record a failed query (the owner logs a new error); returns the retry delay."""
        owner = self.owner
        dns.failures += 1
        delay = min(owner.resolve_retry * 2.0 ** min(dns.failures - 1, 16),
                    max(owner.resolve_interval, owner.resolve_retry))
        error = f"cannot resolve {dns.query[0]}: {reason}"
        owner.dns_failed(key, dns, error, delay)
        dns.error = error
        return delay

