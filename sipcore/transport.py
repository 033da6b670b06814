"""Transport-neutral addressing shared by the sans-IO core and the asyncio adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TransportName = Literal["udp", "tcp", "tls", "ws", "wss"]

#: Transports that deliver a byte stream (framed by Content-Length) or messages over a connection.
RELIABLE: frozenset[str] = frozenset({"tcp", "tls", "ws", "wss"})


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes to.

    ``conn_id`` identifies the connection a message arrived on (connection-oriented transports),
    so responses reuse it (RFC 3261 §18.2.2); ``None`` for UDP or "open a new one".
    """

    transport: TransportName
    host: str
    port: int
    conn_id: int | None = None

    @property
    def reliable(self) -> bool:
        """True for TCP/TLS/WS/WSS: no retransmissions needed (RFC 3261 §17)."""
        return self.transport in RELIABLE

    @property
    def via_transport(self) -> str:
        """The transport token used in a Via header (RFC 3261 §20.42, RFC 7118 §5)."""
        return self.transport.upper()
