"""sipcore.address: the one host:port parser and the one allowed-source parser."""

from __future__ import annotations

import ipaddress

import pytest

from sipcore.address import (
    SourceRule,
    format_host,
    parse_host_port,
    parse_port,
    parse_source,
    split_host_port,
)
from sipcore.transport import Peer


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:5060", ("127.0.0.1", 5060)),
        ("  127.0.0.1:5060 ", ("127.0.0.1", 5060)),
        ("localhost:0", ("localhost", 0)),
        ("pbx.example.com:65535", ("pbx.example.com", 65535)),
        ("[::1]:8080", ("::1", 8080)),
        ("[2001:db8::1]:5061", ("2001:db8::1", 5061)),
    ],
)
def test_host_port(text: str, parsed: tuple[str, int]) -> None:
    assert parse_host_port(text) == parsed


@pytest.mark.parametrize(
    ("text", "default", "parsed"),
    [
        ("127.0.0.1", 5060, ("127.0.0.1", 5060)),
        ("[::1]", 5061, ("::1", 5061)),
        ("carrier.example", 5060, ("carrier.example", 5060)),
        ("127.0.0.1:5080", 5060, ("127.0.0.1", 5080)),  # a written port beats the default
    ],
)
def test_default_port(text: str, default: int, parsed: tuple[str, int]) -> None:
    assert parse_host_port(text, default_port=default) == parsed


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("127.0.0.1", "missing port"),
        ("[::1]", "missing port"),
        ("127.0.0.1:http", "port 'http' is not a number"),
        ("127.0.0.1:-1", "port '-1' is not a number"),
        ("127.0.0.1:70000", "port 70000 is outside 0-65535"),
        ("127.0.0.1:٣", "is not a number"),  # a non-ASCII digit is no port
        (":80", "'' is not an IP address or host name"),
        ("a b:80", "'a b' is not an IP address or host name"),
        ("user@host:80", "is not an IP address or host name"),
        ("::1:80", "IPv6 addresses must be written '[addr]:port'"),
        ("[::1:80", "IPv6 addresses must be written '[addr]:port'"),
        ("[::1]80", "IPv6 addresses must be written '[addr]:port'"),
        ("[nonsense]:80", "'nonsense' is not an IPv6 address"),
        ("[127.0.0.1]:80", "'127.0.0.1' is not an IPv6 address"),
    ],
)
def test_bad_host_port_names_the_entry_and_the_fault(text: str, fault: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_host_port(text)
    assert fault in str(info.value)
    assert str(info.value).startswith(repr(text.strip()))


def test_errors_name_the_whole_entry_when_asked() -> None:
    with pytest.raises(ValueError, match=r"^'udp:127\.0\.0\.1': missing port$"):
        parse_host_port("127.0.0.1", entry="udp:127.0.0.1")


def test_lowest_port() -> None:
    with pytest.raises(ValueError, match="outside 1-65535"):
        parse_host_port("127.0.0.1:0", lowest_port=1)
    assert parse_port("1", "x", lowest=1) == 1


def test_split_host_port() -> None:
    assert split_host_port("[::1]:5") == ("::1", "5", True)
    assert split_host_port("[::1]") == ("::1", None, True)
    assert split_host_port("host") == ("host", None, False)
    assert split_host_port("2001:db8::/32", bare_ipv6=True) == ("2001:db8::/32", None, False)
    with pytest.raises(ValueError, match=r"\[addr\]:port"):
        split_host_port("2001:db8::/32")


def test_format_host_round_trips() -> None:
    assert format_host("::1") == "[::1]"
    assert format_host("[::1]") == "[::1]"
    assert format_host("127.0.0.1") == "127.0.0.1"
    for text in ("[2001:db8::7]:5060", "10.0.0.1:1", "example.org:5"):
        host, port = parse_host_port(text)
        assert f"{format_host(host)}:{port}" == text


# ------------------------------------------------------------------------------- allowed sources
@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("203.0.113.10", SourceRule(ipaddress.ip_network("203.0.113.10/32"))),
        ("203.0.113.0/24", SourceRule(ipaddress.ip_network("203.0.113.0/24"))),
        ("203.0.113.7/24", SourceRule(ipaddress.ip_network("203.0.113.0/24"))),  # not strict
        ("203.0.113.0/24:5060", SourceRule(ipaddress.ip_network("203.0.113.0/24"), 5060)),
        ("UDP:203.0.113.10:5060",
         SourceRule(ipaddress.ip_network("203.0.113.10/32"), 5060, "udp")),
        ("2001:db8::/32", SourceRule(ipaddress.ip_network("2001:db8::/32"))),
        ("[2001:db8::1]", SourceRule(ipaddress.ip_network("2001:db8::1/128"))),
        ("tls:[2001:db8::1]:5061",
         SourceRule(ipaddress.ip_network("2001:db8::1/128"), 5061, "tls")),
    ],
)
def test_parse_source(text: str, rule: SourceRule) -> None:
    assert parse_source(text) == rule


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("carrier.example", "is not an IP address or network"),
        ("1.2.3.4:99999", "port 99999 is outside 1-65535"),
        ("1.2.3.4:0", "port 0 is outside 1-65535"),
        ("1.2.3.4:x", "port 'x' is not a number"),
        ("[2001:db8::1", "must be written '[addr]:port'"),
        ("[2001:db8::1]5061", "must be written '[addr]:port'"),
        ("10.0.0.0/33", "is not an IP address or network"),
    ],
)
def test_bad_source_names_the_entry(text: str, fault: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_source(text)
    assert str(info.value).startswith(f"allowed source {text!r}")
    assert fault in str(info.value)


def test_source_transports_can_be_narrowed() -> None:
    assert parse_source("tcp:10.0.0.1", ("udp", "tcp")).transport == "tcp"
    with pytest.raises(ValueError, match="transport 'ws' is not one of udp, tcp"):
        parse_source("ws:10.0.0.1", ("udp", "tcp"))


def test_source_matches_dual_stack_and_ignores_names() -> None:
    rule = parse_source("udp:203.0.113.0/24:5060")
    assert rule.matches(Peer("udp", "203.0.113.9", 5060))
    assert rule.matches(Peer("udp", "::ffff:203.0.113.9", 5060))
    assert not rule.matches(Peer("tcp", "203.0.113.9", 5060))
    assert not rule.matches(Peer("udp", "203.0.113.9", 5061))
    assert not rule.matches(Peer("udp", "carrier.example", 5060))
    assert parse_source("[2001:db8::1]").matches(Peer("udp", "[2001:db8::1]", 1))
