"""URIs (RFC 3261 §19.1, RFC 3966), comparison (§19.1.4), name-addr (§20.10)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipcore.errors import ParseError
from sipcore.uri import AbsoluteURI, NameAddr, SipURI, TelURI, parse_name_addr, parse_uri, uri_equal


def test_sip_uri_parts() -> None:
    u = parse_uri("sips:alice:secret@Atlanta.example.com:5061;transport=TCP;lr;maddr=239.1.1.1"
                  "?subject=project%20x&priority=urgent")
    assert isinstance(u, SipURI)
    assert (u.scheme, u.user, u.password, u.host, u.port) == (
        "sips", "alice", "secret", "Atlanta.example.com", 5061)
    assert u.params == {"transport": "TCP", "lr": None, "maddr": "239.1.1.1"}
    assert u.transport == "tcp" and u.lr and u.maddr == "239.1.1.1"
    assert u.headers == {"subject": "project x", "priority": "urgent"}
    assert str(u) == ("sips:alice:secret@Atlanta.example.com:5061;transport=TCP;lr;"
                      "maddr=239.1.1.1?subject=project%20x&priority=urgent")


def test_escapes_user_params_and_ipv6() -> None:
    u = parse_uri("sip:%2A21%2A123%23;phone-context=x%40y@[2001:DB8::1]:5060;user=phone")
    assert isinstance(u, SipURI)
    assert u.user == "*21*123#;phone-context=x@y"
    assert u.host == "[2001:DB8::1]" and u.port == 5060 and u.params == {"user": "phone"}
    again = parse_uri(str(u))
    assert again == u
    assert uri_equal(u, parse_uri("sip:*21*123%23;phone-context=x%40y@[2001:db8:0::1]:5060;user=phone"))


def test_tel_and_absolute() -> None:
    t = parse_uri("tel:+1-201-555-0123;ext=42")
    assert t == TelURI("+1-201-555-0123", {"ext": "42"})
    assert isinstance(t, TelURI) and t.global_number and t.digits == "+12015550123"
    assert str(t) == "tel:+1-201-555-0123;ext=42"
    assert uri_equal(t, parse_uri("tel:+1.201.555.0123;EXT=42"))
    a = parse_uri("urn:service:sos")
    assert a == AbsoluteURI("urn", "service:sos") and str(a) == "urn:service:sos"
    assert not uri_equal(a, t)


# RFC 3261 §19.1.4 examples (written out again here, not copied)
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
        ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
         "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
        ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
         "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ],
)
def test_equal(a: str, b: str) -> None:
    assert uri_equal(parse_uri(a), parse_uri(b))
    assert uri_equal(parse_uri(b), parse_uri(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:a@b", "sips:a@b"),
    ],
)
def test_not_equal(a: str, b: str) -> None:
    assert not uri_equal(parse_uri(a), parse_uri(b))


@pytest.mark.parametrize(
    "bad",
    ["", "sip:", "sip:@host", "sip:user@", "sip:host:99999", "sip:host:", "sip:ho st",
     "sip:[::1", "sip:[zz::1]", "sip:a@b%zz", "sip:host;=x", "nocolon", "1sip:x",
     "tel:abc xyz", "sip:a@<b>", "sip:a@b\x00", "sip:host:-1", "sip:a@b:5060x"],
)
def test_bad_uris(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(bad)


def test_name_addr_forms() -> None:
    na = parse_name_addr('"Mr. \\"Watson\\"" <sip:watson@bell.example.com;transport=tcp>;tag=a48s')
    assert na.display == 'Mr. "Watson"' and na.tag == "a48s"
    assert isinstance(na.uri, SipURI) and na.uri.params == {"transport": "tcp"}
    assert parse_name_addr(str(na)) == na
    # addr-spec: everything after ';' is a header parameter, not a URI parameter
    spec = parse_name_addr("sip:watson@bell.example.com;tag=xyz;transport=tcp")
    assert spec.display is None and spec.params == {"tag": "xyz", "transport": "tcp"}
    assert isinstance(spec.uri, SipURI) and spec.uri.params == {}
    tok = parse_name_addr("  Bell   Labs\t<sip:a@b> ; expires = 60 ;+sip.instance=\"<urn:x:y>\"")
    assert tok.display == "Bell Labs" and tok.params == {"expires": "60",
                                                          "+sip.instance": '"<urn:x:y>"'}
    assert parse_name_addr("<tel:+123>").uri == TelURI("+123")
    assert str(NameAddr(None, parse_uri("sip:a@b"), {"tag": "1"})) == "<sip:a@b>;tag=1"


@pytest.mark.parametrize(
    "bad",
    ['"unterminated <sip:a@b>', "<sip:a@b", "sip:a b@c", "<sip:a@b> junk", "<sip:a@b>;",
     "<sip:a@b>;tag=", "a;b <sip:x@y>", "<sip:a@b>, <sip:c@d>", '"x" junk <sip:a@b>', ""],
)
def test_bad_name_addr(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_name_addr(bad)


_users = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="\x7f"),
                 min_size=1, max_size=12)
_hosts = st.sampled_from(["example.com", "192.0.2.1", "[2001:db8::7]", "a-b.c_d"])
_pvals = st.text(st.characters(min_codepoint=32, max_codepoint=0x17F, exclude_characters="\x7f"),
                 min_size=1, max_size=8)


@given(_users, _hosts, st.one_of(st.none(), st.integers(0, 65535)),
       st.dictionaries(st.from_regex(r"[a-z][a-z0-9\-]{0,6}", fullmatch=True),
                       st.one_of(st.none(), _pvals), max_size=3),
       st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), _pvals, max_size=2))
def test_sip_uri_round_trip(user: str, host: str, port: int | None,
                            params: dict[str, str | None], headers: dict[str, str]) -> None:
    u = SipURI("sip", user, None, host, port, params, headers)
    again = parse_uri(str(u))
    assert again == u
    assert uri_equal(again, u)


@given(st.text(max_size=60))
def test_arbitrary_text(text: str) -> None:
    try:
        parse_uri(text)
    except ParseError:
        pass
    try:
        parse_name_addr(text)
    except ParseError:
        pass


def test_lenient_utf8_unquoted_display_name() -> None:
    na = parse_name_addr("Jörg  Müller <sip:joerg@example.net>;tag=7")
    assert na.display == "Jörg Müller" and na.tag == "7"
    assert str(na) == '"Jörg Müller" <sip:joerg@example.net>;tag=7'


# -- fast paths agree with the general parsers ----------------------------------------------

_piece = st.sampled_from(
    ["sip:", "sips:", "SIP:", "tel:", "alice", "bob.smith", "+49301234", "%41", "%zz", "@", ":",
     "5060", "99999", "host.example.net", "192.0.2.1", "[2001:db8::1]", "[::1", ";", "lr",
     "transport=tcp", "=", "?", "&", "h=v", "user=phone", " ", "\t", '"', "<", ">", ",", "\\",
     "Display Name", "tag=abc", "+sip.instance=", '"<urn:uuid:1>"', "é", "\x00", ""]
)
_texts = st.lists(_piece, max_size=12).map("".join)


def _outcome(fn: object, text: str) -> object:
    try:
        return fn(text)  # type: ignore[operator]
    except ParseError as exc:
        return ("ParseError", exc.reason)


@given(_texts)
def test_uri_fast_path_matches_general(text: str) -> None:
    from sipcore.uri import _parse_uri_general

    fast = _outcome(parse_uri, text)
    general = _outcome(_parse_uri_general, text)
    if isinstance(fast, SipURI | TelURI | AbsoluteURI):
        assert fast == general
    else:  # the fast path never rejects what the general parser accepts
        assert not isinstance(general, SipURI | TelURI | AbsoluteURI)


@given(_texts)
def test_name_addr_fast_path_matches_general(text: str) -> None:
    from sipcore.uri import _parse_name_addr_general

    fast = _outcome(parse_name_addr, text)
    general = _outcome(lambda t: _parse_name_addr_general(t, "header"), text)
    if isinstance(fast, NameAddr):
        assert fast == general
    else:
        assert not isinstance(general, NameAddr)


@given(st.lists(st.sampled_from(
    ["SIP", "/", "2.0", "UDP", "tls", " ", "\t", "host.example.net", "[2001:db8::1]", ":", "5060",
     "70000", ";", "branch=z9hG4bK1", "rport", "=", "received", '"', "x", ","]), max_size=14)
    .map("".join))
def test_via_fast_path_matches_general(text: str) -> None:
    from sipcore.message import Via, _parse_via_general, parse_via

    fast = _outcome(parse_via, text)
    general = _outcome(_parse_via_general, text)
    if isinstance(fast, Via):
        assert fast == general
    else:
        assert not isinstance(general, Via)
