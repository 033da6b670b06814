"""media.aio over real loopback UDP: relay, transcoding, conferences, jitter, recording, counters.

The helpers here (RTP peers, Goertzel) are shared by the other ``test_aio*``/``test_srtp``/
``test_bleed`` modules.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import select
import socket
import struct
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media import dtmf
from media.bridge import Bridge
from media.codecs import make_codec
from media.engine import MediaEngine
from media.port import Frame
from media.recorder import Recorder
from media.session import RtpSession
from tests.media.fakeclock import FakeClock, Phone, fake_engine

PORTS = (30000, 30999)


# -- audio helpers --------------------------------------------------------------------------------


def tone(freq: float, rate: int, n: int, start: int = 0, amp: float = 8000.0) -> Frame:
    t = (np.arange(n) + start) / rate
    out: Frame = (amp * np.sin(2 * math.pi * freq * t)).astype(np.int16)
    return out


def goertzel(samples: np.ndarray[Any, Any], rate: int, freq: float) -> float:
    """Power of ``freq`` in ``samples`` (media.dtmf's Goertzel gives the amplitude)."""
    return dtmf.goertzel(samples, freq, rate) ** 2


def dominant(samples: np.ndarray[Any, Any], rate: int, candidates: list[float]) -> float:
    powers = {f: goertzel(samples, rate, f) for f in candidates}
    return max(powers, key=lambda f: powers[f])


def hears(samples: np.ndarray[Any, Any], rate: int, freq: float) -> bool:
    """``freq`` is clearly present: not silence, and ≥ 2 % of the signal's energy sits there."""
    if len(samples) == 0 or float(np.mean(samples.astype(np.float64) ** 2)) < 1e3:
        return False
    return dtmf.tone_ratio(samples, freq, rate) > 0.02


# -- an RTP peer on a plain socket ----------------------------------------------------------------


class Peer:
    """A phone: sends a tone as RTP every 20 ms (optionally with loss/jitter), records what comes."""

    def __init__(self, host: str = "127.0.0.1", codec: str = "PCMU", pt: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.addr: tuple[str, int] = self.sock.getsockname()
        self.codec = make_codec(codec, pt)
        self.pt = pt
        self.received: list[tuple[float, bytes, tuple[str, int]]] = []
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._n = 0
        self._task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._on_read)

    def _on_read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            self.received.append((loop.time(), data, addr))

    def packet(self, frame: Frame) -> bytes:
        payload = self.codec.encode(frame)
        pkt = struct.pack("!BBHII", 0x80, self.pt, self._seq, self._ts, self.ssrc) + payload
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + self.codec.timestamp_increment) & 0xFFFFFFFF
        return pkt

    def start_tone(
        self, target: tuple[str, int], freq: float, *, loss: float = 0.0, jitter: float = 0.0,
        seed: int = 1, wrap: Callable[[bytes], bytes] | None = None, amp: float = 8000.0,
    ) -> None:
        rnd = random.Random(seed)
        rate = self.codec.sample_rate
        n = rate // 50

        async def run() -> None:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            i = 0
            while True:
                pkt = self.packet(tone(freq, rate, n, start=i * n, amp=amp))
                if wrap is not None:
                    pkt = wrap(pkt)
                if rnd.random() >= loss:
                    delay = rnd.uniform(0, jitter)
                    loop.call_later(delay, self._send, pkt, target)
                i += 1
                await asyncio.sleep(max(0.0, t0 + i * 0.02 - loop.time()))

        self._task = asyncio.ensure_future(run())

    def _send(self, pkt: bytes, target: tuple[str, int]) -> None:
        try:
            self.sock.sendto(pkt, target)
        except OSError:
            pass

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def close(self) -> None:
        self.stop()
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()

    def rtp(self, skip: float = 0.0) -> list[bytes]:
        """RTP packets received (RTCP excluded), optionally skipping the first ``skip`` seconds."""
        if not self.received:
            return []
        t0 = self.received[0][0]
        return [d for t, d, _ in self.received if t - t0 >= skip and not 192 <= d[1] <= 223]

    def audio(self, skip: float = 0.2, unwrap: Callable[[bytes], bytes | None] | None = None
              ) -> np.ndarray[Any, Any]:
        """Decoded audio received, packets put in sequence order (loss → nothing)."""
        pkts = []
        for d in self.rtp(skip):
            if unwrap is not None:
                u = unwrap(d)
                if u is None:
                    continue
                d = u
            if d[1] & 0x7F == self.pt:
                pkts.append(d)
        if not pkts:
            return np.zeros(0, dtype=np.int16)
        base = struct.unpack_from("!H", pkts[0], 2)[0]
        pkts.sort(key=lambda d: (struct.unpack_from("!H", d, 2)[0] - base) & 0xFFFF)
        return np.concatenate([self.codec.decode(d[12:]) for d in pkts])


