"""Message parsing, accessors, serialisation and response building (RFC 3261 §7, §8.2.6, §20)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.errors import ParseError
from sipcore.headers import Headers
from sipcore.message import (
    MAX_HEADERS,
    MAX_MESSAGE_SIZE,
    CSeq,
    Request,
    Response,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_cseq,
    parse_message,
    parse_via,
    reason_phrase,
)
from sipcore.uri import SipURI, parse_uri

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Alice" <sip:alice@example.com>\r\n'
    b'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=3600\r\n"
    b"User-Agent: Foo/1.0\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n\r\n"
)

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/TCP [2001:db8::10]:5060;branch=z9hG4bKa\r\n"
    b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKb;received=192.0.2.1, "
    b"SIP/2.0/UDP 192.0.2.3:5070;branch=z9hG4bKc\r\n"
    b"f: Bob <sip:alice@example.com>;tag=88\r\n"
    b"t: <sip:bob@example.com>\r\n"
    b"i: call-1@host\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"m: <sip:alice@[2001:db8::10]:5060>\r\n"
    b"c: application/sdp\r\n"
    b"X-Custom:   keep  this, exactly \r\n"
    b"l: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)


def test_register_accessors() -> None:
    m = parse_message(REGISTER)
    assert isinstance(m, Request)
    assert m.method == "REGISTER"
    assert m.uri == SipURI(host="example.com")
    assert m.call_id == "a84b4c76e66710@pc33.example.com"
    assert m.cseq == CSeq(314159, "REGISTER")
    assert m.from_.display == "Alice" and m.from_tag == "1928301774"
    assert m.to.tag is None and m.to_tag is None
    assert m.max_forwards == 70
    assert m.expires == 3600
    via = m.top_via
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP", "192.0.2.10", 5060, "z9hG4bK776asdhds"
    )
    assert via.has_rport and via.rport is None
    assert m.headers.get_all("Allow") == ["INVITE", "ACK", "CANCEL", "BYE"]
    assert [str(c.uri) for c in m.contacts] == ["sip:alice@192.0.2.10:5060;transport=udp"]
    assert m.contacts[0].params == {"expires": "3600"}
    assert not m.contact_star
    assert m.body == b""


def test_invite_compact_forms_lists_ipv6_and_body() -> None:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    assert [v.host for v in m.vias] == ["[2001:db8::10]", "proxy.example.com", "192.0.2.3"]
    assert m.vias[1].received == "192.0.2.1" and m.vias[2].port == 5070
    assert m.from_.display == "Bob" and m.call_id == "call-1@host"
    assert m.content_type == "application/sdp"
    assert m.body == SDP
    # unknown headers are kept whole, byte-exact value (only outer whitespace trimmed)
    assert m.headers.get("x-custom") == "keep  this, exactly"
    out = m.serialize()
    assert b"X-Custom: keep  this, exactly\r\n" in out
    assert b"Call-ID: call-1@host\r\n" in out  # compact forms are written out long
    assert parse_message(out) == m


def test_serialize_always_writes_correct_content_length() -> None:
    m = parse_message(REGISTER)
    m.body = b"hello"
    out = m.serialize()
    assert out.count(b"Content-Length") == 1
    assert out.endswith(b"Content-Length: 5\r\n\r\nhello")
    req = Request("OPTIONS", "sip:a@b", Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")]))
    assert req.serialize().endswith(b"Content-Length: 0\r\n\r\n")


def test_cache_invalidated_on_mutation() -> None:
    m = parse_message(REGISTER)
    assert m.top_via.host == "192.0.2.10"
    m.headers.insert("Via", "SIP/2.0/TCP pbx.example.com;branch=z9hG4bKnew")
    assert m.top_via.host == "pbx.example.com"
    assert len(m.vias) == 2
    m.headers.set("CSeq", "7 REGISTER")
    assert m.cseq.seq == 7
    m.headers.remove("Expires")
    assert m.expires is None


def test_make_response() -> None:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    r = make_response(m, 180, to_tag="xyz")
    assert r.status == 180 and r.reason == "Ringing"
    assert r.headers.get_all("Via") == m.headers.get_all("Via")
    assert r.to_tag == "xyz" and r.from_tag == "88"
    assert r.call_id == m.call_id and r.cseq == m.cseq
    assert r.headers.get("Content-Length") == "0"
    assert "Contact" not in r.headers
    again = parse_message(r.serialize())
    assert isinstance(again, Response) and again == r
    # an existing To tag is never replaced
    r2 = make_response(_with_to_tag(), 200, to_tag="other")
    assert r2.to_tag == "existing"


def test_make_response_shares_what_it_echoes_parsed() -> None:
    """A response starts with the request's parsed Via/From/Call-ID/CSeq and To (plus the new
    tag): exactly what parsing its own headers gives, and still right after a mutation."""
    for request in (parse_message(INVITE), _with_to_tag()):
        assert isinstance(request, Request)
        request.validate()  # parses From/To/Via ... into the request's cache
        for tag in ("xyz", None):
            r = make_response(request, 200, to_tag=tag)
            fresh = parse_message(r.serialize())
            assert isinstance(fresh, Response)
            assert (r.to, r.from_, r.vias, r.top_via, r.cseq, r.call_id) == (
                fresh.to, fresh.from_, fresh.vias, fresh.top_via, fresh.cseq, fresh.call_id)
            assert r.to_tag == fresh.to_tag
            r.headers.set("To", "<sip:other@example.com>;tag=t9")
            assert r.to_tag == "t9"  # a changed To is parsed again


def test_from_to_parsed_once_per_text() -> None:
    """Messages with the same From/To text share one parsed value; another text (or a bad
    one) is parsed on its own and a bad one still raises."""
    a, b = parse_message(INVITE), parse_message(INVITE)
    assert a.from_ is b.from_ and a.to is b.to and a.from_ == parse_message(INVITE).from_
    b.headers.set("From", "<sip:other@example.com>;tag=9")
    assert b.from_tag == "9" and a.from_tag == "88"
    b.headers.set("To", "<sip:broken@example.com")
    with pytest.raises(ParseError):
        b.to  # noqa: B018


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["Via", "Route", "Allow", "Supported", "X-A"]),
                       st.text(alphabet="abc ,;=<>:", max_size=30)), max_size=12),
    st.binary(max_size=300),
)
def test_wire_size_bounds_the_serialized_size(extra: list[tuple[str, str]], body: bytes) -> None:
    """wire_size() (the UDP size check's estimate) is never below the real size of an ASCII
    message and not far above it."""
    m = parse_message(INVITE)
    for name, value in extra:
        m.headers.add(name, value.strip() or "v")
    m.body = body
    size = len(m.serialize())
    # above by at most a name per entry (list entries serialize on one line)
    assert size <= m.wire_size() <= size + 40 + sum(len(n) + 4 for n, _ in m.headers)


def _with_to_tag() -> Request:
    m = parse_message(REGISTER.replace(b"<sip:alice@example.com>\r\n",
                                       b"<sip:alice@example.com>;tag=existing\r\n", 1))
    assert isinstance(m, Request)
    return m


def test_response_parsing_is_lenient() -> None:
    r = parse_message(b"SIP/2.0 200\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n")
    assert isinstance(r, Response) and r.status == 200 and r.reason == ""
    r = parse_message(b"SIP/2.0 486 Busy  Here, really\r\nCall-ID: x\r\n\r\n")
    assert isinstance(r, Response) and r.reason == "Busy  Here, really"
    with pytest.raises(ParseError, match="Missing CSeq"):
        r.cseq  # noqa: B018


def test_parse_helpers() -> None:
    assert parse_cseq("  42   INVITE ") == CSeq(42, "INVITE")
    v = parse_via("SIP / 2.0 / udp  host.example.com : 5062 ; branch = z9hG4bKx ; rport=5000")
    assert (v.transport, v.host, v.port) == ("UDP", "host.example.com", 5062)
    assert v.branch == "z9hG4bKx" and v.rport == 5000
    assert str(v) == "SIP/2.0/UDP host.example.com:5062;branch=z9hG4bKx;rport=5000"
    assert reason_phrase(404) == "Not Found" and reason_phrase(499) == "Client Error"
    assert new_branch().startswith("z9hG4bK") and new_branch() != new_branch()
    assert new_tag() != new_tag() and len(new_call_id()) >= 32


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (REGISTER.replace(b"CSeq: 314159 REGISTER", b"CSeq: 314159 INVITE"),
         "CSeq method does not match"),
        (REGISTER.replace(b"CSeq: 314159", b"CSeq: 2147483648"), "Bad CSeq"),
        (REGISTER.replace(b"Call-ID: a84b4c76e66710@pc33.example.com\r\n", b""),
         "Missing Call-ID"),
        (REGISTER.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), "Bad Max-Forwards"),
        (REGISTER.replace(b"Content-Length: 0", b"Content-Length: 10"), "Bad Content-Length"),
        (REGISTER.replace(b"Content-Length: 0", b"Content-Length: -1"), "Bad Content-Length"),
        (REGISTER.replace(b"sip:example.com SIP", b"<sip:example.com> SIP"), "Bad Request-URI"),
        (REGISTER.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1), "Version Not Supported"),
    ],
)
def test_bad_requests(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_message(data)
    assert exc.value.reason == reason


def test_limits() -> None:
    many = REGISTER.replace(b"Expires: 3600\r\n", b"X-A: 1\r\n" * (MAX_HEADERS + 1))
    with pytest.raises(ParseError, match="Too many headers"):
        parse_message(many)
    with pytest.raises(ParseError):
        parse_message(REGISTER + b"x" * MAX_MESSAGE_SIZE)
    with pytest.raises(ParseError, match="Header too long"):
        parse_message(REGISTER.replace(b"Foo/1.0", b"F" * 9000))


def test_request_uri_parsed_eagerly() -> None:
    m = parse_message(REGISTER.replace(b"sip:example.com SIP", b"tel:+1-555-0100 SIP"))
    assert isinstance(m, Request)
    assert str(m.uri) == "tel:+1-555-0100"
    assert m.uri == parse_uri("tel:+1-555-0100")


def test_serialize_refuses_header_injection() -> None:
    from sipcore.errors import LocalProtocolError

    m = parse_message(REGISTER)
    m.headers.set("Subject", "hi\r\nX-Injected: 1")
    with pytest.raises(LocalProtocolError):
        m.serialize()
    r = Response(200, "OK\nX-Evil: 1")
    with pytest.raises(LocalProtocolError):
        r.serialize()


def test_unknown_headers_and_odd_bytes_byte_exact() -> None:
    line = b"X-Vendor:  a,b ;; \xe4\xff\xfe raw \"q, <x>\r\n"
    data = REGISTER.replace(b"User-Agent: Foo/1.0\r\n", line)
    m = parse_message(data)
    out = m.serialize()
    # the name and the value bytes survive (only the whitespace after the colon is normalised)
    assert b"X-Vendor: a,b ;; \xe4\xff\xfe raw \"q, <x>\r\n" in out
    assert parse_message(out) == m


def test_copy_is_independent() -> None:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    c = m.copy()
    assert c == m
    c.headers.insert("Via", "SIP/2.0/UDP pbx;branch=z9hG4bKfwd")
    assert isinstance(c.uri, SipURI)
    c.uri.host = "elsewhere.example.com"
    assert m.top_via.host == "[2001:db8::10]" and c.top_via.host == "pbx"
    assert str(m.uri) == "sip:bob@example.com"
    r = make_response(m, 200, to_tag="t").copy()
    assert r.to_tag == "t"


def test_lenient_status_lines() -> None:
    for line, reason in ((b"SIP/2.0  180 Ringing ", "Ringing"), (b"sip/2.0 183", ""),
                         (b"SIP/2.0 200 OK\xc3\xa4", "OK\xe4")):
        r = parse_message(line + b"\r\nCall-ID: x\r\n\r\n")
        assert isinstance(r, Response) and r.reason == reason


def test_cache_invalidation_is_selective() -> None:
    m = parse_message(INVITE)
    cseq, from_, vias = m.cseq, m.from_, m.vias
    m.headers.remove_first("Via")  # what a proxy/endpoint does: only Via changes
    m.headers.insert("Via", "SIP/2.0/UDP stamped.example.com;branch=z9hG4bKs;received=1.2.3.4")
    assert m.cseq is cseq and m.from_ is from_  # kept
    assert m.vias is not vias and m.top_via.host == "stamped.example.com"  # re-parsed
    m.headers.set("From", "<sip:other@example.com>;tag=new")
    assert m.from_tag == "new" and m.cseq is cseq
    m.headers = m.headers.copy()  # a new Headers object: everything re-parsed
    assert m.cseq == cseq and m.cseq is not cseq
