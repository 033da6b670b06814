"""RTP packets (RFC 3550 §5) and the serial-number arithmetic around them, sans-IO.

Theory of operation
-------------------
``RtpPacket.parse`` turns one datagram into a packet or raises :class:`RtpError` (a
``ValueError``), never anything else; the socket layer counts the error and drops the datagram.
Validation follows RFC 3550 §5.1 and Appendix A.1: version 2, the CSRC list, the header
extension (§5.3.1) and the padding (§5.1, ``P`` bit) must all fit inside the datagram, and the
padding count must be non-zero. The payload is a zero-copy ``memoryview`` slice of the datagram.

Sequence numbers are 16-bit and timestamps 32-bit unsigned counters that wrap; they are compared
with serial-number arithmetic (RFC 1982): ``a`` is "before" ``b`` when ``(b - a) mod 2**n`` lies
in ``(0, 2**(n-1))``. :class:`SequenceExtender` turns the 16-bit numbers of one stream into an
extended (cycles * 65536 + seq) sequence number (RFC 3550 §A.1) so later layers can use plain
integer ordering; :class:`TimestampExtender` does the same for RTP timestamps.
"""

from __future__ import annotations

import secrets
import struct
from typing import Final

from media.errors import MediaParseError

__all__ = [
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "RtpError",
    "RtpPacket",
    "SequenceExtender",
    "TimestampExtender",
    "is_rtcp",
    "new_ssrc",
    "parse_header",
    "seq_diff",
    "seq_lt",
    "ts_diff",
    "ts_lt",
]

RTP_VERSION: Final = 2
#: Size of the fixed RTP header (RFC 3550 §5.1).
RTP_HEADER_SIZE: Final = 12

_FIXED = struct.Struct("!BBHII")
_EXT = struct.Struct("!HH")

Buffer = bytes | bytearray | memoryview


class RtpError(MediaParseError):
    """A datagram that is not a valid RTP packet; counted and dropped by the socket layer."""


