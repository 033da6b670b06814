"""Receiver/sender statistics (RFC 3550 §6.4, Appendix A) and a per-call MOS estimate, sans-IO.

Theory of operation
-------------------
:class:`ReceiverStatistics` is fed every RTP packet of one source (after SRTP and parsing) with
its arrival time. It validates the source with the probation rule of §A.1 (``MIN_SEQUENTIAL``
in-order packets before the source counts as valid; a jump larger than ``MAX_DROPOUT`` is
believed only when the next packet follows it), counts cycles of the 16-bit sequence number,
and keeps the interarrival jitter estimate of §A.8 (``J += (|D| - J) / 16`` in timestamp units).
:meth:`ReceiverStatistics.report_block` computes cumulative and fractional loss as in §A.3 and
the LSR/DLSR pair from the last sender report we received, so the peer can compute RTT.

:class:`SenderStatistics` counts what we send for our own SR.

:func:`mos` is the simplified E-model (ITU-T G.107): R = 93.2 − Id − Ie,eff, with the delay
impairment Id from the one-way delay and the equipment impairment Ie,eff from the packet-loss
percentage and the codec's Ie/Bpl (ITU-T G.113 Appendix I), then R → MOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from media.rtcp import ReportBlock, SenderReport, ntp_middle32, ntp_timestamp

__all__ = [
    "CODEC_IMPAIRMENTS",
    "CodecImpairment",
    "ReceiverStatistics",
    "SenderStatistics",
    "mos",
    "mos_from_r",
    "r_factor",
]

MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100
MIN_SEQUENTIAL: Final = 2
RTP_SEQ_MOD: Final = 1 << 16


class ReceiverStatistics:
    """Reception state of one RTP source (RFC 3550 §A.1, §A.3, §A.8).

    ``clock_rate`` is the RTP timestamp rate of the payload format (8000 for G.722!).
    Times (``arrival``, ``now``) are seconds on any monotonic clock except where NTP is named.
    """

    def __init__(self, clock_rate: int, ssrc: int | None = None) -> None:
        self.clock_rate = clock_rate
        #: The source these statistics describe (the first packet's SSRC when not given).
        self.ssrc = ssrc
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.bad_seq = RTP_SEQ_MOD + 1
        self.probation = MIN_SEQUENTIAL
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        #: Interarrival jitter estimate in timestamp units (float; the report carries int).
        self.jitter = 0.0
        self._transit: float | None = None
        self._initialised = False
        #: Packets rejected by the §A.1 validity check (bad jumps, probation).
        self.invalid = 0
        #: Duplicates and packets from before the highest sequence number.
        self.misordered = 0
        self._last_sr: int = 0
        self._last_sr_arrival: float = 0.0

    # --- §A.1 ------------------------------------------------------------------------------

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update(self, seq: int, rtp_timestamp: int, arrival: float) -> bool:
        """Account one received packet; False when §A.1 says it is not (yet) valid."""
        if not self._initialised:
            self._init_seq(seq)
            self.max_seq = (seq - 1) & 0xFFFF
            self.probation = MIN_SEQUENTIAL
            self._initialised = True
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == ((self.max_seq + 1) & 0xFFFF):
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    self._update_jitter(rtp_timestamp, arrival)
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                # Two sequential packets after a big jump: the source restarted.
                self._init_seq(seq)
                self._transit = None
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                self.invalid += 1
                return False
        else:
            self.misordered += 1
        self.received += 1
        self._update_jitter(rtp_timestamp, arrival)
        return True

    # --- §A.8 ------------------------------------------------------------------------------

    def _update_jitter(self, rtp_timestamp: int, arrival: float) -> None:
        # Transit is computed in timestamp units; only differences matter, so the 32-bit
        # timestamp is used modulo 2**32 via the signed difference below.
        transit = arrival * self.clock_rate - rtp_timestamp
        prev = self._transit
        self._transit = transit
        if prev is None:
            return
        d = transit - prev
        # Undo a timestamp wrap between the two packets.
        d = (d + 2**31) % 2**32 - 2**31
        self.jitter += (abs(d) - self.jitter) / 16.0

    # --- §A.3 ------------------------------------------------------------------------------

    @property
    def extended_max(self) -> int:
        """Extended highest sequence number received."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the first valid one."""
        return self.extended_max - self.base_seq + 1 if self.received else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost (negative when duplicates outnumber losses)."""
        return self.expected - self.received

    @property
    def jitter_seconds(self) -> float:
        """The jitter estimate in seconds."""
        return self.jitter / self.clock_rate

    def on_sender_report(self, report: SenderReport, arrival: float) -> None:
        """Remember the last SR from this source (for LSR/DLSR in our reports)."""
        self._last_sr = ntp_middle32(report.ntp_timestamp)
        self._last_sr_arrival = arrival

    def report_block(self, now: float) -> ReportBlock:
        """A reception report block for this source; resets the fraction-lost interval."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = 0
        if self._last_sr:
            dlsr = int(max(0.0, now - self._last_sr_arrival) * 65536) & 0xFFFFFFFF
        return ReportBlock(
            ssrc=self.ssrc or 0,
            fraction_lost=fraction,
            packets_lost=self.lost,
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=self._last_sr,
            dlsr=dlsr,
        )

    def loss_fraction(self) -> float:
        """Cumulative loss as a fraction of the expected packets (0 when nothing expected)."""
        expected = self.expected
        return max(0, self.lost) / expected if expected > 0 else 0.0


