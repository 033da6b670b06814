"""SIP over UDP (RFC 3261 §18): one datagram is one message."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from typing import TYPE_CHECKING, Any, cast

from sipcore.transport import Peer

if TYPE_CHECKING:
    from sipcore.aio.transport import TransportLayer

#: Linux's SO_MEMINFO (include/uapi/asm-generic/socket.h; the socket module does not name it).
_SO_MEMINFO: int | None = 55 if sys.platform.startswith("linux") else None


class UdpListener(asyncio.DatagramProtocol):
    """The protocol of one bound UDP socket; hands every datagram to the transport layer."""

    def __init__(self, layer: TransportLayer) -> None:
        self.layer = layer
        self.transport: asyncio.DatagramTransport | None = None
        self.family = socket.AF_INET
        self.local: tuple[str, int] = ("", 0)
        # A datagram longer than this was cut short by recvfrom() (or is over the limit anyway).
        self._max = layer.limits.max_message_size
        self._peers: dict[tuple[Any, ...], Peer] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython's _SelectorDatagramTransport does not subclass DatagramTransport in 3.11.)
        transport = cast(asyncio.DatagramTransport, transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.family = sock.family
            self._size_buffers(sock, self.layer.limits.udp_buffer_size)
        sockname = transport.get_extra_info("sockname")
        if sockname:
            self.local = (str(sockname[0]), int(sockname[1]))
        # CPython's selector transport passes max_size (256 KiB) to recvfrom() for every datagram,
        # allocating that much each time; one byte over our limit is enough to spot oversize
        # datagrams. uvloop's transport has no such attribute (libuv reads into its own buffer).
        try:
            transport.max_size = self._max + 1  # type: ignore[attr-defined]
        except AttributeError:
            pass

    def queued_bytes(self) -> int:
        """Bytes waiting in this socket's kernel receive buffer (Linux ``SO_MEMINFO``'s
        ``rmem_alloc``, buffer overhead included; 0 elsewhere): the queue the event loop's
        lag does not show, since the loop reads a few datagrams per turn however many wait."""
        if _SO_MEMINFO is None or self.transport is None:
            return 0
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return 0
        try:
            return int(struct.unpack_from("I", sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO,
                                                                36))[0])
        except (OSError, AttributeError, TypeError, struct.error):
            return 0

    @staticmethod
    def _size_buffers(sock: Any, size: int) -> None:
        """Large kernel buffers absorb bursts and event-loop pauses (a garbage-collector pass,
        a slow callback) instead of dropping datagrams: the default ~200 KiB holds only ~400
        requests, a few tens of milliseconds at load. SO_*BUFFORCE passes net.core.*mem_max
        when we may (CAP_NET_ADMIN); otherwise the kernel caps the plain option."""
        if size <= 0:
            return
        for force, plain in ((getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
                             (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF)):
            for option in (force, plain):
                if option is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, size)
                    break
                except (OSError, AttributeError, TypeError):
                    continue

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        stats = self.layer.stats
        stats["udp_datagrams_received"] += 1
        if len(data) > self._max:
            stats["udp_dropped_oversize"] += 1
            return
        if not data.strip(b"\r\n\t "):
            # CRLF keep-alives some UAs send over UDP (no answer defined there).
            stats["udp_keepalives_received"] += 1
            return
        peers = self._peers
        peer = peers.get(addr)
        if peer is None:
            # One Peer per source address, reused: a call's dozen messages (and the
            # transactions that keep their peer for up to 32 s) share it instead of each
            # holding a fresh object for the garbage collector to scan. Bounded for scanners.
            if len(peers) >= 4096:
                peers.clear()
            peer = peers[addr] = Peer("udp", str(addr[0]), int(addr[1]))
        self.layer.deliver(data, peer)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable …) carry no address we could map to a transaction here;
        # the transaction layer's timers cover the loss (RFC 3261 §17.1.1.2).
        self.layer.stats["udp_errors"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
