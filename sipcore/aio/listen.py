"""Listen addresses: ``udp:127.0.0.1:5060``, ``tcp:[::1]:5060``, ``tls:…``, ``ws:…``, ``wss:…``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, cast, get_args

from sipcore.address import format_host, parse_host_port
from sipcore.transport import TransportName

TRANSPORTS: tuple[str, ...] = get_args(TransportName)


class ListenSpecLike(Protocol):
    """Anything with ``transport``, ``host`` and ``port`` (a :class:`ListenSpec` or a look-alike)."""

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
        return f"{self.transport}:{format_host(self.host)}:{self.port}"


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
    try:
        host, port = parse_host_port(rest, entry=text)
    except ValueError as exc:
        raise ValueError(f"listen spec {exc}") from None
    return ListenSpec(cast(TransportName, transport), host, port)


def as_listen_spec(spec: str | ListenSpecLike) -> ListenSpec:
    """Accept a spec string or any object with transport/host/port (validated the same way)."""
    if isinstance(spec, str):
        return parse_listen_spec(spec)
    host = spec.host.removeprefix("[").removesuffix("]")
    return parse_listen_spec(str(ListenSpec(cast(TransportName, spec.transport), host, spec.port)))