async def run_for(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def call_leg(engine: MediaEngine, peer: Peer, codec: str = "PCMU", pt: int = 0
                   ) -> RtpSession:
    sess = engine.create_session(payload_type=pt, codec=codec, remote=peer.addr)
    return sess


# -- tests ----------------------------------------------------------------------------------------


async def test_relay_carries_tone_and_rewrites_stream() -> None:
    async with MediaEngine("127.0.0.1", PORTS) as engine:
        pa, pb = Peer(), Peer()
        a, b = await call_leg(engine, pa), await call_leg(engine, pb)
        bridge = engine.bridge(a, b)
        assert type(bridge).__name__ == "RelayBridge"
        pa.start_tone(a.local_addr, 1000)
        pb.start_tone(b.local_addr, 600)
        await run_for(1.0)
        pa.close()
        pb.close()
        heard_b = pb.audio()
        heard_a = pa.audio()
        assert len(heard_b) > 8000 * 0.5
        assert dominant(heard_b, 8000, [600, 1000, 1500]) == 1000
        assert dominant(heard_a, 8000, [600, 1000, 1500]) == 600
        # B's phone sees B's stream: B's SSRC, consecutive sequence numbers.
        pkts = pb.rtp()
        assert {struct.unpack_from("!I", d, 8)[0] for d in pkts} == {b.ssrc}
        seqs = [struct.unpack_from("!H", d, 2)[0] for d in pkts]
        assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))
        stats = b.statistics()
        assert stats["tx_packets"] >= len(pkts)
        assert a.statistics()["relayed"] >= len(pkts)
        # Packets went out from B's own port (symmetric RTP towards the phone).
        assert {addr for _, _, addr in pb.received} <= {b.local_addr}


async def test_relay_maps_payload_types_and_dtmf() -> None:
    async with MediaEngine("127.0.0.1", PORTS) as engine:
        pa, pb = Peer(), Peer(pt=8, codec="PCMA")
        a = engine.create_session(payload_type=8, codec="PCMA", remote=pa.addr,
                                  telephone_event_pt=101)
        b = engine.create_session(payload_type=8, codec="PCMA", remote=pb.addr,
                                  telephone_event_pt=96)
        pa.pt = 8
        pa.codec = make_codec("PCMA")
        engine.relay(a, b)
        ev = struct.pack("!BBHII", 0x80, 101, 1, 1000, 5) + struct.pack("!BBH", 5, 0x8A, 800)
        pa.sock.sendto(ev, a.local_addr)
        bogus = struct.pack("!BBHII", 0x80, 18, 2, 1160, 5) + b"\x00" * 10
        pa.sock.sendto(bogus, a.local_addr)
        await run_for(0.2)
        got = pb.rtp()
        pa.close()
        pb.close()
        assert [d[1] & 0x7F for d in got] == [96]
        assert got[0][12:16] == struct.pack("!BBH", 5, 0x8A, 800)


async def test_relay_can_hold_one_sides_events_back_and_still_taps_them() -> None:
    """``drop_events``: A's telephone-events reach the PBX (on_dtmf) but not B; audio and B's
    events still pass (in-call codes keep their digits from the other party)."""
    from media.bridge import RelayBridge

    async with MediaEngine("127.0.0.1", PORTS) as engine:
        pa, pb = Peer(), Peer()
        a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr,
                                  telephone_event_pt=101)
        b = engine.create_session(payload_type=0, codec="PCMU", remote=pb.addr,
                                  telephone_event_pt=101)
        seen: list[str] = []
        a.on_dtmf = seen.append
        RelayBridge(a, b, drop_events=(True, False))
        for n, end in enumerate((False, True, True, True)):
            ev = struct.pack("!BBHII", 0x80, 101 | (0x80 if n == 0 else 0), 1 + n, 1000, 5)
            pa.sock.sendto(ev + struct.pack("!BBH", 11, 0x8A if end else 0x0A, 160 * (n + 1)),
                           a.local_addr)
        voice = struct.pack("!BBHII", 0x80, 0, 9, 1800, 5) + b"\xff" * 160
        pa.sock.sendto(voice, a.local_addr)
        back = struct.pack("!BBHII", 0x80, 101, 1, 500, 7) + struct.pack("!BBH", 5, 0x8A, 800)
        pb.sock.sendto(back, b.local_addr)
        await run_for(0.3)
        got_b, got_a = pb.rtp(), pa.rtp()
        pa.close()
        pb.close()
        assert [d[1] & 0x7F for d in got_b] == [0]  # A's voice only, none of its events
        assert seen == ["#"]  # tapped: the PBX saw A's digit
        assert [d[1] & 0x7F for d in got_a] == [101]  # B's event reached A