class SenderStatistics:
    """What we sent, for our sender reports (§6.4.1)."""

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.packet_count = 0
        self.octet_count = 0
        self._last_rtp_timestamp = 0
        self._last_sent = 0.0

    def on_sent(self, payload_size: int, rtp_timestamp: int, now: float) -> None:
        """Account one sent packet (``payload_size`` excludes headers and padding)."""
        self.packet_count += 1
        self.octet_count += payload_size
        self._last_rtp_timestamp = rtp_timestamp
        self._last_sent = now

    def sender_report(
        self, now: float, wallclock: float, reports: tuple[ReportBlock, ...] = ()
    ) -> SenderReport:
        """An SR for ``now`` (monotonic) and ``wallclock`` (Unix time, for the NTP field).

        The RTP timestamp is extrapolated from the last sent packet to ``now``, as §6.4.1 asks
        (same clock as the media, not the wall clock).
        """
        rtp_ts = self._last_rtp_timestamp + int((now - self._last_sent) * self.clock_rate)
        return SenderReport(
            self.ssrc,
            ntp_timestamp(wallclock),
            rtp_ts & 0xFFFFFFFF,
            self.packet_count,
            self.octet_count,
            reports,
        )


# --- E-model (ITU-T G.107, simplified) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    """Equipment impairment ``ie`` and packet-loss robustness ``bpl`` of a codec (G.113 App. I)."""

    ie: float
    bpl: float


#: Per-codec values. G.711 with PLC per G.113 Appendix I; G.722 and Opus have no narrowband
#: G.113 entries, so they use G.711-like values (an approximation, documented as such).
CODEC_IMPAIRMENTS: Final[dict[str, CodecImpairment]] = {
    "PCMU": CodecImpairment(0.0, 25.1),
    "PCMA": CodecImpairment(0.0, 25.1),
    "PCMU-NOPLC": CodecImpairment(0.0, 4.3),
    "G722": CodecImpairment(0.0, 25.1),
    "OPUS": CodecImpairment(0.0, 30.0),
}


def r_factor(
    one_way_delay: float, loss_percent: float, codec: str = "PCMU", burst_ratio: float = 1.0
) -> float:
    """Transmission rating R for a one-way mouth-to-ear delay (seconds) and loss (%)."""
    imp = CODEC_IMPAIRMENTS.get(codec.upper(), CODEC_IMPAIRMENTS["PCMU"])
    d = max(0.0, one_way_delay * 1000.0)
    # Id: the widely used simplification of G.107's delay impairment (Cole & Rosenbluth).
    idd = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    ppl = max(0.0, min(100.0, loss_percent))
    ie_eff = imp.ie + (95.0 - imp.ie) * ppl / (ppl / burst_ratio + imp.bpl)
    return 93.2 - idd - ie_eff


def mos_from_r(r: float) -> float:
    """ITU-T G.107 Annex B: R → estimated MOS (1.0 … 4.5)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


def mos(
    one_way_delay: float, loss_fraction: float, codec: str = "PCMU", jitter: float = 0.0
) -> float:
    """Per-call MOS estimate from delay (s), loss (0…1) and optionally jitter (s).

    Jitter is counted as extra delay (twice the jitter, about what a jitter buffer adds).
    """
    return mos_from_r(r_factor(one_way_delay + 2 * jitter, loss_fraction * 100.0, codec))
