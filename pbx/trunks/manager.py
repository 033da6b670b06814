"""SIP trunks: carriers we register with (``register``) or exchange calls with by address (``ip``).

What lives here
---------------
* :class:`TrunkConfig` — one trunk as the store defines it (the lead maps store rows onto it).
* Inbound: :func:`identify_trunk` finds the trunk a request came from by its source address
  (optionally port and transport); :func:`sanitize_inbound` strips identity and routing headers
  that only a trusted peer may send (P-Asserted-Identity, Remote-Party-ID, Route, ``P-*``) — the
  B2BUA calls :meth:`TrunkManager.inbound` on *every* inbound request, which does both.
* Outbound: :func:`build_outbound_request` builds the INVITE toward a trunk (Request-URI
  ``sip:+E164@carrier``, the user's DID in From or ``anonymous`` with ``Privacy: id`` for CLIR,
  P-Asserted-Identity only toward trusted trunks); :func:`answer_challenge` answers the carrier's
  401/407 to it with the trunk's credentials under the trunk's realm only.
* :class:`TrunkManager` — the asyncio driver: one sans-IO
  :class:`~sipcore.uac_register.Registration` per registration trunk over the server's
  :class:`~sipcore.aio.endpoint.AsyncEndpoint`, one timer handle for all of them, the endpoint's
  events for our transactions (:meth:`TrunkManager.on_event`), per-trunk state for ``/health``
  (:meth:`TrunkManager.health_list`), trunks added/removed/changed while running
  (:meth:`TrunkManager.reconcile`: new ones register, removed ones de-register), de-registration
  on :meth:`TrunkManager.stop`.
* DNS names: a trunk ``host`` that is a name (``sip.carrier.de``) is resolved by the manager
  (A/AAAA via the loop's ``getaddrinfo``, or any :data:`Resolver`; no SRV/NAPTR — the port is
  configured) at start, on reconcile, every ``resolve_interval``, just before each registration
  refresh and at once after a registration failure; failures are retried with a growing delay.
  The resolved addresses live in :attr:`TrunkConfig.addresses`: requests go to the first one
  (so the endpoint's foreign-challenge check applies as for an IP trunk), challenges count
  from any of them with the trunk's port, inbound requests from any of them. A name that has
  never resolved leaves the trunk "failed" (``last_error`` "cannot resolve …"); one that stops
  resolving keeps its last addresses.

Security (SECURITY.md "credential leaks", "toll fraud"): credentials are only ever computed in
answer to a challenge on a transaction we sent to that trunk's host, in that trunk's realm, that
came from the trunk (:meth:`TrunkConfig.responds_from`); every refusal is a
``security.trunk.challenge_refused`` log line carrying ``src=``. A challenge from another address
never even reaches the transaction (the endpoint drops it, :class:`~sipcore.transaction.
ForeignChallengeDropped`): it is logged once per transaction as
``security.trunk.foreign_challenge src=…`` and the real answer is still awaited.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from pbx.logsetup import get_logger
from sipcore.aio.endpoint import AsyncEndpoint
from sipcore.digest import DigestClient
from sipcore.endpoint import came_from
from sipcore.errors import LocalProtocolError, ParseError
from sipcore.headers import Headers
from sipcore.message import Request, Response, new_call_id, new_tag
from sipcore.transaction import (
    ForeignChallengeDropped,
    ResponseReceived,
    TransactionTimedOut,
    TransportErrored,
)
from sipcore.transport import Peer, TransportName
from sipcore.uac_register import (
    ChallengeRefused,
    Registration,
    RegistrationState,
    StateChanged,
    same_host,
)
from sipcore.uri import quote_string

__all__ = [
    "PRIVATE_HEADERS",
    "ChallengeRefusedError",
    "Resolver",
    "SourceRule",
    "TrunkConfig",
    "TrunkKind",
    "TrunkManager",
    "TrunkRow",
    "answer_challenge",
    "build_outbound_request",
    "identify_trunk",
    "parse_source",
    "resolve_host",
    "sanitize_inbound",
]

TrunkKind = Literal["register", "ip"]
_TRANSPORTS: tuple[TransportName, ...] = ("udp", "tcp", "tls", "ws", "wss")
_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}
#: Transports whose requests go to the trunk's name even once it is resolved: the TLS
#: certificate (and a WebSocket's Host) is checked against the name, not an address.
_BY_NAME: frozenset[TransportName] = frozenset({"tls", "ws", "wss"})


# ------------------------------------------------------------------------------------ sources
@dataclass(frozen=True, slots=True)
class SourceRule:
    """An allowed source of a trunk: a network, optionally one port and one transport."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int | None = None
    transport: TransportName | None = None

    def matches(self, peer: Peer) -> bool:
        """Does a request from ``peer`` come from this source?"""
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


