"""RTCP packets (RFC 3550 §6): SR, RR, SDES, BYE and compound packets, sans-IO.

Theory of operation
-------------------
An RTCP datagram is a compound packet: one or more RTCP packets back to back, each with a
4-octet header (V=2, P, count, PT, length in 32-bit words minus one). :func:`parse_compound`
validates the whole datagram the way RFC 3550 §A.2 suggests (every packet version 2, lengths add
up exactly, padding only on the last packet) and raises :class:`RtcpError` (a ``ValueError``)
otherwise; the socket layer counts and drops it. Packet types we do not interpret (APP, RTPFB,
PSFB, XR…) come back as :class:`UnknownRtcpPacket` so feedback can be relayed.

With rtcp-mux (RFC 5761) RTP and RTCP share a port; :func:`media.rtp.is_rtcp` is the demux
rule. NTP timestamps (§4) are 64-bit fixed point (32.32) seconds since 1900; the "middle 32 bits"
(16.16) appear in report blocks as LSR, and DLSR is in units of 1/65536 s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from media.errors import MediaParseError
from media.rtp import Buffer

__all__ = [
    "NTP_EPOCH_OFFSET",
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcpPacket",
    "ntp_middle32",
    "ntp_timestamp",
    "parse_compound",
    "rtt_from_report",
    "serialize_compound",
]

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
RTCP_APP: Final = 204

SDES_END: Final = 0
SDES_CNAME: Final = 1

#: Seconds between the NTP epoch (1900) and the Unix epoch (1970).
NTP_EPOCH_OFFSET: Final = 2208988800

_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IQIII")  # SSRC, NTP, RTP ts, packet count, octet count
_BLOCK = struct.Struct("!IBBHIIII")  # ssrc, fraction, lost(24 as 8+16), ehsn, jitter, lsr, dlsr


class RtcpError(MediaParseError):
    """A datagram that is not a valid RTCP (compound) packet; counted and dropped."""


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time in seconds."""
    return int((unix_time + NTP_EPOCH_OFFSET) * 4294967296.0) & 0xFFFFFFFFFFFFFFFF


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (16.16 seconds), as used for LSR (§6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1).

    ``fraction_lost`` is an 8-bit fixed-point fraction (lost/expected * 256) since the last
    report, ``packets_lost`` the signed 24-bit cumulative count (negative with duplicates),
    ``highest_sequence`` the extended highest sequence number received, ``jitter`` the
    interarrival jitter in timestamp units, ``lsr``/``dlsr`` the middle 32 bits of the last SR's
    NTP time and the delay since receiving it in 1/65536 s.
    """

    ssrc: int
    fraction_lost: int = 0
    packets_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    def serialize(self) -> bytes:
        """The 24-octet block."""
        lost = max(-0x800000, min(0x7FFFFF, self.packets_lost)) & 0xFFFFFF
        return _BLOCK.pack(
            self.ssrc,
            self.fraction_lost & 0xFF,
            lost >> 16,
            lost & 0xFFFF,
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )

    @classmethod
    def parse(cls, data: Buffer, offset: int) -> ReportBlock:
        """Read one block at ``offset`` (the caller checked the length)."""
        ssrc, fraction, lost_hi, lost_lo, ehsn, jitter, lsr, dlsr = _BLOCK.unpack_from(
            data, offset
        )
        lost = (lost_hi << 16) | lost_lo
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, fraction, lost, ehsn, jitter, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (PT=200): sender info plus reception report blocks."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def serialize(self) -> bytes:
        """The packet (no padding)."""
        body = _SR_INFO.pack(
            self.ssrc,
            self.ntp_timestamp & 0xFFFFFFFFFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        )
        body += b"".join(r.serialize() for r in self.reports) + self.extension
        return _packet(RTCP_SR, len(self.reports), body)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (PT=201): reception report blocks from a receiver that does not send."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def serialize(self) -> bytes:
        """The packet (no padding)."""
        body = struct.pack("!I", self.ssrc) + b"".join(r.serialize() for r in self.reports)
        return _packet(RTCP_RR, len(self.reports), body + self.extension)


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """One SDES chunk: an SSRC and its (item type, value) pairs (§6.5)."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> bytes | None:
        """The CNAME item, if present."""
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value
        return None


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (PT=202)."""

    chunks: tuple[SdesChunk, ...] = ()

    @classmethod
    def cname(cls, ssrc: int, cname: bytes) -> SourceDescription:
        """The usual SDES: one chunk with one CNAME."""
        return cls((SdesChunk(ssrc, ((SDES_CNAME, cname),)),))

    def serialize(self) -> bytes:
        """The packet: each chunk null-terminated and padded to 32 bits."""
        if len(self.chunks) > 31:
            raise ValueError("at most 31 SDES chunks per packet")
        body = bytearray()
        for chunk in self.chunks:
            body += struct.pack("!I", chunk.ssrc)
            for kind, value in chunk.items:
                if not 1 <= kind <= 255 or len(value) > 255:
                    raise ValueError("bad SDES item")
                body += bytes((kind, len(value))) + value
            body += b"\x00"
            body += bytes(-len(body) % 4)
        return _packet(RTCP_SDES, len(self.chunks), bytes(body))


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (PT=203): sources leaving, with an optional reason."""

    sources: tuple[int, ...] = ()
    reason: bytes = b""

    def serialize(self) -> bytes:
        """The packet."""
        if len(self.sources) > 31 or len(self.reason) > 255:
            raise ValueError("at most 31 sources and a 255-octet reason")
        body = b"".join(struct.pack("!I", s) for s in self.sources)
        if self.reason:
            reason = bytes((len(self.reason),)) + self.reason
            body += reason + bytes(-len(reason) % 4)
        return _packet(RTCP_BYE, len(self.sources), body)