@pytest.mark.parametrize(
    ("ca", "pta", "cb", "ptb"),
    [("PCMU", 0, "G722", 9), ("G722", 9, "OPUS", 111), ("PCMA", 8, "OPUS", 111),
     ("PCMU", 0, "PCMA", 8)],
)
async def test_transcoding_bridge(ca: str, pta: int, cb: str, ptb: int) -> None:
    async with fake_engine() as engine:
        pa, pb = Phone(ca, pta), Phone(cb, ptb)
        a = engine.create_session(payload_type=pta, codec=ca, remote=pa.addr)
        b = engine.create_session(payload_type=ptb, codec=cb, remote=pb.addr)
        bridge = engine.bridge(a, b)
        assert isinstance(bridge, Bridge)
        clock = FakeClock(engine, [pa, pb])
        clock.talk(pa, a.local_addr, pa.tone_packets(1000, 60))
        clock.talk(pb, b.local_addr, pb.tone_packets(700, 60))
        clock.run(60)
        clock.settle()
        ta, tb = a.statistics()["tx_packets"], b.statistics()["tx_packets"]
    for phone, leg, tx in ((pa, a, ta), (pb, b, tb)):
        pkts = phone.rtp()
        # one packet per tick once the jitter buffer plays out, all of them arrived, one stream
        assert 50 <= len(pkts) == tx <= 60
        assert {struct.unpack_from("!I", d, 8)[0] for d in pkts} == {leg.ssrc}
        seqs = [struct.unpack_from("!H", d, 2)[0] for d in pkts]
        stamps = [struct.unpack_from("!I", d, 4)[0] for d in pkts]
        assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))
        step = leg.codec.timestamp_increment
        assert all((y - x) & 0xFFFFFFFF == step for x, y in itertools.pairwise(stamps))
    got_b, got_a = pb.audio(skip=0.3), pa.audio(skip=0.3)
    rb, ra = pb.rate, pa.rate
    assert len(got_b) > rb * 0.5 and len(got_a) > ra * 0.5
    assert dominant(got_b, rb, [700, 1000, 1300]) == 1000
    assert dominant(got_a, ra, [700, 1000, 1300]) == 700
    assert hears(got_b, rb, 1000) and hears(got_a, ra, 700)


async def test_realtime_engine_bridges_on_the_loop() -> None:
    """The engine as the PBX runs it: hub reader and 20 ms clock on the event loop."""
    async with MediaEngine("127.0.0.1", PORTS) as engine:
        pa, pb = Peer(), Peer(codec="PCMA", pt=8)
        a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr)
        b = engine.create_session(payload_type=8, codec="PCMA", remote=pb.addr)
        assert isinstance(engine.bridge(a, b), Bridge)
        assert engine.clock.running
        pa.start_tone(a.local_addr, 1000)
        pb.start_tone(b.local_addr, 700)
        await run_for(1.0)
        pa.close()
        pb.close()
        assert engine.clock.ticks >= 30
    got_b, got_a = pb.audio(skip=0.3), pa.audio(skip=0.3)
    assert len(got_b) > 8000 * 0.3 and len(got_a) > 8000 * 0.3
    assert hears(got_b, 8000, 1000) and hears(got_a, 8000, 700)


@pytest.mark.parametrize("n", [3, 10])
async def test_conference_each_hears_the_others_not_themselves(n: int) -> None:
    freqs = [400 + 150 * i for i in range(n)]
    async with fake_engine() as engine:
        conf = engine.conference()
        phones = [Phone() for _ in range(n)]
        legs = [engine.create_session(payload_type=0, codec="PCMU", remote=p.addr)
                for p in phones]
        for leg in legs:
            conf.add(leg)
        clock = FakeClock(engine, phones)
        for p, leg, f in zip(phones, legs, freqs, strict=True):
            clock.talk(p, leg.local_addr, p.tone_packets(f, 60, amp=20000 / n))
        clock.run(60)
        clock.settle()
    for i, p in enumerate(phones):
        audio = p.audio(skip=0.3)
        assert len(audio) > 4000
        own = goertzel(audio, 8000, freqs[i])
        for j, f in enumerate(freqs):
            if j != i:
                assert hears(audio, 8000, f), (i, f)
                assert goertzel(audio, 8000, f) > 20 * own, (i, j)


