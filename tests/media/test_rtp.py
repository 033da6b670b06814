"""RTP packets: round trips, strict validation, serial-number arithmetic."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.rtp import (
    RtpError,
    RtpPacket,
    SequenceExtender,
    TimestampExtender,
    is_rtcp,
    new_ssrc,
    parse_header,
    seq_diff,
    seq_lt,
    ts_diff,
    ts_lt,
)

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension_profile=st.none() | st.integers(0, 0xFFFF),
    extension=st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4)),
    padding=st.integers(0, 255),
)


@given(packets)
def test_round_trip(packet: RtpPacket) -> None:
    if packet.extension_profile is None:
        packet.extension = b""
    wire = packet.serialize()
    parsed = RtpPacket.parse(wire)
    assert parsed == packet
    assert parsed.serialize() == wire


@given(st.binary(max_size=80))
def test_parse_raises_only_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    assert len(packet.payload) <= len(data) - 12


def test_known_packet() -> None:
    wire = bytes.fromhex("80e0 0102 00000a00 deadbeef") + b"\xff" * 160
    p = RtpPacket.parse(wire)
    assert (p.payload_type, p.marker, p.sequence_number, p.timestamp, p.ssrc) == (
        96, True, 0x0102, 0xA00, 0xDEADBEEF,
    )
    assert bytes(p.payload) == b"\xff" * 160
    assert isinstance(p.payload, memoryview)  # zero-copy
    assert parse_header(wire) == (96, True, 0x0102, 0xA00, 0xDEADBEEF)


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"\x80\x00" + bytes(9), "short"),
        (bytes.fromhex("40000001000000010000000100"), "version 1"),
        (bytes.fromhex("c0000001000000010000000100"), "version 3"),
        (bytes.fromhex("83000001000000010000000100000000"), "CSRC count 3 but 1 present"),
        (bytes.fromhex("90000001000000010000000111110002") + bytes(4), "extension length"),
        (bytes.fromhex("9000000100000001000000011111"), "extension header cut"),
        (bytes.fromhex("a000000100000001000000010000"), "padding count 0"),
        (bytes.fromhex("a000000100000001000000010005"), "padding beyond payload"),
    ],
)
def test_malformed(wire: bytes, why: str) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(wire)
    assert issubclass(RtpError, ValueError)


def test_padding_and_extension_are_stripped() -> None:
    ext = struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    wire = bytes.fromhex("b0000001000000010000000a") + ext + b"abc" + b"\x00\x00\x03"
    p = RtpPacket.parse(wire)
    assert bytes(p.payload) == b"abc"
    assert p.padding == 3
    assert p.extension_profile == 0xBEDE
    assert bytes(p.extension) == b"\x10\xaa\x00\x00"


def test_rtcp_demux_rule() -> None:
    # RFC 5761 §4: second octet 192–223 is RTCP (SR=200, RR=201); RTP PTs 0–63/96–127 are not.
    assert is_rtcp(bytes([0x80, 200]))
    assert is_rtcp(bytes([0x81, 201]))
    assert not is_rtcp(bytes([0x80, 0]))
    assert not is_rtcp(bytes([0x80, 0x80 | 111]))  # marker + dynamic PT 111 = 239
    assert not is_rtcp(bytes([0x80, 0x80 | 8]))  # marker + PCMA = 136
    assert not is_rtcp(b"\x80")


def test_serial_arithmetic() -> None:
    assert seq_diff(1, 65535) == 2
    assert seq_diff(65535, 1) == -2
    assert seq_lt(65530, 3) and not seq_lt(3, 65530)
    assert ts_diff(5, 0xFFFFFFF0) == 21
    assert ts_lt(0xFFFFFFF0, 5)
    assert not seq_lt(7, 7)


@given(st.integers(0, 0xFFFF), st.lists(st.integers(-100, 100), max_size=200))
def test_sequence_extender_is_monotonic_through_wraps(start: int, steps: list[int]) -> None:
    ext = SequenceExtender()
    true = 0x10000 + start
    assert ext.extend(start) == true
    highest = true
    for step in steps:
        true += step  # forwards and backwards (reordering)
        highest = max(highest, true)
        if highest - true > 30000:
            continue
        assert ext.extend(true & 0xFFFF) == true
        assert ext.highest == highest


def test_timestamp_extender_wraps() -> None:
    ext = TimestampExtender()
    a = ext.extend(0xFFFFFF00)
    b = ext.extend(0x00000100)
    assert b - a == 0x200
    assert ext.extend(0xFFFFFF80) == a + 0x80  # reordered, before the wrap


def test_new_ssrc_is_random_32_bit() -> None:
    values = {new_ssrc() for _ in range(50)}
    assert len(values) > 45
    assert all(0 <= v < 2**32 for v in values)
