"""RFC 4475 / RFC 5118 cases of issue 12 §4 at the parser and the sans-IO endpoint: our own
messages in ``torture/rfc4475`` (written from the RFCs' descriptions). The running server answers
the same files over UDP and TCP in tests/interop/test_rfc4475_wire.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipcore.endpoint import Endpoint, EndpointConfig
from sipcore.errors import ParseError
from sipcore.framing import StreamFramer
from sipcore.message import Request, Response, nul_only_quoted, parse_message
from sipcore.transport import Peer
from sipcore.uri import SipURI, parse_name_addr, parse_uri, quote_string

CORPUS = Path(__file__).parent / "torture" / "rfc4475"
#: the cases that parse (insuf is the one that must not)
VALID = ["baddate", "cparam02", "escruri", "intmeth", "ipv6_three_colons", "lwsstart",
         "novelsc", "regbadct", "regescrt", "trws"]


def load(name: str) -> Request:
    msg = parse_message((CORPUS / f"{name}.sip").read_bytes())
    msg.validate()
    assert isinstance(msg, Request)
    return msg


@pytest.mark.parametrize("name", VALID)
def test_parses_validates_and_round_trips(name: str) -> None:
    msg = load(name)
    again = parse_message(msg.serialize())
    again.validate()
    assert isinstance(again, Request)
    assert (again.method, again.uri, again.call_id) == (msg.method, msg.uri, msg.call_id)
    assert again.serialize() == msg.serialize()


def test_intmeth_wide_range_of_valid_characters() -> None:  # RFC 4475 §3.1.1.2
    m = load("intmeth")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~" == m.cseq.method
    assert isinstance(m.uri, SipURI) and m.uri.host == "example.com" and not m.uri.headers
    # a '?' belongs to the user part when the '@' follows it (not to URI headers)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    # quoted-pairs of BEL, NUL and DEL in the display name
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.max_forwards == 255
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_a_question_mark_before_a_host_still_starts_uri_headers() -> None:
    # what peers send: an unescaped '@' in a URI header of a URI without a user part
    uri = parse_uri("sip:pbx.example.com?Replaces=abc@host%3Bto-tag%3D1")
    assert isinstance(uri, SipURI) and uri.user is None and uri.host == "pbx.example.com"
    assert uri.headers == {"Replaces": "abc@host;to-tag=1"}


def test_display_name_controls_are_written_as_quoted_pairs() -> None:
    assert quote_string("BEL:\x07 NUL:\x00 DEL:\x7f") == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"'
    assert quote_string("a\r\nInjected: x") == '"a  Injected: x"'  # CR/LF never reach the wire
    na = parse_name_addr('"BEL:\\\x07 NUL:\\\x00" <sip:a@b>')
    assert parse_name_addr(str(na)).display == na.display == "BEL:\x07 NUL:\x00"


@pytest.mark.parametrize(("head", "ok"), [
    ('To: "a\\\x00b" <sip:a@b>', True),
    ('To: "a\x00b" <sip:a@b>', False),  # bare NUL inside quotes
    ("Call-ID: a\\\x00b", False),  # a backslash outside quotes escapes nothing
    ('To: "a\\\\\x00" <sip:a@b>', False),  # an escaped backslash, then a bare NUL
    ("X-Foo: \x00", False),
])
def test_nul_is_allowed_only_as_a_quoted_pair(head: str, ok: bool) -> None:
    assert nul_only_quoted(head) is ok
    data = (f"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n{head}\r\n"
            "From: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()
    if "To:" not in head:
        data = data.replace(b"From:", b"To: <sip:a@b>\r\nFrom:")
    framed = StreamFramer().feed(data)
    if ok:
        assert framed == [data]
        parse_message(data).validate()
    else:
        assert isinstance(framed[0], ParseError) and framed[0].reason == "NUL in header"
        with pytest.raises(ParseError, match="NUL in header"):
            parse_message(data)


def test_escaped_headers_in_the_request_uri_stay_in_the_uri() -> None:  # §3.1.2.11
    m = load("escruri")
    assert isinstance(m.uri, SipURI) and m.uri.headers == {"Route": "<sip:example.com>"}
    assert "Route" not in m.headers and m.headers.get_all("Route") == []


def test_regescrt_and_regbadct_keep_the_route_in_the_contact_uri() -> None:  # §3.3.14, §3.1.2.13
    for name in ("regescrt", "regbadct"):
        m = load(name)
        (contact,) = m.contacts
        assert isinstance(contact.uri, SipURI)
        assert contact.uri.headers == {"Route": "<sip:sip.example.com>"}, name
        assert "Route" not in m.headers


def test_cparam02_url_parameter_is_a_uri_parameter() -> None:  # §3.3.13
    (contact,) = load("cparam02").contacts
    assert isinstance(contact.uri, SipURI) and contact.uri.params == {"unknownparam": None}
    assert contact.params == {}


def test_novel_scheme_request_uri_parses() -> None:  # §3.3.3
    m = load("novelsc")
    assert not isinstance(m.uri, SipURI) and str(m.uri) == "soap.beep://192.0.2.103:3002"


def test_ipv6_reference_with_three_colons_is_tolerated() -> None:  # RFC 5118 §4.10
    m = load("ipv6_three_colons")
    assert isinstance(m.uri, SipURI) and m.uri.host == "[2001:db8:::192.0.2.1]"
    assert isinstance(m.to.uri, SipURI) and m.to.uri.host == "[2001:db8:::192.0.2.1]"
    for bad in ("sip:[2001:db8::zz]", "sip:[::g]", "sip:[1:2]", "sip:[hello]", "sip:[]"):
        with pytest.raises(ParseError):
            parse_uri(bad)


def test_insuf_names_every_missing_header() -> None:  # §3.3.1
    with pytest.raises(ParseError) as exc:
        load("insuf")
    assert (exc.value.reason, exc.value.status_hint) == ("Missing To, From, Call-ID", 400)


def test_endpoint_answers_insuf_400_naming_them() -> None:
    ep = Endpoint(EndpointConfig(sent_by={"udp": ("192.0.2.100", 5060)}))
    data = (CORPUS / "insuf.sip").read_bytes().replace(b"192.0.2.95;", b"192.0.2.95;rport;")
    src = Peer("udp", "203.0.113.7", 40000)
    ep.receive_datagram(data, src, 0.0)
    ((out, peer),) = ep.data_to_send()
    resp = parse_message(out)
    assert isinstance(resp, Response) and peer == src
    assert (resp.status, resp.reason) == (400, "Missing To, From, Call-ID")
    assert resp.cseq.seq == 193942 and resp.top_via.branch == "z9hG4bKkdj.insuf"
    assert resp.top_via.received == "203.0.113.7" and resp.top_via.rport == 40000
    assert ep.events() == []


def test_endpoint_answers_intmeth_405_with_allow() -> None:
    ep = Endpoint(EndpointConfig(sent_by={"tcp": ("192.0.2.100", 5060)}))
    src = Peer("tcp", "203.0.113.7", 40001, conn_id=1)
    ep.receive_datagram((CORPUS / "intmeth.sip").read_bytes(), src, 0.0)
    ((out, peer),) = ep.data_to_send()
    resp = parse_message(out)
    assert isinstance(resp, Response) and peer == src
    assert resp.status == 405 and resp.headers.get("Allow")
