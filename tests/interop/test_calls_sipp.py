"""Calls through asyncpbx between SIPp peers: the caller is a SIPp UAC authenticating its INVITE
with 407, callees are SIPp UASs whose contacts are registered first (from the very UDP port the
UAS then binds, so ``Binding.received`` is the UAS). Media is checked with small Python RTP
peers where the test is about audio (music on hold, dead-call reaping)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from media.g711 import linear_to_ulaw, ulaw_to_linear
from sipcore.digest import DigestClient
from sipcore.message import Request, Response, parse_message
from tests.interop.harness import (
    SCENARIOS,
    PbxProcess,
    free_port,
    need,
    read_log,
    running_pbx,
    sipp,
    users_csv,
)
from tests.interop.moh_audio import is_music_on_hold

pytestmark = pytest.mark.interop

USERS = [("100", "pw-100-secret"), ("101", "pw-101-secret"), ("102", "pw-102-secret")]
REALM = "asyncpbx-test"


# ------------------------------------------------------------------------------------ helpers


def register_port(pbx: PbxProcess, ext: str, password: str, port: int, host: str = "127.0.0.1",
                  expires: int = 600) -> None:
    """REGISTER ``sip:ext@host:port`` from ``host:port`` itself (so the PBX's Binding.received is
    where a SIPp UAS binds next)."""
    server = pbx.addr("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.settimeout(5)
        call_id = os.urandom(6).hex()

        def request(cseq: int) -> Request:
            text = (
                f"REGISTER sip:{server[0]} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{os.urandom(5).hex()};rport\r\n"
                f"From: <sip:{ext}@{server[0]}>;tag={os.urandom(4).hex()}\r\n"
                f"To: <sip:{ext}@{server[0]}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{ext}@{host}:{port}>\r\nExpires: {expires}\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n")
            msg = parse_message(text.encode())
            assert isinstance(msg, Request)
            return msg

        s.sendto(request(1).serialize(), server)
        challenge = parse_message(s.recv(65535))
        assert isinstance(challenge, Response) and challenge.status == 401
        authed = DigestClient().authorize(request(2), challenge, ext, password, realm=REALM)
        s.sendto(authed.serialize(), server)
        ok = parse_message(s.recv(65535))
        assert isinstance(ok, Response) and ok.status == 200, ok


class SippUas:
    """A SIPp UAS in the background on a registered port; ``result()`` waits for it."""

    def __init__(self, workdir: Path, scenario: str, port: int, *, keys: dict[str, str],
                 pause_ms: int = 500, calls: int = 1, name: str = "uas",
                 timeout: int = 40) -> None:
        self.workdir = workdir
        self.stat = workdir / f"{name}-{port}.csv"
        self.errors = workdir / f"{name}-{port}-errors.log"
        args = [need("sipp"), "-sf", str(SCENARIOS / scenario), "-t", "u1", "-i", "127.0.0.1",
                "-p", str(port), "-m", str(calls), "-d", str(pause_ms), "-nostdin",
                "-timeout", f"{timeout}s", "-timeout_error", "-trace_stat", "-stf", str(self.stat),
                "-trace_err", "-error_file", str(self.errors), "-trace_msg",
                "-message_file", str(workdir / f"{name}-{port}-messages.log")]
        for k, v in keys.items():
            args += ["-key", k, v]
        self.messages = workdir / f"{name}-{port}-messages.log"
        self.proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                     errors="replace")
        time.sleep(0.3)  # let it bind

    def result(self, timeout: float = 45.0) -> tuple[int, str]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        err = read_log(self.errors)[-3000:]
        return self.proc.returncode, (out or "")[-3000:] + err

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def log(self) -> str:
        return read_log(self.messages)


_ULAW = np.array([ulaw_to_linear(c) for c in range(256)], np.int16)


def ulaw_decode(payload: bytes) -> np.ndarray:
    return _ULAW[np.frombuffer(payload, np.uint8)]


def ulaw_encode(pcm: np.ndarray) -> bytes:
    return bytes(linear_to_ulaw(int(x)) for x in pcm)


class RtpPeer:
    """A Python RTP endpoint: records PCMU it receives; optionally sends a tone (PCMU)."""

    def __init__(self, send_hz: float | None = None, host: str = "127.0.0.1", *,
                 paced_from_latch: bool = False, sdp_from: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        # short: the send cadence (20 ms) must not depend on what arrives
        self.sock.settimeout(0.005)
        self.port = self.sock.getsockname()[1]
        self.received: list[tuple[float, bytes]] = []
        #: RFC 4733 telephone-event payloads (payload type 101) as received
        self.events: list[bytes] = []
        self.send_hz = send_hz
        self.remote: tuple[str, int] | None = None
        #: Start the 20 ms cadence when the PBX's first packet arrives (no catch-up burst of
        #: the time before: a transcoding leg's jitter buffer sees a phone, not a flood).
        self.paced_from_latch = paced_from_latch
        #: A SIPp message trace to read the PBX's SDP from: a sender starts on the address the
        #: PBX offered (as a phone does) instead of waiting for the PBX's first packet, which a
        #: loaded machine may deliver late or, with nothing to relay yet, not at all.
        self.sdp_from = sdp_from
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq, ts, ssrc = 1, 0, 0x1234
        next_send = time.monotonic()
        next_look = 0.0
        while not self._stop.is_set():
            if self.remote is None and self.sdp_from is not None and \
                    time.monotonic() >= next_look:
                next_look = time.monotonic() + 0.02
                self.remote = self._offered_address()
            with contextlib.suppress(TimeoutError, OSError):
                data, addr = self.sock.recvfrom(2048)
                if self.remote is None:
                    self.remote = addr  # symmetric RTP: answer where the PBX sends from
                    if self.paced_from_latch:
                        next_send = time.monotonic()
                if len(data) > 12 and data[1] & 0x7F == 0:
                    self.received.append((time.monotonic(), data[12:]))
                elif len(data) >= 16 and data[1] & 0x7F == 101:
                    self.events.append(data[12:16])
            if self.send_hz is not None and self.remote is not None and \
                    time.monotonic() >= next_send:
                n = np.arange(ts, ts + 160)
                pcm = (8000 * np.sin(2 * np.pi * self.send_hz * n / 8000)).astype(np.int16)
                pkt = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + ulaw_encode(pcm)
                self.sock.sendto(pkt, self.remote)
                seq, ts = seq + 1, ts + 160
                next_send += 0.02

    def _offered_address(self) -> tuple[str, int] | None:
        """The first audio address in ``sdp_from`` that is not this peer's own (the SDP the
        PBX sent to the SIPp phone), or None while there is none."""
        assert self.sdp_from is not None
        try:
            text = self.sdp_from.read_text(errors="replace")
        except OSError:
            return None
        for sdp in re.finditer(r"c=IN IP4 ([0-9.]+)\r?\n(?:.*\r?\n)*?m=audio (\d+)", text):
            if int(sdp.group(2)) != self.port:
                return sdp.group(1), int(sdp.group(2))
        return None

    def pcm(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        chunks = [ulaw_decode(p) for t, p in self.received if since <= t < until]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def caller(pbx: PbxProcess, tmp: Path, scenario: str = "call_uac.xml", *, dst: str = "101",
           pause_ms: int = 1000, rtp_port: int | None = None, extra: Sequence[str] = (),
           timeout: float = 40.0) -> tuple[int, int, str]:
    inf = users_csv(tmp / f"caller-{time.monotonic_ns()}.csv", [USERS[0]])
    host, port = pbx.addr("udp")
    # SIPp's digest-uri defaults to remote_ip:port, which we accept too (test_auth_sipp.py);
    # -auth_uri makes it name the Request-URI, which strict_digest_uri would insist on
    res = sipp(scenario, pbx.addr("udp"), tmp, inf=inf, timeout=timeout,
               extra=["-auth_uri", f"{dst}@{host}:{port}", "-key", "dst", dst, "-key", "rtp_port", str(rtp_port or free_port()), "-d", str(pause_ms),
                      "-trace_msg", "-message_file", str(tmp / "caller-messages.log"), *extra])
    return res.successful, res.failed, res.output


def events(pbx: PbxProcess, name: str) -> list[dict[str, object]]:
    return [e for e in pbx.log_events() if e.get("event") == name]


@contextlib.contextmanager
def pbx_with(tmp: Path, extra: str = "") -> Iterator[PbxProcess]:
    config = "[media]\nport_min = 40000\nport_max = 44999\n" + extra
    with running_pbx(tmp, transports=("udp",), users=USERS, config_extra=config) as pbx:
        yield pbx


# -------------------------------------------------------------------------------------- tests


def call_101(pbx: PbxProcess, tmp: Path, scenario: str, rtp_port: int, pause_ms: int) -> None:
    """100 calls 101, a SIPp UAS playing ``scenario``, through ``pbx``; both ends succeed."""
    port = free_port()
    register_port(pbx, "101", USERS[1][1], port)
    uas = SippUas(tmp, scenario, port, keys={"rtp_port": str(rtp_port)})
    try:
        ok, failed, out = caller(pbx, tmp, pause_ms=pause_ms)
        rc, uas_out = uas.result()
    finally:
        uas.stop()
    assert (ok, failed) == (1, 0), out
    assert rc == 0, uas_out


def test_basic_call_answered_and_caller_hangs_up(tmp_path: Path) -> None:
    with pbx_with(tmp_path) as pbx:
        call_101(pbx, tmp_path, "call_uas_answer.xml", free_port(), pause_ms=1000)
    # The challenged INVITE gets its 407 alone (the 100 Trying waits for the TU, which answers
    # at once); the authenticated one, which the TU forwards to a callee that rings at once,
    # gets the relayed ringing within the 200 ms the 100 waits (§17.2.1) and so no 100 at all.
    received = responses_by_cseq(messages(tmp_path))
    assert received[(1, "INVITE")] == [407], received
    assert received[(2, "INVITE")][0] in (180, 183), received
    assert 100 not in received[(2, "INVITE")] and received[(2, "INVITE")][-1] == 200, received
    # read the log once the server has stopped: call.ended follows the last 200 OK
    started = events(pbx, "call.started")
    answered = events(pbx, "call.answered")
    ended = events(pbx, "call.ended")
    assert started and started[0]["caller"] == "100" and started[0]["callee"] == "101"
    assert answered and answered[0]["call_id"] == started[0]["call_id"]
    assert ended and ended[0]["status"] == 200 and ended[0]["cause"] == "caller hung up"


def test_slow_callee_caller_gets_100_trying_first(tmp_path: Path) -> None:
    """A callee that takes 600 ms to ring: the caller's INVITE gets its 100 Trying after the
    200 ms the PBX waits for a provisional to relay (§17.2.1), then the ringing and the 200."""
    with pbx_with(tmp_path) as pbx:
        call_101(pbx, tmp_path, "call_uas_slow_ring.xml", free_port(), pause_ms=200)
    received = responses_by_cseq(messages(tmp_path))
    assert received[(1, "INVITE")] == [407], received
    statuses = received[(2, "INVITE")]
    assert statuses[0] == 100 and statuses.count(100) == 1, received
    assert statuses[1] in (180, 183) and statuses[-1] == 200, received


def final_statuses(log: str) -> list[int]:
    """Final response codes (>= 300) in a SIPp message log, in order."""
    import re

    return [int(s) for s in re.findall(r"^SIP/2\.0 ([3-6]\d\d) ", log, re.M)]


def responses_by_cseq(log: str) -> dict[tuple[int, str], list[int]]:
    """The statuses received per (CSeq number, method) in a SIPp message log, in order."""
    import re

    out: dict[tuple[int, str], list[int]] = {}
    for message in re.split(r"^-{10,}.*$", log, flags=re.M):
        status = re.search(r"^SIP/2\.0 (\d{3}) ", message, re.M)
        cseq = re.search(r"^CSeq:\s*(\d+)\s+(\w+)", message, re.M | re.I)
        if status and cseq and "message received" in message:
            out.setdefault((int(cseq[1]), cseq[2]), []).append(int(status[1]))
    return out


def messages(tmp: Path, name: str = "caller-messages.log") -> str:
    return read_log(tmp / name)


def test_callee_hangs_up(tmp_path: Path) -> None:
    with pbx_with(tmp_path) as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        uas = SippUas(tmp_path, "call_uas_bye.xml", port, keys={"rtp_port": str(free_port())},
                      pause_ms=1000)
        try:
            ok, failed, out = caller(pbx, tmp_path, "call_uac_wait_bye.xml")
            rc, uas_out = uas.result()
        finally:
            uas.stop()
        assert (ok, failed) == (1, 0), out
        assert rc == 0, uas_out
    ended = events(pbx, "call.ended")
    assert ended and ended[0]["cause"] == "callee hung up" and ended[0]["answered"] is True


def test_caller_cancel_reaches_the_callee(tmp_path: Path) -> None:
    with pbx_with(tmp_path) as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        uas = SippUas(tmp_path, "call_uas_ring.xml", port, keys={"rtp_port": str(free_port())},
                      name="ring")
        try:
            ok, failed, out = caller(pbx, tmp_path, "call_uac_cancel.xml", pause_ms=500)
            rc, uas_out = uas.result()
        finally:
            uas.stop()
        assert (ok, failed) == (1, 0), out
        assert rc == 0, uas_out  # the callee leg got CANCEL (200 + 487 + ACK)
        cancel = uas.log().split("CANCEL sip:", 1)
        assert len(cancel) == 2
        assert "Call completed elsewhere" not in cancel[1].split("\n\n", 1)[0]
    ended = events(pbx, "call.ended")
    assert ended and ended[0]["answered"] is False and ended[0]["status"] == 487


def test_busy_callee_gives_486(tmp_path: Path) -> None:
    with pbx_with(tmp_path) as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        uas = SippUas(tmp_path, "call_uas_busy.xml", port, keys={"rtp_port": str(free_port())})
        try:
            ok, failed, out = caller(pbx, tmp_path, "call_uac_fail.xml",
                                     extra=["-key", "extra_header", "Subject: busy"])
            rc, uas_out = uas.result()
        finally:
            uas.stop()
        assert (ok, failed) == (1, 0), out
        assert rc == 0, uas_out
    assert final_statuses(messages(tmp_path))[-1] == 486


def test_no_answer_gives_480_after_ring_timeout(tmp_path: Path) -> None:
    with pbx_with(tmp_path, "[calls]\nring_timeout = 2.0\n") as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        uas = SippUas(tmp_path, "call_uas_ring.xml", port, keys={"rtp_port": str(free_port())},
                      name="ring")
        try:
            t0 = time.monotonic()
            ok, failed, out = caller(pbx, tmp_path, "call_uac_fail.xml",
                                     extra=["-key", "extra_header", "Subject: no answer"])
            elapsed = time.monotonic() - t0
            rc, uas_out = uas.result()
        finally:
            uas.stop()
        assert (ok, failed) == (1, 0), out
        assert rc == 0, uas_out  # the ringing callee was cancelled
    assert final_statuses(messages(tmp_path))[-1] == 480
    assert elapsed >= 2.0  # not before the ring timeout (an outcome, not a speed check)


@pytest.mark.parametrize(("dst", "status"), [("999", 404), ("102", 480)])
def test_unknown_extension_404_unregistered_user_480(tmp_path: Path, dst: str,
                                                     status: int) -> None:
    with pbx_with(tmp_path) as pbx:
        ok, failed, out = caller(pbx, tmp_path, "call_uac_fail.xml", dst=dst,
                                 extra=["-key", "extra_header", "Subject: nobody"])
        assert (ok, failed) == (1, 0), out
    assert final_statuses(messages(tmp_path))[-1] == status


def test_two_devices_ring_one_answers_other_gets_cancel_with_reason(tmp_path: Path) -> None:
    with pbx_with(tmp_path) as pbx:
        port_a, port_b = free_port(), free_port()
        register_port(pbx, "101", USERS[1][1], port_a)
        register_port(pbx, "101", USERS[1][1], port_b)
        answering = SippUas(tmp_path, "call_uas_answer.xml", port_a, keys={"rtp_port": str(free_port())},
                            name="answer")
        ringing = SippUas(tmp_path, "call_uas_ring.xml", port_b, keys={"rtp_port": str(free_port())},
                          name="ring")
        try:
            ok, failed, out = caller(pbx, tmp_path, pause_ms=500)
            rc_a, out_a = answering.result()
            rc_b, out_b = ringing.result()
        finally:
            answering.stop()
            ringing.stop()
        assert (ok, failed) == (1, 0), out
        assert rc_a == 0, out_a
        assert rc_b == 0, out_b
        cancel = ringing.log().split("CANCEL sip:", 1)[1].split("\n\n", 1)[0]
        assert 'Reason: SIP;cause=200;text="Call completed elsewhere"' in cancel


def test_session_timer_negotiated_and_refreshed(tmp_path: Path) -> None:
    with pbx_with(tmp_path) as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        uas = SippUas(tmp_path, "call_uas_answer.xml", port, keys={"rtp_port": str(free_port())},
                      pause_ms=3000)
        try:
            ok, failed, out = caller(pbx, tmp_path, "call_uac_timer.xml", pause_ms=1000)
            rc, uas_out = uas.result()
        finally:
            uas.stop()
        # the scenario checks Session-Expires/Require in the 2xx and in the UPDATE's 200
        assert (ok, failed) == (1, 0), out + messages(tmp_path)[-3000:]
        assert rc == 0, uas_out


def test_session_expires_below_min_se_gets_422(tmp_path: Path) -> None:
    with pbx_with(tmp_path) as pbx:
        ok, failed, out = caller(pbx, tmp_path, "call_uac_fail.xml",
                                 extra=["-key", "extra_header", "Session-Expires: 30"])
        assert (ok, failed) == (1, 0), out
    log = messages(tmp_path)
    assert final_statuses(log)[-1] == 422
    assert "Min-SE: 90" in log


def test_dead_call_is_reaped_when_rtp_stops(tmp_path: Path) -> None:
    with pbx_with(tmp_path, "rtp_timeout = 2.0\n") as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        uas = SippUas(tmp_path, "call_uas_answer.xml", port, keys={"rtp_port": str(free_port())})
        try:
            ok, failed, out = caller(pbx, tmp_path, "call_uac_wait_bye.xml")
            rc, uas_out = uas.result()
        finally:
            uas.stop()
        # neither side sends RTP: the PBX hangs up both (BYE to each)
        assert (ok, failed) == (1, 0), out
        assert rc == 0, uas_out
    assert events(pbx, "call.rtp_timeout")


def _windows(pcm: np.ndarray, size: int = 1600) -> list[np.ndarray]:
    return [pcm[i:i + size] for i in range(0, len(pcm) - size + 1, size)]


def test_hold_plays_music_on_hold_to_the_held_party(tmp_path: Path) -> None:
    from media.dtmf import tone_ratio

    # the caller sends to the PBX's SDP address from the start: the callee sends nothing, so
    # a caller that waited to latch onto the PBX's first packet could stay mute (the PBX
    # relays nothing to it but ringback, which a loaded machine may not get out in time)
    caller_rtp = RtpPeer(send_hz=1000.0, sdp_from=tmp_path / "caller-messages.log")
    callee_rtp = RtpPeer()
    try:
        with pbx_with(tmp_path) as pbx:
            port = free_port()
            register_port(pbx, "101", USERS[1][1], port)
            uas = SippUas(tmp_path, "call_uas_answer.xml", port,
                          keys={"rtp_port": str(callee_rtp.port)})
            try:
                ok, failed, out = caller(pbx, tmp_path, "call_uac_hold.xml",
                                         rtp_port=caller_rtp.port)
                rc, uas_out = uas.result()
            finally:
                uas.stop()
            assert (ok, failed) == (1, 0), out + messages(tmp_path)[-2000:]
            assert rc == 0, uas_out
    finally:
        caller_rtp.close()
        callee_rtp.close()
    heard = []
    for w in _windows(callee_rtp.pcm()):
        if tone_ratio(w, 1000.0, 8000) > 0.5:
            heard.append("caller")
        elif is_music_on_hold(w):
            heard.append("moh")
    # the callee heard the caller, then music on hold while held, then the caller again
    compact = [k for i, k in enumerate(heard) if i == 0 or heard[i - 1] != k]
    assert compact[:3] == ["caller", "moh", "caller"], heard
    assert heard.count("moh") >= 12, " ".join(heard)  # about 3 s of music (200 ms windows)


def test_sip_info_dtmf_reaches_an_rfc4733_callee(tmp_path: Path) -> None:
    callee_rtp = RtpPeer()
    try:
        with pbx_with(tmp_path) as pbx:
            port = free_port()
            register_port(pbx, "101", USERS[1][1], port)
            uas = SippUas(tmp_path, "call_uas_answer.xml", port,
                          keys={"rtp_port": str(callee_rtp.port)})
            try:
                ok, failed, out = caller(pbx, tmp_path, "call_uac_info.xml", pause_ms=1000)
                rc, uas_out = uas.result()
            finally:
                uas.stop()
            assert (ok, failed) == (1, 0), out
            assert rc == 0, uas_out
    finally:
        callee_rtp.close()
    # the INFO digit went out as RFC 4733 events (event 5), ending with the E bit
    assert callee_rtp.events, "no telephone-event packets reached the callee"
    assert {e[0] for e in callee_rtp.events} == {5}
    assert any(e[1] & 0x80 for e in callee_rtp.events)


def sent_reoffers(log: str, clock_offset: float) -> list[tuple[float, str]]:
    """(time.monotonic() of sending, SDP direction) of every INVITE a SIPp UAS sent, from its
    message trace (``clock_offset`` = time.time() - time.monotonic() during the test)."""
    from datetime import datetime

    out = []
    for block in log.split("----------------------------------------------- ")[1:]:
        head, _, body = block.partition("\n")
        if "message sent" not in body.split("\n", 1)[0] or "\nINVITE " not in body:
            continue
        direction = next((d for d in ("inactive", "sendonly", "recvonly", "sendrecv")
                          if f"a={d}" in body), "sendrecv")
        wall = datetime.strptime(head.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        out.append((wall - clock_offset, direction))
    return out


def packet_windows(received: list[tuple[float, bytes]], since: float, until: float,
                   per_window: int = 10) -> list[np.ndarray]:
    """The audio of the packets that arrived in [since, until), ``per_window`` packets (200 ms
    of audio) per window: counted in packets, so a late or bunched delivery changes nothing."""
    chunks = [ulaw_decode(p) for t, p in received if since <= t < until]
    return [np.concatenate(chunks[i:i + per_window])
            for i in range(0, len(chunks) - per_window + 1, per_window)]


def test_callee_hold_plays_music_on_hold_to_the_caller(tmp_path: Path) -> None:
    from media.dtmf import tone_ratio

    clock_offset = time.time() - time.monotonic()
    caller_rtp = RtpPeer(send_hz=1600.0)  # starts on our ringback; the callee learns us from it
    callee_rtp = RtpPeer(send_hz=1000.0)
    try:
        with pbx_with(tmp_path) as pbx:
            port = free_port()
            register_port(pbx, "101", USERS[1][1], port)
            uas = SippUas(tmp_path, "call_uas_hold.xml", port,
                          keys={"rtp_port": str(callee_rtp.port)})
            try:
                ok, failed, out = caller(pbx, tmp_path, "call_uac.xml", pause_ms=9000,
                                         rtp_port=caller_rtp.port)
                rc, uas_out = uas.result()
            finally:
                uas.stop()
            assert (ok, failed) == (1, 0), out
            assert rc == 0, uas_out + uas.log()[-3000:]
    finally:
        caller_rtp.close()
        callee_rtp.close()
    reoffers = sent_reoffers(uas.log(), clock_offset)
    assert [d for _, d in reoffers] == ["inactive", "sendrecv"], reoffers
    (held, _), (resumed, _) = reoffers

    def kind(w: np.ndarray) -> str:
        if tone_ratio(w, 1000.0, 8000) > 0.5:
            return "callee"
        if is_music_on_hold(w):
            return "moh"
        return "?"

    received = caller_rtp.received
    # the margins cover signalling (a re-INVITE and its 200 on loopback), not media timing
    before = [kind(w) for w in packet_windows(received, 0.0, held)]
    during = [kind(w) for w in packet_windows(received, held + 0.3, resumed)]
    after = [kind(w) for w in packet_windows(received, resumed + 0.3, float("inf"))]
    # before the hold the caller hears the callee; while held, music and never the callee
    # (the 3 s hold holds ~13 windows; 8 of music is 1.6 s whatever the scheduling did);
    # after the resume the callee again and no music
    assert before.count("callee") >= 3, before
    assert during.count("moh") >= 8 and "callee" not in during, during
    assert during.count("moh") >= 0.8 * len(during), during
    assert after.count("callee") >= 3 and "moh" not in after, after
