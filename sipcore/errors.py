"""The error model of sipcore (DESIGN.md principle 4: errors convert in one place).

``RemoteProtocolError`` means the peer broke the rules; it carries the SIP status we should answer
with (``status_hint``) and a reason phrase naming the fault. ``ParseError`` is the only exception the
parser raises. ``LocalProtocolError`` means our own caller misused the API.
"""

from __future__ import annotations


class SipError(Exception):
    """Base of every sipcore exception."""


class RemoteProtocolError(SipError):
    """The remote peer sent something that violates the protocol.

    ``status_hint`` is the SIP status code to answer with (400, 416, 420, 481, 482, 483, 488…),
    ``reason`` a short reason phrase that names the fault (sent in the status line).
    """

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint


class ParseError(RemoteProtocolError):
    """Bytes that are not a valid SIP message (or header/URI/SDP): answered with 400."""

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason, status_hint)


class SdesError(ParseError):
    """A malformed or unusable SDES ``a=crypto`` line (RFC 4568): answered with 488 Not
    Acceptable Here when no other line of the offer is usable."""

    def __init__(self, reason: str, status_hint: int = 488) -> None:
        super().__init__(reason, status_hint)


class LocalProtocolError(SipError):
    """Our own code asked for something the protocol does not allow."""
