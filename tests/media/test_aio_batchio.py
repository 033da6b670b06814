"""The packet hub: the Cython kernel and the pure-Python reference behave identically."""

from __future__ import annotations

import random
import socket
import struct
import time
from typing import Any

import pytest

from media import _accel, batchio

try:
    from media import _batchio
except ImportError:  # pragma: no cover - only under ASYNCPBX_NO_EXTENSIONS without a build
    _batchio = None  # type: ignore[assignment]

IMPLS = [batchio] + ([_batchio] if _batchio is not None else [])


def test_extension_loaded() -> None:
    if _accel.extensions_disabled():
        pytest.skip("ASYNCPBX_NO_EXTENSIONS=1")
    assert _batchio is not None


def _udp(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    return s


def _drain(s: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(s.recv(4096))
        except BlockingIOError:
            return out


def _pkt(rnd: random.Random, seq: int, ts: int, ssrc: int) -> bytes:
    kind = rnd.random()
    good = struct.pack("!BBHII", 0x80, rnd.choice([0, 0, 0, 101, 13]), seq, ts, ssrc) + bytes(
        rnd.randrange(0, 200)
    )
    if kind < 0.8:
        return good
    variants = [
        good[: rnd.randrange(0, 12)],
        bytes([rnd.randrange(256)]) + good[1:],
        bytes([0x80 | rnd.randrange(16)]) + good[1:20],
        bytes([0x90]) + good[1:12] + struct.pack("!HH", 0xBEDE, rnd.randrange(100)) + good[12:40],
        bytes([0xA0]) + good[1:-1] + bytes([rnd.randrange(256)]),
        struct.pack("!BBHI", 0x80, 200, 6, ssrc) + bytes(20),  # RTCP on the RTP port
    ]
    return rnd.choice(variants)


def _run_trace(impl: Any, seed: int) -> list[Any]:
    rnd = random.Random(seed)
    hub = impl.PacketHub()
    rx, tx = _udp("127.0.0.1"), _udp("127.0.0.1")
    far = _udp("127.0.0.1")  # the relay target's phone
    senders = [_udp("127.0.0.1"), _udp("127.0.0.2"), _udp("127.0.0.3")]
    try:
        a = hub.add(rx, rtcp_mux=True)
        b = hub.add(tx)
        hub.set_remote(a, senders[0].getsockname())
        hub.set_remote(b, far.getsockname())
        hub.set_ssrc(b, 0xB0B, 1000, 5000)
        relay = seed % 2 == 0
        if relay:
            pt_map = bytearray(b"\xff" * 128)
            pt_map[0] = 8
            pt_map[101] = 96
            hub.set_relay(a, b, bytes(pt_map), 101, 960 if seed % 4 == 0 else 160)
        names = {s.getsockname(): f"sender{i}" for i, s in enumerate(senders)}
        seqs = [rnd.randrange(65536) for _ in senders]
        now = 100.0
        log: list[Any] = []
        for _ in range(80):
            i = rnd.choices([0, 1, 2], [5, 3, 2])[0]
            if rnd.random() < 0.1:
                seqs[i] = rnd.randrange(65536)
            senders[i].sendto(_pkt(rnd, seqs[i], seqs[i] * 160, 1 + i), rx.getsockname())
            seqs[i] = (seqs[i] + 1) & 0xFFFF
            time.sleep(0.0005)
            now += rnd.choice([0.02, 0.02, 0.5, 1.5])
            got = hub.poll(now)
            log.append([(s, d, addr and names[addr]) for s, d, addr in got])
            log.append(names.get(hub.remote(a)))
        time.sleep(0.01)
        log.append(_drain(far))
        log.append(hub.counters(a))
        log.append(hub.counters(b))
        log.append(hub.last_sent(b))
        return log
    finally:
        hub.close()
        for s in (rx, tx, far, *senders):
            s.close()


@pytest.mark.skipif(len(IMPLS) < 2, reason="extension not built")
@pytest.mark.parametrize("seed", range(12))
def test_kernel_matches_reference(seed: int) -> None:
    ref = _run_trace(batchio, seed)
    fast = _run_trace(_batchio, seed)
    assert fast == ref
    assert ref[-3]["rx_packets"] == 80


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__)
def test_stranger_never_accepted_while_signalled_source_alive(impl: Any) -> None:
    hub = impl.PacketHub()
    rx, phone, sprayer = _udp("127.0.0.1"), _udp("127.0.0.1"), _udp("127.0.0.2")
    try:
        slot = hub.add(rx)
        hub.set_remote(slot, phone.getsockname())
        now = 10.0
        for seq in range(50):
            phone.sendto(struct.pack("!BBHII", 0x80, 0, seq, 0, 1), rx.getsockname())
            sprayer.sendto(struct.pack("!BBHII", 0x80, 0, seq, 0, 2), rx.getsockname())
            time.sleep(0.0005)
            got = hub.poll(now)
            assert all(d[8:12] == b"\x00\x00\x00\x01" for _, d, _ in got)
            now += 0.02
        assert hub.remote(slot) == phone.getsockname()
        assert hub.counters(slot)["source"] == 50
        # The phone goes quiet for > 2 s (NAT rebinding): 4 in-sequence packets move the target.
        now += 3.0
        for seq in range(100, 104):
            sprayer.sendto(struct.pack("!BBHII", 0x80, 0, seq, 0, 2), rx.getsockname())
            time.sleep(0.0005)
            got = hub.poll(now)
            assert bool(got) == (seq == 103)
            now += 0.02
        assert hub.remote(slot) == sprayer.getsockname()
    finally:
        hub.close()
        for s in (rx, phone, sprayer):
            s.close()


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__)
def test_header_length(impl: Any) -> None:
    base = struct.pack("!BBHII", 0x80, 0, 1, 2, 3)
    assert impl.rtp_header_length(base) == 12
    assert impl.rtp_header_length(base[:11]) == -1
    assert impl.rtp_header_length(b"\x82" + base[1:] + bytes(8)) == 20
    assert impl.rtp_header_length(b"\x82" + base[1:] + bytes(7)) == -1
    ext = b"\x90" + base[1:] + b"\xbe\xde\x00\x01" + bytes(4)
    assert impl.rtp_header_length(ext) == 20
    assert impl.rtp_header_length(ext[:-1]) == -1
    assert impl.rtp_header_length(b"\xa0" + base[1:] + b"\x00\x00\x03") == 12
    assert impl.rtp_header_length(b"\xa0" + base[1:] + b"\x00\x00\x00") == -1
    assert impl.is_rtcp(b"\x80\xc8") and not impl.is_rtcp(b"\x80\x00")


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__)
def test_send_and_recv_batch(impl: Any) -> None:
    tx = _udp("127.0.0.1")
    rxs = [_udp("127.0.0.1") for _ in range(3)]
    try:
        packets = [bytes([i]) * (i + 1) for i in range(150)]
        addrs = [rxs[i % 3].getsockname() for i in range(150)]
        assert impl.send_batch(tx, packets, addrs) == 150
        time.sleep(0.01)
        got = [impl.recv_batch(r, 1000) for r in rxs]
        for k, r in enumerate(got):
            assert [d for d, _ in r] == packets[k::3]
            assert {a for _, a in r} == {tx.getsockname()}
        assert impl.recv_batch(rxs[0]) == []
        with pytest.raises(ValueError):
            impl.send_batch(tx, packets[:2], addrs[:1])
    finally:
        tx.close()
        for r in rxs:
            r.close()


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__)
def test_send_rtp_rows(impl: Any) -> None:
    import numpy as np

    hub = impl.PacketHub()
    legs = [_udp("127.0.0.1") for _ in range(3)]
    phones = [_udp("127.0.0.1") for _ in range(3)]
    try:
        slots = [hub.add(s) for s in legs]
        for slot, phone, ssrc in zip(slots, phones, (11, 22, 33), strict=True):
            hub.set_remote(slot, phone.getsockname())
            hub.set_ssrc(slot, ssrc, 0xFFFF, 1000)
        hub.set_remote(slots[2], None)  # no remote: skipped
        payloads = np.arange(4 * 160, dtype=np.uint32).astype(np.uint8).reshape(4, 160)
        sent = hub.send_rtp_rows(
            np.array(slots, np.int32), payloads, np.array([3, 1, 0], np.int64),
            np.array([0, 8, 0], np.uint8), 160,
        )
        assert sent == 2
        time.sleep(0.01)
        got = [_drain(p) for p in phones]
        assert got[2] == []
        assert got[0] == [struct.pack("!BBHII", 0x80, 0, 0, 1160, 11) + payloads[3].tobytes()]
        assert got[1] == [struct.pack("!BBHII", 0x80, 8, 0, 1160, 22) + payloads[1].tobytes()]
        assert hub.last_sent(slots[0]) == (0, 1160)
        assert hub.counters(slots[0])["tx_packets"] == 1
    finally:
        hub.close()
        for s in legs + phones:
            s.close()


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__)
def test_ipv6_source_rule_and_send(impl: Any) -> None:
    def udp6() -> socket.socket:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.setblocking(False)
        return s

    try:
        rx, phone, other = udp6(), udp6(), udp6()
    except OSError:  # pragma: no cover - no IPv6 loopback on this host
        pytest.skip("no ::1")
    hub = impl.PacketHub()
    try:
        slot = hub.add(rx)
        hub.set_remote(slot, phone.getsockname()[:2])
        pkt = struct.pack("!BBHII", 0x80, 0, 1, 0, 7)
        other.sendto(pkt, rx.getsockname())
        phone.sendto(pkt, rx.getsockname())
        time.sleep(0.005)
        got = hub.poll(50.0)
        assert [d for _, d, _ in got] == [pkt]
        assert hub.counters(slot)["source"] == 1
        assert hub.remote(slot) == phone.getsockname()[:2]
        assert hub.send(slot, b"hello")
        time.sleep(0.005)
        assert phone.recv(100) == b"hello"
    finally:
        hub.close()
        for s in (rx, phone, other):
            s.close()
