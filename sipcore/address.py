"""Addresses as people write them in configuration: ``host:port`` and allowed-source entries.

One parser for each, shared by the listen specs (``sipcore.aio.listen``), the PBX's config and
HTTP listener, the store and the trunks, so ``[2001:db8::1]:5061`` means the same everywhere:

* :func:`parse_host_port` — ``host:port`` / ``[v6]:port`` (RFC 3986 §3.2.2, RFC 3261 §19.1.1:
  an IPv6 literal with a port goes in brackets), a default port or none, a
  :class:`ValueError` whose message names the entry and the fault.
* :func:`parse_source` — ``[transport:]address[/prefix][:port]`` → :class:`SourceRule`, the
  allow-list entry of a trunk (which peers may send as it).

Sans-IO (no sockets, no name resolution): a host name is checked for its characters only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import get_args

from sipcore.transport import Peer, TransportName

__all__ = [
    "SourceRule",
    "format_host",
    "parse_host_port",
    "parse_port",
    "parse_source",
    "split_host_port",
]

_TRANSPORTS: tuple[TransportName, ...] = get_args(TransportName)
#: Characters that never occur in a host name or IP literal (the rest is for DNS to judge).
_NOT_IN_HOST = frozenset(" \t\r\n/[]@<>;,\"'\\")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def split_host_port(text: str, *, bare_ipv6: bool = False,
                    entry: str | None = None) -> tuple[str, str | None, bool]:
    """``host[:port]`` → (host, port text or None, bracketed). IPv6 brackets are removed.

    With ``bare_ipv6`` an unbracketed text with more than one colon is an IPv6 address (or
    network) without a port; otherwise it is refused (write ``[addr]:port``). Raises
    ValueError naming ``entry`` (default ``text``) for unbalanced brackets or junk after ``]``.
    """
    quoted = repr(text if entry is None else entry)
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"{quoted}: IPv6 addresses must be written '[addr]:port'")
        return host, (tail[1:] if tail else None), True
    colons = text.count(":")
    if colons > 1:
        if bare_ipv6:
            return text, None, False
        raise ValueError(f"{quoted}: IPv6 addresses must be written '[addr]:port'")
    if colons == 1:
        host, _, port = text.partition(":")
        return host, port, False
    return text, None, False


def parse_port(text: str, entry: str, *, lowest: int = 0) -> int:
    """A port number ``lowest``–65535 (0 lets the kernel pick one); ValueError naming ``entry``."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{entry!r}: port {text!r} is not a number")
    port = int(text)
    if not lowest <= port <= 65535:
        raise ValueError(f"{entry!r}: port {port} is outside {lowest}-65535")
    return port


def parse_host_port(
    text: str,
    *,
    default_port: int | None = None,
    lowest_port: int = 0,
    entry: str | None = None,
) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); IPv6 comes back without brackets.

    A missing port is ``default_port`` when one is given, else an error. The host must be an IPv4 address, an IPv6 address (in
    brackets) or something that can be a host name. Raises ValueError whose message quotes
    ``entry`` (default ``text``: the whole config value when ``text`` is part of it) and names
    the fault ("missing port", "not a number", "outside 0-65535", "must be written
    '[addr]:port'", "not an IPv6 address", "not an IP address or host name").
    """
    text = text.strip()
    entry = text if entry is None else entry
    host, port_text, bracketed = split_host_port(text, entry=entry)
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{entry!r}: {host!r} is not an IPv6 address") from None
    elif not host or any(c in _NOT_IN_HOST for c in host):
        raise ValueError(f"{entry!r}: {host!r} is not an IP address or host name")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{entry!r}: missing port")
        return host, default_port
    return host, parse_port(port_text, entry, lowest=lowest_port)


def format_host(host: str) -> str:
    """``host`` as a URI or ``host:port`` writes it: an IPv6 literal in brackets (once)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True, slots=True)
class SourceRule:
    """An allowed source: a network, optionally one port and one transport."""

    network: IPNetwork
    port: int | None = None
    transport: TransportName | None = None

    def matches(self, peer: Peer) -> bool:
        """Does a message from ``peer`` come from this source?"""
        try:
            address = ipaddress.ip_address(peer.host.strip("[]"))
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:a.b.c.d from a dual-stack socket
        if address.version != self.network.version or address not in self.network:
            return False
        if self.port is not None and peer.port != self.port:
            return False
        return self.transport is None or peer.transport == self.transport


def parse_source(text: str, transports: tuple[str, ...] = _TRANSPORTS) -> SourceRule:
    """``[transport:]address[/prefix][:port]`` → :class:`SourceRule`.

    ``10.0.0.0/8``, ``udp:192.0.2.7:5060``, ``2001:db8::/32``, ``tcp:[2001:db8::1]:5061`` (an
    IPv6 address with a port goes in brackets). ``transports`` are the prefixes allowed. Raises
    ValueError naming the entry ("allowed source '…': …").
    """
    rest = text.strip()
    transport: TransportName | None = None
    for name in _TRANSPORTS:
        if rest.lower().startswith(name + ":"):
            if name not in transports:
                raise ValueError(f"allowed source {text!r}: transport {name!r} is not one of "
                                 f"{', '.join(transports)}")
            transport = name
            rest = rest[len(name) + 1:]
            break
    try:
        host, port_text, _ = split_host_port(rest, bare_ipv6=True, entry=text)
        port = None if port_text is None else parse_port(port_text, text, lowest=1)
    except ValueError as exc:
        raise ValueError(f"allowed source {exc}") from None
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        raise ValueError(f"allowed source {text!r} is not an IP address or network") from None
    return SourceRule(network, port, transport)
