"""Mid-call offer/answer and the rarer call paths through asyncpbx, with SIPp peers and Python
RTP peers where the outcome is audio: a callee's re-INVITE that moves its media and changes the
codec, an UPDATE with SDP, an offerless re-INVITE (offer in the 200, answer in the ACK), a late
offer (INVITE without SDP), a forked callee's second 200 (ACK + BYE), a 200 never ACKed (BYE after
Timer H) and the busy tone a caller hears before the 486."""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from media.dtmf import tone_ratio
from media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from tests.interop.harness import PbxProcess, free_port, running_pbx
from tests.interop.test_calls_sipp import (
    USERS,
    RtpPeer,
    SippUas,
    caller,
    events,
    final_statuses,
    messages,
    pbx_with,
    register_port,
)

pytestmark = pytest.mark.interop


class Recorder:
    """Records the RTP it receives: (arrival time, payload type, payload). With ``send_hz`` it
    also sends that tone (payload type ``send_pt``) every 20 ms to where the first packet came
    from (symmetric RTP), starting ``send_delay`` seconds after that packet, until closed."""

    def __init__(self, send_hz: float | None = None, send_pt: int = 0,
                 send_delay: float = 0.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.01)
        self.port = self.sock.getsockname()[1]
        self.packets: list[tuple[float, int, bytes]] = []
        self.send_hz, self.send_pt, self.send_delay = send_hz, send_pt, send_delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        remote: tuple[str, int] | None = None
        next_send = 0.0
        seq, ts = 1, 0
        encode = {0: ulaw_encode, 8: alaw_encode}[self.send_pt]
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                data, addr = self.sock.recvfrom(2048)
                if len(data) > 12:
                    self.packets.append((time.monotonic(), data[1] & 0x7F, data[12:]))
                    if remote is None:
                        remote = addr
                        next_send = time.monotonic() + self.send_delay
            if self.send_hz is not None and remote is not None and time.monotonic() >= next_send:
                n = np.arange(ts, ts + 160)
                pcm = (8000 * np.sin(2 * np.pi * self.send_hz * n / 8000)).astype(np.int16)
                pkt = struct.pack("!BBHII", 0x80, self.send_pt, seq, ts, 0x4321) + encode(pcm)
                with contextlib.suppress(OSError):
                    self.sock.sendto(pkt, remote)
                seq, ts = seq + 1, ts + 160
                next_send += 0.02

    def pcm(self, pt: int) -> np.ndarray:
        decode = {0: ulaw_decode, 8: alaw_decode}[pt]
        chunks = [np.asarray(decode(p), np.int16) for _, t, p in self.packets if t == pt]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def windows(pcm: np.ndarray, size: int = 800) -> list[np.ndarray]:
    return [pcm[i:i + size] for i in range(0, len(pcm) - size + 1, size)]


def hears(pcm: np.ndarray, freq: float, *, minimum: int = 5) -> bool:
    """At least ``minimum`` 100 ms windows dominated by ``freq``."""
    return sum(tone_ratio(w, freq, 8000) > 0.5 for w in windows(pcm)) >= minimum