@dataclass(frozen=True, slots=True)
class UnknownRtcpPacket:
    """Any other RTCP packet (APP, RTPFB, PSFB, XR…), kept verbatim for relaying."""

    packet_type: int
    count: int
    body: bytes

    def serialize(self) -> bytes:
        """The packet."""
        return _packet(self.packet_type, self.count, self.body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcpPacket


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError("RTCP packet body must be a multiple of 4 octets")
    if not 0 <= count <= 31:
        raise ValueError("RTCP count field out of range")
    return _HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


def serialize_compound(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    """Join packets into one compound datagram (RFC 3550 §6.1: start with SR or RR)."""
    return b"".join(p.serialize() for p in packets)


def parse_compound(data: Buffer) -> list[RtcpPacket]:
    """Parse and validate a compound RTCP datagram; raises :class:`RtcpError` when malformed.

    Reduced-size RTCP (RFC 5506) is accepted, so the first packet need not be SR/RR, but a
    datagram must hold at least 8 octets (a header alone carries no SSRC and is treated as
    garbage, like RFC 3550 §A.2's validity check).
    """
    size = len(data)
    if size < 8:
        raise RtcpError(f"RTCP datagram of {size} octets is too short")
    if size % 4:
        raise RtcpError("RTCP datagram length is not a multiple of 4")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < size:
        if offset + 4 > size:
            raise RtcpError("truncated RTCP header")
        b0, packet_type, words = _HEADER.unpack_from(data, offset)
        if b0 >> 6 != 2:
            raise RtcpError(f"RTCP version {b0 >> 6}, expected 2")
        end = offset + 4 + 4 * words
        if end > size:
            raise RtcpError(f"RTCP length {words} exceeds the datagram")
        body_end = end
        if b0 & 0x20:
            if end != size:
                raise RtcpError("padding on an RTCP packet that is not the last")
            pad = data[end - 1]
            if pad == 0 or pad > 4 * words:
                raise RtcpError(f"bad RTCP padding length {pad}")
            body_end = end - pad
        packets.append(_parse_one(packet_type, b0 & 0x1F, data, offset + 4, body_end))
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, data: Buffer, start: int, end: int) -> RtcpPacket:
    length = end - start
    if packet_type == RTCP_SR:
        need = 24 + 24 * count
        if length < need:
            raise RtcpError(f"SR with {count} blocks needs {need} octets, has {length}")
        ssrc, ntp, rtp_ts, pkts, octets = _SR_INFO.unpack_from(data, start)
        blocks = tuple(ReportBlock.parse(data, start + 24 + 24 * i) for i in range(count))
        return SenderReport(ssrc, ntp, rtp_ts, pkts, octets, blocks, bytes(data[start + need : end]))
    if packet_type == RTCP_RR:
        need = 4 + 24 * count
        if length < need:
            raise RtcpError(f"RR with {count} blocks needs {need} octets, has {length}")
        (ssrc,) = struct.unpack_from("!I", data, start)
        blocks = tuple(ReportBlock.parse(data, start + 4 + 24 * i) for i in range(count))
        return ReceiverReport(ssrc, blocks, bytes(data[start + need : end]))
    if packet_type == RTCP_SDES:
        return _parse_sdes(count, data, start, end)
    if packet_type == RTCP_BYE:
        need = 4 * count
        if length < need:
            raise RtcpError(f"BYE with {count} sources needs {need} octets")
        sources = struct.unpack_from(f"!{count}I", data, start)
        reason = b""
        if length > need:
            rlen = data[start + need]
            if start + need + 1 + rlen > end:
                raise RtcpError("BYE reason exceeds the packet")
            reason = bytes(data[start + need + 1 : start + need + 1 + rlen])
        return Bye(tuple(sources), reason)
    if not 192 <= packet_type <= 223:
        raise RtcpError(f"packet type {packet_type} is not RTCP")
    return UnknownRtcpPacket(packet_type, count, bytes(data[start:end]))


def _parse_sdes(count: int, data: Buffer, start: int, end: int) -> SourceDescription:
    chunks: list[SdesChunk] = []
    pos = start
    for _ in range(count):
        if pos + 4 > end:
            raise RtcpError("SDES chunk does not fit")
        (ssrc,) = struct.unpack_from("!I", data, pos)
        pos += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if pos >= end:
                raise RtcpError("SDES chunk lacks its terminating null item")
            kind = data[pos]
            if kind == SDES_END:
                pos += 1
                pos += -(pos - start) % 4  # chunks are padded to 32 bits
                break
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise RtcpError("SDES item exceeds the packet")
            n = data[pos + 1]
            items.append((kind, bytes(data[pos + 2 : pos + 2 + n])))
            pos += 2 + n
        chunks.append(SdesChunk(ssrc, tuple(items)))
    if pos > end:
        raise RtcpError("SDES padding exceeds the packet")
    return SourceDescription(tuple(chunks))


def rtt_from_report(block: ReportBlock, arrival_ntp: int) -> float | None:
    """Round-trip time in seconds from a report block about our stream (RFC 3550 §6.4.1).

    ``arrival_ntp`` is our 64-bit NTP time when the report arrived. ``None`` when the peer has
    not yet received an SR from us (LSR = 0) or the result is negative (clock trouble).
    """
    if block.lsr == 0:
        return None
    a = ntp_middle32(arrival_ntp)
    rtt = (a - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt & 0x80000000:
        return None
    return rtt / 65536.0
