"""SIP messages: parsing, lazily parsed header accessors, serialisation (RFC 3261 §7, §20, §25).

``parse_message(data)`` turns one datagram (or one message cut out of a stream by
:class:`sipcore.framing.StreamFramer`) into a :class:`Request` or :class:`Response`, or raises
:class:`~sipcore.errors.ParseError` — nothing else, whatever the bytes. Its reason phrase names
the fault ("Bad CSeq", "Missing Call-ID" ...) because it goes into the 400 status line.

Speed: only the start line, the header split (with compact forms expanded and comma lists
split) and the Request-URI are parsed eagerly, plus the cheap checks a request must pass at once
(required headers present, CSeq valid and matching the method, Content-Length). Structured
headers (Via, From, To, Contact ...) are parsed on first access and cached; mutating a header
drops the cached values computed from it (and only those). :meth:`Message.validate` forces every core accessor at once, for
the transport layer that wants to answer 400 before handing a message on.

Header values are decoded as UTF-8 with ``surrogateescape``, so unknown headers and odd bytes
are forwarded byte-exact; bodies are bytes and never looked into (multipart included).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from sipcore.errors import LocalProtocolError, ParseError
from sipcore.headers import (
    _LIST_KEYS,
    _PARSE_NAMES,
    PARSER_TRACKED,
    Headers,
    _lookup,
    is_token,
    split_header_list,
)
from sipcore.uri import (
    FAST_PARAMS,
    URI,
    NameAddr,
    SipURI,
    _parse_hostport,
    fast_params,
    parse_name_addr,
    parse_params,
    parse_uri,
)

__all__ = [
    "MAX_BODY_SIZE",
    "MAX_HEADERS",
    "MAX_HEADER_LINE",
    "MAX_MESSAGE_SIZE",
    "CSeq",
    "Message",
    "Request",
    "Response",
    "Via",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "nul_only_quoted",
    "parse_cseq",
    "parse_message",
    "parse_via",
    "reason_phrase",
]

#: Largest message we accept (bytes, start line to end of body).
MAX_MESSAGE_SIZE = 65536
#: Most header entries (after splitting comma lists) in one message.
MAX_HEADERS = 256
#: Longest header line (after unfolding), in characters.
MAX_HEADER_LINE = 8192
#: Largest body (bytes).
MAX_BODY_SIZE = 65536

MAGIC_COOKIE = "z9hG4bK"

# -- small structured headers ------------------------------------------------------------------


def _int(text: str, lo: int, hi: int, reason: str) -> int:
    """A decimal integer in [lo, hi]; refuses signs, non-ASCII digits and absurd lengths."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > 12:
        raise ParseError(reason)
    value = int(text)
    if value < lo or value > hi:
        raise ParseError(reason)
    return value


