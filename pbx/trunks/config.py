r"""One trunk as the store defines it (:class:`TrunkConfig`) and its allowed sources.

A trunk is a carrier we register with (``register``) or exchange calls with by address
(``ip``). :class:`TrunkConfig` is frozen and validated on construction (every ValueError names
the field); its allowed sources are :class:`~sipcore.address.SourceRule`\ s
(:func:`~sipcore.address.parse_source` syntax).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast

from sipcore.address import SourceRule, format_host, parse_source
from sipcore.endpoint import came_from
from sipcore.transport import Peer, TransportName
from sipcore.uac_register import same_host

TrunkKind = Literal["register", "ip"]
_TRANSPORTS: tuple[TransportName, ...] = ("udp", "tcp", "tls", "ws", "wss")
_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}
#: Transports whose requests go to the trunk's name even once it is resolved: the TLS
#: certificate (and a WebSocket's Host) is checked against the name, not an address.
_BY_NAME: frozenset[TransportName] = frozenset({"tls", "ws", "wss"})


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def normal_ip(text: str) -> str:
    """An address as ``ipaddress`` writes it (ValueError naming it when it is none)."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ValueError(f"trunk address {text!r} is not an IP address") from None


class TrunkRow(Protocol):
    """What :meth:`TrunkConfig.from_store` reads (the shape of ``pbx.store.Trunk``)."""

    @property
    def tenant_id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def transport(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def realm(self) -> str: ...
    @property
    def allowed_sources(self) -> Iterable[str]: ...
    @property
    def trusted(self) -> bool: ...
    @property
    def register_expiry(self) -> int: ...


@dataclass(frozen=True, slots=True)
class TrunkConfig:
    """One trunk (frozen). Field names follow the store's ``trunks`` table.

    ``kind`` "register": we REGISTER ``username`` at ``host`` (digest in ``realm``) every
    ``register_expiry`` seconds; "ip": no registration, the carrier knows us by address.
    ``allowed_sources`` (``parse_source`` syntax) identify inbound requests from the trunk;
    when empty, ``host`` itself is the only source (if it is an IP address). ``trusted`` means
    we accept its P-Asserted-Identity and send ours to it. ``realm`` is the only realm whose
    challenges we answer with these credentials (empty: we answer none). ``domain`` is the
    host part of our AOR/From toward it (default ``host``).
    """

    name: str
    kind: TrunkKind
    host: str
    port: int = 5060
    transport: TransportName = "udp"
    username: str = ""
    password: str = field(default="", repr=False)
    realm: str = ""
    allowed_sources: tuple[str, ...] = ()
    trusted: bool = False
    register_expiry: int = 600
    domain: str = ""
    #: The owning tenant (store row); trunk names are unique per tenant only, see :attr:`key`.
    tenant_id: int | None = None
    #: The owning tenant's name (for ``/health`` and logs).
    tenant: str = ""
    #: The addresses a ``host`` that is a DNS name resolved to (A/AAAA, in the resolver's
    #: order), filled in by :class:`TrunkManager` — not a store column and not part of
    #: equality: a trunk does not "change" when its name resolves anew. Empty for an IP host.
    addresses: tuple[str, ...] = field(default=(), compare=False)
    #: Parsed ``allowed_sources`` plus the resolved ``addresses`` (derived; not a store column).
    sources: tuple[SourceRule, ...] = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("trunk.name: must not be empty")
        if self.kind not in ("register", "ip"):
            raise ValueError(f"trunk.kind: {self.kind!r} is neither 'register' nor 'ip'")
        if not self.host or any(c in self.host for c in " \t\r\n<>;@"):
            raise ValueError(f"trunk.host: {self.host!r} is not a host")
        if not 0 < self.port < 65536:
            raise ValueError(f"trunk.port: {self.port} is out of range")
        if self.transport not in _TRANSPORTS:
            raise ValueError(f"trunk.transport: {self.transport!r} is not one of {_TRANSPORTS}")
        if self.kind == "register":
            if not self.username:
                raise ValueError("trunk.username: a registration trunk needs one")
            if not self.register_expiry > 0:
                raise ValueError("trunk.register_expiry: must be positive")
        rules = []
        for i, source in enumerate(self.allowed_sources):
            try:
                rules.append(parse_source(source))
            except ValueError as exc:
                raise ValueError(f"trunk.allowed_sources[{i}]: {exc}") from None
        if not rules and _is_ip(self.host):
            rules.append(parse_source(self.host if ":" not in self.host else
                                      self.host.strip("[]")))
        if self.addresses:
            if _is_ip(self.host):
                raise ValueError(f"trunk.host: {self.host!r} is an address, nothing to resolve")
            normalised = tuple(dict.fromkeys(normal_ip(a) for a in self.addresses))
            object.__setattr__(self, "addresses", normalised)
            # The carrier's own name is its source too (any port: carriers send from pools).
            rules += [parse_source(address) for address in normalised]
        object.__setattr__(self, "sources", tuple(rules))

    @classmethod
    def from_store(cls, row: TrunkRow, *, domain: str = "", tenant: str = "") -> TrunkConfig:
        """Build from a store row (``pbx.store.Trunk``); raises ValueError naming the field."""
        kind = row.kind
        transport = row.transport
        if kind not in ("register", "ip"):
            raise ValueError(f"trunk.kind: {kind!r} is neither 'register' nor 'ip'")
        if transport not in _TRANSPORTS:
            raise ValueError(f"trunk.transport: {transport!r} is not one of {_TRANSPORTS}")
        return cls(
            name=row.name, kind=cast("TrunkKind", kind), host=row.host, port=row.port,
            transport=transport,
            username=row.username, password=row.password, realm=row.realm,
            allowed_sources=tuple(row.allowed_sources), trusted=bool(row.trusted),
            register_expiry=row.register_expiry, domain=domain, tenant_id=row.tenant_id,
            tenant=tenant,
        )

    @property
    def key(self) -> str:
        """Unique across tenants: ``name``, or ``tenant_id/name`` for a store trunk. The
        :class:`TrunkManager` is keyed by it."""
        return self.name if self.tenant_id is None else f"{self.tenant_id}/{self.name}"

    @property
    def named(self) -> bool:
        """Is ``host`` a DNS name (resolved by :class:`TrunkManager`) rather than an address?"""
        return not _is_ip(self.host)

    @property
    def peer(self) -> Peer:
        """Where requests to this trunk go: ``host``, or for a DNS name its first resolved
        address — then the endpoint knows the address a challenge must come from, as for an
        IP trunk. TLS and WebSocket trunks keep the name (their certificate names it)."""
        if self.addresses and self.transport not in _BY_NAME:
            return Peer(self.transport, self.addresses[0], self.port)
        return Peer(self.transport, self.host, self.port)

    def with_addresses(self, addresses: Iterable[str]) -> TrunkConfig:
        """A copy whose DNS-named ``host`` resolved to ``addresses`` (ValueError for an IP host
        or something that is not an address)."""
        return dataclasses.replace(self, addresses=tuple(addresses))

    def sends_to(self, host: str) -> bool:
        """Is ``host`` where requests to this trunk go — ``host`` itself or a resolved address?"""
        return same_host(host, self.host) or any(same_host(host, a) for a in self.addresses)

    @property
    def aor_domain(self) -> str:
        """Host part of our AOR and From toward this trunk."""
        return self.domain or self.host

    @property
    def uri_host(self) -> str:
        """``host[:port]`` for URIs (IPv6 in brackets, the default port left out)."""
        host = format_host(self.host)
        if self.port != _DEFAULT_PORTS[self.transport]:
            host += f":{self.port}"
        return host

    @property
    def uri_params(self) -> str:
        """``;transport=…`` unless UDP."""
        return "" if self.transport == "udp" else f";transport={self.transport}"

    def matches_source(self, peer: Peer) -> bool:
        """Did a request from ``peer`` come from this trunk?"""
        return any(rule.matches(peer) for rule in self.sources)

    def responds_from(self, source: Peer) -> bool:
        """Did a response from ``source`` come from this trunk — the transport, address and
        port we send to (for TCP/TLS that is the connection we opened to it)?

        A ``host`` that is a DNS name counts from the addresses it resolved to
        (:attr:`addresses`, kept current by :class:`TrunkManager`) and from ``allowed_sources``
        — always with our port; before it has resolved only ``allowed_sources`` count.
        """
        # A request too large for UDP went over TCP to the same host:port (RFC 3261 §18.1.1).
        switched = (self.transport, source.transport) == ("udp", "tcp")
        if source.port != self.port or (source.transport != self.transport and not switched):
            return False
        if _is_ip(self.host):
            return came_from(Peer(source.transport, self.host, self.port), source)
        return any(rule.matches(Peer(self.transport, source.host, source.port))
                   for rule in self.sources)

