"""Connection-oriented SIP transports: TCP and TLS (RFC 3261 §18, framing by Content-Length).

Every connection gets a ``conn_id``; messages it delivers carry ``Peer(…, conn_id)`` so the
Endpoint can send responses back on the same connection (RFC 3261 §18.2.2). The transport layer
owns the registry, the limits and one sweep timer for idle and half-open connections.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, cast

from sipcore.aio.tls import ServerTls
from sipcore.errors import ParseError
from sipcore.framing import KeepAlivePing, StreamFramer
from sipcore.transport import Peer, TransportName

if TYPE_CHECKING:
    from sipcore.aio.transport import TransportLayer

#: RFC 5626 §4.4.1: the answer to a double-CRLF "ping" is a single CRLF "pong".
PONG = b"\r\n"


class StreamConnection(asyncio.Protocol):
    """One stream connection (base class): admission, writes, activity bookkeeping, closing.

    Subclasses implement :meth:`received` (bytes in → messages delivered) and :meth:`encode`
    (one SIP message → bytes on the wire).
    """

    def __init__(
        self,
        layer: TransportLayer,
        transport_name: TransportName,
        *,
        remote: tuple[str, int] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.layer = layer
        self.transport_name: TransportName = transport_name
        self.conn_id = layer.new_conn_id()
        #: True when we opened the connection (RFC 3261 §18.1.1), False when it was accepted.
        self.outbound = remote is not None
        #: Accepted TLS/WSS: the server context the handshake runs with once admitted.
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.peer = Peer(transport_name, remote[0], remote[1], self.conn_id) if remote else None
        #: The remote IP that counts against ``max_connections_per_source`` (accepted only).
        self.source_ip: str | None = None
        now = layer.loop.time()
        #: Last complete message or keep-alive in either direction (idle timeout).
        self.last_activity = now
        #: Loop time until which the idle timeout does not apply: a registration's flow is kept
        #: open for the life of its binding (RFC 5626 §5.2), so the phone stays reachable.
        self.keep_until = 0.0
        #: Since when an incomplete message (or handshake) has been waiting (slowloris).
        self.partial_since: float | None = None
        #: Messages written before the connection is ready (outbound connect, TLS handshake).
        self.pending: list[bytes] = []
        #: The peers (as the Endpoint addressed them) whose messages wait in ``pending``.
        self.waiting_peers: list[Peer] = []
        #: Other spellings of this connection's peer the Endpoint sent to (e.g. conn_id None):
        #: all of them learn about its loss, since the Endpoint matches peers by equality.
        self.aliases: list[Peer] = []
        self.admitted = False
        #: True once SIP can flow (connected, admitted, TLS handshake done).
        self.ready = False
        self.closing = False
        #: When we started closing it (it is aborted if the close takes too long).
        self.closed_at: float | None = None
        #: True once asyncio reported the connection gone.
        self.lost = False
        #: The TLS session of an accepted TLS/WSS connection (None for plain and outbound).
        self.tls_session: ServerTls | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it: no isinstance.
        self.transport = cast(asyncio.Transport, transport)
        if not self.layer.admit(self):
            self.closing = True
            self.transport.abort()
            return
        if self.tls is not None:
            # Admitted before the TLS handshake, so connections that never finish one are
            # counted and limited too (see sipcore.aio.tls).
            self.tls_session = ServerTls(self.tls)
            self.partial_since = self.layer.loop.time()
            return
        self.make_ready()

    def make_ready(self) -> None:
        """Start exchanging SIP; flush what waited."""
        self.ready = True
        self.last_activity = self.layer.loop.time()
        self.started()
        pending, self.pending = self.pending, []
        self.aliases = [p for p in self.waiting_peers if p != self.peer][:8]
        self.waiting_peers = []
        for data in pending:
            self.send_message(data)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.layer.stats["stream_bytes_received"] += len(data)
        session = self.tls_session
        if session is not None:
            was_established = session.established
            try:
                data, out, peer_closed = session.receive(data)
            except ssl.SSLError:
                self.abort("tls_errors" if was_established else "tls_handshakes_failed")
                return
            if out and self.transport is not None:
                self.transport.write(out)
            if session.established and not was_established:
                self.layer.stats["tls_handshakes_completed"] += 1
                self.partial_since = None
                self.make_ready()
            if data and not self.closing:
                self.received(data)
            if peer_closed:
                self.close()
            return
        self.received(data)

    def eof_received(self) -> bool | None:
        # The peer closed its side: nothing more can arrive, so close ours too.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.closing = True
        self.lost = True
        self.layer.connection_closed(self, exc)

    # -- subclass hooks --------------------------------------------------------------------------

    def started(self) -> None:
        """Called once the connection is ready (admitted; after the TLS handshake for TLS)."""

    def received(self, data: bytes) -> None:
        """Bytes arrived."""
        raise NotImplementedError

    def encode(self, message: bytes) -> bytes | None:
        """Wire bytes for one SIP message, or None when it cannot be sent (yet)."""
        raise NotImplementedError

    def ping_if_quiet(self, now: float) -> None:
        """Quiet for half the idle timeout: probe the peer if the protocol has a way (WS)."""

    # -- used by the transport layer and subclasses -----------------------------------------------

    @property
    def connected(self) -> bool:
        """True once the connection is ready and still usable."""
        return self.ready and self.transport is not None and not self.closing

    def send_message(self, data: bytes) -> None:
        """Send one SIP message (queued until an outbound connection is up)."""
        if self.closing:
            return
        if not self.ready:
            if len(self.pending) < 64:
                self.pending.append(data)
            else:
                self.layer.stats["stream_send_dropped"] += 1
            return
        wire = self.encode(data)
        if wire is None:
            self.layer.stats["stream_send_dropped"] += 1
            return
        self.layer.stats["stream_messages_sent"] += 1
        self.last_activity = self.layer.loop.time()
        self.write(wire)

    def write(self, wire: bytes) -> None:
        """Write raw bytes; a peer that stops reading is cut off at ``max_write_buffer``."""
        if self.transport is None or self.closing:
            return
        if self.tls_session is not None:
            try:
                wire = self.tls_session.send(wire)
            except ssl.SSLError:
                self.abort("tls_errors")
                return
        self.transport.write(wire)
        if self.transport.get_write_buffer_size() > self.layer.limits.max_write_buffer:
            self.abort("closed_write_backlog")

    def deliver(self, message: bytes) -> None:
        """Hand one complete SIP message to the endpoint."""
        assert self.peer is not None
        self.layer.stats["stream_messages_received"] += 1
        self.last_activity = self.layer.loop.time()
        self.layer.deliver(message, self.peer)

    def close(self, counter: str | None = None) -> None:
        """Close after flushing what is already written."""
        if counter:
            self.layer.stats[counter] += 1
        if self.closing:
            return
        self.closing = True
        self.closed_at = self.layer.loop.time()
        if self.transport is not None:
            if self.tls_session is not None and self.tls_session.established:
                self.transport.write(self.tls_session.close())
            self.transport.close()

    def abort(self, counter: str | None = None) -> None:
        """Close at once, dropping unsent data."""
        if counter:
            self.layer.stats[counter] += 1
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


class SipStreamConnection(StreamConnection):
    """SIP directly on TCP or TLS: Content-Length framing and CRLF keep-alives (RFC 5626 §4.4.1)."""

    def __init__(
        self,
        layer: TransportLayer,
        transport_name: TransportName,
        *,
        remote: tuple[str, int] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(layer, transport_name, remote=remote, tls=tls)
        self.framer = StreamFramer(max_message=layer.limits.max_message_size)
        # A copy of the bytes the framer holds (empty almost always: segments usually end on a
        # message boundary), so that on a framing error we still have the head to answer.
        self._held = bytearray()

    def received(self, data: bytes) -> None:
        items = self.framer.feed(data)
        consumed = 0
        for item in items:
            if self.closing:
                return
            if isinstance(item, bytes):
                consumed += len(item)
                self.deliver(item)
            elif isinstance(item, KeepAlivePing):
                consumed += 4
                self.layer.stats["stream_keepalives_received"] += 1
                self.last_activity = self.layer.loop.time()
                self.write(PONG)
            else:
                stream = bytes(self._held) + data
                self.parse_failed(item, stream[consumed:].lstrip(b"\r\n"))
                return
        buffered = self.framer.buffered
        if buffered:
            self._held += data
            del self._held[: len(self._held) - buffered]
            if self.partial_since is None:
                self.partial_since = self.layer.loop.time()
        else:
            self._held.clear()
            self.partial_since = None

    def parse_failed(self, error: ParseError, head: bytes) -> None:
        """The stream can no longer be framed: answer (400/513) when we can, then close."""
        response = bad_request(head, error.status_hint, error.reason)
        if response is not None:
            self.write(response)
        self.close("stream_parse_errors")

    def encode(self, message: bytes) -> bytes:
        return message


_COPIED = (b"via", b"from", b"to", b"call-id", b"cseq")
_COMPACT = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id"}


def bad_request(head: bytes, status: int, reason: str) -> bytes | None:
    """A best-effort error response (400, 513) to a request whose stream we cannot frame.

    Copies Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6) by plain line scanning, since the
    message did not parse. Returns None when the head is not a request or a header is missing
    (no response is possible then) or for ACK (never answered).
    """
    if not head:
        return None
    lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    start = lines[0].split(b" ")
    if len(start) != 3 or start[2] != b"SIP/2.0" or start[0] == b"SIP/2.0":
        return None
    found: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return None  # folded or garbled: do not guess
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        if key in _COPIED:
            found.setdefault(key, []).append(value.strip())
    if any(key not in found for key in _COPIED) or start[0] == b"ACK":
        return None
    safe_reason = "".join(c for c in reason if c.isprintable() and c not in "\r\n")[:100]
    status_line = f"SIP/2.0 {status} {safe_reason or 'Bad Request'}"
    out = [status_line.encode("utf-8", "replace")]
    for key, label in zip(_COPIED, (b"Via", b"From", b"To", b"Call-ID", b"CSeq"), strict=True):
        out.extend(label + b": " + value for value in found[key])
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"