def is_rtcp(data: Buffer) -> bool:
    """RFC 5761 §4 demultiplexing rule for rtcp-mux.

    The second octet of an RTCP packet is its packet type (192–223 in practice: SR=200, RR=201,
    SDES, BYE, APP, RTPFB, PSFB, XR…); for RTP it is ``M<<7 | PT``. RFC 5761 reserves payload
    types 64–95 so that the two never overlap: a second octet of 192–223 means RTCP.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def new_ssrc() -> int:
    """A random 32-bit SSRC (RFC 3550 §8: chosen randomly, not derived from addresses)."""
    return secrets.randbits(32)


# --- serial-number arithmetic -----------------------------------------------------------------


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 16-bit sequence numbers, in ``[-32768, 32767]``."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_lt(a: int, b: int) -> bool:
    """True when sequence number ``a`` comes before ``b`` (modulo 2**16)."""
    return seq_diff(a, b) < 0


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 32-bit RTP timestamps."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def ts_lt(a: int, b: int) -> bool:
    """True when RTP timestamp ``a`` comes before ``b`` (modulo 2**32)."""
    return ts_diff(a, b) < 0


class SequenceExtender:
    """Extends 16-bit sequence numbers of one stream to monotonic integers (RFC 3550 §A.1).

    Each number is placed in the cycle that brings it closest to the highest number seen so far,
    so reordered packets from before a wrap land in the previous cycle. The first number seen is
    taken as-is (cycle 0 is offset by 65536 so that numbers just before the first one stay
    non-negative).
    """

    __slots__ = ("highest",)

    def __init__(self) -> None:
        #: Highest extended sequence number seen, or ``None`` before the first packet.
        self.highest: int | None = None

    def extend(self, seq: int) -> int:
        """The extended sequence number of ``seq``; updates the highest seen."""
        highest = self.highest
        if highest is None:
            ext = 0x10000 + seq
            self.highest = ext
            return ext
        ext = highest + (((seq - highest + 0x8000) & 0xFFFF) - 0x8000)
        if ext > highest:
            self.highest = ext
        return ext

    def reset(self) -> None:
        """Forget the stream (after an SSRC change or a resync)."""
        self.highest = None


class TimestampExtender:
    """Extends 32-bit RTP timestamps of one stream to monotonic integers (like :class:`SequenceExtender`)."""

    __slots__ = ("highest",)

    def __init__(self) -> None:
        self.highest: int | None = None

    def extend(self, ts: int) -> int:
        """The extended timestamp of ``ts``; updates the highest seen."""
        highest = self.highest
        if highest is None:
            ext = 0x100000000 + ts
            self.highest = ext
            return ext
        ext = highest + (((ts - highest + 0x80000000) & 0xFFFFFFFF) - 0x80000000)
        if ext > highest:
            self.highest = ext
        return ext

    def reset(self) -> None:
        """Forget the stream."""
        self.highest = None


# --- packets ------------------------------------------------------------------------------------


def parse_header(data: Buffer) -> tuple[int, bool, int, int, int]:
    """Fast path: ``(payload_type, marker, sequence_number, timestamp, ssrc)`` of a datagram.

    Checks only the version and the fixed-header length; use :meth:`RtpPacket.parse` for full
    validation.
    """
    if len(data) < RTP_HEADER_SIZE:
        raise RtpError("shorter than the fixed RTP header")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    return b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc


class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    ``payload`` is a ``memoryview`` into the received datagram after :meth:`parse` (no copy), or
    whatever buffer the sender gave. ``padding`` is the number of padding octets on the wire
    (0 = no ``P`` bit). ``extension_profile`` is ``None`` when there is no header extension;
    otherwise ``extension`` holds its data (a multiple of 4 octets).
    """

    __slots__ = (
        "csrc",
        "extension",
        "extension_profile",
        "marker",
        "padding",
        "payload",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: Buffer = b"",
        marker: bool = False,
        csrc: tuple[int, ...] = (),
        extension_profile: int | None = None,
        extension: Buffer = b"",
        padding: int = 0,
    ) -> None:
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.marker = marker
        self.csrc = csrc
        self.extension_profile = extension_profile
        self.extension = extension
        self.padding = padding

    def __repr__(self) -> str:
        return (
            f"RtpPacket(pt={self.payload_type}, seq={self.sequence_number}, "
            f"ts={self.timestamp}, ssrc={self.ssrc:#010x}, marker={self.marker}, "
            f"payload={len(self.payload)}B)"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RtpPacket):
            return NotImplemented
        return (
            self.payload_type == other.payload_type
            and self.sequence_number == other.sequence_number
            and self.timestamp == other.timestamp
            and self.ssrc == other.ssrc
            and self.marker == other.marker
            and self.csrc == other.csrc
            and self.extension_profile == other.extension_profile
            and bytes(self.extension) == bytes(other.extension)
            and self.padding == other.padding
            and bytes(self.payload) == bytes(other.payload)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    @classmethod
    def parse(cls, data: Buffer) -> RtpPacket:
        """Parse and validate one datagram; raises :class:`RtpError` on anything malformed."""
        size = len(data)
        if size < RTP_HEADER_SIZE:
            raise RtpError("shorter than the fixed RTP header")
        b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
        view = memoryview(data)
        if b0 == 0x80:  # the common case: no CSRC, extension or padding
            return cls(b1 & 0x7F, seq, ts, ssrc, view[12:], b1 > 127)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"RTP version {b0 >> 6}, expected 2")
        offset = RTP_HEADER_SIZE
        cc = b0 & 0x0F
        csrc: tuple[int, ...] = ()
        if cc:
            offset += 4 * cc
            if offset > size:
                raise RtpError(f"CSRC count {cc} exceeds the packet")
            csrc = struct.unpack_from(f"!{cc}I", data, RTP_HEADER_SIZE)
        extension_profile: int | None = None
        extension: Buffer = b""
        if b0 & 0x10:
            if offset + 4 > size:
                raise RtpError("header extension does not fit")
            extension_profile, words = _EXT.unpack_from(data, offset)
            offset += 4
            end = offset + 4 * words
            if end > size:
                raise RtpError(f"header extension length {words} exceeds the packet")
            extension = view[offset:end]
            offset = end
        end = size
        padding = 0
        if b0 & 0x20:
            padding = data[size - 1]
            if padding == 0:
                raise RtpError("padding bit set with a zero padding count")
            end = size - padding
            if end < offset:
                raise RtpError(f"padding length {padding} exceeds the payload")
        return cls(
            b1 & 0x7F,
            seq,
            ts,
            ssrc,
            view[offset:end],
            bool(b1 & 0x80),
            csrc,
            extension_profile,
            extension,
            padding,
        )

    def serialize(self) -> bytes:
        """The packet on the wire. Padding octets are zeros with the count in the last one."""
        cc = len(self.csrc)
        if cc > 15:
            raise ValueError("at most 15 CSRCs")
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range")
        b0 = (RTP_VERSION << 6) | cc
        parts: list[Buffer] = []
        if self.extension_profile is not None:
            b0 |= 0x10
            if len(self.extension) % 4:
                raise ValueError("header extension must be a multiple of 4 octets")
            parts.append(_EXT.pack(self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        if self.padding:
            if not 0 < self.padding <= 255:
                raise ValueError("padding must be 1..255 octets")
            b0 |= 0x20
        header = _FIXED.pack(
            b0,
            (0x80 if self.marker else 0) | self.payload_type,
            self.sequence_number & 0xFFFF,
            self.timestamp & 0xFFFFFFFF,
            self.ssrc & 0xFFFFFFFF,
        )
        if cc:
            header += struct.pack(f"!{cc}I", *self.csrc)
        if not parts and not self.padding:
            return header + bytes(self.payload)
        out = b"".join([header, *parts, self.payload])
        if self.padding:
            out += bytes(self.padding - 1) + bytes((self.padding,))
        return out
