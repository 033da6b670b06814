"""The transport layer: listeners, the connection registry, limits, and where each message goes.

RFC 3261 §18 with RFC 5626 §4.4.1 (CRLF keep-alive) and RFC 7118 (WebSocket). It is the only place
that knows sockets; the :class:`TransportSink` (the :class:`~sipcore.aio.endpoint.AsyncEndpoint`)
receives whole messages and connection failures, and calls :meth:`TransportLayer.send`.

Defences (SECURITY.md): message size limit (datagrams over it are dropped, a stream that exceeds
it is closed), connections per source IP and in total (new ones beyond are closed at once), idle
connections closed, connections that keep a message half-sent closed (slowloris), peers that stop
reading cut off at a write-buffer limit, TLS 1.2 or newer only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from sipcore.aio.listen import ListenSpec
from sipcore.aio.stream import SipStreamConnection, StreamConnection
from sipcore.aio.tasks import TaskScope
from sipcore.aio.udp import UdpListener
from sipcore.aio.ws import WebSocketConnection
from sipcore.transport import Peer, TransportName


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Limits of the transport layer (SECURITY.md defaults)."""

    #: Largest SIP message accepted (bytes): bigger datagrams are dropped, streams closed.
    max_message_size: int = 65535
    #: Accepted connections from one IP address; new ones beyond are closed at once.
    max_connections_per_source: int = 64
    #: All connections (accepted and opened); new ones beyond are closed at once.
    max_connections: int = 10_000
    #: A connection with no message or keep-alive in either direction for this long is closed.
    idle_timeout: float = 60.0
    #: SO_RCVBUF/SO_SNDBUF of UDP sockets (0 = the kernel's default).
    udp_buffer_size: int = 4 << 20
    #: A connection that has kept an incomplete message (or WebSocket handshake) this long is
    #: closed: half-open/slowloris protection.
    partial_message_timeout: float = 10.0
    #: Opening an outbound TCP/TLS connection (including the TLS handshake) must finish in this.
    connect_timeout: float = 10.0
    #: TLS handshake of an accepted connection must finish in this.
    tls_handshake_timeout: float = 10.0
    #: Unsent bytes queued for one connection before it is cut off (a peer that does not read).
    max_write_buffer: int = 1 << 20
    #: RFC 3261 §18.1.1: a request larger than this (path MTU unknown) goes over TCP.
    udp_size_threshold: int = 1300
    #: A connection we closed is aborted if it has not finished closing after this long.
    close_grace: float = 5.0


#: Screened messages handed on per turn of the event loop (see TransportLayer._pending).
_TURN = 8
#: ... and held at most (bytes), like a kernel receive buffer ...
_PENDING_MAX = 4 << 20
#: ... and for at most T1 (RFC 3261's retransmission interval, seconds).
_PENDING_MAX_AGE = 0.5


class TransportSink(Protocol):
    """What the transport layer drives: the endpoint pump."""

    def message_received(self, data: bytes, peer: Peer) -> None:
        """One whole SIP message arrived from ``peer``."""

    def transport_failed(self, peer: Peer) -> None:
        """A connection to ``peer`` failed or closed, or a message to it could not be sent."""


