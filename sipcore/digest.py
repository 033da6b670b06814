"""HTTP Digest authentication for SIP, sans-IO (RFC 3261 §22, RFC 7616, RFC 8760).

Theory of operation
-------------------
Server side (:class:`DigestServer`): a request without valid credentials is answered with
:meth:`DigestServer.challenge` — a 401 with one ``WWW-Authenticate`` per offered algorithm
(SHA-256 first, RFC 8760 §2.4) or, for a proxy, a 407 with ``Proxy-Authenticate``. The nonce is
*stateless*: it carries its issue time and a random sequence number, and two truncated MACs
(keyed BLAKE2b, RFC 7693 — a MAC like HMAC, at a third of the cost) under a server secret — one over (time, sequence, realm) proving that we issued it, one that
also covers the client's source address, so a nonce (and every response computed from it) is
useless from another address. :meth:`DigestServer.verify` re-computes both MACs, looks the user
up through a caller-supplied function returning stored HA1s (never a plaintext password), and
compares the response in constant time. The only per-nonce state is the highest nonce-count
seen (RFC 7616 §3.4: replay protection), bounded in size and pruned by age.

Enumeration defence (SECURITY.md): a request for an unknown user is verified against a random
dummy HA1, so it costs the same as a wrong password, and every failure is answered by the same
:meth:`challenge` — same status line, header set, parameter names and order; only the nonce
differs, as it does between any two challenges. ``stale=true`` is only ever reported after the
response was proven correct, so it reveals nothing to somebody without the password.

Client side (:class:`DigestClient`): answers a challenge to a request *we* sent, and only when
the challenge's realm is the one configured for that peer (SECURITY.md: a B2BUA once answered an
attacker's 401 with a trunk's credentials). It refuses to answer a second non-stale challenge to
a request that already carried our credentials, which stops a peer that re-challenges forever.

Parsing (:func:`parse_auth_header`) turns any header text into a scheme and parameters or raises
:class:`~sipcore.errors.ParseError`; nothing else escapes, which Hypothesis checks.

This module does no I/O and reads no clock: every time-dependent call takes ``now`` (seconds on
any clock, as long as the same one is used for a given server; use wall-clock time if the secret
survives restarts, so nonces issued before a restart are judged correctly).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sipcore.enums import FastEnum
from sipcore.errors import LocalProtocolError, ParseError
from sipcore.message import Request, Response, make_response, new_tag
from sipcore.uri import SipURI, host_equal, parse_uri, uri_equal

__all__ = [
    "ALGORITHMS",
    "AuthFailure",
    "AuthHeader",
    "AuthResult",
    "AuthStatus",
    "Credentials",
    "DigestClient",
    "DigestServer",
    "compute_ha1",
    "compute_response",
    "format_auth_header",
    "make_credentials",
    "parse_auth_header",
]

# ---------------------------------------------------------------------------------------------
# Hash algorithms (RFC 7616 §3.2, RFC 8760 §2.1)
# ---------------------------------------------------------------------------------------------


def _hasher(name: str) -> Callable[[bytes], str]:
    def digest(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return digest


_md5: Callable[[bytes], str] = lambda data: hashlib.md5(data).hexdigest()  # noqa: E731
_sha256: Callable[[bytes], str] = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731

#: Base algorithm name (as in the ``algorithm`` parameter, upper-case) → hex digest function.
_BASE_HASHES: dict[str, Callable[[bytes], str]] = {"MD5": _md5, "SHA-256": _sha256}
if "sha512_256" in hashlib.algorithms_available:  # RFC 8760; present with OpenSSL >= 1.1.1
    _BASE_HASHES["SHA-512-256"] = _hasher("sha512_256")

#: Every algorithm we can compute: each base one and its "-sess" variant (RFC 7616 §3.4.2).
ALGORITHMS: frozenset[str] = frozenset(
    list(_BASE_HASHES) + [name + "-sess" for name in _BASE_HASHES]
)

#: Client preference when a peer offers several (RFC 8760 §2.4: SHA-256 before MD5).
_CLIENT_PREFERENCE: tuple[str, ...] = (
    "SHA-256",
    "SHA-256-sess",
    "SHA-512-256",
    "SHA-512-256-sess",
    "MD5",
    "MD5-sess",
)


def _canonical_algorithm(name: str) -> str | None:
    """'sha-256' → 'SHA-256'; unknown → None. Algorithm names are case-insensitive."""
    upper = name.upper()
    if upper.endswith("-SESS"):
        upper = upper[:-5] + "-sess"
    return upper if upper in ALGORITHMS else None


def _base(algorithm: str) -> str:
    return algorithm[:-5] if algorithm.endswith("-sess") else algorithm


def _b(text: str) -> bytes:
    # Never raises: lone surrogates (from a surrogateescape-decoded header) are passed through,
    # they just produce a hash nobody can match.
    return text.encode("utf-8", "surrogatepass")


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """HA1 = H(username ":" realm ":" password) for a base algorithm ("MD5", "SHA-256", …)."""
    base = _base(algorithm)
    if base not in _BASE_HASHES:
        raise LocalProtocolError(f"unsupported digest algorithm {algorithm!r}")
    return _BASE_HASHES[base](_b(f"{username}:{realm}:{password}"))


def compute_response(
    algorithm: str,
    ha1: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value of RFC 7616 §3.4.1 for qop=auth (or RFC 2069 without qop).

    ``ha1`` is the stored H(username:realm:password) of ``algorithm``'s base hash; for a
    "-sess" algorithm the session HA1 is derived here from it, the nonce and the cnonce.
    """
    h = _BASE_HASHES[_base(algorithm)]
    if algorithm.endswith("-sess"):
        ha1 = h(_b(f"{ha1}:{nonce}:{cnonce or ''}"))
    ha2 = h(_b(f"{method}:{uri}"))
    if qop is None:
        return h(_b(f"{ha1}:{nonce}:{ha2}"))
    return h(_b(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))


