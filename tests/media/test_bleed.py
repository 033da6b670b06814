"""RTP bleed / injection (SECURITY.md): a sprayer over the whole port range during a call.

The sprayer, on another loopback address, sends in-sequence RTP (a 3 kHz tone, recognisable
payloads) to every port of the engine's range, RTP and RTCP, again and again, while two phones
talk. It must receive nothing, and the callee must hear none of it.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import numpy as np
import pytest

from media.aio import MediaEngine, make_codec
from tests.media.test_aio import Peer, goertzel, hears, tone

RANGE = (31200, 31263)


async def _spray(sock: socket.socket, rounds: int, stop: asyncio.Event) -> int:
    codec = make_codec("PCMU")
    payload = codec.encode(tone(3000, 8000, 160, amp=12000))
    sent = 0
    seq = 0
    for _ in range(rounds):
        if stop.is_set():
            break
        for port in range(RANGE[0], RANGE[1] + 1):
            for pt in (0, 8):
                pkt = struct.pack("!BBHII", 0x80, pt, seq, seq * 160, 0x5A5A5A5A) + payload
                try:
                    sock.sendto(pkt, ("127.0.0.1", port))
                    sent += 1
                except OSError:
                    pass
        seq = (seq + 1) & 0xFFFF
        await asyncio.sleep(0.01)
    return sent


@pytest.mark.parametrize("mode", ["relay", "transcode", "conference"])
async def test_sprayer_gets_nothing_and_injects_nothing(mode: str) -> None:
    sprayer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sprayer.bind(("127.0.0.2", 0))
    sprayer.setblocking(False)
    got_by_sprayer: list[bytes] = []
    loop = asyncio.get_running_loop()

    def on_read() -> None:
        while True:
            try:
                got_by_sprayer.append(sprayer.recv(4096))
            except BlockingIOError:
                return

    loop.add_reader(sprayer.fileno(), on_read)
    try:
        async with MediaEngine("127.0.0.1", RANGE) as engine:
            pa, pb = Peer(), Peer()
            a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr)
            b_codec = "PCMA" if mode == "transcode" else "PCMU"
            pb.pt = 8 if mode == "transcode" else 0
            pb.codec = make_codec(b_codec)
            b = engine.create_session(payload_type=pb.pt, codec=b_codec, remote=pb.addr)
            if mode == "conference":
                conf = engine.conference()
                conf.add(a)
                conf.add(b)
            else:
                engine.bridge(a, b)
            pa.start_tone(a.local_addr, 1000)
            pb.start_tone(b.local_addr, 500)
            await asyncio.sleep(0.2)  # the call is up and both phones are talking
            stop = asyncio.Event()
            sent = await _spray(sprayer, 60, stop)
            await asyncio.sleep(0.2)
            pa.close()
            pb.close()
            stats = engine.statistics()
        await asyncio.sleep(0.05)
        assert sent > 60 * 2 * 32
        assert got_by_sprayer == []
        # every packet a phone got came from its own leg's port, none carries the sprayer's SSRC
        for peer, leg in ((pa, a), (pb, b)):
            assert {addr for _, _, addr in peer.received} <= {leg.local_addr}
        heard_b = pb.audio(skip=0.25)
        heard_a = pa.audio(skip=0.25)
        assert len(heard_b) > 8000 * 0.5
        assert hears(heard_b, 8000, 1000) and hears(heard_a, 8000, 500)
        # the 3 kHz injected tone is absent: far below the real tone
        for heard, real in ((heard_b, 1000), (heard_a, 500)):
            assert goertzel(heard, 8000, 3000) < 1e-3 * goertzel(heard, 8000, real)
        assert stats["source"] >= 2 * 60  # sprays at the two legs' ports were refused
        codec = make_codec("PCMU")
        injected = codec.encode(tone(3000, 8000, 160, amp=12000))
        assert all(d[12:] != injected for d in pb.rtp() + pa.rtp())
    finally:
        loop.remove_reader(sprayer.fileno())
        sprayer.close()


async def test_nat_latching_needs_four_in_sequence_from_one_source() -> None:
    """Before the signalled source ever speaks (a phone behind NAT), the first source that sends
    4 in-sequence packets is latched and answered; a second source is then refused."""
    async with MediaEngine("127.0.0.1", RANGE) as engine:
        nat, other = Peer(host="127.0.0.3"), Peer(host="127.0.0.4")
        a = engine.create_session(payload_type=0, codec="PCMU", remote=("127.0.0.1", 9))
        b = engine.create_session(payload_type=0, codec="PCMU", remote=("127.0.0.1", 9))
        conf = engine.conference()
        conf.add(a)
        conf.add(b)
        pb = Peer()
        b.set_remote(*pb.addr)
        pb.start_tone(b.local_addr, 700)
        for i in range(3):
            nat.sock.sendto(nat.packet(tone(1000, 8000, 160, start=160 * i)), a.local_addr)
        await asyncio.sleep(0.1)
        assert a.send_address == ("127.0.0.1", 9)
        nat.start_tone(a.local_addr, 1000)
        await asyncio.sleep(0.6)
        assert a.send_address == nat.addr
        other.start_tone(a.local_addr, 3000)
        await asyncio.sleep(0.4)
        for p in (nat, other, pb):
            p.close()
        assert a.send_address == nat.addr
        assert other.received == []
        heard = nat.audio(skip=0.2)
        assert hears(heard, 8000, 700)
        heard_b = pb.audio(skip=0.3)
        assert goertzel(heard_b, 8000, 3000) < 1e-3 * goertzel(heard_b, 8000, 1000)
        assert np.any(heard_b)