def parse_source(text: str) -> SourceRule:
    """``[transport:]address[/prefix][:port]`` → :class:`SourceRule`; IPv6 with a port in
    brackets (``tcp:[2001:db8::1]:5061``). Raises ValueError naming the bad entry."""
    rest = text.strip()
    transport: TransportName | None = None
    for name in _TRANSPORTS:
        if rest.lower().startswith(name + ":"):
            transport = name
            rest = rest[len(name) + 1 :]
            break
    port: int | None = None
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError(f"allowed source {text!r}: unbalanced '['")
        tail = rest[end + 1 :]
        rest = rest[1:end]
        if tail:
            if not tail.startswith(":"):
                raise ValueError(f"allowed source {text!r}: junk after ']'")
            port = _port(tail[1:], text)
    elif rest.count(":") == 1:  # IPv4 (or IPv4 network) with a port
        rest, _, port_text = rest.partition(":")
        port = _port(port_text, text)
    try:
        network = ipaddress.ip_network(rest, strict=False)
    except ValueError:
        raise ValueError(f"allowed source {text!r} is not an IP address or network") from None
    return SourceRule(network, port, transport)


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"allowed source {entry!r}: bad port {text!r}")
    return int(text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _normal_ip(text: str) -> str:
    """An address as ``ipaddress`` writes it (ValueError naming it when it is none)."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ValueError(f"trunk address {text!r} is not an IP address") from None


# ------------------------------------------------------------------------------------- config
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
        rules = [parse_source(s) for s in self.allowed_sources]
        if not rules and _is_ip(self.host):
            rules.append(parse_source(self.host if ":" not in self.host else
                                      self.host.strip("[]")))
        if self.addresses:
            if _is_ip(self.host):
                raise ValueError(f"trunk.host: {self.host!r} is an address, nothing to resolve")
            normalised = tuple(dict.fromkeys(_normal_ip(a) for a in self.addresses))
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
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
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


def identify_trunk(trunks: Iterable[TrunkConfig], peer: Peer) -> TrunkConfig | None:
    """The first trunk whose allowed sources include ``peer`` (None: not from a trunk)."""
    for trunk in trunks:
        if trunk.matches_source(peer):
            return trunk
    return None


# ------------------------------------------------------------------------------------ inbound
#: Headers only a trusted peer may send (RFC 3325 §9, RFC 7315; Remote-Party-ID is the
#: pre-RFC 3325 draft still used by some carriers). Every other ``P-`` header goes too.
PRIVATE_HEADERS = frozenset({"p-asserted-identity", "p-preferred-identity", "remote-party-id",
                             "route"})


def sanitize_inbound(request: Request, *, trusted: bool) -> list[str]:
    """Strip identity, routing and private headers unless ``request`` comes from a trusted
    trunk; returns the names removed (for the security log).

    Header names are compared case-insensitively on the parsed header set — the same set
    every later layer reads, so "whitespace before the colon" or case games cannot smuggle
    a second spelling past this.
    """
    if trusted:
        return []
    headers = request.headers
    doomed = sorted(key for key in headers.lookup_keys()
                    if key in PRIVATE_HEADERS or key.startswith("p-"))
    for name in doomed:
        headers.remove(name)
    return doomed


# ----------------------------------------------------------------------------------- outbound
_NUMBER = re.compile(r"\+?[0-9]{1,15}")


def build_outbound_request(
    trunk: TrunkConfig,
    *,
    number: str,
    caller_did: str | None,
    contact: str,
    caller_name: str | None = None,
    anonymous: bool = False,
    method: str = "INVITE",
    call_id: str | None = None,
    from_tag: str | None = None,
    cseq: int = 1,
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """The initial request of an outbound call toward ``trunk`` (no Via: the endpoint adds it).

    ``number``: the dialled number, normalised by the dial plan — E.164 with ``+`` or a short
    code such as 110/112. ``caller_did``: the calling user's DID (E.164) or None.
    ``anonymous`` (CLIR, RFC 3323/3325): From is ``"Anonymous" <sip:anonymous@anonymous.invalid>``
    and ``Privacy: id``; a trusted trunk still gets the real identity in P-Asserted-Identity
    (it must withhold it because of Privacy: id). P-Asserted-Identity is sent only to trusted
    trunks. ``contact``: our Contact URI. Raises :class:`LocalProtocolError` for a number or
    DID that is not digits.
    """
    if _NUMBER.fullmatch(number) is None:
        raise LocalProtocolError(f"not a dialable number for a trunk: {number!r}")
    if caller_did is not None and _NUMBER.fullmatch(caller_did) is None:
        raise LocalProtocolError(f"caller DID is not a number: {caller_did!r}")
    target = f"sip:{number}@{trunk.uri_host}{trunk.uri_params}"
    identity = (f"<sip:{caller_did}@{trunk.aor_domain}>" if caller_did
                else f"<sip:{trunk.username or 'anonymous'}@{trunk.aor_domain}>")
    headers = Headers()
    if anonymous:
        headers.add("From", f'"Anonymous" <sip:anonymous@anonymous.invalid>;tag={from_tag or new_tag()}')
    elif caller_name:
        headers.add("From", f"{quote_string(caller_name)} {identity};tag={from_tag or new_tag()}")
    else:
        headers.add("From", f"{identity};tag={from_tag or new_tag()}")
    headers.add("To", f"<sip:{number}@{trunk.aor_domain}>")
    headers.add("Call-ID", call_id or new_call_id())
    headers.add("CSeq", f"{cseq} {method}")
    headers.add("Contact", f"<{contact}>")
    headers.add("Max-Forwards", "70")
    if trunk.trusted and caller_did:
        headers.add("P-Asserted-Identity", identity)
    if anonymous:
        headers.add("Privacy", "id")
    if body:
        headers.add("Content-Type", content_type or "application/sdp")
    headers.add("Content-Length", str(len(body)))
    try:
        return Request(method, target, headers, body)
    except ParseError as exc:
        raise LocalProtocolError(f"cannot build a request to trunk {trunk.name}: {exc.reason}") \
            from None


class ChallengeRefusedError(LocalProtocolError):
    """We will not answer this challenge with the trunk's credentials (the message says why)."""


def answer_challenge(
    trunk: TrunkConfig,
    digest: DigestClient,
    request: Request,
    response: Response,
    *,
    sent_to: Peer,
    source: Peer | None = None,
) -> Request:
    """The request to send again after ``trunk`` challenged ``request`` with ``response``.

    ``request`` is the one we sent in the challenged transaction and ``sent_to`` where we sent
    it: it must be this trunk's host; ``source`` (when the caller knows where the response came
    from) must be the trunk (:meth:`TrunkConfig.responds_from`). The challenge must be for the trunk's ``realm``. The returned copy has
    CSeq + 1 and no Via (the endpoint adds a fresh branch): send it in a new client transaction
    and use that CSeq from then on (RFC 3261 §22.2). Raises :class:`ChallengeRefusedError`.
    """
    if response.status not in (401, 407):
        raise ChallengeRefusedError(f"{response.status} is not a challenge")
    if not trunk.sends_to(sent_to.host):
        raise ChallengeRefusedError(
            f"request went to {sent_to.host}, not to trunk {trunk.name} ({trunk.host})")
    if source is not None and not trunk.responds_from(source):
        raise ChallengeRefusedError(
            f"challenge came from {source.transport}:{source.host}:{source.port}, not from "
            f"trunk {trunk.name} ({trunk.transport}:{trunk.host}:{trunk.port})")
    if not trunk.realm:
        raise ChallengeRefusedError(f"trunk {trunk.name} has no realm configured")
    if not trunk.username:
        raise ChallengeRefusedError(f"trunk {trunk.name} has no credentials")
    try:
        authorized = digest.authorize(request, response, trunk.username, trunk.password,
                                      realm=trunk.realm)
        cseq = request.cseq
    except ParseError as exc:
        raise ChallengeRefusedError(exc.reason) from None
    except LocalProtocolError as exc:
        raise ChallengeRefusedError(str(exc)) from None
    authorized.headers.remove("Via")
    authorized.headers.set("CSeq", f"{cseq.seq + 1} {cseq.method}")
    return authorized


# ------------------------------------------------------------------------------------------ DNS
#: Resolves a trunk's DNS name: ``(host, port, transport)`` → its addresses (A/AAAA), best
#: first; raises OSError (or returns nothing) when the name does not resolve.
Resolver = Callable[[str, int, TransportName], Awaitable[Sequence[str]]]


async def resolve_host(host: str, port: int, transport: TransportName) -> list[str]:
    """The default :data:`Resolver`: A/AAAA through the event loop's ``getaddrinfo`` (a thread,
    never the loop itself), in the system's order of preference (RFC 6724), duplicates
    dropped. No SRV/NAPTR (RFC 3263): the trunk's port is configured. OSError when the name
    does not resolve to any address."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=kind)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos
                                   if info[0] in (socket.AF_INET, socket.AF_INET6)))
    if not addresses:
        raise OSError(f"{host} has no IPv4/IPv6 address")
    return addresses


@dataclass(slots=True)
class _Dns:
    """What we know about one named trunk's host: its query task and the last outcome."""

    #: (host, port, transport) being resolved: a trunk whose host changes gets a new query.
    query: tuple[str, int, TransportName]
    task: asyncio.Task[None] | None = None
    #: Wakes the query task: to resolve at once when ``urgent`` (a registration failed,
    #: :meth:`TrunkManager.resolve_now`), else to plan the next query anew (a refresh is due).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    urgent: bool = False
    #: When the last query started (loop time).
    queried_at: float | None = None
    #: The last error ("cannot resolve …"); None after a success.
    error: str | None = None
    failures: int = 0
    resolved_at: float | None = None
    #: When the next query runs (loop time).
    next_at: float | None = None


# -------------------------------------------------------------------------------------- driver
@dataclass(slots=True)
class _Pending:
    #: The registration slot: a trunk key, or a retiring registration's id.
    slot: str
    cseq: int


#: Transactions whose foreign challenges were logged (bounded: a flood must not grow it).
_FOREIGN_LOGGED_MAX = 1024


class TrunkManager:
    """Registration trunks over an :class:`AsyncEndpoint`, and the trunk table for the B2BUA.

    Life cycle: build it with the trunks, call :meth:`start` once the endpoint is started,
    forward every endpoint event to :meth:`on_event` (it returns True for the ones it
    consumed), call :meth:`reconcile` with the store's trunks whenever they may have changed
    (the server does after each directory reload), and ``await`` :meth:`stop` before closing
    the endpoint. ``contact_host`` is the address written into our Contact (needed when
    listening on a wildcard address); otherwise the listener's own address is used.
    """

    def __init__(
        self,
        trunks: Iterable[TrunkConfig] = (),
        *,
        contact_host: str | None = None,
        refresh_fraction: float = 0.85,
        retry_base: float = 30.0,
        retry_max: float = 1800.0,
        user_agent: str | None = None,
        digest: DigestClient | None = None,
        resolver: Resolver | None = None,
        resolve_interval: float = 300.0,
        resolve_retry: float = 30.0,
        resolve_timeout: float = 10.0,
    ) -> None:
        #: The current trunks by :attr:`TrunkConfig.key` (the B2BUA routes and identifies by it).
        self.trunks: dict[str, TrunkConfig] = {}
        for trunk in trunks:
            if trunk.key in self.trunks:
                raise ValueError(f"trunk.name: {trunk.key!r} is defined twice")
            self.trunks[trunk.key] = trunk
        self.contact_host = contact_host
        self.refresh_fraction = refresh_fraction
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.user_agent = user_agent
        #: Shared by the INVITE challenges (:meth:`answer_challenge`); registrations have their own.
        self.digest = digest if digest is not None else DigestClient()
        self.log = get_logger("trunks")
        self.seclog = get_logger("security")
        #: The registration of each current registration trunk, by trunk key.
        self.registrations: dict[str, Registration] = {}
        #: Registrations of removed or changed trunks that are still de-registering, by an id
        #: of their own (the trunk key may already name the new registration).
        self._retiring: dict[str, tuple[TrunkConfig, Registration]] = {}
        self._retired = 0
        self._sip: AsyncEndpoint[Any] | None = None
        self._pending: dict[str, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopped: asyncio.Event | None = None
        self._refused: dict[str, int] = dict.fromkeys(self.trunks, 0)
        self._foreign: dict[str, int] = dict.fromkeys(self.trunks, 0)
        self._foreign_logged: dict[str, None] = {}
        #: Resolves named trunk hosts (default :func:`resolve_host`); re-resolved every
        #: ``resolve_interval`` seconds, after a failure in ``resolve_retry`` seconds doubling up
        #: to ``resolve_interval``; a query taking longer than ``resolve_timeout`` has failed.
        self.resolver: Resolver = resolver if resolver is not None else resolve_host
        self.resolve_interval = resolve_interval
        self.resolve_retry = resolve_retry
        self.resolve_timeout = resolve_timeout
        self._dns: dict[str, _Dns] = {}

    # -- the trunk table (inbound/outbound helpers for the B2BUA) ----------------------------------

    def identify(self, peer: Peer) -> TrunkConfig | None:
        """The trunk ``peer`` belongs to, or None."""
        return identify_trunk(self.trunks.values(), peer)

    def inbound(self, request: Request, peer: Peer) -> TrunkConfig | None:
        """Call on every inbound request: identifies the trunk it came from (None: a device or
        a stranger) and strips P-Asserted-Identity, Remote-Party-ID, Route and ``P-*`` headers
        unless that trunk is trusted. The request is changed in place."""
        trunk = self.identify(peer)
        removed = sanitize_inbound(request, trusted=trunk is not None and trunk.trusted)
        if removed:
            self.log.debug("trunk.inbound.stripped", src=peer.host, headers=removed,
                           trunk=trunk.key if trunk else None)
        return trunk

    def contact_for(self, trunk: TrunkConfig, user: str | None = None) -> str:
        """Our Contact URI toward ``trunk`` (from the endpoint's listener on its transport)."""
        sip = self._require_sip()
        listening = [(h, p) for t, h, p in sip.listening() if t == trunk.transport]
        if not listening:
            raise LocalProtocolError(
                f"trunk {trunk.name}: not listening on {trunk.transport} to receive its requests")
        host, port = listening[0]
        host = self.contact_host or host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        name = user if user is not None else trunk.username
        userinfo = f"{name}@" if name else ""
        params = "" if trunk.transport == "udp" else f";transport={trunk.transport}"
        return f"sip:{userinfo}{host}:{port}{params}"

    def answer_challenge(
        self, trunk_key: str, request: Request, response: Response, *,
        sent_to: Peer, source: Peer | None = None,
    ) -> Request | None:
        """:func:`answer_challenge` for the B2BUA's outbound INVITE; None (and a security log
        line) when refused."""
        trunk = self.trunks.get(trunk_key)
        if trunk is None:
            self.seclog.warning("security.trunk.challenge_refused", trunk=trunk_key,
                                src=source.host if source else sent_to.host,
                                reason="unknown trunk", status=response.status)
            return None
        try:
            return answer_challenge(trunk, self.digest, request, response, sent_to=sent_to,
                                    source=source)
        except ChallengeRefusedError as exc:
            self._refused[trunk.key] = self._refused.get(trunk.key, 0) + 1
            self.seclog.warning("security.trunk.challenge_refused", trunk=trunk.key,
                                src=source.host if source else sent_to.host, reason=str(exc),
                                status=response.status, method=request.method)
            return None

    # -- life cycle --------------------------------------------------------------------------------

    def start(self, sip: AsyncEndpoint[Any]) -> None:
        """Begin registering every registration trunk over ``sip`` (already started); a trunk
        whose host is a DNS name first resolves it (in the background), then registers."""
        self._sip = sip
        for trunk in self.trunks.values():
            self._watch(trunk)
            self._begin(trunk)
        self._arm()

    def resolve_now(self, key: str | None = None) -> None:
        """Resolve the DNS name of trunk ``key`` (all named trunks: None) again now rather
        than at the next interval."""
        for name, dns in self._dns.items():
            if key is None or name == key:
                dns.urgent = True
                dns.wake.set()

    def reconcile(self, trunks: Iterable[TrunkConfig]) -> tuple[list[str], list[str], list[str]]:
        """Make ``trunks`` (the store's, after a change) the current trunk table while running.

        A new registration trunk starts registering; a removed one de-registers (REGISTER with
        Expires: 0) and stops; a changed one does both (old binding removed, new one made). IP
        trunks appear and disappear for inbound source matching and outbound routing at once.
        A key given twice keeps the first. Returns the keys (added, removed, changed).
        """
        wanted: dict[str, TrunkConfig] = {}
        for trunk in trunks:
            if trunk.key in wanted:
                self.log.error("trunk.duplicate", trunk=trunk.key)
                continue
            wanted[trunk.key] = trunk
        added = [k for k in wanted if k not in self.trunks]
        removed = [k for k in self.trunks if k not in wanted]
        changed = [k for k, t in wanted.items() if k in self.trunks and self.trunks[k] != t]
        if not (added or removed or changed):
            return added, removed, changed
        # A changed trunk whose binding would be the same one (same registrar and AOR) starts
        # registering only once the old binding is removed: the Expires: 0 arriving after the
        # new REGISTER would delete the new binding (_drain begins it then).
        later = {key for key in removed + changed
                 if self._retire(key) and key in changed
                 and _same_binding(self.trunks[key], wanted[key])}
        for key, trunk in wanted.items():
            # What a name resolved to stays valid for the same name (the query runs on).
            old = self.trunks.get(key)
            if old is not None and old.addresses and _query(old) == _query(trunk):
                wanted[key] = trunk if trunk is old else trunk.with_addresses(old.addresses)
        self.trunks = wanted
        for key in added + changed:
            self._refused.setdefault(key, 0)
            self._foreign.setdefault(key, 0)
            if self._sip is not None:
                self._watch(wanted[key])
                if key not in later:
                    self._begin(wanted[key])
        for key in removed:
            self._refused.pop(key, None)
            self._foreign.pop(key, None)
            self._unwatch(key)
        self.log.info("trunk.reconciled", added=added, removed=removed, changed=changed)
        if self._sip is not None:
            self._arm()
        return added, removed, changed

    async def stop(self, timeout: float = 5.0) -> None:
        """De-register every trunk (REGISTER with Expires: 0) and wait up to ``timeout``
        seconds for the outcomes; then forget the timer and stop resolving names. Call before
        closing the endpoint."""
        tasks = [dns.task for dns in self._dns.values() if dns.task is not None]
        for key in list(self._dns):
            self._unwatch(key)
        if tasks:
            # Bounded: on Python 3.11 asyncio.wait_for can swallow a cancellation that races
            # with its own completion; the loops also end on their own once unwatched.
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
        if self._sip is None:
            return
        self._stopped = asyncio.Event()
        now = self._now()
        for name, registration in list(self.registrations.items()):
            registration.stop(now)
            self._drain(name)
        self._check_stopped()
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except TimeoutError:
            waiting = [n for n, r in self.registrations.items()
                       if r.state is not RegistrationState.STOPPED]
            waiting += [t.key for t, _ in self._retiring.values()]
            self.log.warning("trunk.unregister.timeout", trunks=waiting)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._timer_at = None
            self._pending.clear()
            self._retiring.clear()

    # -- events ------------------------------------------------------------------------------------

    def on_event(self, event: object) -> bool:
        """Handle an endpoint event of one of our REGISTER transactions, and log every
        challenge the endpoint dropped because it came from elsewhere; True when consumed
        (the caller then ignores it)."""
        if isinstance(event, ForeignChallengeDropped):
            self._foreign_challenge(event)
            return True
        if not isinstance(event, ResponseReceived | TransactionTimedOut | TransportErrored):
            return False
        pending = self._pending.get(event.transaction_id)
        if pending is None:
            return False
        slot = self._slot(pending.slot)
        now = self._now()
        if isinstance(event, ResponseReceived):
            if event.response.status < 200:
                return True
            del self._pending[event.transaction_id]
            if slot is not None:
                trunk, registration = slot
                # The endpoint only lets a challenge through from where the REGISTER went, or
                # when that was a DNS name: then we vouch for an allowed source (None) or hand
                # the source over, and the registration refuses the challenge.
                source = None if trunk.responds_from(event.peer) else event.peer
                registration.handle_response(event.response, now, source)
        else:
            del self._pending[event.transaction_id]
            if slot is not None:
                reason = "timeout" if isinstance(event, TransactionTimedOut) else "transport error"
                slot[1].handle_failure(pending.cseq, now, reason)
        self._drain(pending.slot)
        self._arm()
        return True

    def _foreign_challenge(self, event: ForeignChallengeDropped) -> None:
        """SECURITY.md "credential leaks": someone else answered our request with a challenge.
        One security line per transaction (a flood of forgeries is counted, not logged)."""
        pending = self._pending.get(event.transaction_id)
        trunk: TrunkConfig | None = None
        if pending is not None:
            slot = self._slot(pending.slot)
            trunk = slot[0] if slot is not None else None
        else:  # an INVITE of a trunk leg: known by where it went
            trunk = next((t for t in self.trunks.values() if t.peer == event.sent_to), None)
        if trunk is not None and trunk.key in self._foreign:
            self._foreign[trunk.key] += 1
        if event.transaction_id in self._foreign_logged:
            return
        if len(self._foreign_logged) >= _FOREIGN_LOGGED_MAX:
            del self._foreign_logged[next(iter(self._foreign_logged))]
        self._foreign_logged[event.transaction_id] = None
        self.seclog.warning(
            "security.trunk.foreign_challenge", src=event.peer.host, port=event.peer.port,
            transport=event.peer.transport, status=event.response.status,
            trunk=trunk.key if trunk is not None else None,
            sent_to=f"{event.sent_to.host}:{event.sent_to.port}",
            method=event.response.cseq.method if _has_cseq(event.response) else None)

    # -- health ------------------------------------------------------------------------------------

    def health(self) -> dict[str, dict[str, object]]:
        """Per trunk key: name, tenant, kind, host, state ("registering"/"registered"/
        "failed"/"stopped"/"idle"; "ip" for IP trunks; "resolving" while a DNS-named host has
        not resolved yet, "failed" with ``last_error`` "cannot resolve …" when it does not),
        ``next_refresh`` (seconds until the next REGISTER: refresh or retry), ``expires_in``
        (seconds until the binding expires), consecutive failures, last error and status,
        refused and foreign challenges; for a named host also ``addresses`` (what it resolved
        to), ``next_resolve`` (seconds) and ``dns_error`` while the last query failed."""
        now = self._now() if self._sip is not None else None
        out: dict[str, dict[str, object]] = {}
        for key, trunk in self.trunks.items():
            entry: dict[str, object] = {
                "name": trunk.name, "tenant": trunk.tenant, "kind": trunk.kind,
                "host": trunk.host, "refused_challenges": self._refused.get(key, 0),
                "foreign_challenges": self._foreign.get(key, 0)}
            registration = self.registrations.get(key)
            dns = self._dns.get(key)
            if trunk.named:
                entry["addresses"] = list(trunk.addresses)
                if dns is not None and dns.error is not None:
                    entry["dns_error"] = dns.error
                if dns is not None and dns.next_at is not None and now is not None:
                    entry["next_resolve"] = max(0, round(dns.next_at - now))
            if trunk.named and not trunk.addresses and registration is None:
                # Nothing to send to, nothing to recognise it by: not usable until it resolves.
                failed = dns is not None and dns.error is not None
                entry["state"] = "failed" if failed else "resolving"
                entry["last_error"] = dns.error if dns is not None else None
                if dns is not None:
                    entry["failures"] = dns.failures
            elif trunk.kind == "ip":
                entry["state"] = "ip"
            elif registration is None:
                entry["state"] = "idle"
            else:
                entry["state"] = _health_state(registration.state)
                entry["failures"] = registration.failures
                entry["last_error"] = registration.last_error
                entry["last_status"] = _status_of(registration.last_error)
                deadline = registration.get_timer()
                if deadline is not None and now is not None:
                    entry["next_refresh"] = max(0, round(deadline - now))
                if registration.expires_at is not None and now is not None:
                    entry["expires_in"] = max(0, round(registration.expires_at - now))
            out[key] = entry
        return out

    def health_list(self) -> list[dict[str, object]]:
        """:meth:`health` as a list sorted by tenant and name (what ``/health`` shows)."""
        return sorted(self.health().values(),
                      key=lambda e: (str(e["tenant"]), str(e["name"])))

    def states(self) -> Mapping[str, str]:
        """trunk key → health state (see :meth:`health`)."""
        return {name: str(entry["state"]) for name, entry in self.health().items()}

    # -- internals ---------------------------------------------------------------------------------

    @property
    def sip(self) -> AsyncEndpoint[Any]:
        """The endpoint given to :meth:`start` (RuntimeError before)."""
        return self._require_sip()

    def _require_sip(self) -> AsyncEndpoint[Any]:
        if self._sip is None:
            raise RuntimeError("TrunkManager.start() has not run")
        return self._sip

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _slot(self, slot: str) -> tuple[TrunkConfig, Registration] | None:
        """(trunk, registration) of a current trunk key or a retiring registration's id."""
        retiring = self._retiring.get(slot)
        if retiring is not None:
            return retiring
        registration = self.registrations.get(slot)
        trunk = self.trunks.get(slot)
        return (trunk, registration) if registration is not None and trunk is not None else None

    def _begin(self, trunk: TrunkConfig) -> None:
        """Start registering ``trunk`` (a registration trunk without a registration)."""
        if trunk.kind != "register" or trunk.key in self.registrations:
            return
        if trunk.named and not trunk.addresses:
            return  # registers once its name resolves (_dns_resolved)
        try:
            registration = self._registration(trunk)
        except LocalProtocolError as exc:
            self.log.error("trunk.register.unusable", trunk=trunk.key, error=str(exc))
            return
        self.registrations[trunk.key] = registration
        registration.start(self._now())
        self._drain(trunk.key)

    def _retire(self, key: str) -> bool:
        """Take the registration of trunk ``key`` out of service: de-register (Expires: 0)
        under an id of its own until it has stopped. True while that is under way."""
        registration = self.registrations.pop(key, None)
        trunk = self.trunks[key]
        if registration is None or self._sip is None:
            return False
        self._retired += 1
        slot = f"{key}#retired{self._retired}"
        self._retiring[slot] = (trunk, registration)
        for pending in self._pending.values():
            if pending.slot == key:
                pending.slot = slot
        registration.stop(self._now())
        self._drain(slot)
        return slot in self._retiring

    def _registration(self, trunk: TrunkConfig) -> Registration:
        aor = f"sip:{trunk.username}@{trunk.aor_domain}"
        return Registration(
            registrar=f"sip:{trunk.uri_host}{trunk.uri_params}",
            aor=aor,
            contact=self.contact_for(trunk),
            peer=trunk.peer,
            username=trunk.username,
            password=trunk.password,
            realm=trunk.realm,
            expires=trunk.register_expiry,
            refresh_fraction=self.refresh_fraction,
            retry_base=self.retry_base,
            retry_max=self.retry_max,
            user_agent=self.user_agent,
        )

    def _drain(self, slot_id: str) -> None:
        """Send what the registration wants sent; log what it reports."""
        slot = self._slot(slot_id)
        if slot is None:
            return
        trunk, registration = slot
        name = trunk.key
        sip = self._require_sip()
        for request in registration.requests_to_send():
            cseq = registration.cseq
            try:
                tx_id = sip.send_request(request, registration.peer)
            except (LocalProtocolError, OSError) as exc:
                self.log.error("trunk.register.send_failed", trunk=name, error=str(exc))
                registration.handle_failure(cseq, self._now(), f"send failed: {exc}")
                continue
            self._pending[tx_id] = _Pending(slot_id, cseq)
        for event in registration.events():
            if isinstance(event, ChallengeRefused):
                if name in self._refused:
                    self._refused[name] += 1
                self.seclog.warning(
                    "security.trunk.challenge_refused", trunk=name,
                    src=event.source.host if event.source else trunk.host,
                    reason=event.reason, status=event.status, method="REGISTER")
            elif isinstance(event, StateChanged):
                fields: dict[str, object] = {"trunk": name, "host": trunk.host,
                                             "state": event.state.value, "reason": event.reason}
                if event.expires is not None:
                    fields["expires"] = event.expires
                if event.state is RegistrationState.FAILED:
                    deadline = registration.get_timer()
                    if deadline is not None:
                        fields["retry_in"] = round(deadline - self._now(), 1)
                    self.log.warning("trunk.register.failed", **fields)
                    self.resolve_now(name)  # the carrier may have moved: look again
                else:
                    self.log.info("trunk.register." + event.state.value, **fields)
                    dns = self._dns.get(name)
                    if event.state is RegistrationState.REGISTERED and dns is not None:
                        dns.wake.set()  # re-plan: resolve again before the next refresh
        if slot_id in self._retiring and registration.state is RegistrationState.STOPPED:
            del self._retiring[slot_id]
            successor = self.trunks.get(name)
            if successor is not None and successor is not trunk and self._stopped is None:
                self._begin(successor)  # a changed trunk that waited for this (reconcile)
        self._check_stopped()

    def _check_stopped(self) -> None:
        if self._stopped is not None and not self._retiring and all(
            r.state is RegistrationState.STOPPED for r in self.registrations.values()
        ):
            self._stopped.set()

    def _all_registrations(self) -> list[tuple[str, Registration]]:
        return [*self.registrations.items(),
                *((slot, reg) for slot, (_, reg) in self._retiring.items())]

    # -- DNS -------------------------------------------------------------------------------------

    def _watch(self, trunk: TrunkConfig) -> None:
        """Keep resolving ``trunk``'s host when it is a DNS name (a query task per trunk)."""
        key = trunk.key
        current = self._dns.get(key)
        if not trunk.named:
            self._unwatch(key)
            return
        if current is not None and current.query == _query(trunk):
            return
        self._unwatch(key)
        dns = _Dns(_query(trunk))
        self._dns[key] = dns
        dns.task = asyncio.get_running_loop().create_task(self._dns_loop(key, dns),
                                                          name=f"trunk-dns {key}")

    def _unwatch(self, key: str) -> None:
        dns = self._dns.pop(key, None)
        if dns is not None and dns.task is not None:
            dns.task.cancel()
            dns.wake.set()  # a loop that missed the cancellation sees it is unwatched and ends

    async def _dns_loop(self, key: str, dns: _Dns) -> None:
        """Resolve, wait (``resolve_interval`` after a success, a growing retry delay after a
        failure; until just before the registration's next refresh when that comes sooner;
        not at all when woken urgently), resolve again — until cancelled."""
        host, port, transport = dns.query
        while self._dns.get(key) is dns:  # until unwatched (or cancelled)
            dns.urgent = False
            dns.queried_at = self._now()
            try:
                async with asyncio.timeout(self.resolve_timeout):
                    found = await self.resolver(host, port, transport)
                addresses = tuple(dict.fromkeys(_normal_ip(a) for a in found))
                if not addresses:
                    raise OSError("no address")
            except TimeoutError:
                delay = self._dns_failed(key, dns, f"no answer in {self.resolve_timeout:g} s")
            except Exception as exc:  # any resolver failure means "not resolved", retried
                delay = self._dns_failed(key, dns, str(exc) or type(exc).__name__)
            else:
                try:
                    delay = self._dns_resolved(key, dns, addresses)
                except Exception:  # a bug must not end the trunk's queries for good
                    self.log.exception("trunk.dns.apply_failed", trunk=key)
                    delay = self.resolve_retry
            await self._dns_wait(key, dns, self._now() + delay)

    async def _dns_wait(self, key: str, dns: _Dns, due: float) -> None:
        """Sleep until ``due`` or until just before the registration's refresh, whichever
        comes first — the refresh then goes where the name points now; re-planned whenever
        the registration is (re)bound, cut short by :meth:`resolve_now`."""
        while not dns.urgent and self._dns.get(key) is dns:
            at = due
            registration = self.registrations.get(key)
            deadline = registration.get_timer() if registration is not None else None
            if (registration is not None and deadline is not None
                    and registration.state is RegistrationState.REGISTERED):
                before = deadline - self.resolve_timeout  # a query may take that long
                if dns.queried_at is None or before > dns.queried_at:
                    at = min(at, before)
            dns.next_at = at
            dns.wake.clear()
            try:
                async with asyncio.timeout(max(0.0, at - self._now())):
                    await dns.wake.wait()
            except TimeoutError:
                return

    def _dns_failed(self, key: str, dns: _Dns, reason: str) -> float:
        """Record a failed query; logged when the error is new. Returns the retry delay. What
        the name resolved to before stays in use (a DNS outage must not cut a working trunk)."""
        dns.failures += 1
        delay = min(self.resolve_retry * 2.0 ** min(dns.failures - 1, 16),
                    max(self.resolve_interval, self.resolve_retry))
        error = f"cannot resolve {dns.query[0]}: {reason}"
        if error != dns.error:
            trunk = self.trunks.get(key)
            self.log.warning("trunk.dns.failed", trunk=key, host=dns.query[0], error=error,
                             retry_in=round(delay, 1),
                             keeping=list(trunk.addresses) if trunk is not None else [])
        dns.error = error
        return delay

    def _dns_resolved(self, key: str, dns: _Dns, addresses: tuple[str, ...]) -> float:
        """Take a query's answer: the trunk's requests go to its first address, challenges and
        inbound requests count from all of them; a registration trunk waiting for it begins."""
        trunk = self.trunks.get(key)
        if trunk is None or _query(trunk) != dns.query:
            return self.resolve_interval  # changed meanwhile: its own query is under way
        if addresses != trunk.addresses or dns.error is not None:
            self.log.info("trunk.dns.resolved", trunk=key, host=trunk.host,
                          addresses=list(addresses), previous=list(trunk.addresses))
        dns.error = None
        dns.failures = 0
        dns.resolved_at = self._now()
        if addresses != trunk.addresses:
            trunk = trunk.with_addresses(addresses)
            self.trunks[key] = trunk
            registration = self.registrations.get(key)
            if registration is not None:
                registration.peer = trunk.peer  # the next REGISTER goes there
        if (trunk.kind == "register" and key not in self.registrations and self._stopped is None
                and self._sip is not None
                and not any(_same_binding(old, trunk) for old, _ in self._retiring.values())):
            self._begin(trunk)
            self._arm()
        return self.resolve_interval

    def _arm(self) -> None:
        deadlines = [d for _, r in self._all_registrations() if (d := r.get_timer()) is not None]
        deadline = min(deadlines) if deadlines else None
        if deadline == self._timer_at and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        deadline = self._timer_at
        self._timer = None
        self._timer_at = None
        now = self._now()
        if deadline is not None:
            now = max(now, deadline)  # asyncio may fire a hair early
        for slot, registration in self._all_registrations():
            try:
                registration.handle_timer(now)
                self._drain(slot)
            except Exception:  # one broken trunk must not stop the others' timers
                self.log.exception("trunk.timer_failed", trunk=slot)
        self._arm()


def _same_binding(old: TrunkConfig, new: TrunkConfig) -> bool:
    """Would both trunks' registrations bind the same AOR at the same registrar?"""
    return (_query(old), old.username, old.aor_domain) == (_query(new), new.username,
                                                          new.aor_domain)


def _query(trunk: TrunkConfig) -> tuple[str, int, TransportName]:
    """What names a trunk's registrar: its configured host (name or address), port, transport."""
    return (trunk.host.lower(), trunk.port, trunk.transport)


def _health_state(state: RegistrationState) -> str:
    if state is RegistrationState.REFRESHING:
        return "registered"  # still bound while the refresh is out
    return str(state.value)


def _status_of(error: str | None) -> int | None:
    """The status code a registration's ``last_error`` starts with ("403 Forbidden" → 403;
    None for a timeout or a refused challenge)."""
    if error is None:
        return None
    head = error.split(" ", 1)[0].rstrip(":")
    return int(head) if head.isdigit() and len(head) == 3 else None


def _has_cseq(response: Response) -> bool:
    try:
        response.cseq  # noqa: B018 - parsing is the check
    except ParseError:
        return False
    return True