@dataclass(frozen=True, slots=True)
class CSeq:
    """``CSeq: seq method`` (RFC 3261 §20.16); ``seq`` < 2**31."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


_CSEQ_FAST = re.compile(r"([0-9]{1,10}+) ([A-Za-z0-9\-.!%*_+`'~]++)")


def parse_cseq(text: str) -> CSeq:
    """Parse a CSeq value; raises ParseError("Bad CSeq")."""
    m = _CSEQ_FAST.fullmatch(text)
    if m is not None:
        seq = int(m.group(1))
        if seq > 2**31 - 1:
            raise ParseError("Bad CSeq")
        return CSeq(seq, m.group(2))
    parts = text.split()
    if len(parts) != 2 or not is_token(parts[1]):
        raise ParseError("Bad CSeq")
    return CSeq(_int(parts[0], 0, 2**31 - 1, "Bad CSeq"), parts[1])


_TRANSPORTS = {"UDP", "TCP", "TLS", "SCTP", "WS", "WSS", "TLS-SCTP", "DTLS"}


class Via:
    """One Via entry (RFC 3261 §20.42): ``SIP/2.0/transport host[:port] *(;param)``.

    ``transport`` is upper-cased; ``host`` keeps IPv6 brackets; ``params`` has lower-case
    names and values as written (``None`` for flags such as a bare ``;rport``).
    """

    __slots__ = ("host", "params", "port", "transport")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None:
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = {} if params is None else params

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter (transaction id when it starts with ``z9hG4bK``)."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter (RFC 3261 §18.2.1)."""
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        """True when ``rport`` is present, with or without a value (RFC 3581)."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The numeric value of ``rport`` (``None`` when absent, a bare flag, or not a port)."""
        value = self.params.get("rport")
        if value is None or not (value.isascii() and value.isdigit()) or len(value) > 5:
            return None
        port = int(value)
        return port if port <= 65535 else None

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter."""
        return self.params.get("maddr")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """``(host, port)`` as written in the sent-by."""
        return self.host, self.port

    def copy(self) -> Via:
        """A copy with its own params dict."""
        return Via(self.transport, self.host, self.port, dict(self.params))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return (
            self.transport == other.transport
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and self.params == other.params
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"

    def __str__(self) -> str:
        out = f"SIP/2.0/{self.transport} {self.host}"
        if self.port is not None:
            out += f":{self.port}"
        for k, v in self.params.items():
            out += f";{k}" if v is None else f";{k}={v}"
        return out


_VIA_FAST = re.compile(
    r"SIP/2\.0/([A-Za-z]++) ([A-Za-z0-9\-._]++)(?::([0-9]{1,5}+))?+(" + FAST_PARAMS + ")"
)


def parse_via(text: str) -> Via:
    """Parse one Via entry; LWS is allowed around ``/``, ``:``, ``;`` and ``=``.

    Raises ParseError("Bad Via").
    """
    m = _VIA_FAST.fullmatch(text)
    if m is not None:
        transport, host, port, ptext = m.groups()
        pnum = None
        if port is not None:
            pnum = int(port)
            if pnum > 65535:
                raise ParseError("Bad Via")
        return Via(transport, host, pnum, fast_params(ptext) if ptext else {})
    return _parse_via_general(text)


def _parse_via_general(text: str) -> Via:
    """The general Via parser: LWS anywhere the grammar allows, IPv6, quoted parameters."""
    semi = text.find(";")
    head = text if semi < 0 else text[:semi]
    parts = head.split("/", 2)
    if len(parts) != 3:
        raise ParseError("Bad Via")
    if parts[0].strip(" \t").upper() != "SIP" or parts[1].strip(" \t") != "2.0":
        raise ParseError("Bad Via")
    tail = parts[2].split(None, 1)
    if len(tail) != 2 or not is_token(tail[0]):
        raise ParseError("Bad Via")
    # LWS is allowed around the ':' of sent-by (COLON = SWS ":" SWS), nowhere else
    sent_by = ":".join(p.strip(" \t") for p in tail[1].strip(" \t").split(":"))
    if " " in sent_by or "\t" in sent_by:
        raise ParseError("Bad Via")
    try:
        host, port = _parse_hostport(sent_by, "Via")
    except ParseError:
        raise ParseError("Bad Via") from None
    params: dict[str, str | None] = {}
    if semi >= 0:
        try:
            params = parse_params(text[semi:], "Via")
        except ParseError:
            raise ParseError("Bad Via") from None
    return Via(tail[0], host, port, params)


# -- messages ----------------------------------------------------------------------------------


#: Token-list headers written back as one comma-separated line (Via, Route, Contact ... keep one
#: line per entry, which is what most implementations expect).
_JOINED = frozenset({
    "allow", "supported", "require", "proxy-require", "unsupported", "accept", "accept-encoding",
    "accept-language", "allow-events", "content-encoding", "content-language",
})


#: cache entry of Message -> the header keys it was computed from
_DEPENDS: dict[str, frozenset[str]] = {
    "raw": frozenset({"call-id", "cseq", "from", "to"}),
    "cseq": frozenset({"cseq"}),
    "call_id": frozenset({"call-id"}),
    "max_forwards": frozenset({"max-forwards"}),
    "from": frozenset({"from"}),
    "to": frozenset({"to"}),
    "vias": frozenset({"via"}),
    "top_via": frozenset({"via"}),
    "contacts": frozenset({"contact"}),
    "routes": frozenset({"route"}),
    "record_routes": frozenset({"record-route"}),
    "expires": frozenset({"expires"}),
}

#: cache entries computed from the Via header (dropped by Message.replace_top_via)
_FROM_VIA = tuple(name for name, deps in _DEPENDS.items() if "via" in deps)

#: Contact values known to parse (values only, never parsed objects: those are per message).
#: Bounded; cleared when full.
_VALID_CONTACTS: dict[str, None] = {}
_VALID_CONTACTS_SIZE = 16384


#: Parsed From/To/Contact values by header text, shared by every message carrying that exact
#: text (a dialog's dozen messages repeat its From and To, a phone its Contact): read-only
#: like every accessor value. Bounded; cleared when full.
_NAME_ADDRS: dict[str, NameAddr] = {}
_NAME_ADDRS_SIZE = 4096


def _shared_name_addr(value: str, what: str) -> NameAddr:
    """``parse_name_addr(value, what)``, once per distinct text (see :data:`_NAME_ADDRS`)."""
    v = _NAME_ADDRS.get(value)
    if v is None:
        v = parse_name_addr(value, what)
        if len(_NAME_ADDRS) >= _NAME_ADDRS_SIZE:
            _NAME_ADDRS.clear()
        _NAME_ADDRS[value] = v
    return v


class Message:
    """Common base of :class:`Request` and :class:`Response`.

    Accessors (``call_id``, ``cseq``, ``vias`` ...) parse their header on first use, cache the
    result until ``headers`` is mutated, and raise ParseError when the header is missing or
    invalid. Returned objects are shared with the cache (From and To also with other messages
    carrying the same text): treat them as read-only — ``.copy()`` one to change it — and
    change the message through ``headers`` instead.
    """

    __slots__ = ("_cache", "_cache_headers", "_cache_version", "body", "headers")

    headers: Headers
    body: bytes
    # entry name -> parsed value (see _DEPENDS); Any so that each accessor states the type of
    # its own entry (no cast() calls on paths taken a dozen times per message)
    _cache: dict[str, Any]
    _cache_headers: Headers | None
    _cache_version: int

    def _c(self) -> dict[str, Any]:
        """The parsed-header cache, freed first of whatever a change of ``headers`` made stale."""
        h = self.headers
        if self._cache_headers is h and self._cache_version == h.version:
            return self._cache
        return self._refresh_cache(h)

    def _refresh_cache(self, h: Headers) -> dict[str, Any]:
        if self._cache_headers is h:
            # drop only what depends on the headers that changed: stamping the top Via
            # must not throw away the parsed CSeq, From, To ...
            version = self._cache_version
            changed = h._changed  # lookup key -> version of its last change
            cache = self._cache
            for name in list(cache):
                deps = _DEPENDS.get(name)
                if deps is None:
                    del cache[name]
                    continue
                for dep in deps:
                    if changed.get(dep, 0) > version:
                        del cache[name]
                        break
        else:  # a new Headers object: nothing cached holds
            self._cache = {}
            self._cache_headers = h
        self._cache_version = h.version
        return self._cache

    def _one(self, key: str, name: str) -> str:
        """The only value of a single-valued header (missing or repeated: ParseError)."""
        raw: dict[str, str] | None = self._c().get("raw")
        if raw is not None:  # the parser's note of tracked headers it saw exactly once
            value = raw.get(key)
            if value is not None:
                return value
        values = self.headers.get_all(name)
        if len(values) != 1:
            raise ParseError(f"Missing {name}" if not values else f"Multiple {name}")
        return values[0]

    # -- accessors ---------------------------------------------------------------------------

    @property
    def call_id(self) -> str:
        """The Call-ID (RFC 3261 §20.8)."""
        c = self._c()
        v: str | None = c.get("call_id")
        if v is None:
            v = self._one("call-id", "Call-ID")
            if not v or " " in v or "\t" in v:
                raise ParseError("Bad Call-ID")
            c["call_id"] = v
        return v

    @property
    def cseq(self) -> CSeq:
        """The parsed CSeq."""
        c = self._c()
        v: CSeq | None = c.get("cseq")
        if v is None:
            v = c["cseq"] = parse_cseq(self._one("cseq", "CSeq"))
        return v

    def _name_addr(self, key: str, name: str) -> NameAddr:
        """Parse and cache From or To (``key`` is both the cache entry and the header key)."""
        v = _shared_name_addr(self._one(key, name), name)
        self._c()[key] = v
        return v

    @property
    def from_(self) -> NameAddr:
        """The From header (``from`` is a keyword)."""
        v: NameAddr | None = self._c().get("from")
        return v if v is not None else self._name_addr("from", "From")

    @property
    def to(self) -> NameAddr:
        """The To header."""
        v: NameAddr | None = self._c().get("to")
        return v if v is not None else self._name_addr("to", "To")

    @property
    def from_tag(self) -> str | None:
        """The From tag or ``None``."""
        v: NameAddr | None = self._c().get("from")
        if v is None:
            v = self._name_addr("from", "From")
        return v.params.get("tag")

    @property
    def to_tag(self) -> str | None:
        """The To tag or ``None``."""
        v: NameAddr | None = self._c().get("to")
        if v is None:
            v = self._name_addr("to", "To")
        return v.params.get("tag")

    @property
    def vias(self) -> list[Via]:
        """All Via entries, top first (raises ParseError when there is none)."""
        c = self._c()
        v: list[Via] | None = c.get("vias")
        if v is None:
            values = self.headers.get_all("Via")
            if not values:
                raise ParseError("Missing Via")
            top: Via | None = c.get("top_via")  # already parsed on its own: reuse it
            first = top if top is not None else parse_via(values[0])
            v = c["vias"] = [first, *(parse_via(x) for x in values[1:])]
        return v

    @property
    def top_via(self) -> Via:
        """The first Via."""
        c = self._c()
        top: Via | None = c.get("top_via")
        if top is None:
            vias: list[Via] | None = c.get("vias")
            if vias is not None:
                return vias[0]
            value = self.headers.get("Via")
            if value is None:
                raise ParseError("Missing Via")
            top = c["top_via"] = parse_via(value)
        return top

    def replace_top_via(self, via: Via) -> None:
        """Write ``via`` over the first Via entry (in place) and keep it as the parsed top Via.

        For the transport layer stamping ``received``/``rport`` (RFC 3261 §18.2.1, RFC 3581):
        the accessors then use ``via`` instead of parsing the new text again. Raises ParseError
        when the message has no Via.
        """
        c = self._c()  # up to date before the change ...
        if not self.headers.replace_first("Via", str(via)):
            raise ParseError("Missing Via")
        for name in _FROM_VIA:  # ... so only what came from the Via needs dropping
            c.pop(name, None)
        c["top_via"] = via
        self._cache_version = self.headers.version

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0-255) or ``None`` when absent."""
        c = self._c()
        if "max_forwards" in c:
            mf: int | None = c["max_forwards"]
            return mf
        values = self.headers.get_all("Max-Forwards")
        if len(values) > 1:
            raise ParseError("Multiple Max-Forwards")
        mf = _int(values[0], 0, 255, "Bad Max-Forwards") if values else None
        c["max_forwards"] = mf
        return mf

    def _contacts(self) -> tuple[list[NameAddr], bool]:
        c = self._c()
        v: tuple[list[NameAddr], bool] | None = c.get("contacts")
        if v is None:
            values = self.headers.get_all("Contact")
            if values == ["*"]:
                v = ([], True)
            elif "*" in values:
                raise ParseError("Bad Contact")
            else:
                v = ([_shared_name_addr(x, "Contact") for x in values if x], False)
            c["contacts"] = v
        return v

    @property
    def contacts(self) -> list[NameAddr]:
        """All Contact entries (empty for none and for ``Contact: *``)."""
        return self._contacts()[0]

    @property
    def contact_star(self) -> bool:
        """True for ``Contact: *`` (RFC 3261 §10.2.2, REGISTER removing all bindings)."""
        return self._contacts()[1]

    def _name_addr_list(self, key: str, name: str) -> list[NameAddr]:
        c = self._c()
        v: list[NameAddr] | None = c.get(key)
        if v is None:
            v = c[key] = [parse_name_addr(x, name) for x in self.headers.get_all(name)]
        return v

    @property
    def routes(self) -> list[NameAddr]:
        """The Route entries in order."""
        return self._name_addr_list("routes", "Route")

    @property
    def record_routes(self) -> list[NameAddr]:
        """The Record-Route entries in order."""
        return self._name_addr_list("record_routes", "Record-Route")

    @property
    def content_type(self) -> str | None:
        """The media type ``type/subtype`` of Content-Type, lower-cased, without parameters
        (``headers.get("Content-Type")`` has the whole value)."""
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip(" \t").lower()

    @property
    def expires(self) -> int | None:
        """The Expires header (delta-seconds, 0..2**32-1) or ``None`` when absent."""
        c = self._c()
        if "expires" in c:
            ex: int | None = c["expires"]
            return ex
        value = self.headers.get("Expires")
        ex = None if value is None else _int(value, 0, 2**32 - 1, "Bad Expires")
        c["expires"] = ex
        return ex

    @property
    def content_length(self) -> int | None:
        """The Content-Length header as received (``None`` when absent)."""
        value = self.headers.get("Content-Length")
        return None if value is None else _int(value, 0, MAX_BODY_SIZE, "Bad Content-Length")

    def validate(self) -> None:
        """Parse every core header now; raise ParseError naming the first bad one.

        Requests need Via, From, To, Call-ID and CSeq (RFC 3261 §8.1.1); the parsed values stay
        cached, so this costs nothing extra when the message is used afterwards. Contact values
        already seen to parse are only looked up (phones repeat theirs with every refresh); the
        ``contacts`` accessor parses them when asked.
        """
        c = self._c()
        self.vias  # noqa: B018 - accessed for the side effect of parsing
        if "from" not in c:
            self._name_addr("from", "From")
        if "to" not in c:
            self._name_addr("to", "To")
        self.call_id  # noqa: B018
        cseq = self.cseq
        self.max_forwards  # noqa: B018
        if "contacts" not in c:
            values = self.headers.get_all("Contact")
            known = _VALID_CONTACTS
            if not all(v in known for v in values):  # ("*" never is: parse that)
                star = self._contacts()[1]  # raises for a bad Contact
                if not star:
                    if len(known) + len(values) > _VALID_CONTACTS_SIZE:
                        known.clear()
                    known.update(dict.fromkeys(values))
        self.expires  # noqa: B018
        if isinstance(self, Request) and cseq.method != self.method:
            raise ParseError("CSeq method does not match")

    # -- serialisation -----------------------------------------------------------------------

    def _start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """The wire form; Content-Length is always written and always matches the body.

        Raises LocalProtocolError when a header value (or the reason phrase / URI) contains CR or
        LF, which would otherwise smuggle extra headers onto the wire.
        """
        body = self.body
        lines = [self._start_line()]
        cl_done = False
        prev = ""
        for key, name, value in self.headers._items:
            # consecutive token-list entries share a line, but only plain ones: an empty entry
            # or one with a quote or bracket would not split back into the same entries
            if key in _JOINED and value and '"' not in value and "<" not in value:
                if key == prev:
                    lines[-1] += ", " + value
                else:
                    lines.append(f"{name}: {value}")
                    prev = key
                continue
            prev = ""
            if key == "content-length":
                if not cl_done:
                    lines.append(f"Content-Length: {len(body)}")
                    cl_done = True
            else:
                lines.append(f"{name}: {value}")
        if not cl_done:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        text = "\r\n".join(lines)
        n = len(lines)
        if text.count("\n") != n or text.count("\r") != n:
            # a CR or LF inside a value would inject headers (or a body): refuse to send it
            raise LocalProtocolError("CR or LF inside a start line or header value")
        head = text.encode("utf-8", "surrogateescape")
        return head + body if body else head

    def __bytes__(self) -> bytes:
        return self.serialize()

    def wire_size(self) -> int:
        """An upper bound of ``len(self.serialize())`` for ASCII headers, without serializing
        (e.g. for the RFC 3261 §18.1.1 UDP size check): every header entry counted on a line
        of its own, plus room for Content-Length."""
        n = len(self._start_line()) + len(self.body) + 28  # CRLFs, Content-Length: <digits>
        for _, name, value in self.headers._items:
            n += len(name) + len(value) + 4
        return n


