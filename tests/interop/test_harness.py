"""The interop harness's own promises (what the peer tests rely on)."""

from __future__ import annotations

import socket

from tests.interop.harness import GUESS_PORTS, MEDIA_PORTS, _ephemeral_ports, free_port


def test_free_port_is_outside_the_kernels_pick_and_the_media_ranges() -> None:
    """A guessed peer port can never be handed to a socket binding port 0 (a CI run lost a
    SIPp callee that way) nor to a PBX's RTP allocator; it binds, and is never given twice."""
    eph_lo, eph_hi = _ephemeral_ports()
    ports = [free_port() for _ in range(50)] + [free_port(kind=socket.SOCK_STREAM)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert GUESS_PORTS[0] <= port <= GUESS_PORTS[1]
        assert not eph_lo <= port <= eph_hi
        assert not MEDIA_PORTS[0] <= port <= MEDIA_PORTS[1]
    # what the kernel hands out for port 0 right after: none of ours
    socks = []
    try:
        for _ in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            assert s.getsockname()[1] not in ports
        # and a guessed port really is free for the peer to bind
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", ports[0]))
    finally:
        for s in socks:
            s.close()
