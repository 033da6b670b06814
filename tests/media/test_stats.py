"""Receiver statistics (RFC 3550 A.1/A.3/A.8), sender reports, E-model MOS."""

from __future__ import annotations

import random

import pytest

from media.rtcp import SenderReport, ntp_middle32, ntp_timestamp
from media.stats import ReceiverStatistics, SenderStatistics, mos, mos_from_r, r_factor


def feed(stats: ReceiverStatistics, seqs: list[int], jitter: float = 0.0, seed: int = 0) -> None:
    rng = random.Random(seed)
    for i, seq in enumerate(seqs):
        stats.update(seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, i * 0.02 + rng.uniform(0, jitter))


def test_no_loss_no_jitter() -> None:
    s = ReceiverStatistics(8000)
    feed(s, list(range(100, 300)))
    assert s.received == 199  # the first packet is on probation (MIN_SEQUENTIAL = 2)
    assert s.expected == 199
    assert s.lost == 0
    assert s.jitter == pytest.approx(0.0, abs=1e-6)
    block = s.report_block(now=10.0)
    assert block.fraction_lost == 0 and block.packets_lost == 0
    assert block.highest_sequence == 299


def test_loss_across_a_wrap() -> None:
    s = ReceiverStatistics(8000)
    seqs = [x for x in range(65000, 65000 + 1000) if x % 10 != 3]  # 10 % loss
    feed(s, seqs)
    assert s.cycles == 65536
    block = s.report_block(now=30.0)
    assert block.highest_sequence == 65999
    assert s.lost == pytest.approx(100, abs=1)
    assert block.fraction_lost == pytest.approx(256 * 0.1, abs=2)
    # The next interval has no loss: fraction_lost resets, the cumulative count does not.
    feed(s, list(range(66000, 66100)))
    assert s.report_block(now=32.0).fraction_lost == 0
    assert s.lost == pytest.approx(100, abs=1)


def test_jitter_estimate_tracks_arrival_variation() -> None:
    s = ReceiverStatistics(8000)
    feed(s, list(range(2000)), jitter=0.04, seed=3)
    # |D| of two uniform(0, 40 ms) delays has mean 13.3 ms; J converges near it.
    assert 0.008 < s.jitter_seconds < 0.02
    assert s.report_block(now=40.0).jitter == int(s.jitter)


def test_source_restart_needs_two_sequential_packets() -> None:
    s = ReceiverStatistics(8000)
    feed(s, list(range(10, 20)))
    assert not s.update(40000, 0, 1.0)  # one stray jump is not believed
    assert s.update(20, 20 * 160, 1.02)
    assert not s.update(50000, 0, 1.04)
    assert s.update(50001, 160, 1.06)  # …two in a row are: the sender restarted
    assert s.max_seq == 50001 and s.base_seq == 50001


def test_lsr_dlsr_from_last_sender_report() -> None:
    s = ReceiverStatistics(8000)
    feed(s, list(range(5)))
    ntp = ntp_timestamp(1_700_000_000.0)
    s.on_sender_report(SenderReport(7, ntp, 0, 0, 0), arrival=100.0)
    block = s.report_block(now=100.5)
    assert block.lsr == ntp_middle32(ntp)
    assert block.dlsr == 32768


def test_sender_statistics() -> None:
    s = SenderStatistics(0xAA, 8000)
    for i in range(50):
        s.on_sent(160, i * 160, i * 0.02)
    sr = s.sender_report(now=49 * 0.02 + 0.01, wallclock=1_700_000_000.0)
    assert (sr.packet_count, sr.octet_count) == (50, 8000)
    assert sr.rtp_timestamp == 49 * 160 + 80
    assert sr.ssrc == 0xAA


def test_e_model() -> None:
    best = mos(0.0, 0.0)
    assert 4.3 < best <= 4.5  # G.711 upper bound is about 4.4
    assert mos(0.05, 0.05) < best
    assert mos(0.4, 0.0) < mos(0.1, 0.0)
    assert mos(0.05, 0.2) < mos(0.05, 0.05)
    assert mos(0.05, 0.05, "PCMU-noplc") < mos(0.05, 0.05, "PCMU")
    assert r_factor(0.0, 0.0) == pytest.approx(93.2)
    assert mos_from_r(-5) == 1.0 and mos_from_r(120) == 4.5
    assert mos(0.05, 0.01, jitter=0.03) < mos(0.05, 0.01)
