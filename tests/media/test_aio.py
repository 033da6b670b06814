"""media.aio over real loopback UDP: relay, transcoding, conferences, jitter, recording, counters.

The helpers here (RTP peers, Goertzel) are shared by the other ``test_aio*``/``test_srtp``/
``test_bleed`` modules.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import socket
import struct
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media import dtmf
from media.aio import MediaClock, MediaEngine, RtpSession, make_codec
from media.port import Frame
from media.recorder import Recorder

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


@pytest.mark.parametrize(
    ("ca", "pta", "cb", "ptb"),
    [("PCMU", 0, "G722", 9), ("G722", 9, "OPUS", 111), ("PCMA", 8, "OPUS", 111),
     ("PCMU", 0, "PCMA", 8)],
)
async def test_transcoding_bridge(ca: str, pta: int, cb: str, ptb: int) -> None:
    async with MediaEngine("127.0.0.1", PORTS) as engine:
        pa, pb = Peer(codec=ca, pt=pta), Peer(codec=cb, pt=ptb)
        a = engine.create_session(payload_type=pta, codec=ca, remote=pa.addr)
        b = engine.create_session(payload_type=ptb, codec=cb, remote=pb.addr)
        bridge = engine.bridge(a, b)
        assert type(bridge).__name__ == "Bridge"
        pa.start_tone(a.local_addr, 1000)
        pb.start_tone(b.local_addr, 700)
        await run_for(1.2)
        pa.close()
        pb.close()
        got_b = pb.audio(skip=0.3)
        got_a = pa.audio(skip=0.3)
        rb, ra = pb.codec.sample_rate, pa.codec.sample_rate
        assert len(got_b) > rb * 0.5 and len(got_a) > ra * 0.5
        assert dominant(got_b, rb, [700, 1000, 1300]) == 1000
        assert dominant(got_a, ra, [700, 1000, 1300]) == 700
        assert hears(got_b, rb, 1000) and hears(got_a, ra, 700)


@pytest.mark.parametrize("n", [3, 10])
async def test_conference_each_hears_the_others_not_themselves(n: int) -> None:
    freqs = [400 + 150 * i for i in range(n)]
    async with MediaEngine("127.0.0.1", PORTS) as engine:
        conf = engine.conference()
        peers = [Peer() for _ in range(n)]
        legs = [engine.create_session(payload_type=0, codec="PCMU", remote=p.addr) for p in peers]
        for leg in legs:
            conf.add(leg)
        for p, leg, f in zip(peers, legs, freqs, strict=True):
            p.start_tone(leg.local_addr, f, seed=f, amp=20000 / n)
        await run_for(1.2)
        for p in peers:
            p.close()
        for i, p in enumerate(peers):
            audio = p.audio(skip=0.3)
            assert len(audio) > 4000
            own = goertzel(audio, 8000, freqs[i])
            for j, f in enumerate(freqs):
                if j != i:
                    assert hears(audio, 8000, f), (i, f)
                    assert goertzel(audio, 8000, f) > 20 * own, (i, j)


async def test_jitter_buffer_under_loss_and_jitter() -> None:
    async with MediaEngine("127.0.0.1", PORTS) as engine:
        pa, pb = Peer(), Peer(codec="PCMA", pt=8)
        a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr)
        b = engine.create_session(payload_type=8, codec="PCMA", remote=pb.addr)
        engine.bridge(a, b)  # transcoding: A's packets go through A's jitter buffer
        pa.start_tone(a.local_addr, 1000, loss=0.05, jitter=0.040, seed=7)
        await run_for(2.0)
        pa.close()
        pb.close()
        got = pb.audio(skip=0.3)
        assert len(got) > 8000 * 1.2  # most frames arrive despite 5 % loss
        assert dominant(got, 8000, [500, 1000, 2000]) == 1000
        st = a.statistics()
        assert st["rx_packets"] > 60
        assert st["jitter_concealed"] >= 1  # the 5 % loss is concealed, not played as garbage


async def test_recording_opens_with_wave(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    async with MediaEngine("127.0.0.1", PORTS) as engine:
        pa = Peer(codec="G722", pt=9)
        a = engine.create_session(payload_type=9, codec="G722", remote=pa.addr)
        rec = Recorder(path, sample_rate=8000)  # G.722 is 16 kHz: the link resamples
        link = engine.link(a, rec, fill_silence=True)
        pa.start_tone(a.local_addr, 1000)
        await run_for(1.0)
        link.close()
        assert rec.close() == path
        pa.close()
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(data) > 8000 * 0.8
    assert dominant(data[2400:], 8000, [500, 1000, 2000]) == 1000
    assert hears(data[2400:], 8000, 1000)


async def test_dtmf_sent_and_received_as_telephone_events() -> None:
    async with MediaEngine("127.0.0.1", PORTS) as engine:
        pa, pb = Peer(), Peer()
        a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr)
        b = engine.create_session(payload_type=0, codec="PCMU", remote=pb.addr,
                                  telephone_event_pt=101)
        got: list[str] = []
        a.on_dtmf = got.append
        engine.bridge(a, b)  # relay: PBX-generated DTMF on B, received DTMF on A
        # the phone on A sends "5" (start, continuation, 3 × end) between audio packets
        sender = dtmf.DtmfSender()
        sender.send("5", duration_ms=60)
        for i in range(8):
            for p in sender.tick(1000 + 160 * i):
                ssrc = pa.ssrc
                hdr = struct.pack("!BBHII", 0x80, (0x80 if p.marker else 0) | 101, pa._seq,
                                  p.timestamp, ssrc)
                pa._seq += 1
                pa.sock.sendto(hdr + p.payload, a.local_addr)
        await run_for(0.1)
        b.send_dtmf("1#", duration_ms=60, gap_ms=40)
        await run_for(0.6)
        pa.close()
        pb.close()
    # A decoded the phone's event once (the three end packets are one event)
    assert got == ["5"]
    # B's phone got the relayed "5" and the PBX's "1", "#" as RFC 4733 packets on PT 101
    rx = dtmf.DtmfReceiver()
    digits = []
    for d in pb.rtp():
        if d[1] & 0x7F == 101:
            digits += [x.digit for x in rx.receive(d[12:16], struct.unpack_from("!I", d, 4)[0],
                                                   bool(d[1] & 0x80))]
    assert digits == ["5", "1", "#"]


class FakeLoop:
    """Just enough of an event loop for MediaClock: a settable time and call_at."""

    def __init__(self) -> None:
        self.now = 100.0
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb: Callable[[], None]) -> Any:
        self.calls.append((when, cb))

        class Handle:
            def cancel(self) -> None:
                pass

        return Handle()

    def fire(self, at: float) -> None:
        self.now = at
        _, cb = self.calls.pop(0)
        cb()


def test_media_clock_absolute_deadlines_catch_up_and_overruns() -> None:
    loop = FakeLoop()
    clock = MediaClock(loop, max_catchup=3)  # type: ignore[arg-type]
    seen: list[float] = []
    clock.add(seen.append)
    clock.start()
    t0 = loop.calls[0][0]
    assert t0 == pytest.approx(100.02)
    # on time (with a little wake-up latency): one tick per wake, deadlines stay on the grid
    for i in range(5):
        loop.fire(t0 + i * 0.02 + 0.001)
        assert loop.calls[-1][0] == pytest.approx(t0 + (i + 1) * 0.02)  # not drifting
    assert seen == pytest.approx([t0 + i * 0.02 for i in range(5)])
    assert clock.overruns == 0
    # 45 ms late: the missed ticks run back to back, no more
    loop.fire(t0 + 5 * 0.02 + 0.045)
    assert len(seen) == 8 and clock.overruns == 1 and clock.skipped == 0
    assert loop.calls[-1][0] == pytest.approx(t0 + 8 * 0.02)
    # a 1 s stall: at most max_catchup ticks, the rest skipped and counted
    loop.fire(t0 + 8 * 0.02 + 1.0)
    assert len(seen) == 11
    assert clock.skipped == 51 - 3 and clock.overruns == 1 + 48 + 1
    assert loop.calls[-1][0] > loop.now


def test_media_clock_survives_a_failing_job() -> None:
    loop = FakeLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    errors: list[BaseException] = []
    clock.on_error = errors.append
    good: list[float] = []

    def bad(now: float) -> None:
        raise RuntimeError("boom")

    clock.add(bad)
    clock.add(good.append)
    clock.start()
    for _ in range(3):
        loop.fire(loop.calls[0][0])
    assert len(good) == 3 and len(errors) == 1


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
    async with MediaEngine("127.0.0.1", PORTS, rtcp_interval=0.2) as engine:
        pa = Peer()
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp.bind(("127.0.0.1", 0))
        rtcp.setblocking(False)
        a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr,
                                  remote_rtcp_port=rtcp.getsockname()[1])
        b = engine.create_session(payload_type=0, codec="PCMA", remote=pa.addr)
        engine.bridge(a, b)
        pa.start_tone(a.local_addr, 1000)
        await run_for(1.0)
        reports = []
        while True:
            try:
                reports.append(rtcp.recv(2048))
            except BlockingIOError:
                break
        rtcp.close()
        pa.close()
    assert reports
    # A only receives (the bridge sends its audio out of B), so A sends receiver reports.
    rr = reports[-1]
    assert rr[1] == 201 and rr[0] >> 6 == 2
    assert struct.unpack_from("!I", rr, 4)[0] == a.ssrc
    # one report block about the phone's stream: its SSRC, highest sequence number seen
    assert rr[0] & 0x1F == 1 and struct.unpack_from("!I", rr, 8)[0] == pa.ssrc


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
