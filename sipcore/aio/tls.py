"""Server-side TLS run by the connection itself over ``ssl.MemoryBIO`` (sans-IO TLS).

Why not ``create_server(ssl=…)`` or ``loop.start_tls``: asyncio runs the handshake before our
protocol sees the connection, so handshakes in progress escape the per-source and total
connection limits (a cheap way to exhaust file descriptors); and ``start_tls`` after admission
races with the first bytes under uvloop, which starts reading right after ``connection_made``.
With the BIO pair the connection is admitted at accept time, the handshake is just more bytes,
and it behaves the same on every event loop.
"""

from __future__ import annotations

import ssl


class ServerTls:
    """One server-side TLS session: bytes from the network in, plaintext and bytes to send out."""

    __slots__ = ("_in", "_obj", "_out", "established")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        #: True once the handshake completed.
        self.established = False

    def receive(self, data: bytes) -> tuple[bytes, bytes, bool]:
        """Feed network bytes; returns ``(plaintext, bytes_to_send, peer_closed)``.

        Raises ``ssl.SSLError`` for a failed handshake or a corrupt record (drop the connection).
        """
        self._in.write(data)
        plain: list[bytes] = []
        closed = False
        if not self.established:
            try:
                self._obj.do_handshake()
                self.established = True
            except ssl.SSLWantReadError:
                pass
        if self.established:
            while True:
                try:
                    chunk = self._obj.read(65536)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:  # close_notify
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                plain.append(chunk)
        return b"".join(plain), self._out.read(), closed

    def send(self, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext``; returns the records to write."""
        self._obj.write(plaintext)
        return self._out.read()

    def close(self) -> bytes:
        """Our close_notify (best effort)."""
        try:
            self._obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # the peer's close_notify has not come (yet): ours is in the BIO anyway
        return self._out.read()

    @property
    def version(self) -> str | None:
        """The negotiated protocol ("TLSv1.3"…), None before the handshake."""
        return self._obj.version()