class Request(Message):
    """A SIP request. ``uri`` is the Request-URI (a ``str`` given here is parsed)."""

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.uri: URI = parse_uri(uri) if isinstance(uri, str) else uri
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._cache = {}
        self._cache_headers = None
        self._cache_version = -1

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def copy(self) -> Request:
        """A copy with its own Headers and Request-URI (e.g. to forward or to re-send with
        changes); parsed-header caches are not shared."""
        uri = self.uri.copy() if isinstance(self.uri, SipURI) else self.uri
        return Request(self.method, uri, self.headers.copy(), self.body)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (
            self.method == other.method
            and str(self.uri) == str(other.uri)
            and self.headers == other.headers
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = reason_phrase(status) if reason is None else reason
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._cache = {}
        self._cache_headers = None
        self._cache_version = -1

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def copy(self) -> Response:
        """A copy with its own Headers."""
        return Response(self.status, self.reason, self.headers.copy(), self.body)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status == other.status
            and self.reason == other.reason
            and self.headers == other.headers
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# -- parsing -----------------------------------------------------------------------------------

_REQUIRED = (("to", "To"), ("from", "From"), ("cseq", "CSeq"), ("call-id", "Call-ID"),
             ("via", "Via"))


def _lenient_head(data: bytes) -> tuple[str, list[str], bytes]:
    """Head split for the unusual cases: bare-LF line ends, no blank line at all."""
    ends = [(i, n) for i, n in ((data.find(b"\r\n\r\n"), 4), (data.find(b"\n\n"), 2),
                                (data.find(b"\n\r\n"), 3)) if i >= 0]
    if ends:
        i, n = min(ends)
        head_b, rest = data[:i], data[i + n :]
    else:  # no blank line: all of it is the head (tolerated on datagrams)
        head_b, rest = data.rstrip(b"\r\n"), b""
    head = head_b.decode("utf-8", "surrogateescape")
    lines = head.replace("\r\n", "\n").split("\n")
    if "\r" in head and head.count("\r") != head.count("\r\n"):
        raise ParseError("Bad line end")
    return head, lines, rest


def _parse_start(line: str) -> tuple[str, URI | None, int, str]:
    """Return (method, uri, 0, "") for requests and ("", None, status, reason) for responses."""
    if line.endswith(" SIP/2.0"):  # the usual request line, one SP apart
        method, sp, uri_text = line[:-8].partition(" ")
        if sp and " " not in uri_text and is_token(method):
            try:
                return method, parse_uri(uri_text), 0, ""
            except ParseError:
                raise ParseError("Bad Request-URI") from None
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        _check_version(version)
        code, _, reason = rest.lstrip(" ").partition(" ")
        if len(code) != 3:
            raise ParseError("Bad status code")
        return "", None, _int(code, 100, 699, "Bad status code"), reason.strip(" \t")
    parts = [p for p in line.split(" ") if p]
    if len(parts) != 3:
        if len(parts) > 3:
            raise ParseError("Bad Request-URI")
        raise ParseError("Bad Request-Line")
    method, uri_text, version = parts
    if not is_token(method):
        raise ParseError("Bad method")
    _check_version(version)
    try:
        uri = parse_uri(uri_text)
    except ParseError:
        raise ParseError("Bad Request-URI") from None
    return method, uri, 0, ""


def _check_version(version: str) -> None:
    if version == "SIP/2.0":
        return
    name, slash, num = version.partition("/")
    if not slash or name.upper() != "SIP":
        raise ParseError("Bad SIP version")
    major, dot, minor = num.partition(".")
    if not dot or not (major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit()):
        raise ParseError("Bad SIP version")
    if (major.lstrip("0") or "0") != "2" or (minor.lstrip("0") or "0") != "0":
        raise ParseError("Version Not Supported", 505)




_REQUIRED_KEYS = frozenset(k for k, _ in _REQUIRED)


def _header_entries(
    lines: list[str], seen: dict[str, str], dups: list[str]
) -> list[tuple[str, str, str]] | None:
    """Split header lines into entries; ``None`` when a folded line is found (unfold first)."""
    entries: list[tuple[str, str, str]] = []
    append = entries.append
    names = _PARSE_NAMES
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        hit = names.get(name)
        if hit is None:  # not a known spelling: folding? "Name :" spacing? check it is a token
            if line[:1] in (" ", "\t"):
                return None
            if not colon:
                raise ParseError("Bad header line")
            name = name.rstrip(" \t")
            if not is_token(name):
                raise ParseError("Bad header name")
            key, canon = _lookup(name)
            kind = (1 if key in PARSER_TRACKED else 0) | (2 if key in _LIST_KEYS else 0)
        else:
            key, canon, kind = hit
        value = value.strip(" \t")
        if kind:
            if kind & 1:
                if key in seen and key != "via":
                    if key == "content-length" and seen[key] != value:
                        raise ParseError("Bad Content-Length")
                    dups.append(key)
                seen[key] = value
            if kind & 2 and "," in value:
                entries.extend([(key, canon, v) for v in split_header_list(value)])
                continue
        append((key, canon, value))
    return entries


def nul_only_quoted(head: str) -> bool:
    """Whether every NUL in ``head`` is the escaped character of a quoted-pair inside a
    quoted-string (``"NUL:\\<NUL>"``), which RFC 3261 §25.1 allows (RFC 4475 §3.1.1.2). Any
    other NUL is refused by the caller. (Rare path: only called when the head has a NUL.)"""
    for line in head.split("\r\n"):
        if "\x00" not in line:
            continue
        quoted = escaped = False
        for ch in line:
            if escaped:
                escaped = False
            elif ch == "\x00":
                return False
            elif quoted and ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = not quoted
    return True


def _parse(data: bytes) -> Request | Response:
    if len(data) > MAX_MESSAGE_SIZE:
        raise ParseError("Message Too Large", 513)
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end > 0:
        head = data[:end].decode("utf-8", "surrogateescape")
        rest = data[end + 4 :]
        lines = head.split("\r\n")
        nl = len(lines) - 1
        if head.count("\n") != nl or head.count("\r") != nl:
            head, lines, rest = _lenient_head(data)
    else:
        head, lines, rest = _lenient_head(data)
    if not head:
        raise ParseError("Empty message")
    if "\x00" in head and not nul_only_quoted(head):
        raise ParseError("NUL in header")
    long_lines = len(head) > MAX_HEADER_LINE
    if long_lines:
        for line in lines:
            if len(line) > MAX_HEADER_LINE:
                raise ParseError("Header too long")
    method, uri, status, reason = _parse_start(lines[0])

    seen: dict[str, str] = {}
    dups: list[str] = []
    entries = _header_entries(lines, seen, dups)
    if entries is None:
        lines = _unfold(lines)
        if long_lines:
            for line in lines:
                if len(line) > MAX_HEADER_LINE:
                    raise ParseError("Header too long")
        seen.clear()
        dups.clear()
        entries = _header_entries(lines, seen, dups)
        if entries is None:  # pragma: no cover - _unfold leaves no continuation lines
            raise ParseError("Bad line folding")
    if len(entries) > MAX_HEADERS:
        raise ParseError("Too many headers")

    # Content-Length: the body is what follows the blank line, cut to Content-Length; on a
    # datagram a missing Content-Length means "the rest" (RFC 3261 §18.3).
    cl_value = seen.get("content-length")
    if cl_value is not None:
        length = _int(cl_value, 0, MAX_BODY_SIZE, "Bad Content-Length")
        if length > len(rest):
            raise ParseError("Bad Content-Length")
        body = rest[:length] if length != len(rest) else rest
    else:
        if len(rest) > MAX_BODY_SIZE:
            raise ParseError("Body too large", 413)
        body = rest
    headers = Headers._trusted(entries)
    # single headers seen exactly once, by canonical name, for Message._one (valid until the
    # headers are mutated, like every cached value)
    raw = seen if not dups else {k: v for k, v in seen.items() if k not in dups}

    if uri is None:
        resp = Response(status, reason, headers, body)
        resp._cache = {"raw": raw}
        resp._cache_headers = headers
        resp._cache_version = headers.version
        return resp
    msg = Request(method, uri, headers, body)
    if not seen.keys() >= _REQUIRED_KEYS:
        # name every missing one (RFC 4475 §3.3.1: "Missing To, From, Call-ID")
        raise ParseError("Missing " + ", ".join(h for k, h in _REQUIRED if k not in seen))
    for key in dups:
        if key != "content-length":
            raise ParseError(f"Multiple {_lookup(key)[1]}")
    cseq = parse_cseq(seen["cseq"])
    if cseq.method != method:
        raise ParseError("CSeq method does not match")
    call_id = seen["call-id"]
    if not call_id or " " in call_id or "\t" in call_id:
        raise ParseError("Bad Call-ID")
    mf = seen.get("max-forwards")
    # seed the accessor cache with what was checked here
    msg._cache = {
        "raw": raw,
        "cseq": cseq,
        "call_id": call_id,
        "max_forwards": None if mf is None else _int(mf, 0, 255, "Bad Max-Forwards"),
    }
    msg._cache_headers = headers
    msg._cache_version = headers.version
    return msg


def _unfold(lines: list[str]) -> list[str]:
    """Join continuation lines (starting with SP/HTAB) to the line before (RFC 3261 §7.3.1)."""
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if len(out) < 2:  # a continuation of the start line or of nothing
                raise ParseError("Bad line folding")
            out[-1] = out[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            out.append(line)
    return out


def parse_message(data: bytes) -> Request | Response:
    """Parse one SIP message (a datagram, or one framed message from a stream).

    Raises only :class:`~sipcore.errors.ParseError` (limits included: message
    :data:`MAX_MESSAGE_SIZE`, :data:`MAX_HEADERS` entries, :data:`MAX_HEADER_LINE`,
    :data:`MAX_BODY_SIZE`). For requests the required headers (To, From, CSeq, Call-ID, Via)
    must be present, CSeq must be valid and name the request method, Max-Forwards must be in
    range when present. Responses are accepted with whatever headers they carry; their accessors
    raise ParseError later if something they need is missing.
    """
    try:
        return _parse(data if type(data) is bytes else bytes(data))
    except ParseError:
        raise
    except (ValueError, IndexError, KeyError, UnicodeError, OverflowError) as exc:
        # defence in depth: a bug in a corner of the parser must not become a crash
        raise ParseError("Malformed message") from exc


# -- building responses -------------------------------------------------------------------------

_REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity", 433: "Anonymity Disallowed",
    439: "First Hop Lacks Outbound Support", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
_CLASS_REASONS = {1: "Trying", 2: "OK", 3: "Redirection", 4: "Client Error", 5: "Server Error",
                  6: "Global Failure"}


def reason_phrase(status: int) -> str:
    """The usual reason phrase for ``status`` (a class default for unknown codes)."""
    return _REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


def make_response(
    request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> Response:
    """Build a response to ``request`` (RFC 3261 §8.2.6).

    Copies every Via (in order), From, To, Call-ID and CSeq, adds ``to_tag`` to To when given and
    To has no tag yet, copies Timestamp into a 100 (§8.2.6.1), and sets ``Content-Length: 0``.
    The request's header values are copied as received (byte-exact).
    """
    rh = request.headers
    entries: list[tuple[str, str, str]] = []
    for key, name, value in rh._items:
        if key in _ECHOED or (key == "timestamp" and status == 100):
            entries.append((key, name, value))
        elif key == "to":
            if to_tag is not None and request.to.tag is None:
                value = f"{value};tag={to_tag}"
            entries.append((key, name, value))
    entries.append(("content-length", "Content-Length", "0"))
    headers = Headers._trusted(entries)
    response = Response(status, reason, headers)
    # The echoed Via, From, Call-ID and CSeq are the request's, byte for byte: their parsed
    # values hold for the response too (shared read-only, like every cached value), and To is
    # the request's plus the tag we wrote. Matching the response to its server transaction
    # and reading its tags then parse nothing.
    parsed = request._c()
    cache = {k: parsed[k] for k in _SEEDED if k in parsed}
    to: NameAddr | None = parsed.get("to")
    if to is not None:
        if to_tag is not None and to.params.get("tag") is None:
            to = NameAddr(to.display, to.uri, {**to.params, "tag": to_tag})
        cache["to"] = to
    if cache:
        response._cache = cache
        response._cache_headers = headers
        response._cache_version = headers.version
    return response


#: Parsed request headers a response shares (its copies of them are byte-identical).
_SEEDED = ("top_via", "vias", "cseq", "call_id", "from")


#: Headers a response echoes from its request (RFC 3261 §8.2.6.2), To apart (it may get a tag).
_ECHOED = frozenset({"via", "from", "call-id", "cseq"})


class _RandomPool:
    """Cryptographically random hex from ``os.urandom``, fetched 4 KiB at a time: one system
    call per 512 tags instead of one per tag (tags and branches are made for every request)."""

    __slots__ = ("_hex", "_pos")

    def __init__(self) -> None:
        self._hex = ""
        self._pos = 0

    def take(self, nbytes: int) -> str:
        n = 2 * nbytes
        pos = self._pos
        if pos + n > len(self._hex):
            self._hex = os.urandom(4096).hex()
            pos = 0
        self._pos = pos + n
        return self._hex[pos : pos + n]


_RANDOM = _RandomPool()


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie ``z9hG4bK`` plus 64 random bits."""
    return MAGIC_COOKIE + _RANDOM.take(8)


def new_tag() -> str:
    """A fresh From/To tag (64 random bits, RFC 3261 §19.3 asks for at least 32)."""
    return _RANDOM.take(8)


def new_call_id() -> str:
    """A fresh, globally unique Call-ID (128 random bits)."""
    return _RANDOM.take(16)
