"""Input checks of the store: names, domains, numbers, trunk hosts and sources, PIN hashing.

Every check raises :class:`~pbx.store.records.StoreError` (or returns the problem) with a
message that names the offending field, so the CLI can print it as is.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable

from pbx.store.records import StoreError
from sipcore.address import parse_source

#: Extensions are 2–8 digits (the dial plan of a small or mid business).
EXTENSION_RE = re.compile(r"^[0-9]{2,8}$")
#: Tenant handles (CLI/API names) and trunk names.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
#: A SIP domain: a host name or an IP address (no user part, no port, no parameters).
DOMAIN_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")
#: Device usernames: the RFC 3261 "user" characters people actually use.
USERNAME_RE = re.compile(r"^[A-Za-z0-9._+~-]{1,64}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PIN_RE = re.compile(r"^[0-9]{4,8}$")
E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")

LANGUAGES = ("de", "en")
DEVICE_KINDS = ("desk", "softphone", "browser", "mobile")
TRUNK_KINDS = ("register", "ip")
TRUNK_TRANSPORTS = ("udp", "tcp", "tls")
OWNER_KINDS = ("user", "group", "company")


# -- PINs ---------------------------------------------------------------------------------------------

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 14, 8, 1


def hash_pin(pin: str) -> str:
    """A salted scrypt hash of a voicemail PIN (``scrypt$n$r$p$salt$hash``)."""
    salt = secrets.token_bytes(16)
    h = hashlib.scrypt(pin.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${h.hex()}"


def check_pin(stored: str, pin: str) -> bool:
    """Whether ``pin`` matches a hash from :func:`hash_pin` (constant-time comparison)."""
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        h = hashlib.scrypt(pin.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                           dklen=len(digest) // 2)
    except ValueError:
        return False
    return hmac.compare_digest(h.hex(), digest)


def no_control(**fields: str) -> None:
    """StoreError naming the first of ``fields`` that holds a control character."""
    for key, text in fields.items():
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise StoreError(f"{key} must not contain control characters")


def source_network(text: str) -> str:
    """The address/network of an allowed-source entry ``[transport:]address[/prefix][:port]``
    (:func:`sipcore.address.parse_source`, transports of :data:`TRUNK_TRANSPORTS`);
    StoreError naming the entry when it is none."""
    try:
        return str(parse_source(text, TRUNK_TRANSPORTS).network)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


#: One label of an RFC 3261 ``hostname`` (``domainlabel``; at most 63 octets, RFC 1035 §2.3.4).
_DOMAINLABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def trunk_host_problem(host: str) -> str | None:
    """Why ``host`` is neither an IP address (IPv6 bare or in brackets) nor a DNS host name
    (RFC 3261 ``hostname``: dot-separated labels of letters, digits and inner hyphens, the last
    one beginning with a letter, at most 253 characters); None when it is one of them."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        address = None
    if address is not None:
        if literal is not host and address.version != 6:
            return "only IPv6 addresses are written in brackets"
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            return "a zone index (%...) cannot go in a SIP URI"
        return None
    if host.count(":") == 1 and "[" not in host:
        return "the port goes in the port field (--port), not in the host"
    if "[" in host or "]" in host or ":" in host:
        return "not a valid IPv6 address"
    name = host[:-1] if host.endswith(".") else host  # a fully qualified name may end in '.'
    if not name:
        return "empty"
    if len(name) > 253:
        return "longer than 253 characters"
    labels = name.split(".")
    for label in labels:
        if not _DOMAINLABEL_RE.match(label):
            return (f"label {label!r} is not 1-63 letters, digits and inner hyphens" if label
                    else "empty label (two dots in a row or a leading dot)")
    if not labels[-1][0].isalpha():
        # RFC 3261 toplabel: what looks like a mistyped address (1.2.3.999) is not a name.
        return f"its last label {labels[-1]!r} must begin with a letter (or it is a bad address)"
    return None


def parse_sources(sources: Iterable[str]) -> tuple[str, ...]:
    """The non-blank entries of an allowed-source list, stripped; StoreError for a bad one."""
    out = []
    for s in sources:
        if s.strip():
            source_network(s)
            out.append(s.strip())
    return tuple(out)
