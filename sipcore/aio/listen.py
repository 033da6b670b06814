"""Listen addresses: ``udp:127.0.0.1:5060``, ``tcp:[::1]:5060``, ``tls:…``, ``ws:…``, ``wss:…``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol, cast, get_args

from sipcore.transport import TransportName

TRANSPORTS: tuple[str, ...] = get_args(TransportName)


class ListenSpecLike(Protocol):
    """Anything with ``transport``, ``host`` and ``port`` (the app's config has its own class)."""

    @property
    def transport(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One address to listen on. ``host`` is an IP literal (IPv6 without brackets) or a name;
    ``port`` 0 lets the kernel pick one (see :meth:`AsyncEndpoint.listening`)."""

    transport: TransportName
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def parse_listen_spec(text: str) -> ListenSpec:
    """Parse ``transport:host:port``; raises ``ValueError`` naming what is wrong.

    IPv6 hosts are written in brackets (``tcp:[::1]:5060``), as in SIP URIs (RFC 3261 §19.1.1).
    """
    transport, sep, rest = text.strip().partition(":")
    transport = transport.lower()
    if not sep:
        raise ValueError(f"listen spec {text!r}: expected 'transport:host:port'")
    if transport not in TRANSPORTS:
        raise ValueError(
            f"listen spec {text!r}: unknown transport {transport!r} "
            f"(one of {', '.join(TRANSPORTS)})"
        )
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise ValueError(f"listen spec {text!r}: IPv6 address must be written '[addr]:port'")
        port_text = tail[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"listen spec {text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise ValueError(f"listen spec {text!r}: missing port")
        if ":" in host:
            raise ValueError(f"listen spec {text!r}: IPv6 address must be written '[addr]:port'")
        if not host or any(c in host for c in " /[]@"):
            raise ValueError(f"listen spec {text!r}: {host!r} is not an IP address or host name")
    if not port_text.isdigit():
        raise ValueError(f"listen spec {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"listen spec {text!r}: port {port} is outside 0-65535")
    return ListenSpec(cast(TransportName, transport), host, port)


def as_listen_spec(spec: str | ListenSpecLike) -> ListenSpec:
    """Accept a spec string or any object with transport/host/port (validated the same way)."""
    if isinstance(spec, str):
        return parse_listen_spec(spec)
    host = spec.host[1:-1] if spec.host.startswith("[") else spec.host
    return parse_listen_spec(str(ListenSpec(cast(TransportName, spec.transport), host, spec.port)))
