"""SIP over WebSocket (RFC 7118) on top of a TCP or TLS connection, using wsproto (RFC 6455).

Server side only: browsers and WebSocket UAs connect to us. The handshake must offer the ``sip``
subprotocol (RFC 7118 §4.1), the Origin must be on the allow-list when one is configured (RFC
6455 §10.2), and every text or binary message carries exactly one SIP message (RFC 7118 §5.1).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError as WsLocalError
from wsproto.utilities import RemoteProtocolError as WsProtocolError

from sipcore.aio.stream import StreamConnection
from sipcore.transport import TransportName

if TYPE_CHECKING:
    from sipcore.aio.transport import TransportLayer

SUBPROTOCOL = "sip"

# RFC 6455 §7.4.1 close codes.
CLOSE_NORMAL = 1000
CLOSE_MESSAGE_TOO_BIG = 1009


class WebSocketConnection(StreamConnection):
    """One ``ws``/``wss`` connection: handshake checks, message reassembly, size limit."""

    def __init__(
        self,
        layer: TransportLayer,
        transport_name: TransportName,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(layer, transport_name, tls=tls)
        self.ws = WSConnection(ConnectionType.SERVER)
        self.open = False
        self._parts: list[bytes] = []
        self._size = 0
        self._ping_sent = False

    def started(self) -> None:
        # Until the handshake completes, the connection counts as "partial" (slowloris check).
        self.partial_since = self.layer.loop.time()

    def received(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data)
        except WsProtocolError as exc:
            self.reject(exc.event_hint if isinstance(exc.event_hint, RejectConnection) else None)
            return
        try:
            self.process()
        except WsLocalError:
            # wsproto refused something in the state the peer drove us into: drop the connection.
            self.abort("ws_protocol_errors")

    def process(self) -> None:
        """Act on the wsproto events the received bytes produced."""
        for event in self.ws.events():
            if self.closing:
                return
            if isinstance(event, Request):
                self.handshake(event)
            elif isinstance(event, TextMessage | BytesMessage):
                data_part = (
                    event.data.encode("utf-8") if isinstance(event, TextMessage) else bytes(event.data)
                )
                self._size += len(data_part)
                if self._size > self.layer.limits.max_message_size:
                    self.close_ws(CLOSE_MESSAGE_TOO_BIG, "message too big", "ws_dropped_oversize")
                    return
                self._parts.append(data_part)
                if event.message_finished:
                    message = b"".join(self._parts)
                    self._parts, self._size = [], 0
                    self.partial_since = None
                    if message.strip(b"\r\n\t "):
                        self.deliver(message)
                    else:
                        # SIP.js/JsSIP send "\r\n\r\n" as a keep-alive and expect "\r\n" back
                        # (RFC 5626 §4.4.1 carried over WebSocket).
                        self.layer.stats["ws_keepalives_received"] += 1
                        self.last_activity = self.layer.loop.time()
                        if message == b"\r\n\r\n":
                            self.write(self.ws.send(TextMessage(data="\r\n")))
                elif self.partial_since is None:
                    self.partial_since = self.layer.loop.time()
            elif isinstance(event, Pong):
                self.last_activity = self.layer.loop.time()
                self._ping_sent = False
            elif isinstance(event, Ping):
                self.layer.stats["ws_pings_received"] += 1
                self.last_activity = self.layer.loop.time()
                self.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    self.write(self.ws.send(event.response()))
                self.close()
                return

    def ping_if_quiet(self, now: float) -> None:
        """Called by the sweep when the connection has been quiet for half the idle timeout:
        browsers answer a Ping on their own, so a live but silent UA is not cut off."""
        if self.open and not self._ping_sent and self.ws.state is ConnectionState.OPEN:
            self._ping_sent = True
            self.layer.stats["ws_pings_sent"] += 1
            self.write(self.ws.send(Ping(payload=b"sip")))

    def handshake(self, request: Request) -> None:
        """Accept only ``Sec-WebSocket-Protocol: sip`` and an allowed Origin."""
        origins = self.layer.ws_origins
        if origins:
            origin = next(
                (v.decode("latin-1") for k, v in request.extra_headers if k.lower() == b"origin"),
                None,
            )
            if origin is None or origin.lower().rstrip("/") not in origins:
                self.reject(RejectConnection(status_code=403), "ws_rejected_origin")
                return
        offered = next((p for p in request.subprotocols if p.lower() == SUBPROTOCOL), None)
        if offered is None:
            self.reject(RejectConnection(status_code=400), "ws_rejected_subprotocol")
            return
        self.write(self.ws.send(AcceptConnection(subprotocol=offered)))
        self.open = True
        self.partial_since = None
        self.last_activity = self.layer.loop.time()
        self.layer.stats["ws_handshakes_accepted"] += 1

    def reject(self, event: RejectConnection | None, counter: str = "ws_rejected_bad_request") -> None:
        """Answer the HTTP upgrade with an error status and close."""
        if self.ws.state is ConnectionState.CONNECTING:
            try:
                self.write(self.ws.send(event or RejectConnection(status_code=400)))
            except Exception:  # wsproto refuses in some states; closing is what matters
                pass
        self.close(counter)

    def close_ws(self, code: int, reason: str, counter: str | None = None) -> None:
        """Send a Close frame, then close the connection."""
        if self.ws.state is ConnectionState.OPEN:
            self.write(self.ws.send(CloseConnection(code=code, reason=reason)))
        self.close(counter)

    def encode(self, message: bytes) -> bytes | None:
        if not self.open or self.ws.state is not ConnectionState.OPEN:
            return None
        # Text frames when the message is valid UTF-8 (what browsers expect), binary otherwise
        # (RFC 7118 §5.1 allows both).
        try:
            return self.ws.send(TextMessage(data=message.decode("utf-8")))
        except UnicodeDecodeError:
            return self.ws.send(BytesMessage(data=message))

    def close(self, counter: str | None = None) -> None:
        if not self.closing and self.open and self.ws.state is ConnectionState.OPEN:
            try:
                self.write(self.ws.send(CloseConnection(code=CLOSE_NORMAL)))
            except Exception:
                pass
        super().close(counter)