async def test_jitter_buffer_under_loss_and_jitter() -> None:
    async with fake_engine() as engine:
        pa, pb = Phone(), Phone("PCMA", 8)
        a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr)
        b = engine.create_session(payload_type=8, codec="PCMA", remote=pb.addr)
        engine.bridge(a, b)  # transcoding: A's packets go through A's jitter buffer
        clock = FakeClock(engine, [pa, pb])
        # 5 % loss, each packet up to 40 ms late (they overtake each other)
        lost = clock.talk(pa, a.local_addr, pa.tone_packets(1000, 100), loss=0.05, jitter=2,
                          seed=7)
        clock.run(110)
        clock.settle()
        st = a.statistics()
    assert 2 <= len(lost) <= 10
    assert st["rx_packets"] == 100 - len(lost)
    assert st["lost"] == len(lost)  # the receiver statistics see exactly the lost packets
    # every packet is played or counted late (none vanishes), and every gap — lost or too
    # late — is concealed, not played as garbage or skipped: B hears one steady stream
    assert st["jitter_emitted"] + st["jitter_late"] == st["rx_packets"]
    assert st["jitter_concealed"] >= len(lost) + st["jitter_late"]
    pkts = pb.rtp()
    seqs = [struct.unpack_from("!H", d, 2)[0] for d in pkts]
    assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))
    got = pb.audio(skip=0.3)
    assert len(got) > 8000 * 1.2
    assert dominant(got, 8000, [500, 1000, 2000]) == 1000


async def test_recording_opens_with_wave(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    async with fake_engine() as engine:
        pa = Phone("G722", 9)
        a = engine.create_session(payload_type=9, codec="G722", remote=pa.addr)
        rec = Recorder(path, sample_rate=8000)  # G.722 is 16 kHz: the link resamples
        link = engine.link(a, rec, fill_silence=True)
        clock = FakeClock(engine, [pa])
        clock.talk(pa, a.local_addr, pa.tone_packets(1000, 50))
        clock.run(50)
        link.close()
        clock.run(5)  # a closed link moves nothing more
        assert rec.close() == path
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(data) == 50 * 160  # fill_silence: one frame per tick, silence included
    assert dominant(data[2400:], 8000, [500, 1000, 2000]) == 1000
    assert hears(data[2400:], 8000, 1000)


async def test_dtmf_sent_and_received_as_telephone_events() -> None:
    async with fake_engine() as engine:
        pa, pb = Phone(), Phone()
        a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr)
        b = engine.create_session(payload_type=0, codec="PCMU", remote=pb.addr,
                                  telephone_event_pt=101)
        got: list[str] = []
        a.on_dtmf = got.append
        engine.bridge(a, b)  # relay: PBX-generated DTMF on B, received DTMF on A
        clock = FakeClock(engine, [pa, pb])
        # the phone on A sends "5" (start, continuation, 3 × end), one packet per tick
        sender = dtmf.DtmfSender()
        sender.send("5", duration_ms=60)
        for i in range(8):
            for p in sender.tick(1000 + 160 * i):
                hdr = struct.pack("!BBHII", 0x80, (0x80 if p.marker else 0) | 101, pa.seq,
                                  p.timestamp, pa.ssrc)
                pa.seq += 1
                clock.at(i, pa, hdr + p.payload, a.local_addr)
        clock.run(10)
        b.send_dtmf("1#", duration_ms=60, gap_ms=40)
        clock.run(30)
        clock.settle()
    # A decoded the phone's event once (the three end packets are one event)
    assert got == ["5"]
    # B's phone got the relayed "5" and the PBX's "1", "#" as RFC 4733 packets on PT 101
    rx = dtmf.DtmfReceiver()
    digits = []
    events = [d for d in pb.rtp() if d[1] & 0x7F == 101]
    for d in events:
        digits += [x.digit for x in rx.receive(d[12:16], struct.unpack_from("!I", d, 4)[0],
                                               bool(d[1] & 0x80))]
    assert digits == ["5", "1", "#"]
    # the PBX's own digits, one packet per tick on B's stream: start with the marker, growing
    # durations, the end packet three times (RFC 4733 §2.5.1.4), one timestamp per event
    ours = [d for d in events if d[12] != 5]
    seqs = [struct.unpack_from("!H", d, 2)[0] for d in ours]
    assert [(d[12], d[13] >> 7, struct.unpack_from("!H", d, 14)[0]) for d in ours] == [
        (digit, end, dur) for digit in (1, 11)
        for end, dur in ((0, 160), (0, 320), (1, 480), (1, 480), (1, 480))]
    assert [d[1] >> 7 for d in ours] == [1, 0, 0, 0, 0] * 2
    assert len({struct.unpack_from("!I", d, 4)[0] for d in ours[:5]}) == 1
    assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))


