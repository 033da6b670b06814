"""AsyncEndpoint: the asyncio pump around the sans-IO :class:`sipcore.endpoint.Endpoint`.

Theory of operation (the aioquic pattern): every input — a message from a transport, a transport
failure, a timer expiry, a command from the application — is handed to the sans-IO endpoint with
``now = loop.time()``; then :meth:`AsyncEndpoint.pump` drains ``data_to_send()`` to the transports,
hands ``events()`` to the application and re-arms the one timer handle at ``get_timer()``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from sipcore.address import format_host
from sipcore.aio.listen import ListenSpecLike, as_listen_spec
from sipcore.aio.log import get_logger
from sipcore.aio.transport import TransportLayer, TransportLimits
from sipcore.transport import Peer

log = get_logger("sip.endpoint")

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


class SansIOEndpoint(Protocol[E_co]):
    """The contract of :class:`sipcore.endpoint.Endpoint` that the pump relies on."""

    def receive_datagram(self, data: bytes, peer: Peer, now: float) -> None: ...
    def send_request(self, request: Any, peer: Peer, now: float, *,
                     owner: object = None) -> str: ...
    def set_owner(self, transaction_id: str, owner: object) -> bool: ...
    def send_response(
        self, response: Any, now: float, *, transaction_id: str | None = None
    ) -> bool: ...
    def cancel(self, transaction_id: str, now: float, reason: str | None = None) -> None: ...
    def statistics(self) -> dict[str, int]: ...
    def transport_failed(self, peer: Peer, now: float) -> None: ...
    def data_to_send(self) -> list[tuple[bytes, Peer]]: ...
    def events(self) -> Sequence[E_co]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def flush_trying(self, now: float) -> bool: ...


#: Builds the sans-IO endpoint once the listeners are bound (their ports are known then).
EndpointFactory = Callable[[list[tuple[str, str, int]]], SansIOEndpoint[E]]


def sent_by(
    listening: Iterable[tuple[str, str, int]], advertise: str | None = None
) -> dict[str, tuple[str, int]]:
    """``EndpointConfig.sent_by`` from :meth:`AsyncEndpoint.listening`: the first bound address
    per transport; ``advertise`` replaces the host (needed when bound to a wildcard address).
    IPv6 hosts come back in brackets, as a Via sent-by writes them (RFC 3261 §25.1)."""
    out: dict[str, tuple[str, int]] = {}
    for transport, host, port in listening:
        if transport not in out:
            out[transport] = (format_host(advertise or host), port)
    return out


class _Closed:
    """Ends the async iteration of events."""


class AsyncEndpoint(Generic[E]):
    """Owns the transports and a sans-IO endpoint; the only asyncio code of sipcore.

    ``endpoint`` is the sans-IO Endpoint, or a factory called with :meth:`listening` once the
    listeners are bound (so ``EndpointConfig.sent_by`` can hold ports chosen by the kernel; see
    :func:`sent_by`). Events reach the application through ``on_event`` (called synchronously, in order) or, when
    no callback is given, through ``async for event in async_endpoint``. Use
    :meth:`send_request` / :meth:`send_response`, or call other commands on :attr:`endpoint`
    directly and then :meth:`pump`.
    """

    def __init__(
        self,
        endpoint: SansIOEndpoint[E] | EndpointFactory[E],
        listen: Iterable[str | ListenSpecLike],
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        verify_tls: bool = True,
        ws_origins: Iterable[str] = (),
        limits: TransportLimits | None = None,
        on_event: Callable[[E], None] | None = None,
    ) -> None:
        if callable(endpoint):
            self._factory: EndpointFactory[E] | None = endpoint
            self._endpoint: SansIOEndpoint[E] | None = None
        else:
            self._factory = None
            self._endpoint = endpoint
        #: Parsed now, so a bad spec fails at construction with a ValueError naming it.
        self.listen_specs = [as_listen_spec(spec) for spec in listen]
        self.limits = limits or TransportLimits()
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._verify_tls = verify_tls
        self._ws_origins = tuple(ws_origins)
        self._on_event = on_event
        #: Set before :meth:`start`: the transport layer asks it for every message and inbound
        #: connection (False: dropped / refused), see ``TransportLayer.admit_source``.
        self.admit_source: Callable[[Peer], bool] | None = None
        self._queue: asyncio.Queue[E | _Closed] | None = None
        self._transports: TransportLayer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self._pump_again = False
        self._closed = False
        self.stats: Counter[str] = Counter()

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every listen address (raises OSError/ValueError when one cannot be bound)."""
        self._loop = asyncio.get_running_loop()
        if self._on_event is None:
            self._queue = asyncio.Queue()
        self._transports = TransportLayer(
            self,
            limits=self.limits,
            server_ssl=self._server_ssl,
            client_ssl=self._client_ssl,
            verify_tls=self._verify_tls,
            ws_origins=self._ws_origins,
            admit_source=self.admit_source,
        )
        try:
            for spec in self.listen_specs:
                await self._transports.listen(spec)
            if self._factory is not None:
                self._endpoint = self._factory(self._transports.listening())
            self._publish_sent_by()
        except BaseException:
            await self._transports.close()
            raise
        self.pump()

    def _publish_sent_by(self) -> None:
        """Tell the Endpoint the ports the kernel chose (``Endpoint.set_sent_by``): for every
        transport it has no sent-by for, or one with port 0 (its configured host is kept)."""
        setter = getattr(self._endpoint, "set_sent_by", None)
        if setter is None or self._transports is None:
            return
        config = getattr(self._endpoint, "config", None)
        current: dict[str, tuple[str, int]] = dict(getattr(config, "sent_by", None) or {})
        for transport, (host, port) in sent_by(self._transports.listening()).items():
            old = current.get(transport)
            if old is None:
                setter(transport, host, port)
            elif old[1] == 0:
                setter(transport, old[0], port)

    async def close(self) -> None:
        """Stop listening, close every connection, cancel the timer, end event iteration."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transports is not None:
            await self._transports.close()
        if self._queue is not None:
            self._queue.put_nowait(_Closed())

    async def __aenter__(self) -> AsyncEndpoint[E]:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def endpoint(self) -> SansIOEndpoint[E]:
        """The sans-IO endpoint (built by the factory in :meth:`start` when one was given)."""
        if self._endpoint is None:
            raise RuntimeError("AsyncEndpoint.start() has not run")
        return self._endpoint

    @property
    def transports(self) -> TransportLayer:
        """The transport layer (after :meth:`start`)."""
        if self._transports is None:
            raise RuntimeError("AsyncEndpoint.start() has not run")
        return self._transports

    def listening(self) -> list[tuple[str, str, int]]:
        """Actual bound ``(transport, host, port)`` of every listener (port 0 resolved)."""
        return self.transports.listening()

    def statistics(self) -> dict[str, int]:
        """Counters of the pump and the transports, and the Endpoint's prefixed ``sip_``."""
        out = dict(self.stats)
        if self._transports is not None:
            out.update(self._transports.statistics())
        if self._endpoint is not None:
            out.update((f"sip_{k}", v) for k, v in self._endpoint.statistics().items())
        return out

    # -- commands ------------------------------------------------------------------------------

    def send_request(self, request: Any, peer: Peer, *, owner: object = None) -> str:
        """Send a request (``Endpoint.send_request``; its events carry ``owner``); returns the
        transaction key.

        RFC 3261 §18.1.1: a request that would exceed ``limits.udp_size_threshold`` bytes over UDP
        goes over TCP to the same host:port when we listen on TCP (decided here, before the
        Endpoint writes the Via, so the Via says TCP).
        """
        peer = self.choose_peer(request, peer)
        key = self.endpoint.send_request(request, peer, self._now(), owner=owner)
        self.pump()
        return key

    def send_response(self, response: Any, *, transaction_id: str | None = None) -> bool:
        """Send a response on its server transaction (``Endpoint.send_response``); False when
        that transaction is gone."""
        sent = self.endpoint.send_response(response, self._now(), transaction_id=transaction_id)
        self.pump()
        return sent

    def set_owner(self, transaction_id: str, owner: object) -> bool:
        """Give a server transaction to ``owner`` (``Endpoint.set_owner``)."""
        return self.endpoint.set_owner(transaction_id, owner)

    def cancel(self, transaction_id: str, reason: str | None = None) -> None:
        """Cancel a pending INVITE client transaction (``Endpoint.cancel``, RFC 3261 §9.1)."""
        self.endpoint.cancel(transaction_id, self._now(), reason)
        self.pump()

    def choose_peer(self, request: Any, peer: Peer) -> Peer:
        """``peer``, or its TCP twin when the request is too large for UDP (RFC 3261 §18.1.1)."""
        if peer.transport != "udp" or self._transports is None:
            return peer
        if not self._transports.has_listener("tcp"):
            return peer
        size = request.wire_size() + _VIA_ALLOWANCE  # the transaction serializes it once
        if size <= self.limits.udp_size_threshold:
            return peer
        self.stats["udp_switched_to_tcp"] += 1
        return Peer("tcp", peer.host, peer.port)

    # -- TransportSink -------------------------------------------------------------------------

    def message_received(self, data: bytes, peer: Peer) -> None:
        """A transport delivers one whole message."""
        if self._endpoint is None:  # arrived while start() was still binding
            self.stats["dropped_before_start"] += 1
            return
        try:
            self._endpoint.receive_datagram(data, peer, self._now())
        except Exception:
            # The Endpoint answers bad input itself; anything escaping is a bug that must not take
            # the transport down (DESIGN.md principle 4).
            self.stats["endpoint_errors"] += 1
            log.exception("sip.endpoint.receive_failed", src=peer.host, port=peer.port,
                          transport=peer.transport)
        self.pump()

    def transport_failed(self, peer: Peer) -> None:
        """A transport reports a connection failure or a message that could not be sent."""
        self.stats["transport_failures"] += 1
        if self._endpoint is None:
            return
        try:
            self._endpoint.transport_failed(peer, self._now())
        except Exception:
            self.stats["endpoint_errors"] += 1
            log.exception("sip.endpoint.transport_failed_failed", src=peer.host, port=peer.port,
                          transport=peer.transport)
        self.pump()

    # -- the pump ------------------------------------------------------------------------------

    def pump(self) -> None:
        """Drain outputs to the transports, events to the application; re-arm the timer.

        Re-entrant calls (an ``on_event`` callback sending a request) only mark another round.
        """
        if self._pumping:
            self._pump_again = True
            return
        endpoint = self._endpoint
        if endpoint is None:
            return
        self._pumping = True
        try:
            while True:
                self._pump_again = False
                transports = self._transports
                for data, peer in endpoint.data_to_send():
                    if transports is not None and not self._closed:
                        transports.send(data, peer)
                for event in endpoint.events():
                    self._emit(event)
                # INVITEs the TU left unanswered get their held 100 Trying now (an endpoint
                # without a trying_delay holds none)
                if endpoint.flush_trying(self._now()):
                    self._pump_again = True
                if not self._pump_again:
                    break
            self._arm_timer()
        finally:
            self._pumping = False

    def _emit(self, event: E) -> None:
        self.stats["events"] += 1
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                self.stats["on_event_errors"] += 1
                log.exception("sip.endpoint.on_event_failed")
        elif self._queue is not None:
            self._queue.put_nowait(event)

    def _arm_timer(self) -> None:
        deadline = None if self._closed or self._endpoint is None else self._endpoint.get_timer()
        if deadline == self._timer_at and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        deadline = self._timer_at
        self._timer = None
        self._timer_at = None
        # asyncio may fire a hair early (clock resolution): never tell the core "now" is earlier
        # than the deadline it asked for, or it would ask again at once.
        now = self._now()
        if deadline is not None:
            now = max(now, deadline)
        try:
            self.endpoint.handle_timer(now)
        except Exception:
            self.stats["endpoint_errors"] += 1
            log.exception("sip.endpoint.timer_failed")
        self.pump()

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    # -- events as an async iterator -------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[E]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[E]:
        if self._queue is None:
            raise RuntimeError("events go to on_event; there is nothing to iterate")
        while True:
            item = await self._queue.get()
            if isinstance(item, _Closed):
                self._queue.put_nowait(item)  # other iterators end too
                return
            yield item


#: Room for what the Endpoint adds when missing: our Via ("Via: SIP/2.0/UDP [ipv6]:port;branch=
#: z9hG4bK…;rport", up to ~110 bytes), Max-Forwards and User-Agent.
_VIA_ALLOWANCE = 150
