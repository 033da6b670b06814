"""Diversion (RFC 5806) and History-Info (RFC 7044) for a redirected call."""

from __future__ import annotations

from pbx.callcontrol import Diversion, UserView
from pbx.legs.diversion import diversion_headers


def uri(n: str) -> str:
    return f"sip:{n}@pbx.example"


def test_no_diversion_no_headers() -> None:
    assert diversion_headers([], "101", uri) == []


def test_two_redirections() -> None:
    a = Diversion(UserView("101", "101"), "unconditional", "+4930555101")
    b = Diversion(UserView("102", "102"), "unavailable", "102")
    headers = diversion_headers([a, b], "+49301234567", uri)
    assert headers[:2] == [
        ("Diversion", "<sip:102@pbx.example>;reason=unavailable;counter=2"),
        ("Diversion", "<sip:+4930555101@pbx.example>;reason=unconditional;counter=1"),
    ]
    assert headers[2] == ("History-Info", ", ".join([
        "<sip:+4930555101@pbx.example>;index=1",
        "<sip:102@pbx.example;cause=302>;index=1.1;mp=1",
        "<sip:+49301234567@pbx.example;cause=503>;index=1.1.1;mp=1.1",
    ]))


def test_an_unknown_reason_is_sent_as_unknown() -> None:
    d = Diversion(UserView("101", "101"), "whim", "101")
    assert diversion_headers([d], "102", uri)[0] == (
        "Diversion", "<sip:101@pbx.example>;reason=unknown;counter=1")
