"""Cutting SIP messages out of a TCP/TLS byte stream (RFC 3261 §18.3, RFC 5626 §4.4.1).

On a stream, Content-Length is mandatory: it is the only way to find where a body ends. A
:class:`StreamFramer` belongs to one connection; the transport feeds it whatever ``recv``
returned and gets back, in order, complete message bytes (to hand to
:func:`sipcore.message.parse_message`), :class:`KeepAlivePing` for a double-CRLF keep-alive
(answer it with a single CRLF "pong"), or a :class:`~sipcore.errors.ParseError` when the stream
cannot be framed any more (missing/bad Content-Length, limits exceeded). After an error the
framer is closed and returns nothing further: the transport must close the connection, since
there is no way to find the start of the next message.

Messages may be split at any byte, several may arrive in one chunk, and CRLFs between messages
are skipped (§7.5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipcore.errors import ParseError
from sipcore.message import MAX_BODY_SIZE, MAX_MESSAGE_SIZE, nul_only_quoted

__all__ = ["KeepAlivePing", "StreamFramer"]


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """A CRLFCRLF keep-alive arrived between messages (RFC 5626 §4.4.1); reply with CRLF."""


#: The one instance (the event carries no data).
KEEPALIVE_PING = KeepAlivePing()

# "Content-Length" or compact "l", any case, at the start of a header line
_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)

FramerOutput = bytes | KeepAlivePing | ParseError


class StreamFramer:
    """Splits one connection's byte stream into messages. Sans-IO: :meth:`feed` only.

    ``max_message`` bounds head plus body (default :data:`sipcore.message.MAX_MESSAGE_SIZE`).
    """

    __slots__ = ("_buf", "_closed", "_max", "_need", "_scan")

    def __init__(self, max_message: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for the end of the head
        self._need = 0  # size of the message whose head is complete, 0 when unknown
        self._closed = False
        self._max = max_message

    @property
    def closed(self) -> bool:
        """True after a framing error: drop the connection."""
        return self._closed

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[FramerOutput]:
        """Add received bytes; return complete messages, pings and at most one final error."""
        if self._closed:
            return []
        buf = self._buf
        buf += data
        out: list[FramerOutput] = []
        while buf:
            if self._need:
                if len(buf) < self._need:
                    break
                out.append(bytes(buf[: self._need]))
                del buf[: self._need]
                self._need = self._scan = 0
                continue
            if self._scan == 0 and buf[0] in (13, 10):  # between messages
                if buf[:4] == b"\r\n\r\n":
                    del buf[:4]
                    out.append(KEEPALIVE_PING)
                    continue
                if len(buf) < 4 and bytes(buf) in (b"\r", b"\r\n", b"\r\n\r"):
                    break  # could still become a ping: wait for more
                skip = 2 if buf[:2] == b"\r\n" else 1
                del buf[:skip]
                continue
            end = buf.find(b"\r\n\r\n", max(self._scan - 3, 0))
            if end < 0:
                if len(buf) > self._max:
                    return self._fail(out, "Message Too Large")
                self._scan = len(buf)
                break
            head = bytes(buf[:end])
            if b"\x00" in head and not nul_only_quoted(head.decode("latin-1")):
                return self._fail(out, "NUL in header")  # (a quoted-pair NUL is legal)
            lengths = {m.group(1).strip(b" \t") for m in _CONTENT_LENGTH.finditer(head)}
            if not lengths:
                return self._fail(out, "Missing Content-Length")
            if len(lengths) != 1:
                return self._fail(out, "Bad Content-Length")
            text = lengths.pop()
            if not text.isdigit() or len(text) > 10:
                return self._fail(out, "Bad Content-Length")
            length = int(text)
            total = end + 4 + length
            if length > MAX_BODY_SIZE or total > self._max:
                return self._fail(out, "Message Too Large")
            if len(buf) < total:
                self._need = total
                self._scan = end + 1  # mid-message: no CRLF skipping
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
            self._scan = 0
        return out

    def _fail(self, out: list[FramerOutput], reason: str) -> list[FramerOutput]:
        self._closed = True
        self._buf = bytearray()
        out.append(ParseError(reason, 513 if reason == "Message Too Large" else 400))
        return out
