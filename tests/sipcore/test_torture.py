"""Our own torture corpus, in the categories of RFC 4475 (messages written for asyncpbx).

``torture/valid``: unusual but legal messages; each must parse, pass ``validate()`` and survive
a serialize/parse round trip. ``torture/invalid``: each must raise ParseError with the reason
phrase listed below (the phrase that goes into our 400/505/513 status line).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sipcore.errors import ParseError
from sipcore.framing import StreamFramer
from sipcore.message import Message, Request, Response, parse_message
from sipcore.uri import SipURI, TelURI

CORPUS = Path(__file__).parent / "torture"
VALID = sorted((CORPUS / "valid").glob("*.sip"))
INVALID = sorted((CORPUS / "invalid").glob("*.sip"))

#: file -> (reason phrase, status hint)
EXPECTED: dict[str, tuple[str, int]] = {
    "addr_spec_space": ("Bad To", 400),
    "display_name_comma": ("Bad From", 400),
    "response_cseq_overflow": ("Bad CSeq", 400),
    "via_ipv6_no_brackets": ("Bad Via", 400),
    "response_bad_via": ("Bad Via", 400),
    "bare_cr_in_header": ("Bad line end", 400),
    "call_id_whitespace": ("Bad Call-ID", 400),
    "contact_star_mixed": ("Bad Contact", 400),
    "content_length_conflict": ("Bad Content-Length", 400),
    "content_length_negative": ("Bad Content-Length", 400),
    "content_length_overflow": ("Bad Content-Length", 400),
    "content_length_text": ("Bad Content-Length", 400),
    "content_length_too_big": ("Bad Content-Length", 400),
    "cseq_huge": ("Bad CSeq", 400),
    "cseq_method_case": ("CSeq method does not match", 400),
    "cseq_method_mismatch": ("CSeq method does not match", 400),
    "cseq_negative": ("Bad CSeq", 400),
    "cseq_no_method": ("Bad CSeq", 400),
    "cseq_not_number": ("Bad CSeq", 400),
    "cseq_overflow": ("Bad CSeq", 400),
    "empty": ("Empty message", 400),
    "expires_overflow": ("Bad Expires", 400),
    "folded_start_line": ("Bad Request-Line", 400),
    "from_garbage_after_uri": ("Bad parameter in From", 400),
    "header_bad_name": ("Bad header name", 400),
    "header_too_long": ("Header too long", 400),
    "header_without_colon": ("Bad header line", 400),
    "max_forwards_256": ("Bad Max-Forwards", 400),
    "max_forwards_text": ("Bad Max-Forwards", 400),
    "message_too_large": ("Message Too Large", 513),
    "method_illegal_char": ("Bad method", 400),
    "missing_call_id": ("Missing Call-ID", 400),
    "missing_cseq": ("Missing CSeq", 400),
    "missing_from": ("Missing From", 400),
    "missing_to": ("Missing To", 400),
    "missing_via": ("Missing Via", 400),
    "multiple_call_id": ("Multiple Call-ID", 400),
    "multiple_to": ("Multiple To", 400),
    "nul_in_header": ("NUL in header", 400),
    "only_crlf": ("Empty message", 400),
    "request_line_two_tokens": ("Bad Request-Line", 400),
    "ruri_bad_escape": ("Bad Request-URI", 400),
    "ruri_bad_ipv6": ("Bad Request-URI", 400),
    "ruri_bad_port": ("Bad Request-URI", 400),
    "ruri_embedded_space": ("Bad Request-URI", 400),
    "ruri_in_brackets": ("Bad Request-URI", 400),
    "ruri_no_scheme": ("Bad Request-URI", 400),
    "status_700": ("Bad status code", 400),
    "status_text": ("Bad status code", 400),
    "status_two_digits": ("Bad status code", 400),
    "to_param_without_value": ("Bad parameter in To", 400),
    "to_two_uris": ("Bad parameter in To", 400),
    "too_many_headers": ("Too many headers", 400),
    "unterminated_quote_contact": ("Unterminated quoted string in Contact", 400),
    "unterminated_quote_from": ("Unterminated quoted string in From", 400),
    "version_garbage": ("Bad SIP version", 400),
    "version_unsupported": ("Version Not Supported", 505),
    "via_bad_port": ("Bad Via", 400),
    "via_no_transport": ("Bad Via", 400),
}


def normalized(m: Message) -> tuple[object, ...]:
    """What must survive a round trip: start line, headers except Content-Length, body."""
    start: tuple[object, ...]
    if isinstance(m, Request):
        start = (m.method, str(m.uri))
    else:
        assert isinstance(m, Response)
        start = (m.status, m.reason)
    headers = [(n.lower(), v) for n, v in m.headers if n != "Content-Length"]
    return (*start, tuple(headers), m.body)


def test_corpus_is_complete() -> None:
    assert len(VALID) >= 30 and len(INVALID) >= 50
    assert {p.stem for p in INVALID} == set(EXPECTED)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid(path: Path) -> None:
    data = path.read_bytes()
    m = parse_message(data)
    m.validate()
    again = parse_message(m.serialize())
    again.validate()
    assert normalized(again) == normalized(m)
    assert again.serialize() == m.serialize()


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid(path: Path) -> None:
    reason, status = EXPECTED[path.stem]
    with pytest.raises(ParseError) as exc:
        parse_message(path.read_bytes()).validate()
    assert (exc.value.reason, exc.value.status_hint) == (reason, status)


def _load(name: str) -> Message:
    return parse_message((CORPUS / "valid" / f"{name}.sip").read_bytes())


def test_wsinv_semantics() -> None:
    m = _load("wsinv")
    assert m.to.display == "Callee, the" and m.to_tag == "x1y2"
    assert m.from_.params == {"tag": "99", "other": "value"}
    assert m.max_forwards == 68 and m.cseq.seq == 4711 and m.cseq.method == "INVITE"
    assert [(v.transport, v.host, v.port) for v in m.vias] == [
        ("UDP", "198.51.100.1", 5060), ("TCP", "spindle.example.com", None)]
    assert m.vias[0].received == "198.51.100.99" and m.vias[1].branch == "z9hG4bKspindle"
    assert m.contacts[0].display == "Quoted, Name"
    assert m.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"


def test_escapes_and_user_params() -> None:
    m = _load("escaped_ruri")
    assert isinstance(m, Request) and isinstance(m.uri, SipURI)
    assert m.uri.user == "sips:user@example.com" and m.uri.params["foo"] == "this is escaped"
    assert m.uri.headers == {"Subject": "hi, there", "Priority": "urgent"}
    m = _load("semicolon_user")
    assert isinstance(m, Request) and isinstance(m.uri, SipURI)
    assert m.uri.user == "user;par=u@example.net" and m.uri.host == "pbx.example.net"


def test_bodies_and_content_length() -> None:
    assert _load("no_content_length_udp").body == b"v=0\r\n"
    assert _load("body_longer_than_content_length").body == b"123"
    assert _load("content_length_leading_zeros").body == b"12345"
    assert _load("binary_body").body == b"\x00\xff\r\n\r\n\x80\x81"
    mp = _load("multipart_body")
    raw = (CORPUS / "valid" / "multipart_body.sip").read_bytes()
    assert raw.endswith(mp.body) and b"application/isup" in mp.body
    assert mp.content_type == "multipart/mixed"


def test_other_valid_semantics() -> None:
    assert _load("register_star").contact_star and _load("register_star").expires == 0
    assert _load("no_max_forwards").max_forwards is None
    m = _load("tel_ruri")
    assert isinstance(m, Request) and m.uri == TelURI("+1-201-555-0123", {"ext": "7"})
    m = _load("quoted_escapes_utf8")
    assert m.from_.display == 'J"o\\e é Dö, Esq.'
    a = _load("response_utf8_reason_auth")
    assert isinstance(a, Response) and len(a.headers.get_all("WWW-Authenticate")) == 2
    assert 'nonce="abc,def"' in a.headers.get("WWW-Authenticate", "")  # type: ignore[operator]
    assert _load("unknown_list_headers_whole").headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert _load("utf8_header_values").headers.get("Subject") == "Grüße aus Köln ☎"
    v6 = _load("ipv6_everywhere")
    assert v6.top_via.host == "[2001:db8::9:1]" and v6.top_via.rport == 5071
    assert v6.top_via.received == "2001:db8::9:255"


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_through_stream_framer(path: Path) -> None:
    m = parse_message(path.read_bytes())
    wire = m.serialize()
    framer = StreamFramer()
    out: list[object] = []
    for i in range(0, len(wire), 7):
        out.extend(framer.feed(wire[i : i + 7]))
    assert out == [wire]


def test_rfc4475_style_oddities() -> None:
    m = _load("escaped_null_in_uri")
    assert isinstance(m, Request) and isinstance(m.uri, SipURI)
    assert m.uri.user == "nul-\x00-nul" and str(m.uri) == "sip:nul-%00-nul@pbx.example.net"
    m = _load("percent_in_method")  # '%' is a token character, not an escape, in a method
    assert isinstance(m, Request) and m.method == "OPT%49ONS" and m.cseq.method == "OPT%49ONS"
    assert _load("no_blank_line").headers.get("Content-Length") == "0"
    m = _load("ipv4_mapped_ipv6")
    assert isinstance(m, Request) and isinstance(m.uri, SipURI)
    assert m.uri.host == "[::ffff:192.0.2.10]" and m.uri.port == 5060
    assert _load("unknown_auth_scheme").headers.get("Authorization") == (
        "NoOneKnowsThisScheme opaque-data=here, other=1")
    assert _load("date_bad_timezone").headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    c = _load("contact_uri_escaped_headers").contacts[0]
    assert isinstance(c.uri, SipURI) and c.uri.headers == {"Route": "<sip:example.com>"}
