"""RTP bleed and injection (SECURITY.md): while user 100 talks to user 101 through the PBX, a
sprayer on 127.0.0.8 sends in-sequence RTP with a marked payload to every port of the PBX's
whole RTP range (the ``[media]`` range, RTP and RTCP ports alike), many packets per port. The
sprayer receives 0 packets (no port hands it the call's audio) and neither phone receives a
single marked packet (0 injected, so 0 audible); the call's own audio flows both ways all the
while (the source filter of media/session.py: the signalled source only, a different one only
after in-sequence packets and never while the signalled one is alive)."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from tests.interop.harness import free_port, running_pbx
from tests.interop.test_calls_media2 import hears
from tests.interop.test_calls_sipp import (
    USERS,
    RtpPeer,
    SippUas,
    caller,
    messages,
    register_port,
)
from tests.security.test_enumeration import record
from tests.security.wire import need_aliases

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

SPRAYER = "127.0.0.8"
PORT_MIN, PORT_MAX = 46000, 46199


class RangeSprayer:
    """Sprays marked, in-sequence RTP (its own SSRC and sequence per port) over
    ``PORT_MIN..PORT_MAX`` of 127.0.0.1, one packet to every port per round, counting whatever
    comes back."""

    PAYLOAD = bytes([0x5A]) * 160

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((SPRAYER, 0))
        self.sock.setblocking(False)
        self.sent = 0
        self.received = 0
        self.rounds = 0
        self.active = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                self.sock.recvfrom(2048)
            except (BlockingIOError, OSError):
                return
            self.received += 1

    def _run(self) -> None:
        seq = 1
        while not self._stop.is_set():
            self._drain()
            if not self.active.is_set():
                time.sleep(0.01)
                continue
            for port in range(PORT_MIN, PORT_MAX + 1):
                pkt = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, 0xBAD0000 + port)
                with contextlib.suppress(OSError):
                    self.sock.sendto(pkt + self.PAYLOAD, ("127.0.0.1", port))
                    self.sent += 1
            seq += 1
            self.rounds += 1
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._drain()
        self.sock.close()


def test_range_sprayer_gets_nothing_and_injects_nothing(tmp_path: Path) -> None:
    need_aliases(SPRAYER)
    caller_rtp = RtpPeer(send_hz=1000.0)
    callee_rtp = RtpPeer(send_hz=700.0)
    sprayer = RangeSprayer()
    config = f"[media]\nport_min = {PORT_MIN}\nport_max = {PORT_MAX}\n"
    try:
        with running_pbx(tmp_path, transports=("udp",), users=USERS,
                         config_extra=config) as pbx:
            port = free_port()
            register_port(pbx, "101", USERS[1][1], port)
            uas = SippUas(tmp_path, "call_uas_answer.xml", port,
                          keys={"rtp_port": str(callee_rtp.port)})

            def aim() -> None:  # spray once the call's media flows
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not callee_rtp.received:
                    time.sleep(0.02)
                sprayer.active.set()

            aimer = threading.Thread(target=aim, daemon=True)
            aimer.start()
            try:
                ok, failed, out = caller(pbx, tmp_path, pause_ms=4000, rtp_port=caller_rtp.port)
                rc, uas_out = uas.result()
            finally:
                uas.stop()
            assert (ok, failed) == (1, 0), out
            assert rc == 0, uas_out
    finally:
        for p in (caller_rtp, callee_rtp):
            p.close()
        sprayer.close()
    assert sprayer.active.is_set() and sprayer.rounds >= 50, (sprayer.rounds, sprayer.sent)
    # the PBX's media ports of this call lie in the sprayed range
    pbx_ports = {int(p) for p in re.findall(r"^m=audio (\d+) ", messages(tmp_path), re.M)
                 if int(p) != caller_rtp.port}
    assert pbx_ports and all(PORT_MIN <= p <= PORT_MAX for p in pbx_ports), pbx_ports
    injected = sum(p == RangeSprayer.PAYLOAD for peer in (caller_rtp, callee_rtp)
                   for _, p in peer.received)
    # the call's audio flowed both ways during the spray
    assert hears(callee_rtp.pcm(), 1000.0) and hears(caller_rtp.pcm(), 700.0)
    record("rtp_bleed", {"ports": PORT_MAX - PORT_MIN + 1, "sprayed": sprayer.sent,
                         "rounds": sprayer.rounds, "sprayer_received": sprayer.received,
                         "injected_heard": injected})
    assert sprayer.received == 0
    assert injected == 0
