"""The media engine keeps the sockets of ended sessions bound and reuses them (no per-call
socket/bind/close), without leaking packets from one session into the next."""

from __future__ import annotations

import asyncio
import os
import socket

from media.aio import MediaEngine

PORTS = (31800, 31899)  # 50 pairs: at most 6 spare


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_ended_session_sockets_are_reused_and_drained() -> None:
    async with MediaEngine("127.0.0.1", PORTS) as engine:
        first = engine.create_session(remote=("127.0.0.1", 9))
        port = first.local_port
        first.close()
        # A straggler for the ended session lands on the spare socket...
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            stale = bytes([0x80, 0]) + b"\x00\x01" + b"\x00" * 8 + b"\xff" * 160
            peer.sendto(stale, ("127.0.0.1", port))
            await asyncio.sleep(0.05)
            second = engine.create_session(remote=peer.getsockname())
            assert second.local_port == port  # the spare pair, not a fresh bind
            assert second.rtcp_port == port + 1
            assert second.local_addr == ("127.0.0.1", port)
            await asyncio.sleep(0.1)
            # ...and is drained before the new session sees anything: nothing was received.
            assert second.statistics()["rx_packets"] == 0
            # New packets from the new remote do arrive.
            fresh = bytes([0x80, 0]) + b"\x00\x05" + b"\x00" * 4 + b"\x12\x34\x56\x78" + b"\xff" * 160
            for i in range(6):
                peer.sendto(fresh[:2] + (5 + i).to_bytes(2, "big") + fresh[4:],
                            ("127.0.0.1", port))
            await asyncio.sleep(0.2)
            assert second.statistics()["rx_packets"] >= 1
            second.close()


async def test_spares_are_bounded_and_closed_with_the_engine() -> None:
    before = _open_fds()
    engine = MediaEngine("127.0.0.1", PORTS)
    await engine.start()
    assert engine.spare_max == 50 // 8
    sessions = [engine.create_session() for _ in range(20)]
    for s in sessions:
        s.close()
    # 20 ended sessions, 6 kept (two sockets each), the other 14 pairs closed.
    assert len(engine._spare) == engine.spare_max
    await engine.close()
    assert _open_fds() <= before  # no socket left behind


async def test_spares_never_exhaust_the_range() -> None:
    """Every pair of a small range is in use or spare: a session of the other shape (rtcp-mux)
    still gets a port because the spares are given up."""
    async with MediaEngine("127.0.0.1", (31900, 31915)) as engine:  # 8 pairs, 1 spare
        used = [engine.create_session() for _ in range(8)]
        used[0].close()  # one pair spare, seven in use: the range is full
        mux = engine.create_session(rtcp_mux=True)
        assert mux.local_port == used[0].local_port and mux.rtcp_port == mux.local_port
        for s in used[1:]:
            s.close()
        mux.close()


async def test_spares_with_descriptors_above_1024_are_reused() -> None:
    """A busy server has thousands of descriptors: reusing (and draining) a spare socket whose
    number is above FD_SETSIZE works (select() would refuse it), stragglers still dropped."""
    filler = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        async with MediaEngine("127.0.0.1", PORTS) as engine:
            first = engine.create_session(remote=("127.0.0.1", 9))
            assert engine._sockets[first][0].fileno() > 1024
            port = first.local_port
            first.close()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                peer.bind(("127.0.0.1", 0))
                peer.sendto(bytes([0x80, 0]) + b"\x00\x01" + b"\x00" * 8 + b"\xff" * 160,
                            ("127.0.0.1", port))
                await asyncio.sleep(0.05)
                second = engine.create_session(remote=peer.getsockname())
                assert second.local_port == port
                await asyncio.sleep(0.1)
                assert second.statistics()["rx_packets"] == 0
                second.close()
    finally:
        for fd in filler:
            os.close(fd)