# ---------------------------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the server stores for a user: HA1 per base algorithm, never the password.

    ``ha1`` maps "MD5" / "SHA-256" (/ "SHA-512-256") to the lower-case hex
    H(username:realm:password). A record is only valid for its ``realm``.
    """

    username: str
    realm: str
    ha1: Mapping[str, str] = field(hash=False)

    def ha1_for(self, algorithm: str) -> str | None:
        """The stored HA1 usable with ``algorithm`` (a "-sess" variant uses its base's HA1)."""
        return self.ha1.get(_base(algorithm))


def make_credentials(
    username: str,
    realm: str,
    password: str,
    algorithms: Iterable[str] = ("SHA-256", "MD5"),
) -> Credentials:
    """Hash a password into a :class:`Credentials` record (do this once, when it is set)."""
    ha1 = {}
    for name in algorithms:
        algorithm = _canonical_algorithm(name)
        if algorithm is None:
            raise LocalProtocolError(f"unsupported digest algorithm {name!r}")
        base = _base(algorithm)
        ha1[base] = compute_ha1(base, username, realm, password)
    return Credentials(username, realm, ha1)


# ---------------------------------------------------------------------------------------------
# Parsing and serialising challenge / credentials parameter lists (RFC 7235 §2.1, RFC 7616 §3)
# ---------------------------------------------------------------------------------------------

#: Longest header value we look at; real ones are a few hundred characters.
MAX_AUTH_HEADER_LENGTH = 4096
#: Most parameters in one header (RFC 7616 defines 14).
MAX_AUTH_PARAMS = 32

_TOKEN_CHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME_RE = re.compile(rf"[ \t]*+({_TOKEN_CHARS})(?:[ \t]++|\Z)")
# name = token; value = quoted-string (with quoted-pairs) or a run without space, comma or quote
# (leniently wider than a token: some UAs send uri=sip:x@y unquoted).
_PARAM = rf'({_TOKEN_CHARS})[ \t]*+=[ \t]*+(?:"([^"\\]*+(?:\\.[^"\\]*+)*+)"|([^\s,"]++))'
_PARAM_NOCAP = _PARAM.replace("(", "(?:").replace("(?:?:", "(?:")
# The whole list, validated in one pass: element *( "," element ), element = OWS [param OWS].
# Possessive quantifiers and unambiguous whitespace keep this linear (no ReDoS).
_LIST_RE = re.compile(
    rf"[ \t]*+(?:{_PARAM_NOCAP}[ \t]*+)?+(?:,[ \t]*+(?:{_PARAM_NOCAP}[ \t]*+)?+)*+", re.DOTALL
)
_PARAM_RE = re.compile(_PARAM, re.DOTALL)
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """One parsed WWW-Authenticate / Authorization (or Proxy-) header value.

    ``scheme`` keeps its spelling ("Digest"); compare with :meth:`is_digest`. ``params`` maps
    lower-cased parameter names to their (unquoted, unescaped) values.
    """

    scheme: str
    params: Mapping[str, str] = field(hash=False)

    @property
    def is_digest(self) -> bool:
        """True for the Digest scheme (scheme names are case-insensitive)."""
        return self.scheme.lower() == "digest"


def parse_auth_header(value: str) -> AuthHeader:
    """Parse ``Scheme name=value, name="quoted, \\"value\\"", …``; raises only :class:`ParseError`.

    Duplicate parameter names, a missing scheme, unbalanced quotes and oversized input are
    errors. Empty list elements (``a=1,,b=2``) are tolerated (RFC 7230 §7).
    """
    if not isinstance(value, str):
        raise ParseError("authentication header is not text")
    if len(value) > MAX_AUTH_HEADER_LENGTH:
        raise ParseError("authentication header too long")
    m = _SCHEME_RE.match(value)
    if m is None:
        raise ParseError("authentication header without a scheme")
    start = m.end()
    if _LIST_RE.fullmatch(value, start) is None:
        raise ParseError("malformed authentication parameter")
    # The list is valid, so scanning for parameters finds exactly its elements in order.
    params: dict[str, str] = {}
    for name, quoted, bare in _PARAM_RE.findall(value, start):
        name = name.lower()
        if name in params:
            raise ParseError(f"duplicate authentication parameter {name!r}")
        if bare:
            params[name] = bare
        else:
            params[name] = _UNESCAPE_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
    if len(params) > MAX_AUTH_PARAMS:
        raise ParseError("too many authentication parameters")
    return AuthHeader(m.group(1), params)


def _quote(text: str) -> str:
    if "\r" in text or "\n" in text or "\x00" in text:
        raise LocalProtocolError("CR, LF or NUL in an authentication parameter")
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def format_auth_header(scheme: str, params: Iterable[tuple[str, str, bool]]) -> str:
    """Serialise ``(name, value, quoted)`` triples in the given order after ``scheme``.

    Unquoted values must be tokens; quoted ones are escaped. Raises LocalProtocolError on
    values that cannot be represented (CR/LF/NUL, a non-token where a token is required).
    """
    parts = []
    for name, val, quoted in params:
        if quoted:
            parts.append(f"{name}={_quote(val)}")
        else:
            if _TOKEN_RE.fullmatch(val) is None:
                raise LocalProtocolError(f"authentication parameter {name}={val!r} is not a token")
            parts.append(f"{name}={val}")
    return f"{scheme} " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


class AuthStatus(FastEnum):
    """Outcome of :meth:`DigestServer.verify`."""

    OK = "ok"
    #: The response was right but the nonce has expired: challenge again with stale=true.
    STALE = "stale"
    FAILED = "failed"


class AuthFailure(FastEnum):
    """Why verification failed (for the security log; never sent to the peer)."""

    NO_CREDENTIALS = "no credentials"
    MALFORMED = "malformed credentials"
    REALM_MISMATCH = "realm mismatch"
    UNSUPPORTED_ALGORITHM = "unsupported algorithm"
    UNSUPPORTED_QOP = "unsupported qop"
    URI_MISMATCH = "uri mismatch"
    BAD_NONCE = "bad nonce"
    BAD_OPAQUE = "bad opaque"
    FOREIGN_NONCE = "nonce from another source"
    UNKNOWN_USER = "unknown user"
    WRONG_RESPONSE = "wrong response"
    NC_REPLAY = "nonce-count replay"


#: Failures that mean somebody tried a password (count them towards a ban, SECURITY.md).
GUESS_FAILURES: frozenset[AuthFailure] = frozenset(
    {AuthFailure.UNKNOWN_USER, AuthFailure.WRONG_RESPONSE}
)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Result of :meth:`DigestServer.verify`.

    ``username`` is the authenticated user when ``ok``; on failure it is the username the peer
    claimed (if any), for the security log only. ``reason`` is set exactly when ``failed``.
    """

    status: AuthStatus
    username: str | None = None
    reason: AuthFailure | None = None
    algorithm: str | None = None

    @property
    def ok(self) -> bool:
        """Authenticated."""
        return self.status is AuthStatus.OK

    @property
    def stale(self) -> bool:
        """Right password, expired nonce: answer ``challenge(..., stale=True)``."""
        return self.status is AuthStatus.STALE

    @property
    def failed(self) -> bool:
        """Not authenticated: answer ``challenge(...)``."""
        return self.status is AuthStatus.FAILED

    @property
    def is_guess(self) -> bool:
        """A wrong password or unknown user: an attempt to count towards a ban."""
        return self.reason in GUESS_FAILURES


_NC_RE = re.compile(r"[0-9a-fA-F]{8}")
_TS = 8  # bytes of issue time (milliseconds, signed big-endian)
_SEQ = 8  # bytes of sequence number (uniqueness between nonces issued in the same millisecond)
_MAC_ISSUED = 8  # bytes of MAC(secret, "i"|time|seq|realm): "we issued it"
_MAC_SOURCE = 12  # bytes of MAC(secret, "s"|time|seq|realm|source): "to this address"
_NONCE_BYTES = _TS + _SEQ + _MAC_ISSUED + _MAC_SOURCE
_NONCE_CHARS = (_NONCE_BYTES + 2) // 3 * 4


class DigestServer:
    """Challenges and verifies Digest credentials for one realm (sans-IO, stateless nonces).

    ``secret`` keys the nonce MACs (≥ 16 random bytes; keep it across restarts if ``now`` is
    wall-clock time and nonces should survive them). ``nonce_ttl`` is how long a nonce is good
    for; after that a correct response yields :attr:`AuthStatus.STALE`. ``algorithms`` are
    offered in the given order (one header each); ``proxy=True`` uses 407/Proxy-Authenticate/
    Proxy-Authorization instead of 401/WWW-Authenticate/Authorization. ``max_nonces`` bounds
    the nonce-count table. ``start_time``: when the secret survives restarts, pass the start-up
    time — nonces issued before it are then only accepted as stale, because the nonce-counts
    seen for them were lost with the old process (a captured request cannot be replayed).
    ``strict_uri``: the digest ``uri`` must be the Request-URI (RFC 3261 §22.4, equivalence of
    §19.1.4). Without it (the default) a ``uri`` naming the Request-URI's host and port with no
    user part (or the same one) is accepted too — SIPp 3.6's ``[authentication]`` sends
    ``uri="sip:host:port"`` for an INVITE to ``sip:202@host:port``, and Kamailio accepts it. The
    response is always computed over the ``uri`` as sent, so nothing but the spelling is relaxed.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_ttl: float = 300.0,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        proxy: bool = False,
        max_nonces: int = 100_000,
        start_time: float | None = None,
        strict_uri: bool = False,
    ) -> None:
        if not realm or any(c in realm for c in "\r\n\x00"):
            raise LocalProtocolError("realm must be non-empty text without CR/LF/NUL")
        if len(secret) < 16:
            raise LocalProtocolError("the nonce secret must have at least 16 bytes")
        if nonce_ttl <= 0:
            raise LocalProtocolError("nonce_ttl must be positive")
        algs: list[str] = []
        for name in algorithms:
            algorithm = _canonical_algorithm(name)
            if algorithm is None:
                raise LocalProtocolError(f"unsupported digest algorithm {name!r}")
            if algorithm not in algs:
                algs.append(algorithm)
        if not algs:
            raise LocalProtocolError("at least one digest algorithm is needed")
        self.realm = realm
        self.nonce_ttl = float(nonce_ttl)
        self.algorithms: tuple[str, ...] = tuple(algs)
        self.proxy = proxy
        self.max_nonces = max_nonces
        self.strict_uri = strict_uri
        # BLAKE2b takes keys up to 64 bytes; a longer secret is hashed down to one.
        self._secret = bytes(secret) if len(secret) <= 64 else hashlib.blake2b(secret).digest()
        self._realm_b = _b(realm)
        self._status = 407 if proxy else 401
        self._reason = "Proxy Authentication Required" if proxy else "Unauthorized"
        self._challenge_header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        self._credentials_header = "Proxy-Authorization" if proxy else "Authorization"
        self.opaque = base64.urlsafe_b64encode(
            hashlib.blake2b(b"o|" + self._realm_b, key=self._secret, digest_size=12).digest()
        ).decode("ascii")
        # Random sequence start: nonces of two processes sharing a secret never collide.
        self._seq = itertools.count(int.from_bytes(os.urandom(6), "big"))
        # A dummy HA1 per algorithm for unknown users: same work as a wrong password.
        self._dummy_ha1 = {base: fn(os.urandom(32)) for base, fn in _BASE_HASHES.items()}
        self._templates = self._build_templates()
        # nonce → [issue time (s), highest nc]; insertion order ≈ issue order, pruned by age.
        self._nc: dict[str, list[float]] = {}
        # Nonces issued at or before this time whose nc entry was evicted for space are only
        # accepted as stale (so an eviction can never re-open a replay window).
        self._nc_floor = float("-inf") if start_time is None else float(start_time)

    # -- nonces ---------------------------------------------------------------------------

    def _macs(self, head: bytes, source: str) -> tuple[bytes, bytes]:
        msg = head + b"|" + self._realm_b
        key = self._secret
        issued = hashlib.blake2b(b"i|" + msg, key=key, digest_size=_MAC_ISSUED).digest()
        bound = hashlib.blake2b(
            b"s|" + msg + b"|" + _b(source.lower()), key=key, digest_size=_MAC_SOURCE
        ).digest()
        return issued, bound

    def make_nonce(self, peer_host: str, now: float) -> str:
        """A fresh nonce for ``peer_host`` (exposed for tests and tools)."""
        ts = int(now * 1000)
        seq = next(self._seq) & 0xFFFF_FFFF_FFFF_FFFF
        head = ts.to_bytes(_TS, "big", signed=True) + seq.to_bytes(_SEQ, "big")
        issued, bound = self._macs(head, peer_host)
        return binascii.b2a_base64(head + issued + bound, newline=False).decode("ascii")

    def _check_nonce(self, nonce: str, peer_host: str) -> tuple[AuthFailure | None, float]:
        """(failure or None, issue time in seconds)."""
        if len(nonce) != _NONCE_CHARS:
            return AuthFailure.BAD_NONCE, 0.0
        try:
            raw = binascii.a2b_base64(nonce.encode("ascii"), strict_mode=True)
        except (binascii.Error, ValueError, UnicodeError):
            return AuthFailure.BAD_NONCE, 0.0
        if len(raw) != _NONCE_BYTES:
            return AuthFailure.BAD_NONCE, 0.0
        head = raw[: _TS + _SEQ]
        issued, bound = self._macs(head, peer_host)
        if not hmac.compare_digest(issued, raw[_TS + _SEQ : _TS + _SEQ + _MAC_ISSUED]):
            return AuthFailure.BAD_NONCE, 0.0
        if not hmac.compare_digest(bound, raw[_TS + _SEQ + _MAC_ISSUED :]):
            return AuthFailure.FOREIGN_NONCE, 0.0
        return None, int.from_bytes(head[:_TS], "big", signed=True) / 1000.0

    # -- challenge ------------------------------------------------------------------------

    def challenge_headers(self, peer_host: str, now: float, *, stale: bool = False) -> list[str]:
        """The ``WWW-Authenticate`` (or ``Proxy-Authenticate``) values, one per algorithm."""
        nonce = self.make_nonce(peer_host, now)  # base64url: never needs quoting or escaping
        return [head + nonce + tail for head, tail in self._templates[stale]]

    def _build_templates(self) -> dict[bool, list[tuple[str, str]]]:
        """Everything of a challenge but the nonce, formatted once (it is on the hot path of
        every unauthenticated request)."""
        marker = "\x00nonce\x00"
        out: dict[bool, list[tuple[str, str]]] = {}
        for stale in (False, True):
            pairs = []
            for algorithm in self.algorithms:
                params = [
                    ("realm", self.realm, True),
                    ("nonce", "N", True),
                    ("opaque", self.opaque, True),
                    ("algorithm", algorithm, False),
                    ("qop", "auth", True),
                ]
                if stale:
                    params.append(("stale", "true", False))
                text = format_auth_header("Digest", params).replace('nonce="N"', f'nonce="{marker}"')
                head, _, tail = text.partition(marker)
                pairs.append((head, tail))
            out[stale] = pairs
        return out

    def challenge(
        self, request: Request, peer_host: str, now: float, *, stale: bool = False
    ) -> Response:
        """A 401 (or 407) carrying a fresh challenge bound to ``peer_host`` and ``now``.

        The same shape for every cause — no credentials, unknown user, wrong password — so the
        answer does not tell an attacker which it was. Adds a To-tag (RFC 3261 §8.2.6.2).
        """
        response = make_response(request, self._status, self._reason, to_tag=new_tag())
        for value in self.challenge_headers(peer_host, now, stale=stale):
            response.headers.add(self._challenge_header, value)
        return response

    # -- verification ---------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        table = self._nc
        horizon = now - self.nonce_ttl
        while table:
            nonce = next(iter(table))
            if table[nonce][0] >= horizon:
                break
            del table[nonce]
        while len(table) >= self.max_nonces:  # room for the one verify may add
            nonce = next(iter(table))
            issued = table.pop(nonce)[0]
            self._nc_floor = max(self._nc_floor, issued)

    def _pick(self, request: Request) -> tuple[AuthHeader | None, AuthFailure]:
        """Our realm's Digest credentials from the request, else the failure to report."""
        failure = AuthFailure.NO_CREDENTIALS
        for value in request.headers.get_all(self._credentials_header)[:8]:
            try:
                header = parse_auth_header(value)
            except ParseError:
                failure = AuthFailure.MALFORMED
                continue
            if not header.is_digest:
                if failure is AuthFailure.NO_CREDENTIALS:
                    failure = AuthFailure.MALFORMED
                continue
            if header.params.get("realm") != self.realm:
                if failure is not AuthFailure.MALFORMED:
                    failure = AuthFailure.REALM_MISMATCH
                continue
            return header, failure
        return None, failure

    def verify(
        self,
        request: Request,
        peer_host: str,
        lookup: Callable[[str], Credentials | None],
        now: float,
    ) -> AuthResult:
        """Check the request's (Proxy-)Authorization for this realm.

        ``lookup(username)`` returns the user's stored :class:`Credentials` or None. Never
        raises for anything the peer sent. On :attr:`AuthStatus.OK` the nonce-count is
        recorded, so the same request replayed later fails with ``NC_REPLAY``.
        """
        try:
            return self._verify(request, peer_host, lookup, now)
        except (ParseError, ValueError, UnicodeError):
            # Defence in depth: whatever the peer sent, it is a failed attempt, not a crash.
            return AuthResult(AuthStatus.FAILED, None, AuthFailure.MALFORMED)

    def _verify(
        self,
        request: Request,
        peer_host: str,
        lookup: Callable[[str], Credentials | None],
        now: float,
    ) -> AuthResult:
        header, failure = self._pick(request)
        if header is None:
            return AuthResult(AuthStatus.FAILED, None, failure)
        p = header.params
        username = p.get("username")
        nonce = p.get("nonce")
        uri = p.get("uri")
        response = p.get("response")
        if username is None or nonce is None or uri is None or response is None:
            return AuthResult(AuthStatus.FAILED, username, AuthFailure.MALFORMED)
        if p.get("userhash", "false").lower() != "false":
            # We never offer userhash (RFC 7616 §3.4.4), so a client must not use it.
            return AuthResult(AuthStatus.FAILED, username, AuthFailure.MALFORMED)
        algorithm = _canonical_algorithm(p.get("algorithm", "MD5"))
        if algorithm is None or algorithm not in self.algorithms:
            return AuthResult(AuthStatus.FAILED, username, AuthFailure.UNSUPPORTED_ALGORITHM)
        qop = p.get("qop")
        if qop is None or qop.lower() != "auth":
            return AuthResult(AuthStatus.FAILED, username, AuthFailure.UNSUPPORTED_QOP)
        nc_text = p.get("nc")
        cnonce = p.get("cnonce")
        if nc_text is None or cnonce is None or _NC_RE.fullmatch(nc_text) is None:
            return AuthResult(AuthStatus.FAILED, username, AuthFailure.MALFORMED)
        nc = int(nc_text, 16)
        if not self._uri_matches(uri, request, self.strict_uri):
            return AuthResult(AuthStatus.FAILED, username, AuthFailure.URI_MISMATCH)
        nonce_failure, issued = self._check_nonce(nonce, peer_host)
        if nonce_failure is not None:
            return AuthResult(AuthStatus.FAILED, username, nonce_failure)
        opaque = p.get("opaque")  # optional for us: it carries no state (RFC 7616 §3.4)
        if opaque is not None and opaque != self.opaque:
            return AuthResult(AuthStatus.FAILED, username, AuthFailure.BAD_OPAQUE)

        # From here on the work is the same whether the user exists or not.
        credentials = lookup(username)
        ha1 = None
        if credentials is not None and credentials.realm == self.realm:
            ha1 = credentials.ha1_for(algorithm)
        known = ha1 is not None
        if ha1 is None:
            ha1 = self._dummy_ha1[_base(algorithm)]
        expected = compute_response(
            algorithm,
            ha1,
            method=request.method,
            uri=uri,
            nonce=nonce,
            qop="auth",
            nc=nc_text,
            cnonce=cnonce,
        )
        right = hmac.compare_digest(expected.encode("ascii"), _b(response.lower()))
        if not (right and known):
            reason = AuthFailure.WRONG_RESPONSE if known else AuthFailure.UNKNOWN_USER
            return AuthResult(AuthStatus.FAILED, username, reason, algorithm)

        # The password is proven; now the freshness of this nonce and nonce-count.
        self._prune(now)
        if not (now - self.nonce_ttl <= issued <= now + 1.0):
            return AuthResult(AuthStatus.STALE, username, None, algorithm)
        entry = self._nc.get(nonce)
        if entry is None:
            if issued <= self._nc_floor:
                return AuthResult(AuthStatus.STALE, username, None, algorithm)
            self._nc[nonce] = [issued, float(nc)]
        elif nc <= entry[1]:
            return AuthResult(AuthStatus.FAILED, username, AuthFailure.NC_REPLAY, algorithm)
        else:
            entry[1] = float(nc)
        return AuthResult(AuthStatus.OK, username, None, algorithm)

    @staticmethod
    def _uri_matches(uri: str, request: Request, strict: bool) -> bool:
        # RFC 7616 §3.4.6 / RFC 3261 §22.4: the digest-uri must name the Request-URI; an
        # equivalent spelling (§19.1.4) is accepted, the hash still covers the exact text.
        # Leniently (not ``strict``), also a SIP(S) URI of the same scheme, host and port with
        # no user part or the same user (SIPp 3.6: ``uri="sip:host:port"``); its parameters
        # are ignored. A different user, host, port or scheme never matches.
        target = request.uri
        if uri == str(target):
            return True
        try:
            given = parse_uri(uri)
        except ParseError:
            return False
        if uri_equal(given, target):
            return True
        if strict or not isinstance(given, SipURI) or not isinstance(target, SipURI):
            return False
        return (
            given.scheme == target.scheme
            and given.user in (None, target.user)
            and given.password is None
            and given.port == target.port
            and host_equal(given.host, target.host)
        )

    def nonce_table_size(self) -> int:
        """How many nonces have a remembered nonce-count (for statistics)."""
        return len(self._nc)


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------