def normalize_host(host: str) -> str:
    """Compare-ready host: brackets stripped, IP literals in canonical form, names lowercased."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


class TransportLayer:
    """Listeners and connections of one endpoint. Create it inside the running loop."""

    def __init__(
        self,
        sink: TransportSink,
        *,
        limits: TransportLimits | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        verify_tls: bool = True,
        ws_origins: Iterable[str] = (),
        admit_source: Callable[[Peer], bool] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.sink = sink
        #: Asked for every message and every inbound connection: False drops the message
        #: unanswered / refuses the connection (the application's per-source bans).
        self.admit_source = admit_source
        #: Asked for every admitted message while set (the application sets it while it is
        #: overloaded): ``None`` passes the message on to the parser; ``(data, peer)`` answers
        #: it with ``data`` to ``peer`` instead, statelessly (sipcore/stateless.py), and
        #: ``(b"", peer)`` drops it (the ACK of such an answer).
        self.screen: Callable[[bytes, Peer], tuple[bytes, Peer] | None] | None = None
        #: While screening, what the screen let through waits here and is handed on in turns
        #: of at most ``_TURN`` messages, so the loop goes back to reading between turns: a
        #: message to refuse is read (and refused) within a turn instead of waiting in the
        #: kernel's receive buffer behind the backlog of admitted work.
        self._pending: deque[tuple[bytes, Peer, float]] = deque()
        self._pending_bytes = 0
        self._drain_scheduled = False
        #: The shortest wait in ``_pending`` of a message handed on since :meth:`take_sojourn`
        #: last asked (None: none was handed on) — the backlog's delay, CoDel's signal.
        self._sojourn_min: float | None = None
        self.limits = limits or TransportLimits()
        self.server_ssl = server_ssl
        if server_ssl is not None and server_ssl.minimum_version < ssl.TLSVersion.TLSv1_2:
            # TLS 1.2 or newer only (SECURITY.md), whatever the context came with.
            server_ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        if server_ssl is not None:
            # Client-initiated renegotiation is a cheap CPU DoS on TLS 1.2 (TLS 1.3 has none).
            server_ssl.options |= ssl.OP_NO_RENEGOTIATION
        self.client_ssl = client_ssl or _client_context(verify_tls)
        if self.client_ssl.minimum_version < ssl.TLSVersion.TLSv1_2:
            self.client_ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        #: Allowed WebSocket Origins, lowercased without trailing "/"; empty allows any.
        self.ws_origins = frozenset(o.lower().rstrip("/") for o in ws_origins)
        self.stats: Counter[str] = Counter()
        self._next_conn_id = 0
        self._conns: dict[int, StreamConnection] = {}
        self._by_addr: dict[tuple[str, str, int], StreamConnection] = {}
        self._per_source: Counter[str] = Counter()
        self._udp: list[UdpListener] = []
        #: IP literal -> address family, so a send does not re-parse the address every time.
        self._families: dict[str, int] = {}
        self._servers: list[tuple[TransportName, asyncio.Server]] = []
        #: The layer's tasks (connects, name look-ups) live in its TaskGroup, closed by close().
        self._tasks = TaskScope("sip transports")
        self._tasks.start()
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._closing = False

    # -- listening ---------------------------------------------------------------------------

    async def listen(self, spec: ListenSpec) -> list[tuple[str, str, int]]:
        """Bind one listener; returns the bound ``(transport, host, port)`` (port 0 resolved)."""
        if spec.transport == "udp":
            _, protocol = await self.loop.create_datagram_endpoint(
                lambda: UdpListener(self), local_addr=(spec.host, spec.port)
            )
            assert isinstance(protocol, UdpListener)
            self._udp.append(protocol)
            self._ensure_sweep()
            return [("udp", protocol.local[0], protocol.local[1])]
        tls = spec.transport in ("tls", "wss")
        if tls and self.server_ssl is None:
            raise ValueError(f"listen {spec}: {spec.transport} needs a server SSL context")
        name: TransportName = spec.transport

        context = self.server_ssl if tls else None

        def factory() -> StreamConnection:
            if name in ("ws", "wss"):
                return WebSocketConnection(self, name, tls=context)
            return SipStreamConnection(self, name, tls=context)

        # TLS is run by the connection after admission (sipcore.aio.tls), not by the server,
        # so that handshakes in progress count against the connection limits.
        server = await self.loop.create_server(factory, spec.host, spec.port, backlog=1024)
        self._servers.append((name, server))
        self._ensure_sweep()
        return [(name, str(s.getsockname()[0]), int(s.getsockname()[1])) for s in server.sockets]

    def listening(self) -> list[tuple[str, str, int]]:
        """The bound ``(transport, host, port)`` of every listener."""
        out: list[tuple[str, str, int]] = [("udp", u.local[0], u.local[1]) for u in self._udp]
        for name, server in self._servers:
            out.extend((name, str(s.getsockname()[0]), int(s.getsockname()[1])) for s in server.sockets)
        return out

    def has_listener(self, transport: str) -> bool:
        """True when we listen on ``transport`` (e.g. "tcp": large requests may switch to it)."""
        if transport == "udp":
            return bool(self._udp)
        return any(name == transport for name, _ in self._servers)

    # -- sending -----------------------------------------------------------------------------

    def send(self, data: bytes, peer: Peer) -> None:
        """Send one SIP message to ``peer``; failures are reported to the sink, never raised.

        Stream transports use ``peer.conn_id`` when that connection is still open, else an open
        connection to the same transport/host/port, else (TCP/TLS only) open a new one.
        """
        if self._closing:
            return
        if peer.transport == "udp":
            self._send_udp(data, peer)
            return
        conn: StreamConnection | None = None
        if peer.conn_id is not None:
            found = self._conns.get(peer.conn_id)
            if found is not None and not found.closing and found.transport_name == peer.transport:
                conn = found
        if conn is None:
            found = self._by_addr.get((peer.transport, normalize_host(peer.host), peer.port))
            if found is not None and not found.closing:
                conn = found
        if conn is None and peer.transport in ("tcp", "tls"):
            conn = self._connect(peer.transport, normalize_host(peer.host), peer.port)
        if conn is None:
            self.stats["send_failures"] += 1
            self._fail_soon(peer)
            return
        if conn.transport is None:
            if peer not in conn.waiting_peers:
                conn.waiting_peers.append(peer)
        elif peer != conn.peer and peer not in conn.aliases and len(conn.aliases) < 8:
            conn.aliases.append(peer)
        conn.send_message(data)

    def _send_udp(self, data: bytes, peer: Peer) -> None:
        host = peer.host[1:-1] if peer.host.startswith("[") else peer.host
        family = self._families.get(host)
        if family is None:
            try:
                version = ipaddress.ip_address(host.split("%", 1)[0]).version
            except ValueError:
                self._tasks.spawn(self._resolve_and_send_udp(data, peer, host),
                                  f"udp resolve {host}")
                return
            family = socket.AF_INET6 if version == 6 else socket.AF_INET
            if len(self._families) >= 65536:  # bounded: a scanner must not grow it forever
                self._families.clear()
            self._families[host] = family
        listener = next((u for u in self._udp if u.family == family and u.transport), None)
        if listener is None or listener.transport is None:
            self.stats["send_failures"] += 1
            self._fail_soon(peer)
            return
        self.stats["udp_datagrams_sent"] += 1
        listener.transport.sendto(data, (host, peer.port))

    async def _resolve_and_send_udp(self, data: bytes, peer: Peer, host: str) -> None:
        # The Endpoint should hand us IP addresses; names get a plain A/AAAA lookup here.
        try:
            infos = await self.loop.getaddrinfo(host, peer.port, type=socket.SOCK_DGRAM)
        except OSError:
            infos = []
        for family, _, _, _, sockaddr in infos:
            listener = next((u for u in self._udp if u.family == family and u.transport), None)
            if listener is not None and listener.transport is not None:
                self.stats["udp_datagrams_sent"] += 1
                listener.transport.sendto(data, (str(sockaddr[0]), int(sockaddr[1])))
                return
        self.stats["send_failures"] += 1
        self.sink.transport_failed(peer)

    def _connect(self, transport: TransportName, host: str, port: int) -> StreamConnection | None:
        if len(self._conns) >= self.limits.max_connections:
            self.stats["connections_rejected_total_limit"] += 1
            return None
        conn = SipStreamConnection(self, transport, remote=(host, port))
        self._conns[conn.conn_id] = conn
        self._by_addr[(transport, host, port)] = conn
        self.stats["connections_opening"] += 1
        self._tasks.spawn(self._open(conn, host, port), f"{transport} connect {host}:{port}")
        self._ensure_sweep()
        return conn

    async def _open(self, conn: StreamConnection, host: str, port: int) -> None:
        tls = conn.transport_name == "tls"
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                await self.loop.create_connection(
                    lambda: conn,
                    host,
                    port,
                    ssl=self.client_ssl if tls else None,
                    server_hostname=host if tls else None,
                    ssl_handshake_timeout=self.limits.tls_handshake_timeout if tls else None,
                )
        except asyncio.CancelledError:
            self._forget(conn)
            raise
        except Exception:  # OSError, TimeoutError, ssl errors, certificate mismatch …
            if conn.transport is not None:  # connected, then the handshake failed or timed out
                conn.abort()
            self.stats["connections_open_failed"] += 1
            self._forget(conn)
            peers = conn.waiting_peers or ([conn.peer] if conn.peer else [])
            conn.waiting_peers, conn.pending = [], []
            for peer in peers:
                self.sink.transport_failed(peer)

    # -- called by connections -----------------------------------------------------------------

    def new_conn_id(self) -> int:
        """A fresh connection id (never reused in this process)."""
        self._next_conn_id += 1
        return self._next_conn_id

    def deliver(self, data: bytes, peer: Peer) -> None:
        """A whole message arrived (from a UDP listener or a connection)."""
        admit = self.admit_source
        if admit is not None and not admit(peer):
            self.stats["dropped_by_source_policy"] += 1
            return
        screen = self.screen
        if screen is not None:
            answer = screen(data, peer)
            if answer is not None:
                if answer[0]:
                    self.stats["answered_statelessly"] += 1
                    self.send(answer[0], answer[1])
                else:
                    self.stats["absorbed_statelessly"] += 1
                return
        if screen is not None or self._pending:  # (order kept: nothing overtakes the queue)
            if self._pending_bytes >= _PENDING_MAX:  # what a full receive buffer would do
                self.stats["dropped_screened_backlog"] += 1
                return
            self._pending.append((data, peer, self.loop.time()))
            self._pending_bytes += len(data)
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self.loop.call_soon(self._drain)
            return
        self.sink.message_received(data, peer)

    def _drain(self) -> None:
        """Hand one turn of the screened messages to the sink (see ``_pending``)."""
        self._drain_scheduled = False
        pending, sink = self._pending, self.sink
        now = self.loop.time()
        handed, stale_before = 0, now - _PENDING_MAX_AGE
        shortest = self._sojourn_min
        while pending and handed < _TURN:
            data, peer, queued_at = pending.popleft()
            self._pending_bytes -= len(data)
            if queued_at < stale_before:
                # waited longer than a retransmission interval: the sender has sent it again
                # (or will), and working through an old copy only feeds the backlog
                self.stats["dropped_screened_stale"] += 1
                continue
            handed += 1
            if shortest is None or now - queued_at < shortest:
                shortest = now - queued_at
            sink.message_received(data, peer)
        self._sojourn_min = shortest
        if pending and not self._drain_scheduled:
            self._drain_scheduled = True
            self.loop.call_soon(self._drain)

    def admit(self, conn: StreamConnection) -> bool:
        """Register a connection that just came up; False means: close it at once."""
        if self._closing:
            return False
        if conn.outbound:
            conn.admitted = self._conns.get(conn.conn_id) is conn
            if conn.admitted:
                self.stats["connections_opened"] += 1
            return conn.admitted
        assert conn.transport is not None
        peername = conn.transport.get_extra_info("peername")
        if not peername:
            return False
        host, port = str(peername[0]), int(peername[1])
        admit = self.admit_source
        if admit is not None and not admit(Peer(conn.transport_name, host, port)):
            self.stats["connections_refused_by_source_policy"] += 1
            return False
        if len(self._conns) >= self.limits.max_connections:
            self.stats["connections_rejected_total_limit"] += 1
            return False
        if self._per_source[host] >= self.limits.max_connections_per_source:
            self.stats["connections_rejected_source_limit"] += 1
            return False
        self._per_source[host] += 1
        conn.source_ip = host
        conn.peer = Peer(conn.transport_name, host, port, conn.conn_id)
        self._conns[conn.conn_id] = conn
        self._by_addr[(conn.transport_name, normalize_host(host), port)] = conn
        conn.admitted = True
        self.stats["connections_accepted"] += 1
        return True

    def connection_closed(self, conn: StreamConnection, exc: Exception | None) -> None:
        """A connection is gone (either side closed it)."""
        self._forget(conn)
        if not conn.admitted:
            return
        self.stats["connections_closed"] += 1
        if not self._closing and conn.ready and conn.peer is not None:
            for peer in [conn.peer, *conn.aliases]:
                self.sink.transport_failed(peer)

    def _forget(self, conn: StreamConnection) -> None:
        if self._conns.get(conn.conn_id) is conn:
            del self._conns[conn.conn_id]
        if conn.peer is not None:
            key = (conn.transport_name, normalize_host(conn.peer.host), conn.peer.port)
            if self._by_addr.get(key) is conn:
                del self._by_addr[key]
        if conn.source_ip is not None:
            self._per_source[conn.source_ip] -= 1
            if self._per_source[conn.source_ip] <= 0:
                del self._per_source[conn.source_ip]
            conn.source_ip = None

    # -- housekeeping --------------------------------------------------------------------------

    def _fail_soon(self, peer: Peer) -> None:
        # Not from inside the sink's own send loop: report on the next loop iteration.
        self.loop.call_soon(self._report_failure, peer)

    def _report_failure(self, peer: Peer) -> None:
        if not self._closing:
            self.sink.transport_failed(peer)

    def _sweep_interval(self) -> float:
        lim = self.limits
        shortest = min(lim.idle_timeout, lim.partial_message_timeout, lim.tls_handshake_timeout)
        return max(0.01, min(1.0, shortest / 4))

    def _ensure_sweep(self) -> None:
        if self._sweep_handle is None and not self._closing:
            self._sweep_handle = self.loop.call_later(self._sweep_interval(), self._sweep)

    def _sweep(self) -> None:
        """Close idle and half-open connections (one timer for all of them)."""
        self._sweep_handle = None
        now = self.loop.time()
        lim = self.limits
        for conn in list(self._conns.values()):
            if conn.transport is None:
                continue  # still connecting: bounded by connect_timeout
            if conn.closing:
                if conn.closed_at is not None and now - conn.closed_at > lim.close_grace:
                    conn.abort()
            elif (
                not conn.ready
                and conn.tls_session is not None
                and conn.partial_since is not None
                and now - conn.partial_since > lim.tls_handshake_timeout
            ):
                conn.abort("tls_handshake_timeouts")
            elif conn.partial_since is not None and now - conn.partial_since > lim.partial_message_timeout:
                conn.abort("connections_closed_slow")
            elif now - conn.last_activity > lim.idle_timeout and now >= conn.keep_until:
                conn.close("connections_closed_idle")
            elif now - conn.last_activity > lim.idle_timeout / 2:
                conn.ping_if_quiet(now)
        self._ensure_sweep()

    def keep_open(self, conn_id: int, until: float) -> bool:
        """Exempt connection ``conn_id`` from the idle timeout until loop time ``until`` (0 ends
        the exemption). Returns False when no such connection is open."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return False
        conn.keep_until = until
        return True

    def statistics(self) -> dict[str, int]:
        """Counters plus gauges (``connections_current``, ``connections_<transport>``)."""
        out = dict(self.stats)
        out["connections_current"] = len(self._conns)
        for conn in self._conns.values():
            key = f"connections_{conn.transport_name}"
            out[key] = out.get(key, 0) + 1
        out["tasks_current"] = self._tasks.active
        out["task_failures"] = self._tasks.failures
        return out

    def take_sojourn(self) -> float | None:
        """The shortest time (seconds) a screened message waited in ``_pending`` before it was
        handed on, since the last call; None when none was handed on. A queue that drains
        now and then has a minimum near zero however long it grows in a burst; a minimum that
        stays high is a standing backlog (CoDel's measure, RFC 8289 §4): the overload
        detector steers the admitted share on it."""
        shortest, self._sojourn_min = self._sojourn_min, None
        return shortest

    def udp_queued_bytes(self) -> int:
        """Bytes waiting in the UDP listeners' kernel receive buffers (see
        :meth:`UdpListener.queued_bytes`) plus what the screen let through and is not yet
        handed on (``_pending``): the overload detector's queue depth."""
        return sum(udp.queued_bytes() for udp in self._udp) + self._pending_bytes

    async def close(self) -> None:
        """Stop listening, close every connection (flushing what is written), wait for them."""
        if self._closing:
            return
        self._closing = True
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for _, server in self._servers:
            server.close()
        for udp in self._udp:
            if udp.transport is not None:
                udp.transport.close()
        await self._tasks.close()  # cancels connects and look-ups in progress, waits for them
        conns = list(self._conns.values())
        for conn in conns:
            conn.close()
        # Give graceful closes a moment, then cut off whatever still hangs.
        deadline = self.loop.time() + 2.0
        while any(c.transport is not None and not c.lost for c in conns) and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in conns:
            if not conn.lost:
                conn.abort()
        for _, server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        await asyncio.sleep(0)  # let connection_lost callbacks run
        self._conns.clear()
        self._by_addr.clear()
        self._per_source.clear()


def _client_context(verify: bool) -> ssl.SSLContext:
    """Outbound TLS (toward trunks): TLS 1.2+, certificates verified unless told otherwise."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
