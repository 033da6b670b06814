"""The packet hub's latch window after a re-offer (``PacketHub.set_remote(slot, addr, now)``),
driven through ``accept`` with an explicit clock: the same rules in the Cython kernel and the
pure-Python reference."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from media import batchio

try:
    from media import _batchio
except ImportError:  # pragma: no cover - only under ASYNCPBX_NO_EXTENSIONS without a build
    _batchio = None  # type: ignore[assignment]

IMPLS = [batchio] + ([_batchio] if _batchio is not None else [])

OLD = ("127.0.0.1", 40002)
NEW = ("127.0.0.1", 40010)
NAT = ("127.0.0.1", 40020)  # the new signalled host, another port
STRANGER = ("127.0.0.2", 40030)


def _rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, 160 * seq, 0x1111) + bytes(160)


@pytest.fixture(params=IMPLS, ids=lambda m: m.__name__)
def hub(request: pytest.FixtureRequest) -> Iterator[tuple[Any, int]]:
    mod = request.param
    h = mod.PacketHub()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    slot = h.add(sock)
    try:
        yield h, slot
    finally:
        h.close()
        sock.close()


def _feed(h: Any, slot: int, addr: tuple[str, int], t0: float, n: int,
          seq0: int = 1) -> list[bool]:
    return [h.accept(slot, _rtp(seq0 + i), addr, t0 + 0.02 * i) for i in range(n)]


def test_window_constant_matches() -> None:
    for mod in IMPLS:
        assert mod.LATCH_WINDOW == batchio.LATCH_WINDOW > 0


def test_reoffer_refuses_the_old_source_and_latches_the_new_one(hub: tuple[Any, int]) -> None:
    h, slot = hub
    h.set_remote(slot, OLD)
    assert all(_feed(h, slot, OLD, 0.0, 10))
    h.set_remote(slot, NEW, 1.0)
    assert h.remote(slot) == NEW
    before = h.counters(slot)["source"]
    # the old port keeps sending in sequence: every packet refused and counted
    assert not any(_feed(h, slot, OLD, 1.0, 20, seq0=11))
    assert h.counters(slot)["source"] - before == 20
    assert h.remote(slot) == NEW
    # the new signalled address is accepted at once and stays the target
    assert h.accept(slot, _rtp(500), NEW, 1.5)
    assert not any(_feed(h, slot, OLD, 1.52, 10, seq0=31))
    assert h.remote(slot) == NEW


def test_first_packet_from_the_signalled_host_relatches_in_the_window(
        hub: tuple[Any, int]) -> None:
    h, slot = hub
    h.set_remote(slot, OLD)
    assert all(_feed(h, slot, OLD, 0.0, 5))
    h.set_remote(slot, NEW, 1.0)
    # a NAT rewrote the port: the first packet from the signalled host latches
    assert h.accept(slot, _rtp(1), NAT, 1.1)
    assert h.remote(slot) == NAT
    assert all(_feed(h, slot, NAT, 1.12, 5, seq0=2))
    # the window is closed: another port of that host is a stranger again
    assert not h.accept(slot, _rtp(9), ("127.0.0.1", 40040), 1.3)
    assert h.remote(slot) == NAT


def test_other_hosts_are_refused_in_the_window_without_probation(hub: tuple[Any, int]) -> None:
    h, slot = hub
    h.set_remote(slot, OLD)
    h.set_remote(slot, NEW, 10.0)
    before = h.counters(slot)["source"]
    # a sprayer on another address: many in-sequence packets inside the window, none taken
    assert not any(_feed(h, slot, STRANGER, 10.0, 40))
    assert h.counters(slot)["source"] - before == 40
    assert h.remote(slot) == NEW
    # after the window the ordinary rule is back (nobody alive: 4 in-sequence packets)
    t = 10.0 + batchio.LATCH_WINDOW + 0.1
    assert _feed(h, slot, STRANGER, t, 4, seq0=100) == [False, False, False, True]
    assert h.remote(slot) == STRANGER


def test_signalled_packet_closes_the_window(hub: tuple[Any, int]) -> None:
    h, slot = hub
    h.set_remote(slot, OLD)
    h.set_remote(slot, NEW, 0.0)
    assert h.accept(slot, _rtp(1), NEW, 0.1)
    # the window is over once the signalled address spoke: the NAT port needs probation and
    # is refused while NEW is alive
    assert not any(_feed(h, slot, NAT, 0.2, 8))
    assert h.remote(slot) == NEW


def test_without_now_no_window_opens(hub: tuple[Any, int]) -> None:
    h, slot = hub
    h.set_remote(slot, OLD)
    h.set_remote(slot, NEW)  # first signalling style: no re-offer semantics
    # a port of the same host is a stranger: ordinary probation (nobody alive yet)
    assert _feed(h, slot, NAT, 0.0, 4) == [False, False, False, True]
    assert h.remote(slot) == NAT


def test_same_address_again_opens_no_window(hub: tuple[Any, int]) -> None:
    h, slot = hub
    h.set_remote(slot, NEW)
    h.set_remote(slot, NEW, 5.0)  # hold/resume or a refresh keeps the address
    assert _feed(h, slot, NAT, 5.0, 4) == [False, False, False, True]


async def test_session_reoffer_relatches_on_the_signalled_host() -> None:
    # RtpSession.set_remote after the first address is a re-offer: the hub's latch window
    from media.aio import MediaEngine
    from tests.media.test_aio import Peer, run_for

    async with MediaEngine("127.0.0.1", (31800, 31863)) as engine:
        old, signalled, nat, stranger = Peer(), Peer(), Peer(), Peer("127.0.0.2")
        try:
            sess = engine.create_session(remote=old.addr)
            old.start_tone(sess.local_addr, 440.0)
            await run_for(0.2)
            assert sess.send_address == old.addr
            refused = engine.hub.counters(sess.slot)["source"]
            sess.set_remote(*signalled.addr)  # the phone moved; its NAT picked another port
            stranger.start_tone(sess.local_addr, 300.0)
            await run_for(0.3)
            assert sess.send_address == signalled.addr  # nobody latched yet
            nat.start_tone(sess.local_addr, 880.0)
            await run_for(0.3)
            assert sess.send_address == nat.addr
            assert engine.hub.counters(sess.slot)["source"] - refused >= 20
        finally:
            for p in (old, signalled, nat, stranger):
                p.close()