class DigestClient:
    """Answers Digest challenges to requests we sent (toward trunks and upstream proxies).

    Keeps the nonce-count per (realm, nonce) so a nonce offered again is answered with an
    incremented nc. ``cnonce_factory`` exists for deterministic tests.
    """

    def __init__(
        self,
        *,
        cnonce_factory: Callable[[], str] | None = None,
        max_nonces: int = 256,
    ) -> None:
        self._cnonce = cnonce_factory or (
            lambda: base64.urlsafe_b64encode(os.urandom(18)).decode("ascii")
        )
        self._nc: dict[tuple[str, str], int] = {}
        self._max_nonces = max_nonces

    def authorize(
        self,
        request: Request,
        challenge_response: Response,
        username: str,
        password: str,
        *,
        realm: str,
    ) -> Request:
        """A copy of ``request`` carrying credentials that answer ``challenge_response``.

        ``request`` must be the request that was challenged (the transaction layer guarantees
        it is one we sent, to the peer that answered); ``realm`` is the realm configured for
        that peer — a challenge for any other realm raises :class:`LocalProtocolError`, as do
        a non-401/407 response, a challenge without a usable Digest offer, and a second
        non-stale challenge to a request that already carried our credentials (the peer
        rejected them; retrying would loop). The caller sends the copy in a new transaction
        with CSeq+1 and a new branch (RFC 3261 §22.2); CSeq and Via are not touched here.
        """
        if challenge_response.status == 401:
            challenge_name, credentials_name = "WWW-Authenticate", "Authorization"
        elif challenge_response.status == 407:
            challenge_name, credentials_name = "Proxy-Authenticate", "Proxy-Authorization"
        else:
            raise LocalProtocolError(f"{challenge_response.status} is not a challenge")
        offers: list[tuple[int, str, AuthHeader]] = []
        realms: set[str] = set()
        for value in challenge_response.headers.get_all(challenge_name)[:8]:
            try:
                header = parse_auth_header(value)
            except ParseError:
                continue
            if not header.is_digest:
                continue
            offered_realm = header.params.get("realm")
            if offered_realm is not None:
                realms.add(offered_realm)
            if offered_realm != realm or "nonce" not in header.params:
                continue
            algorithm = _canonical_algorithm(header.params.get("algorithm", "MD5"))
            if algorithm is None:
                continue
            qop = header.params.get("qop")
            if qop is not None and "auth" not in (q.strip().lower() for q in qop.split(",")):
                continue  # auth-int only: we do not hash bodies
            offers.append((_CLIENT_PREFERENCE.index(algorithm), algorithm, header))
        if not offers:
            if realms and realm not in realms:
                raise LocalProtocolError(
                    f"challenge for realm {sorted(realms)!r}, expected {realm!r}: not answering"
                )
            raise LocalProtocolError("no usable Digest challenge for realm " + repr(realm))
        offers.sort(key=lambda offer: offer[0])
        _, algorithm, header = offers[0]
        p = header.params
        stale = p.get("stale", "false").lower() == "true"
        nonce = p["nonce"]
        used = self._nonces_used(request, credentials_name, realm)
        if used and (not stale or nonce in used):
            # Our credentials were refused (or "stale" without a new nonce): retrying would
            # loop. The caller still bounds stale retries per original request (e.g. to 2).
            raise LocalProtocolError(f"credentials for realm {realm!r} were rejected")

        uri = str(request.uri)
        key = (realm, nonce)
        nc = self._nc.pop(key, 0) + 1
        self._nc[key] = nc  # re-insert: most recently used last
        while len(self._nc) > self._max_nonces:
            del self._nc[next(iter(self._nc))]
        ha1 = compute_ha1(algorithm, username, realm, password)
        params: list[tuple[str, str, bool]] = [
            ("username", username, True),
            ("realm", realm, True),
            ("nonce", nonce, True),
            ("uri", uri, True),
        ]
        qop_offered = p.get("qop") is not None
        if qop_offered:
            cnonce = self._cnonce()
            nc_text = f"{nc:08x}"
            response = compute_response(
                algorithm,
                ha1,
                method=request.method,
                uri=uri,
                nonce=nonce,
                qop="auth",
                nc=nc_text,
                cnonce=cnonce,
            )
        else:  # RFC 2069 compatibility (RFC 3261 §22.4): old trunks that offer no qop
            cnonce = ""
            nc_text = ""
            response = compute_response(algorithm, ha1, method=request.method, uri=uri, nonce=nonce)
        params.append(("response", response, True))
        params.append(("algorithm", algorithm, False))
        if qop_offered:
            params.append(("cnonce", cnonce, True))
        if "opaque" in p:
            params.append(("opaque", p["opaque"], True))
        if qop_offered:
            params.append(("qop", "auth", False))
            params.append(("nc", nc_text, False))
        value = format_auth_header("Digest", params)

        headers = request.headers.copy()
        kept = [v for v in headers.get_all(credentials_name) if _realm_of(v) != realm]
        headers.remove(credentials_name)
        for v in kept:
            headers.add(credentials_name, v)
        headers.add(credentials_name, value)
        return Request(request.method, request.uri, headers, request.body)

    @staticmethod
    def _nonces_used(request: Request, credentials_name: str, realm: str) -> set[str]:
        """Nonces of the credentials for ``realm`` that ``request`` already carries."""
        used = set()
        for value in request.headers.get_all(credentials_name):
            try:
                params = parse_auth_header(value).params
            except ParseError:
                continue
            if params.get("realm") == realm:
                used.add(params.get("nonce", ""))
        return used


def _realm_of(value: str) -> str | None:
    try:
        return parse_auth_header(value).params.get("realm")
    except ParseError:
        return None