@contextlib.contextmanager
def latch_remote(uas: SippUas, peer: RtpPeer) -> Iterator[None]:
    """Point ``peer`` at the PBX's RTP port from the INVITE the SIPp UAS received (for tests
    where the PBX sends the callee nothing it could learn the address from)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set() and peer.remote is None:
            m = re.search(r"^m=audio (\d+) ", uas.log(), re.M)
            if m is not None:
                peer.remote = ("127.0.0.1", int(m.group(1)))
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(2)


def run_call(pbx: PbxProcess, tmp: Path, uas_scenario: str, uac_scenario: str, *,
             uas_keys: dict[str, str], rtp_port: int, pause_ms: int = 4000,
             uac_extra: tuple[str, ...] = (), latch: RtpPeer | None = None) -> None:
    port = free_port()
    register_port(pbx, "101", USERS[1][1], port)
    uas = SippUas(tmp, uas_scenario, port, keys=uas_keys)
    try:
        with latch_remote(uas, latch) if latch is not None else contextlib.nullcontext():
            ok, failed, out = caller(pbx, tmp, uac_scenario, pause_ms=pause_ms,
                                     rtp_port=rtp_port, extra=uac_extra)
        rc, uas_out = uas.result()
    finally:
        uas.stop()
    assert (ok, failed) == (1, 0), out + messages(tmp)[-3000:]
    assert rc == 0, uas_out + uas.log()[-3000:]


# ------------------------------------------------------------------------------------ tests


def test_callee_reinvite_moves_media_and_switches_codec(tmp_path: Path) -> None:
    caller_rtp = RtpPeer(send_hz=1000.0)
    # the callee's old port keeps sending after the move (stale packets, in sequence); its new
    # port answers only 600 ms after the first packet reached it: the old port has had time
    # for far more than the 4 in-sequence packets a new source needs
    callee_first = Recorder(send_hz=700.0, send_pt=0)
    callee_moved = Recorder(send_hz=500.0, send_pt=8, send_delay=0.6)
    try:
        with pbx_with(tmp_path) as pbx:
            run_call(pbx, tmp_path, "call_uas_reinvite.xml", "call_uac.xml",
                     uas_keys={"rtp_port": str(callee_first.port),
                               "rtp_port2": str(callee_moved.port)},
                     rtp_port=caller_rtp.port)
    finally:
        for p in (caller_rtp, callee_first, callee_moved):
            p.close()
    # after the re-INVITE the callee gets the caller's tone as PCMA on its new port
    assert {pt for _, pt, _ in callee_moved.packets} >= {8}, callee_moved.packets[:3]
    assert hears(callee_moved.pcm(8), 1000.0)
    # ... and only there: the old port's packets did not pull the audio back
    # (a packet or two may have been under way when the re-INVITE moved the media; the bug
    # sent everything from the 5th stale packet until the new port spoke: ten or more)
    moved_at = callee_moved.packets[0][0]
    back = [round(t - moved_at, 3) for t, _, _ in callee_first.packets if t > moved_at]
    assert len(back) <= 3, f"{len(back)} packets went back to the old port: {back[:20]}"


@pytest.mark.parametrize("scenario", ["call_uac_update.xml", "call_uac_reinvite_nosdp.xml"])
def test_caller_moves_media_by_update_or_offerless_reinvite(tmp_path: Path,
                                                            scenario: str) -> None:
    # the first port sends nothing: the media core latches onto whatever source sends to it
    # (symmetric RTP), and a phone that moved its media stops sending from the old port
    caller_first = RtpPeer()
    caller_moved = Recorder()
    callee_rtp = RtpPeer(send_hz=1200.0)
    try:
        with pbx_with(tmp_path) as pbx:
            run_call(pbx, tmp_path, "call_uas_answer.xml", scenario,
                     uas_keys={"rtp_port": str(callee_rtp.port)}, rtp_port=caller_first.port,
                     uac_extra=("-key", "rtp_port2", str(caller_moved.port)), latch=callee_rtp)
    finally:
        for p in (caller_first, caller_moved, callee_rtp):
            p.close()
    # the callee's tone follows the caller to its new port
    assert hears(caller_moved.pcm(0), 1200.0)


def test_late_offer_invite_without_sdp(tmp_path: Path) -> None:
    caller_rtp = RtpPeer()
    callee_rtp = RtpPeer(send_hz=1200.0)
    try:
        with pbx_with(tmp_path) as pbx:
            run_call(pbx, tmp_path, "call_uas_answer.xml", "call_uac_late_offer.xml",
                     uas_keys={"rtp_port": str(callee_rtp.port)}, rtp_port=caller_rtp.port,
                     pause_ms=3000, latch=callee_rtp)
    finally:
        caller_rtp.close()
        callee_rtp.close()
    # the answer in the ACK told the PBX where the caller listens
    assert hears(caller_rtp.pcm(), 1200.0)


def test_forked_callees_second_200_is_acked_and_hung_up(tmp_path: Path) -> None:
    with pbx_with(tmp_path) as pbx:
        # the UAS scenario requires ACKs for both 200s, a BYE for the second dialog at once
        # and, after the caller's BYE, one for the first
        run_call(pbx, tmp_path, "call_uas_fork.xml", "call_uac.xml",
                 uas_keys={"rtp_port": str(free_port())}, rtp_port=free_port(), pause_ms=1500)
    ended = events(pbx, "call.ended")
    assert ended and ended[0]["answered"] is True and ended[0]["cause"] == "caller hung up"


def test_unacked_200_ends_the_call_with_bye(tmp_path: Path) -> None:
    # T1 = 50 ms: Timer H (64*T1) fires after 3.2 s
    config = "t1 = 0.05\n[media]\nport_min = 45000\nport_max = 45999\n"
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=config) as pbx:
        run_call(pbx, tmp_path, "call_uas_answer.xml", "call_uac_no_ack.xml",
                 uas_keys={"rtp_port": str(free_port())}, rtp_port=free_port())
        # both legs got BYE (the scenarios require it)
    ended = events(pbx, "call.ended")
    assert ended, "no call.ended"


def test_busy_callee_caller_hears_busy_tone_before_486(tmp_path: Path) -> None:
    caller_rtp = RtpPeer()
    try:
        with pbx_with(tmp_path, "[calls]\nbusy_tone = 2.5\n") as pbx:
            port = free_port()
            register_port(pbx, "101", USERS[1][1], port)
            uas = SippUas(tmp_path, "call_uas_busy.xml", port, keys={"rtp_port": str(free_port())})
            try:
                ok, failed, out = caller(pbx, tmp_path, "call_uac_fail.xml",
                                         rtp_port=caller_rtp.port,
                                         extra=["-key", "extra_header", "Subject: busy"])
                rc, uas_out = uas.result()
            finally:
                uas.stop()
            assert (ok, failed) == (1, 0), out
            assert rc == 0, uas_out
    finally:
        caller_rtp.close()
    log = messages(tmp_path)
    assert final_statuses(log)[-1] == 486
    assert log.index("SIP/2.0 183 ") < log.index("SIP/2.0 486 ")
    # the German busy tone: 425 Hz, 480 ms on / 480 ms off
    pcm = caller_rtp.pcm()
    states = []
    for w in windows(pcm, 400):  # 50 ms
        energy = float(np.mean(w.astype(np.float64) ** 2))
        if tone_ratio(w, 425.0, 8000) > 0.6:
            states.append("on")
        elif energy < 1000.0:
            states.append("off")
        else:
            states.append("?")
    runs = [(k, sum(1 for _ in g)) for k, g in itertools.groupby(states)]
    on_runs = [n for k, n in runs if k == "on"]
    off_runs = [n for k, n in runs[1:-1] if k == "off"]
    assert len(on_runs) >= 2, runs
    # cadence: whole on and off periods of about 480 ms (9-10 windows of 50 ms)
    assert any(8 <= n <= 11 for n in on_runs), runs
    assert off_runs and all(8 <= n <= 11 for n in off_runs), runs



def test_unrefreshed_session_timer_ends_the_call_with_bye(tmp_path: Path) -> None:
    # Min-SE cannot go below 90 s (RFC 4028), so this waits about 60 s: the caller asks to
    # refresh every 90 s and never does; BYE goes out at expiry minus 30 s
    with pbx_with(tmp_path) as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        uas = SippUas(tmp_path, "call_uas_answer.xml", port, keys={"rtp_port": str(free_port())},
                      timeout=100)
        try:
            ok, failed, out = caller(pbx, tmp_path, "call_uac_timer_expire.xml",
                                     rtp_port=free_port(), timeout=100.0)
            rc, uas_out = uas.result(timeout=110.0)
        finally:
            uas.stop()
        # the scenario requires the BYE with Reason "Session timer expired"
        assert (ok, failed) == (1, 0), out + messages(tmp_path)[-3000:]
        assert rc == 0, uas_out  # the callee was hung up as well
    assert events(pbx, "call.session_expired")
