"""SIP, SIPS and tel URIs, name-addr values, and URI comparison.

* ``SipURI`` — RFC 3261 §19.1 (``sip:`` / ``sips:``). ``user``, ``password``, parameter names and
  values and URI header values are stored *unescaped* (``%23`` becomes ``#``) and escaped again
  when serialised, so application code compares plain text.
* ``TelURI`` — RFC 3966 basics: the number and its parameters.
* ``AbsoluteURI`` — any other scheme, kept verbatim (the core answers 416 to such Request-URIs).
* ``uri_equal`` — the comparison rules of RFC 3261 §19.1.4 (and RFC 3966 §4 for tel).
* ``NameAddr`` — the ``[display-name] <uri> *(;param)`` / ``addr-spec *(;param)`` values of
  From, To, Contact, Route, Record-Route, Refer-To ... (RFC 3261 §20.10, §25.1).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from sipcore.errors import ParseError

__all__ = [
    "URI",
    "AbsoluteURI",
    "NameAddr",
    "SipURI",
    "TelURI",
    "host_equal",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "quote_string",
    "uri_equal",
]

# -- escaping (RFC 3261 §25.1 "escaped") -------------------------------------------------------

_UNRESERVED = "A-Za-z0-9\\-_.!~*'()"
# characters that stay literal in each URI component; everything else is %HH-escaped
# '?' is legal in a user part but we escape it: peers commonly send unescaped '@' in URI headers,
# so the parser looks for the userinfo '@' only before the first '?'
_USER_SAFE = re.compile(f"[^{_UNRESERVED}&=+$,;/]")
_PASSWORD_SAFE = re.compile(f"[^{_UNRESERVED}&=+$,]")
_PARAM_SAFE = re.compile(f"[^{_UNRESERVED}\\[\\]/:&+$]")
_HEADER_SAFE = re.compile(f"[^{_UNRESERVED}\\[\\]/?:+$]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# characters never allowed anywhere in a URI we accept (controls, space, delimiters of the
# enclosing grammar)
_FORBIDDEN = re.compile(r'[\x00-\x20\x7f<>"]')
_HOST = re.compile(r"[A-Za-z0-9\-._]+")
# hex groups and colons (at least two), optionally an IPv4 tail: RFC 3261's IPv6reference
_LAX_IPV6 = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,8}(?::\d{1,3}(?:\.\d{1,3}){3})?")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def _unescape(text: str, what: str) -> str:
    if "%" not in text:
        return text
    if _BAD_ESCAPE.search(text):
        raise ParseError(f"Bad escape in {what}")
    return unquote(text, errors="surrogateescape")


def _escape(text: str, unsafe: re.Pattern[str]) -> str:
    if unsafe.search(text) is None:
        return text
    out: list[str] = []
    for ch in text:
        if unsafe.match(ch):
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
        else:
            out.append(ch)
    return "".join(out)


def _parse_port(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise ParseError(f"Bad port in {what}")
    port = int(text)
    if port > 65535:
        raise ParseError(f"Bad port in {what}")
    return port


def _parse_hostport(text: str, what: str) -> tuple[str, int | None]:
    """``host [":" port]`` with IPv6 references in brackets; returns (host, port)."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ParseError(f"Bad host in {what}")
        host = text[: close + 1]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            # RFC 5118 §4.10: RFC 3261's IPv6reference ABNF admits three colons in a row
            # ("2001:db8:::192.0.2.1"); tolerated as a name (it never resolves), nothing else
            if _LAX_IPV6.fullmatch(host[1:-1]) is None:
                raise ParseError(f"Bad host in {what}") from None
        rest = text[close + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise ParseError(f"Bad host in {what}")
        return host, _parse_port(rest[1:], what)
    host, colon, port = text.partition(":")
    if not host or _HOST.fullmatch(host) is None:
        raise ParseError(f"Bad host in {what}")
    return host, (_parse_port(port, what) if colon else None)


def _split_params(text: str, lower_values: bool, what: str) -> dict[str, str | None]:
    """``;a=b;c`` (leading ``;`` already removed) of a URI, unescaped, names lower-cased."""
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = _unescape(name, what).lower()
        if not name:
            raise ParseError(f"Bad parameter in {what}")
        if eq:
            v = _unescape(value, what)
            params[name] = v.lower() if lower_values else v
        else:
            params[name] = None
    return params


def _params_str(params: dict[str, str | None], unsafe: re.Pattern[str]) -> str:
    if not params:
        return ""
    parts = []
    for name, value in params.items():
        if value is None:
            parts.append(f";{_escape(name, unsafe)}")
        else:
            parts.append(f";{_escape(name, unsafe)}={_escape(value, unsafe)}")
    return "".join(parts)


# -- URI classes -------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class SipURI:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1).

    ``host`` keeps IPv6 references in brackets (``"[2001:db8::1]"``). ``params`` maps lower-case
    parameter names to their (unescaped) value or ``None`` for flag parameters such as ``lr``.
    ``headers`` are the ``?name=value&...`` URI headers, unescaped. ``==`` is structural; use
    :func:`uri_equal` for RFC 3261 §19.1.4 equivalence.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased, or ``None``."""
        t = self.params.get("transport")
        return t.lower() if t else None

    @property
    def lr(self) -> bool:
        """True when the loose-routing flag ``;lr`` is present (RFC 3261 §19.1.1)."""
        return "lr" in self.params

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter or ``None``."""
        return self.params.get("maddr")

    @property
    def hostport(self) -> str:
        """``host`` or ``host:port``."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def aor(self) -> str:
        """The address-of-record form ``scheme:user@host`` (no port, params or headers)."""
        user = "" if self.user is None else _escape(self.user, _USER_SAFE) + "@"
        return f"{self.scheme}:{user}{self.host.lower()}"

    def copy(self) -> SipURI:
        """A copy whose params/headers dicts can be modified independently."""
        return SipURI(
            self.scheme, self.user, self.password, self.host, self.port,
            dict(self.params), dict(self.headers),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipURI):
            return NotImplemented
        return (
            self.scheme == other.scheme
            and self.user == other.user
            and self.password == other.password
            and self.host == other.host
            and self.port == other.port
            and self.params == other.params
            and self.headers == other.headers
        )

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        out = self.scheme + ":"
        if self.user is not None:
            out += _escape(self.user, _USER_SAFE)
            if self.password is not None:
                out += ":" + _escape(self.password, _PASSWORD_SAFE)
            out += "@"
        out += self.host
        if self.port is not None:
            out += f":{self.port}"
        if self.params:
            out += _params_str(self.params, _PARAM_SAFE)
        if self.headers:
            out += "?" + "&".join(
                f"{_escape(k, _HEADER_SAFE)}={_escape(v, _HEADER_SAFE)}"
                for k, v in self.headers.items()
            )
        return out


@dataclass(eq=True, slots=True)
class TelURI:
    """A ``tel:`` URI (RFC 3966): ``number`` as written (``+49-30-1234`` or local ``1234``) and
    its parameters (lower-case names, e.g. ``phone-context``, ``ext``, ``isub``)."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)

    __hash__ = None  # type: ignore[assignment]

    @property
    def global_number(self) -> bool:
        """True for a global number (``+`` prefix)."""
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators (``-``, ``.``, ``(``, ``)``)."""
        return _strip_visual(self.number)

    def __str__(self) -> str:
        return "tel:" + self.number + _params_str(self.params, _PARAM_SAFE)


@dataclass(eq=True, slots=True)
class AbsoluteURI:
    """Any other URI (``mailto:``, ``urn:``, ``http:`` ...), kept verbatim after the scheme."""

    scheme: str
    value: str

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}"


URI = SipURI | TelURI | AbsoluteURI

_VISUAL = str.maketrans("", "", "-.()")


def _strip_visual(number: str) -> str:
    return number.translate(_VISUAL)


_TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")


def _parse_sip(scheme: str, rest: str, text: str) -> SipURI:
    what = "URI"
    if not rest:
        raise ParseError("Bad URI")
    # the '@' of userinfo comes before any '?'; '@' is never legal after the host part, but
    # peers send it unescaped in URI headers (``sip:h?Replaces=id@h2``). A '?' may also be part
    # of a user (RFC 4475 §3.1.1.2): an '@' after the '?' ends the userinfo unless what comes
    # before the '?' is a host already.
    qmark = rest.find("?")
    at = rest.find("@", 0, qmark if qmark >= 0 else len(rest))
    if at < 0 and qmark >= 0:
        late = rest.find("@", qmark)
        if late >= 0 and not _is_hostport(rest[:qmark].partition(";")[0]):
            at = late
    user: str | None = None
    password: str | None = None
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        u, colon, pw = userinfo.partition(":")
        if not u:
            raise ParseError("Bad user in URI")
        user = _unescape(u, what)
        password = _unescape(pw, what) if colon else None
        qmark = rest.find("?")
    headers: dict[str, str] = {}
    if qmark >= 0:
        htext = rest[qmark + 1 :]
        rest = rest[:qmark]
        for item in htext.split("&"):
            if not item:
                continue
            hname, _, hvalue = item.partition("=")
            if not hname:
                raise ParseError("Bad header in URI")
            headers[_unescape(hname, what)] = _unescape(hvalue, what)
    semi = rest.find(";")
    if semi >= 0:
        params = _split_params(rest[semi + 1 :], False, what)
        rest = rest[:semi]
    else:
        params = {}
    host, port = _parse_hostport(rest, what)
    return SipURI(scheme, user, password, host, port, params, headers)


def _is_hostport(text: str) -> bool:
    """Whether ``text`` is a ``host[:port]``."""
    try:
        _parse_hostport(text, "URI")
    except ParseError:
        return False
    return True


# The common shape of a SIP URI, matched in one go (possessive quantifiers: no backtracking).
# Anything unusual (escapes, IPv6, URI headers, user parameters, upper-case scheme) takes the
# general path below.
_SIP_FAST = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,/]++)(?::([A-Za-z0-9\-_.!~*'()&=+$,]*+))?+@)?+"
    r"([A-Za-z0-9\-._]++)(?::([0-9]{1,5}+))?+((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$=]*+)*+)"
)


def parse_uri(text: str) -> URI:
    """Parse a URI: ``sip:``/``sips:`` into :class:`SipURI`, ``tel:`` into :class:`TelURI`, any
    other scheme into :class:`AbsoluteURI`. Raises :class:`~sipcore.errors.ParseError`."""
    m = _SIP_FAST.fullmatch(text)
    if m is not None:
        scheme, user, password, host, port, ptext = m.groups()
        params: dict[str, str | None] = {}
        if ptext:
            for item in ptext[1:].split(";"):
                if not item:  # "sip:h;;lr" or a trailing ';': skipped, as in _split_params
                    continue
                name, eq, value = item.partition("=")
                if not name:
                    raise ParseError("Bad parameter in URI")
                params[name.lower()] = value if eq else None
        if port is not None:
            pnum = int(port)
            if pnum > 65535:
                raise ParseError("Bad port in URI")
            return SipURI(scheme, user, password, host, pnum, params, {})
        return SipURI(scheme, user, password, host, None, params, {})
    return _parse_uri_general(text)


def _parse_uri_general(text: str) -> URI:
    """The general URI parser: escapes, IPv6, URI headers, user parameters, tel, others."""
    if _FORBIDDEN.search(text):
        raise ParseError("Bad URI")
    colon = text.find(":")
    if colon <= 0:
        raise ParseError("Bad URI")
    scheme = text[:colon]
    low = scheme.lower()
    if low == "sip" or low == "sips":
        return _parse_sip(low, text[colon + 1 :], text)
    if _SCHEME.fullmatch(scheme) is None:
        raise ParseError("Bad URI scheme")
    if low == "tel":
        number, semi, ptext = text[colon + 1 :].partition(";")
        if _TEL_NUMBER.fullmatch(number) is None:
            raise ParseError("Bad tel URI")
        return TelURI(number, _split_params(ptext, False, "tel URI") if semi else {})
    if colon + 1 >= len(text):
        raise ParseError("Bad URI")
    return AbsoluteURI(scheme, text[colon + 1 :])


# -- comparison (RFC 3261 §19.1.4) --------------------------------------------------------------

_MUST_MATCH = ("user", "ttl", "method", "maddr", "transport")


def _host_key(host: str) -> str:
    if host.startswith("["):
        try:
            return "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
        except ValueError:
            return host.lower()
    return host.lower()


def host_equal(a: str, b: str) -> bool:
    """Whether two URI hosts are the same (RFC 3261 §19.1.4: case-insensitive; IPv6
    references compared by address, so ``[::1]`` equals ``[0:0::1]``)."""
    return _host_key(a) == _host_key(b)


def _pval(v: str | None) -> str | None:
    return None if v is None else v.lower()


def uri_equal(a: URI, b: URI) -> bool:
    """URI equivalence of RFC 3261 §19.1.4 (SIP/SIPS) and RFC 3966 §4 (tel).

    User and password compare case-sensitively after unescaping; host, parameter names and
    parameter values case-insensitively. A port given in one URI only makes them differ. The
    ``user``, ``ttl``, ``method``, ``maddr`` and ``transport`` parameters must match when either
    URI has them; other parameters only when both have them. URI headers must all match.
    """
    if isinstance(a, SipURI) and isinstance(b, SipURI):
        if a.scheme != b.scheme or a.user != b.user or a.password != b.password:
            return False
        if a.port != b.port or _host_key(a.host) != _host_key(b.host):
            return False
        pa, pb = a.params, b.params
        for name in _MUST_MATCH:
            if (name in pa or name in pb) and _pval(pa.get(name, "\0")) != _pval(
                pb.get(name, "\0")
            ):
                return False
        for name in pa.keys() & pb.keys():
            if _pval(pa[name]) != _pval(pb[name]):
                return False
        ha = {k.lower(): v for k, v in a.headers.items()}
        hb = {k.lower(): v for k, v in b.headers.items()}
        return ha == hb
    if isinstance(a, TelURI) and isinstance(b, TelURI):
        if a.digits.lower() != b.digits.lower():
            return False
        norm_a = {k: _pval(v) for k, v in a.params.items()}
        norm_b = {k: _pval(v) for k, v in b.params.items()}
        return norm_a == norm_b
    if isinstance(a, AbsoluteURI) and isinstance(b, AbsoluteURI):
        return a.scheme.lower() == b.scheme.lower() and a.value == b.value
    return False


# -- name-addr ---------------------------------------------------------------------------------


def quote_string(text: str) -> str:
    """Render ``text`` as a quoted-string, escaping ``"`` and ``\\`` (RFC 3261 §25.1).

    Control characters a quoted-pair may carry (NUL, BEL, DEL ... as parsed from RFC 4475
    §3.1.1.2) are written as quoted-pairs too, never bare; CR and LF, which no quoted-pair can
    carry, become spaces (so the value can never end a header line).
    """
    if '"' in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    if _QUOTED_CONTROL.search(text) is not None:
        text = _QUOTED_CONTROL.sub(_quote_control, text)
    return f'"{text}"'


_QUOTED_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _quote_control(match: re.Match[str]) -> str:
    ch = match.group(0)
    return " " if ch in "\r\n" else "\\" + ch


def _read_quoted(text: str, start: int, what: str) -> tuple[str, int]:
    """Read the quoted-string beginning at ``text[start] == '"'``; return (content, end)."""
    pos = start + 1
    out: list[str] = []
    n = len(text)
    q = text.find('"', pos)
    while True:
        if q < 0:
            raise ParseError(f"Unterminated quoted string in {what}")
        b = text.find("\\", pos, q)
        if b < 0:
            out.append(text[pos:q])
            return "".join(out), q + 1
        if b + 1 >= n:
            raise ParseError(f"Unterminated quoted string in {what}")
        out.append(text[pos:b])
        out.append(text[b + 1])
        pos = b + 2
        if pos > q:  # the escaped character was that quote: look for the next one
            q = text.find('"', pos)


def parse_params(text: str, what: str = "header") -> dict[str, str | None]:
    """Header parameters ``;name=value;flag`` (``text`` starts at the first ``;`` or is empty).

    Names are lower-cased; whitespace around ``;`` and ``=`` is allowed (RFC 3261 SEMI/EQUAL);
    values are kept as written, quoted strings with their quotes (so they serialise unchanged).
    Raises ParseError on anything that is not a parameter list.
    """
    if '"' in text:
        return _parse_params_quoted(text, what)
    params: dict[str, str | None] = {}
    items = text.split(";")
    if items[0].strip(" \t"):
        raise ParseError(f"Bad parameter in {what}")
    for item in items[1:]:
        name, eq, value = item.partition("=")
        if _TOKEN.fullmatch(name) is None:
            name = name.strip(" \t")
            if _TOKEN.fullmatch(name) is None:
                raise ParseError(f"Bad parameter in {what}")
        if eq:
            if _VALUE.fullmatch(value) is None:
                value = value.strip(" \t")
                if _VALUE.fullmatch(value) is None:
                    raise ParseError(f"Bad parameter in {what}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


# gen-value = token / host / quoted-string (the quoted form goes through the slow path)
_VALUE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~\[\]:/@?&=$]+")


def _parse_params_quoted(text: str, what: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    pos = 0
    n = len(text)
    while pos < n:
        # expect SEMI
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos >= n:
            break
        if text[pos] != ";":
            raise ParseError(f"Bad parameter in {what}")
        pos += 1
        # scan name up to '=' or ';'
        end = pos
        while end < n and text[end] not in "=;":
            if text[end] == '"':
                raise ParseError(f"Bad parameter in {what}")
            end += 1
        name = text[pos:end].strip(" \t")
        if _TOKEN.fullmatch(name) is None:
            raise ParseError(f"Bad parameter in {what}")
        pos = end
        if pos < n and text[pos] == "=":
            pos += 1
            while pos < n and text[pos] in " \t":
                pos += 1
            if pos < n and text[pos] == '"':
                _, q_end = _read_quoted(text, pos, what)
                value = text[pos:q_end]
                pos = q_end
            else:
                end = text.find(";", pos)
                if end < 0:
                    end = n
                value = text[pos:end].strip(" \t")
                if _VALUE.fullmatch(value) is None:
                    raise ParseError(f"Bad parameter in {what}")
                pos = end
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def _header_params_str(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# An unquoted display name is a sequence of tokens by the grammar; phones also send UTF-8 words
# (``Jörg Müller <sip:...>``), which we accept. A ';' or ',' before '<' means no name-addr.
_DISPLAY_TOKENS = re.compile(r'[^"<>;,\x00-\x08\x0a-\x1f\x7f]*')


@dataclass(eq=False, slots=True)
class NameAddr:
    """``[display-name] <uri> *(;param)``: the value of From, To, Contact, Route ...

    ``display`` is the display name without quotes/escapes (``None`` when absent); ``params``
    are the header parameters (``tag``, ``expires``, ``q`` ...), names lower-cased, values as
    written (quoted strings keep their quotes).
    """

    display: str | None
    uri: URI
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3) or ``None``."""
        return self.params.get("tag")

    def copy(self) -> NameAddr:
        """A copy whose params and URI can be modified independently."""
        uri = self.uri.copy() if isinstance(self.uri, SipURI) else self.uri
        return NameAddr(self.display, uri, dict(self.params))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (
            self.display == other.display
            and self.uri == other.uri
            and self.params == other.params
        )

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        if self.display is not None:
            head = quote_string(self.display) + " <" + str(self.uri) + ">"
        else:
            head = "<" + str(self.uri) + ">"
        if self.params:
            return head + _header_params_str(self.params)
        return head


_TOKEN_CLS = r"A-Za-z0-9\-.!%*_+`'~"
_VALUE_CLS = _TOKEN_CLS + r"\[\]:/@?&=$"
#: ``;name[=value]`` repeated, no whitespace, no quotes: the common case of header parameters
FAST_PARAMS = f"(?:;[{_TOKEN_CLS}]++(?:=[{_VALUE_CLS}]++)?+)*+"
#: the same, also allowing quoted-string values without escapes (``+sip.instance="<urn:..>"``)
_QUOTED_PARAMS = (
    f"(?:;[{_TOKEN_CLS}]++(?:=(?:[{_VALUE_CLS}]++" + r'|"[^"\\\x00-\x1f\x7f]*+"' + "))?+)*+"
)
# The usual shapes of a name-addr: ["quoted" | token words] <uri> *(;param). Possessive
# quantifiers keep the match linear; anything else goes through the general parser.
_NA_FAST = re.compile(
    r'(?:"([^"\\\x00-\x1f\x7f]*+)"[ \t]*+'
    f"|([{_TOKEN_CLS}]++(?:[ \\t]++[{_TOKEN_CLS}]++)*+)[ \\t]*+)?+"
    r'<([^<>"\x00-\x20\x7f]++)>'
    f"({_QUOTED_PARAMS})"
)
# one parameter of _QUOTED_PARAMS, for splitting when a quoted value may hide a ';'
_ONE_PARAM = re.compile(
    f";([{_TOKEN_CLS}]++)(?:=([{_VALUE_CLS}]++" + r'|"[^"\\\x00-\x1f\x7f]*+"' + "))?+"
)


def fast_params(text: str) -> dict[str, str | None]:
    """Split parameters already validated by :data:`FAST_PARAMS` (``text`` starts with ``;``)."""
    params: dict[str, str | None] = {}
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        params[name.lower()] = value if eq else None
    return params


def parse_name_addr(text: str, what: str = "header") -> NameAddr:
    """Parse ``name-addr`` or ``addr-spec`` followed by header parameters.

    In the addr-spec form (no ``<>``) everything after the first ``;`` is a header parameter,
    never a URI parameter (RFC 3261 §20.10). Raises ParseError naming ``what``.
    """
    m = _NA_FAST.fullmatch(text)
    if m is not None:
        quoted, words, uri_text, ptext = m.groups()
        if words is not None and ("  " in words or "\t" in words):
            words = " ".join(words.split())
        try:
            uri = parse_uri(uri_text)
        except ParseError:
            raise ParseError(f"Bad {what}") from None
        if not ptext:
            params: dict[str, str | None] = {}
        elif '"' in ptext:
            params = {m2.group(1).lower(): m2.group(2) for m2 in _ONE_PARAM.finditer(ptext)}
        else:
            params = fast_params(ptext)
        return NameAddr(quoted if quoted is not None else words, uri, params)
    return _parse_name_addr_general(text, what)


def _parse_name_addr_general(text: str, what: str) -> NameAddr:
    """The general name-addr parser (every form the grammar allows, plus UTF-8 words)."""
    s = text.strip(" \t")
    display: str | None = None
    if s.startswith('"'):
        display, pos = _read_quoted(s, 0, what)
        lt = s.find("<", pos)
        if lt < 0 or s[pos:lt].strip(" \t"):
            raise ParseError(f"Bad {what}")
    else:
        lt = s.find("<")
        if lt >= 0:
            token_part = s[:lt]
            if _DISPLAY_TOKENS.fullmatch(token_part) is None:
                # a ';' or other delimiter before '<' means this is no name-addr
                raise ParseError(f"Bad {what}")
            token_part = " ".join(token_part.split())
            display = token_part or None
    if lt >= 0:
        gt = s.find(">", lt)
        if gt < 0:
            raise ParseError(f"Bad {what}")
        uri_text = s[lt + 1 : gt]
        rest = s[gt + 1 :]
    else:
        semi = s.find(";")
        if semi >= 0:
            uri_text, rest = s[:semi], s[semi:]
        else:
            uri_text, rest = s, ""
        uri_text = uri_text.rstrip(" \t")
    try:
        uri = parse_uri(uri_text)
    except ParseError:
        raise ParseError(f"Bad {what}") from None
    params = parse_params(rest, what) if rest else {}
    return NameAddr(display, uri, params)
