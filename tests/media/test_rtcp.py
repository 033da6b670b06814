"""RTCP: SR/RR/SDES/BYE round trips, compound packets, strict validation, RTT."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcpPacket,
    ntp_middle32,
    ntp_timestamp,
    parse_compound,
    rtt_from_report,
    serialize_compound,
)
from media.rtp import is_rtcp

u32 = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    packets_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_sequence=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)
block_lists = st.lists(blocks, max_size=4).map(tuple)
rtcp_packets = st.one_of(
    st.builds(SenderReport, u32, st.integers(0, 2**64 - 1), u32, u32, u32, block_lists),
    st.builds(ReceiverReport, u32, block_lists),
    st.builds(
        SourceDescription,
        st.lists(
            st.builds(
                SdesChunk,
                u32,
                st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=20)), max_size=3).map(
                    tuple
                ),
            ),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(Bye, st.lists(u32, max_size=4).map(tuple), st.binary(max_size=30)),
    st.builds(
        UnknownRtcpPacket,
        st.sampled_from([204, 205, 206, 207]),
        st.integers(0, 31),
        st.binary(max_size=16).map(lambda b: b + bytes(-len(b) % 4)),
    ),
)


@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_compound_round_trip(packets: list[object]) -> None:
    wire = serialize_compound(packets)  # type: ignore[arg-type]
    if len(wire) < 8:
        with pytest.raises(RtcpError):
            parse_compound(wire)
        return
    assert parse_compound(wire) == packets
    assert is_rtcp(wire)


@given(st.binary(max_size=120))
def test_garbage_raises_only_rtcp_error(data: bytes) -> None:
    try:
        parse_compound(data)
    except RtcpError:
        pass


def test_typical_compound() -> None:
    sr = SenderReport(0x1234, ntp_timestamp(1_700_000_000.5), 160, 10, 1600,
                      (ReportBlock(0x99, 25, 3, 70000, 12, 0xABCD, 0x10000),))
    sdes = SourceDescription.cname(0x1234, b"pbx@example.com")
    wire = serialize_compound([sr, sdes])
    parsed = parse_compound(wire)
    assert parsed[0] == sr
    assert isinstance(parsed[1], SourceDescription)
    assert parsed[1].chunks[0].cname == b"pbx@example.com"
    assert isinstance(parsed[0], SenderReport)
    assert parsed[0].reports[0].packets_lost == 3


def test_negative_cumulative_loss() -> None:
    rr = ReceiverReport(1, (ReportBlock(2, 0, -5),))
    parsed = parse_compound(rr.serialize())[0]
    assert isinstance(parsed, ReceiverReport)
    assert parsed.reports[0].packets_lost == -5


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (bytes.fromhex("80c90000"), "4-byte RTCP"),
        (bytes.fromhex("80c9"), "2 bytes"),
        (bytes.fromhex("40c9000100000001"), "version 1"),
        (bytes.fromhex("80c9000500000001"), "length beyond datagram"),
        (bytes.fromhex("81c9000100000001"), "RR count 1 without a block"),
        (bytes.fromhex("80c8000100000001"), "SR without sender info"),
        (bytes.fromhex("a0c9000100000001") + bytes.fromhex("80c9000100000002"), "padding not last"),
        (bytes.fromhex("a0c9000100000000"), "zero padding count"),
        (bytes.fromhex("80c90001000000010000"), "trailing junk"),
        (bytes.fromhex("81ca000100000001"), "SDES chunk without end"),
        (bytes.fromhex("80640001000000aa"), "packet type 100 is not RTCP"),
    ],
)
def test_malformed(wire: bytes, why: str) -> None:
    with pytest.raises(RtcpError):
        parse_compound(wire)


def test_rtt_from_lsr_dlsr() -> None:
    # We sent an SR at t0; the peer held it 0.25 s and reported at t0 + 0.4 → RTT 0.15 s.
    t0 = 1_700_000_000.0
    lsr = ntp_middle32(ntp_timestamp(t0))
    block = ReportBlock(1, lsr=lsr, dlsr=int(0.25 * 65536))
    rtt = rtt_from_report(block, ntp_timestamp(t0 + 0.4))
    assert rtt is not None
    assert rtt == pytest.approx(0.15, abs=1e-3)
    assert rtt_from_report(ReportBlock(1), ntp_timestamp(t0)) is None


def test_ntp_timestamp() -> None:
    ntp = ntp_timestamp(0.5)
    assert ntp >> 32 == 2208988800
    assert ntp & 0xFFFFFFFF == 0x80000000


def test_interop_with_aiortc() -> None:
    """aiortc's RTCP/RTP encoders and ours agree both ways."""
    from aiortc import rtp as aio

    from media.rtp import RtpPacket

    theirs = (
        bytes(aio.RtcpSrPacket(
            ssrc=1,
            sender_info=aio.RtcpSenderInfo(ntp_timestamp=123456789, rtp_timestamp=5, packet_count=7, octet_count=9),
            reports=[aio.RtcpReceiverInfo(ssrc=2, fraction_lost=3, packets_lost=4, highest_sequence=5, jitter=6, lsr=7, dlsr=8)],
        ))
        + bytes(aio.RtcpSdesPacket(chunks=[aio.RtcpSourceInfo(ssrc=1, items=[(1, b"abcde")])]))
        + bytes(aio.RtcpByePacket(sources=[1]))
    )
    sr, sdes, bye = parse_compound(theirs)
    assert sr == SenderReport(1, 123456789, 5, 7, 9, (ReportBlock(2, 3, 4, 5, 6, 7, 8),))
    assert isinstance(sdes, SourceDescription) and sdes.chunks[0].cname == b"abcde"
    assert bye == Bye((1,))
    ours = serialize_compound([SenderReport(1, 2, 3, 4, 5, (ReportBlock(9, 1, -2, 3, 4, 5, 6),))])
    (parsed,) = aio.RtcpPacket.parse(ours)
    assert parsed.reports[0].packets_lost == -2 and parsed.sender_info.octet_count == 5
    a = aio.RtpPacket(payload_type=111, marker=1, sequence_number=65535, timestamp=2**32 - 1, ssrc=7, payload=b"xyz")
    a.csrc = [1, 2]
    a.padding_size = 4
    p = RtpPacket.parse(a.serialize())
    assert (p.csrc, p.padding, bytes(p.payload), p.marker) == ((1, 2), 4, b"xyz", True)
    assert aio.RtpPacket.parse(p.serialize()).payload == b"xyz"
