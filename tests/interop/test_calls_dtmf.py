"""DTMF converted between the legs' ways of carrying it: RFC 4733 from a caller reaches a callee
without telephone-event as SIP INFO (``application/dtmf-relay``), and in-band tones from a caller
without telephone-event are detected and reach an RFC 4733 callee as telephone-events. (SIP INFO
→ RFC 4733 is in test_calls_sipp.py.) The callers are SIPp UACs whose RTP is a Python peer."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from media.dtmf import digit_to_event, dtmf_tone
from tests.interop.harness import free_port
from tests.interop.test_calls_sipp import (
    USERS,
    RtpPeer,
    SippUas,
    caller,
    pbx_with,
    register_port,
    ulaw_encode,
)

pytestmark = pytest.mark.interop


class DtmfSendingPeer:
    """An RTP peer that, once the PBX's address is known (from its ringback), sends PCMU
    silence and after ``delay`` seconds one digit: in-band (a 200 ms tone pair) or as RFC 4733
    events (payload type 101)."""

    def __init__(self, digit: str, *, inband: bool, delay: float = 1.5) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.01)
        self.port = self.sock.getsockname()[1]
        self.digit, self.inband, self.delay = digit, inband, delay
        self.sent_digit = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        remote = None
        seq, ts, ssrc = 1, 0, 0x5151
        tone = dtmf_tone(self.digit, 200)
        event_packets = 0
        while remote is None and not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                _, remote = self.sock.recvfrom(2048)
        start = next_send = time.monotonic()
        tone_at = 0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                self.sock.recvfrom(2048)
            now = time.monotonic()
            if now < next_send or remote is None:
                continue
            next_send += 0.02
            elapsed = now - start
            if elapsed >= self.delay and not self.sent_digit:
                if self.inband:
                    chunk = tone[tone_at:tone_at + 160]
                    tone_at += 160
                    if tone_at >= tone.size:
                        self.sent_digit = True
                    pcm = np.zeros(160, np.int16)
                    pcm[:chunk.size] = chunk
                    payload, pt = ulaw_encode(pcm), 0
                else:
                    # 8 packets (160 ms) + 3 end packets, one timestamp (RFC 4733 §2.5.1)
                    event_packets += 1
                    end = event_packets >= 8
                    duration = min(event_packets, 8) * 160
                    payload = struct.pack("!BBH", digit_to_event(self.digit),
                                          (0x80 if end else 0) | 10, duration)
                    pt = 101 | (0x80 if event_packets == 1 else 0)
                    if event_packets >= 10:
                        self.sent_digit = True
                    self.sock.sendto(struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + payload,
                                     remote)
                    seq += 1
                    if self.sent_digit:
                        ts += 160 * 11
                    continue
            else:
                payload, pt = ulaw_encode(np.zeros(160, np.int16)), 0
            self.sock.sendto(struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + payload, remote)
            seq, ts = seq + 1, ts + 160

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_rfc4733_from_caller_reaches_callee_without_telephone_event_as_info(
        tmp_path: Path) -> None:
    sender = DtmfSendingPeer("9", inband=False)
    try:
        with pbx_with(tmp_path) as pbx:
            port = free_port()
            register_port(pbx, "101", USERS[1][1], port)
            uas = SippUas(tmp_path, "call_uas_answer_info.xml", port,
                          keys={"rtp_port": str(free_port())})
            try:
                ok, failed, out = caller(pbx, tmp_path, "call_uac.xml", pause_ms=3500,
                                         rtp_port=sender.port)
                rc, uas_out = uas.result()
            finally:
                uas.stop()
            assert sender.sent_digit, "the caller's peer never learned the PBX's address"
            assert (ok, failed) == (1, 0), out
            # the callee scenario requires an INFO with Signal=9 before the BYE
            assert rc == 0, uas_out + uas.log()[-3000:]
    finally:
        sender.close()


def test_inband_dtmf_from_caller_reaches_rfc4733_callee_as_events(tmp_path: Path) -> None:
    sender = DtmfSendingPeer("7", inband=True)
    callee_rtp = RtpPeer()
    try:
        with pbx_with(tmp_path) as pbx:
            port = free_port()
            register_port(pbx, "101", USERS[1][1], port)
            uas = SippUas(tmp_path, "call_uas_answer.xml", port,
                          keys={"rtp_port": str(callee_rtp.port)})
            try:
                ok, failed, out = caller(pbx, tmp_path, "call_uac_no_te.xml", pause_ms=3500,
                                         rtp_port=sender.port)
                rc, uas_out = uas.result()
            finally:
                uas.stop()
            assert sender.sent_digit, "the caller's peer never learned the PBX's address"
            assert (ok, failed) == (1, 0), out
            assert rc == 0, uas_out
    finally:
        sender.close()
        callee_rtp.close()
    # the tone was detected and sent as telephone-event 7, ending with the E bit
    assert callee_rtp.events, "no telephone-event packets reached the callee"
    assert {e[0] for e in callee_rtp.events} == {7}
    assert any(e[1] & 0x80 for e in callee_rtp.events)
