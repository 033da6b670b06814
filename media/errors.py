"""The error model of media (DESIGN.md principle 4, media's side of it).

``media`` imports nothing from ``sipcore``, so it has its own two kinds of error, the same split
the SIP stack makes:

* :class:`MediaParseError` — bytes or text from the peer that are not valid: an RTP or RTCP
  datagram (:class:`media.rtp.RtpError`, :class:`media.rtcp.RtcpError` are its subclasses), a
  telephone-event payload, an ``a=crypto`` value. Packets are counted and dropped where they
  arrive; signalling that carried one answers with its own error (e.g. a SIP 488).
* :class:`MediaUsageError` — our own caller asked for something media cannot do (a digit that
  has no DTMF event, a sample rate with no whole 20 ms frame, a participant that does not exist).

Both derive from :class:`MediaError`. A parse error is also a ``ValueError``, as the RTP and
RTCP errors always were.
"""

from __future__ import annotations

__all__ = ["MediaError", "MediaParseError", "MediaUsageError"]


class MediaError(Exception):
    """Base of every media exception."""


class MediaParseError(MediaError, ValueError):
    """Input from the peer that is not valid; ``reason`` names the fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaUsageError(MediaError):
    """Our own code asked media for something it does not allow."""