async def test_malformed_rtp_and_rtcp_dropped_and_counted() -> None:
    async with MediaEngine("127.0.0.1", PORTS) as engine:
        pa, pb = Peer(), Peer()
        a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr)
        b = engine.create_session(payload_type=0, codec="PCMU", remote=pb.addr)
        engine.relay(a, b)
        good = struct.pack("!BBHII", 0x80, 0, 1, 160, 9) + b"\xff" * 160
        bad = [
            b"\x80\x00\x00",  # truncated
            good[:11],  # one byte short of a header
            b"\x40" + good[1:],  # version 1
            b"\x8f" + good[1:13],  # 15 CSRCs in a 13-byte packet
            b"\x90" + good[1:12] + b"\xbe\xde\x00\x40",  # extension longer than the packet
            b"\xa0" + good[1:12] + b"\x00\x00\xff",  # padding count beyond the payload
        ]
        for pkt in bad:
            pa.sock.sendto(pkt, a.local_addr)
        rtcp_bad = [b"\x80\xc8\x00\x00", b"\x40\xc9\x00\x01\x00\x00\x00\x00",
                    b"\x80\xc9\x00\x05\x00\x00\x00\x00"]
        for pkt in rtcp_bad:
            pa.sock.sendto(pkt, (a.local_addr[0], a.rtcp_port))
        pa.sock.sendto(good, a.local_addr)
        await run_for(0.3)
        st = a.statistics()
        pa.close()
        pb.close()
        assert st["malformed"] == len(bad)
        assert st["rtcp_malformed"] == len(rtcp_bad)
        assert st["relayed"] == 1
        assert len(pb.rtp()) == 1
        assert engine.statistics()["reader_errors"] == 0


async def test_rtcp_reports_are_sent() -> None:
    async with fake_engine(rtcp_interval=0.2) as engine:
        pa, rtcp = Phone(), Phone()
        a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr,
                                  remote_rtcp_port=rtcp.addr[1])
        b = engine.create_session(payload_type=0, codec="PCMA", remote=pa.addr)
        engine.bridge(a, b)
        clock = FakeClock(engine, [pa])
        packets = pa.tone_packets(1000, 50)
        clock.talk(pa, a.local_addr, packets)
        reports: list[tuple[int, bytes]] = []  # (step it was sent in, report)
        for step in range(50):
            sent = a.counters["rtcp_tx"]
            clock.run(1)
            new = a.counters["rtcp_tx"] - sent
            if new:  # reports went out in this step: read them (on a loaded machine a step
                # can outlast the shortest randomised interval, so two can be due in one)
                select.select([rtcp.sock], [], [], 2.0)
                assert rtcp.collect() == new
                reports.extend((step, rr) for rr in rtcp.received[-new:])
        assert len(reports) == a.counters["rtcp_tx"]
        rtcp.close()
        pa.close()
    # every 0.1–0.3 s (the interval 0.2 s randomised by 0.5–1.5, RFC 3550 §6.3.1) for 1 s
    assert 3 <= len(reports) <= 10
    for step, rr in reports:
        # A only receives (the bridge sends its audio out of B), so A sends receiver reports
        assert rr[1] == 201 and rr[0] >> 6 == 2
        assert struct.unpack_from("!I", rr, 4)[0] == a.ssrc
        # one report block about the phone's stream: its SSRC and the highest sequence
        # number received so far — the packet of the step the report went out in
        assert rr[0] & 0x1F == 1 and struct.unpack_from("!I", rr, 8)[0] == pa.ssrc
        ehsn = struct.unpack_from("!I", rr, 16)[0]
        assert ehsn & 0xFFFF == struct.unpack_from("!H", packets[step], 2)[0]


async def test_port_allocation_even_pairs_and_release() -> None:
    async with MediaEngine("127.0.0.1", (31000, 31007)) as engine:
        legs = [engine.create_session() for _ in range(4)]
        ports = sorted(s.local_port for s in legs)
        assert ports == [31000, 31002, 31004, 31006]
        assert all(s.rtcp_port == s.local_port + 1 for s in legs)
        with pytest.raises(OSError):
            engine.create_session()
        legs[1].close()
        again = engine.create_session()
        assert again.local_port == legs[1].local_port
    async with MediaEngine("127.0.0.1", (31010, 31013), rtcp_mux=True) as engine:
        legs = [engine.create_session() for _ in range(2)]
        assert all(s.rtcp_port == s.local_port for s in legs)
