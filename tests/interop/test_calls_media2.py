"""The media edges of the B2BUA with real SIP and RTP peers (SIPp for signalling, Python sockets
for RTP, baresip where a phone's own SRTP matters):

* a callee that refuses our plain RTP offer with 488 gets the INVITE again, once, as RTP/SAVP with
  SDES keys of its leg; the call connects, the SRTP audio is checked both ways with the keys from
  the wire, and the next call to that device is offered SAVP first — which a device that now
  refuses SAVP answers with 488 and gets plain RTP instead; with an SRTP caller too, each leg
  runs on keys of its own; a baresip callee with mandatory SRTP talks to a plain caller;
* in-band DTMF from a caller without telephone-event reaches an RFC 4733 callee as events only:
  its recording holds no DTMF tone energy during the digit, but the caller's voice elsewhere;
* a caller's re-INVITE that moves its media re-latches the stream on the new port (audio both
  ways, counted), while the old port and a sprayer on another loopback address are refused.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from media.dtmf import DtmfDetector, dtmf_tone, is_dtmf_frame, tone_ratio
from media.g711 import linear_to_ulaw, ulaw_to_linear
from media.srtp import CryptoAttribute, SrtpSession, parse_crypto
from tests.interop.harness import PbxProcess, free_port, need, read_log, running_pbx
from tests.interop.test_calls_sipp import (
    USERS,
    RtpPeer,
    SippUas,
    caller,
    events,
    messages,
    register_port,
)

pytestmark = pytest.mark.interop


_ULAW = np.array([ulaw_to_linear(c) for c in range(256)], np.int16)
_ULAW_ENC = np.array([linear_to_ulaw(x) for x in range(-32768, 32768)], np.uint8)


def ulaw_encode(pcm: np.ndarray) -> bytes:
    return _ULAW_ENC[pcm.astype(np.int32) + 32768].tobytes()


def ulaw_decode(payload: bytes) -> np.ndarray:
    return _ULAW[np.frombuffer(payload, np.uint8)]


@contextlib.contextmanager
def pbx_media2(tmp: Path) -> Iterator[PbxProcess]:
    config = "[media]\nport_min = 47000\nport_max = 48999\n"
    with running_pbx(tmp, transports=("udp",), users=USERS, config_extra=config) as pbx:
        yield pbx


def windows(pcm: np.ndarray, size: int = 800, hop: int | None = None) -> list[np.ndarray]:
    hop = hop or size
    return [pcm[i:i + size] for i in range(0, len(pcm) - size + 1, hop)]


def hears(pcm: np.ndarray, freq: float, minimum: int = 5) -> int:
    """How many 100 ms windows are dominated by ``freq`` (at least ``minimum``, else 0)."""
    n = sum(tone_ratio(w, freq, 8000) > 0.5 for w in windows(pcm))
    return n if n >= minimum else 0


# ------------------------------------------------------------------------ 1. SRTP by retry

_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{name}">
  <label id="invite"/>
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="m=audio [0-9]+ (RTP/[A-Z]+) " search_in="body" check_it="true"
            assign_to="all,proto"/>
      <strcmp assign_to="cmp" variable="proto" value="RTP/SAVP"/>
      <test assign_to="savp" variable="cmp" compare="equal" value="0"/>
    </action>
  </recv>
  <nop test="savp" next="{on_savp}"/>
  <nop next="{on_plain}"/>
  <label id="reject"/>
  <send><![CDATA[
SIP/2.0 488 Not Acceptable Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK" next="invite"/>
  <label id="accept"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag02[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:101@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag02[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:101@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 2 2 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio [rtp_port] {proto} 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
{crypto}a=sendrecv
]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <Reference variables="all"/>
</scenario>
"""


def uas_scenario(tmp: Path, *, wants_srtp: bool, key: CryptoAttribute | None = None) -> Path:
    """A callee that answers 488 to an offer of the profile it refuses and 200 to the other."""
    if wants_srtp:
        assert key is not None
        text = _HEAD.format(name="callee wants SRTP", on_savp="accept", on_plain="reject",
                            proto="RTP/SAVP", crypto=f"a=crypto:{key.to_sdp()}\n")
    else:
        text = _HEAD.format(name="callee refuses SRTP", on_savp="reject", on_plain="accept",
                            proto="RTP/AVP", crypto="")
    path = tmp / f"uas-srtp-{int(wants_srtp)}.xml"
    path.write_text(text)
    return path


class SrtpPeer:
    """A callee's RTP endpoint keyed with ``key``: from the first packet on, it sends a tone
    (SRTP with ``key``, or plain) every 20 ms to where the packets come from, and records
    every packet for decryption later (with the key the PBX offered, read off the wire)."""

    def __init__(self, send_hz: float, key: CryptoAttribute | None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.005)
        self.port = self.sock.getsockname()[1]
        self.key = key
        self.send_hz = send_hz
        self.packets: list[bytes] = []
        #: Where to send: set from the PBX's SDP by the test, else the first packet's source.
        self.remote: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tx = SrtpSession(self.key, self.key) if self.key is not None else None
        seq, ts, next_send = 1, 0, 0.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                data, addr = self.sock.recvfrom(2048)
                if len(data) >= 12 and not 192 <= data[1] <= 223:
                    self.packets.append(data)
                    if self.remote is None:
                        self.remote = addr
            remote = self.remote
            if remote is not None and next_send == 0.0:
                next_send = time.monotonic()
            if remote is not None and time.monotonic() >= next_send:
                n = np.arange(ts, ts + 160)
                pcm = (8000 * np.sin(2 * np.pi * self.send_hz * n / 8000)).astype(np.int16)
                pkt = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts, 0x7777) + ulaw_encode(pcm)
                if tx is not None:
                    pkt = tx.protect(pkt)
                with contextlib.suppress(OSError):
                    self.sock.sendto(pkt, remote)
                seq, ts = seq + 1, ts + 160
                next_send += 0.02

    def pcm(self, pbx_key: CryptoAttribute | None) -> np.ndarray:
        """The PCMU audio received, decrypted with the PBX's key when there is one."""
        rx = SrtpSession(self.key, pbx_key) if pbx_key is not None and self.key else None
        chunks = []
        for data in self.packets:
            plain = rx.unprotect(data) if rx is not None else data
            if plain is not None and plain[1] & 0x7F == 0:
                chunks.append(ulaw_decode(plain[12:]))
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def invites(log: str) -> list[str]:
    """The INVITE requests in a SIPp message log, in order."""
    return [m.group(0) for m in re.finditer(r"^INVITE sip:.*?(?=^-{10,}|\Z)", log, re.M | re.S)]


def _cseq(msg: str) -> int:
    m = re.search(r"^CSeq:\s*(\d+) INVITE", msg, re.M)
    assert m is not None, msg
    return int(m.group(1))


def _call_id(msg: str) -> str:
    m = re.search(r"^Call-ID:\s*(\S+)", msg, re.M)
    assert m is not None, msg
    return m.group(1)


def _pbx_crypto(msg: str) -> dict[int, CryptoAttribute]:
    return {a.tag: a for a in (parse_crypto(v) for v in re.findall(r"^a=crypto:(.+?)\r?$",
                                                                    msg, re.M))}


def _new_key() -> CryptoAttribute:
    return CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80", os.urandom(30))


def _answer_crypto(log: str) -> CryptoAttribute | None:
    """The ``a=crypto`` tag 1 in the (last) 200 OK with SDP of a SIPp message log."""
    found = None
    for m in re.finditer(r"^SIP/2\.0 200 OK.*?(?=^-{10,}|\Z)", log, re.M | re.S):
        found = _pbx_crypto(m.group(0)).get(1, found)
    return found


def _srtp_call(pbx: PbxProcess, tmp: Path, port: int, *, wants_srtp: bool, name: str,
               caller_srtp: bool = False
               ) -> tuple[str, np.ndarray, np.ndarray, dict[str, object],
                          dict[str, CryptoAttribute | None]]:
    """One call from a SIPp caller (tone 1000 Hz; SDES-SRTP with ``caller_srtp``) to the SIPp
    callee on ``port`` (tone 700 Hz) answering 488 to the profile it refuses. Returns the
    callee's SIP log, what each side heard (decrypted with the keys the PBX put on the wire),
    the call.answered log event and the keys: ``caller``/``callee`` (the peers' own) and
    ``to_caller``/``to_callee`` (the PBX's on each leg)."""
    key = _new_key() if wants_srtp else None
    caller_key = _new_key() if caller_srtp else None
    callee_rtp = SrtpPeer(700.0, key)
    caller_rtp = SrtpPeer(1000.0, caller_key)
    before = len(events(pbx, "call.answered"))
    try:
        uas = SippUas(tmp, str(uas_scenario(tmp, wants_srtp=wants_srtp, key=key)), port,
                      keys={"rtp_port": str(callee_rtp.port)}, name=name)
        stop = threading.Event()

        def aim() -> None:
            # the callee's peer sends to the PBX's port from the INVITE it accepted (nobody
            # sends first otherwise: the caller's peer answers where the PBX's packets come from)
            while not stop.is_set() and callee_rtp.remote is None:
                log = uas.log()
                if "SIP/2.0 200 OK" in log:
                    m = re.findall(r"^m=audio (\d+) ", "".join(invites(log)), re.M)
                    if m:
                        callee_rtp.remote = ("127.0.0.1", int(m[-1]))
                time.sleep(0.02)

        aimer = threading.Thread(target=aim, daemon=True)
        aimer.start()
        try:
            ok, failed, out = caller(
                pbx, tmp, "call_uac_savp.xml" if caller_srtp else "call_uac.xml",
                pause_ms=3000, rtp_port=caller_rtp.port,
                extra=["-key", "crypto_key", base64.b64encode(caller_key.key).decode()]
                if caller_key is not None else [])
            rc, uas_out = uas.result()
        finally:
            stop.set()
            aimer.join(2)
            uas.stop()
        log = uas.log()
        if (ok, failed) != (1, 0):  # a CI run saw a callee that received nothing: say why
            server = read_log(pbx.log_path)[-4000:]
            raise AssertionError(f"{out}{messages(tmp)[-3000:]}\ncallee log:\n{log[-3000:]}"
                                 f"\ncallee rc {rc}:\n{uas_out}\nserver log:\n{server}")
        assert rc == 0, uas_out + log[-3000:]
    finally:
        callee_rtp.close()
        caller_rtp.close()
    sent = invites(log)
    pbx_key = _pbx_crypto(sent[-1]).get(1) if wants_srtp else None
    to_caller = _answer_crypto(messages(tmp)) if caller_srtp else None
    answered = events(pbx, "call.answered")
    assert len(answered) == before + 1, answered
    keys = {"caller": caller_key, "callee": key, "to_caller": to_caller, "to_callee": pbx_key}
    return (log, callee_rtp.pcm(pbx_key), caller_rtp.pcm(to_caller), answered[-1], keys)


def test_callee_refusing_plain_rtp_gets_a_savp_retry_then_savp_first(tmp_path: Path) -> None:
    with pbx_media2(tmp_path) as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)

        # call 1: plain offer -> 488 -> one SAVP retry -> 200; SRTP audio both ways
        log, heard_callee, heard_caller, answered, _ = _srtp_call(
            pbx, tmp_path, port, wants_srtp=True, name="uas1")
        sent = invites(log)
        assert len(sent) == 2, log[-4000:]
        first, retry = sent
        assert re.search(r"^m=audio \d+ RTP/AVP ", first, re.M) and "a=crypto" not in first
        assert re.search(r"^m=audio \d+ RTP/SAVP ", retry, re.M)
        keys = _pbx_crypto(retry)
        assert set(keys) == {1, 2}, retry  # one key per suite, each fresh
        assert keys[1].key != keys[2].key
        # a new transaction in the same dialog attempt: same Call-ID, CSeq + 1, new branch
        assert _call_id(first) == _call_id(retry)
        assert _cseq(retry) == _cseq(first) + 1
        assert re.search(r"branch=(\S+)", first) != re.search(r"branch=(\S+)", retry)
        assert "SIP/2.0 488" in log
        assert answered["srtp"] == [False, True], answered
        retries = events(pbx, "call.offer_retry")
        assert retries and retries[-1]["profile"] == "RTP/SAVP" and retries[-1]["status"] == 488
        # decrypted with the key the PBX put on the wire, the callee hears the caller's tone
        assert hears(heard_callee, 1000.0), len(heard_callee)
        # ... and the caller (plain RTP) hears the callee's SRTP tone
        assert hears(heard_caller, 700.0), len(heard_caller)

        # call 2: the device is known to want SRTP: SAVP first. It now refuses SAVP (488):
        # one plain retry, and the call runs on plain RTP
        log2, heard_callee2, heard_caller2, answered2, _ = _srtp_call(
            pbx, tmp_path, port, wants_srtp=False, name="uas2")
        sent2 = invites(log2)
        assert len(sent2) == 2, log2[-4000:]
        assert re.search(r"^m=audio \d+ RTP/SAVP ", sent2[0], re.M) and "a=crypto" in sent2[0]
        assert re.search(r"^m=audio \d+ RTP/AVP ", sent2[1], re.M) and "a=crypto" not in sent2[1]
        assert _cseq(sent2[1]) == _cseq(sent2[0]) + 1
        assert answered2["srtp"] == [False, False], answered2
        assert hears(heard_callee2, 1000.0) and hears(heard_caller2, 700.0)


def test_srtp_caller_and_srtp_callee_each_leg_its_own_keys(tmp_path: Path) -> None:
    with pbx_media2(tmp_path) as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        log, heard_callee, heard_caller, answered, keys = _srtp_call(
            pbx, tmp_path, port, wants_srtp=True, name="uas", caller_srtp=True)
    # the caller's SRTP does not make the PBX offer SAVP to an unknown device: 488, then SAVP
    sent = invites(log)
    assert len(sent) == 2 and "a=crypto" not in sent[0] and "a=crypto" in sent[1]
    assert answered["srtp"] == [True, True], answered
    # four different keys: each leg has the PBX's own, neither is a peer's key passed on
    found = [keys[k] for k in ("caller", "callee", "to_caller", "to_callee")]
    assert all(k is not None for k in found), keys
    assert len({k.key for k in found if k is not None}) == 4
    # SRTP both ways on both legs, decrypted with the keys from the wire
    assert hears(heard_callee, 1000.0), len(heard_callee)
    assert hears(heard_caller, 700.0), len(heard_caller)


def test_baresip_callee_with_mandatory_srtp_hears_a_plain_caller(tmp_path: Path) -> None:
    from tests.interop.test_calls_baresip import (
        TONE_100,
        TONE_101,
        baresip_dir,
        best_ratio,
        recording,
        stop,
        tone_file,
        wait_for,
    )

    binary = need("baresip")
    with pbx_media2(tmp_path / "pbx") as pbx:
        server = pbx.addr("udp")
        d101 = baresip_dir(tmp_path, "101", USERS[1][1], server, tone_file(TONE_101), "PCMU")
        accounts = (d101 / "accounts").read_text().rstrip("\n")
        (d101 / "accounts").write_text(accounts + ";mediaenc=srtp-mand\n")
        config = (d101 / "config").read_text()
        (d101 / "config").write_text(config.replace(
            "module account.so\n", "module srtp.so\nmodule account.so\n").replace(
            "rtp_ports 44000-44999", "rtp_ports 46000-46499"))
        callee = subprocess.Popen([binary, "-f", str(d101)], stdin=subprocess.PIPE,
                                  stdout=(d101 / "out.log").open("w"), stderr=subprocess.STDOUT,
                                  text=True)
        caller_ua = None
        try:
            assert wait_for(pbx, "sip.register.added"), "101 did not register"
            d100 = baresip_dir(tmp_path, "100", USERS[0][1], server, tone_file(TONE_100), "PCMU")
            config = (d100 / "config").read_text()
            (d100 / "config").write_text(config.replace("rtp_ports 44000-44999",
                                                        "rtp_ports 46500-46999"))
            caller_ua = subprocess.Popen(
                [binary, "-f", str(d100), "-e", f"/dial sip:101@{server[0]}:{server[1]}"],
                stdin=subprocess.PIPE, stdout=(d100 / "out.log").open("w"),
                stderr=subprocess.STDOUT, text=True)
            assert wait_for(pbx, "call.answered"), (
                read_log(d100 / "out.log")[-2000:] + read_log(d101 / "out.log")[-2000:])
            time.sleep(3.0)  # talk
        finally:
            if caller_ua is not None:
                stop(caller_ua)
            assert wait_for(pbx, "call.ended", timeout=10)
            stop(callee)
        answered = next(e for e in pbx.log_events() if e.get("event") == "call.answered")
        retried = [e for e in pbx.log_events() if e.get("event") == "call.offer_retry"]
    assert retried and retried[0]["profile"] == "RTP/SAVP", retried
    assert answered["srtp"] == [False, True], answered
    heard_100, rate_100 = recording(d100)
    heard_101, rate_101 = recording(d101)
    assert best_ratio(heard_100, TONE_101, rate_100) > 0.6
    assert best_ratio(heard_101, TONE_100, rate_101) > 0.6


# ------------------------------------------------------------------- 2. in-band DTMF muted


class VoiceAndDigitPeer:
    """A caller without telephone-event: from the first packet it receives on, it sends a
    440 Hz 'voice' as PCMU every 20 ms, with one DTMF digit (in-band, 200 ms) replacing the
    voice ``delay`` seconds in."""

    def __init__(self, digit: str, delay: float = 1.5) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.005)
        self.port = self.sock.getsockname()[1]
        self.digit, self.delay = digit, delay
        self.digit_sent = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        remote = None
        seq, ts = 1, 0
        digit = dtmf_tone(self.digit, 200)
        digit_at = -1
        start = next_send = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                _, addr = self.sock.recvfrom(2048)
                if remote is None:
                    remote = addr
                    start = next_send = time.monotonic()
            if remote is None or time.monotonic() < next_send:
                continue
            next_send += 0.02
            n = np.arange(ts, ts + 160)
            pcm = (6000 * np.sin(2 * np.pi * 440.0 * n / 8000)).astype(np.int16)
            if time.monotonic() - start >= self.delay and not self.digit_sent:
                digit_at = max(digit_at, 0)
                chunk = digit[digit_at:digit_at + 160]
                pcm[:chunk.size] = chunk
                digit_at += 160
                self.digit_sent = digit_at >= digit.size
            with contextlib.suppress(OSError):
                self.sock.sendto(struct.pack("!BBHII", 0x80, 0, seq, ts, 0x5151)
                                 + ulaw_encode(pcm), remote)
            seq, ts = seq + 1, ts + 160

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_inband_digit_reaches_rfc4733_callee_as_events_only(tmp_path: Path) -> None:
    sender = VoiceAndDigitPeer("7")
    callee_rtp = RtpPeer()
    try:
        with pbx_media2(tmp_path) as pbx:
            port = free_port()
            register_port(pbx, "101", USERS[1][1], port)
            uas = SippUas(tmp_path, "call_uas_answer.xml", port,
                          keys={"rtp_port": str(callee_rtp.port)})
            try:
                ok, failed, out = caller(pbx, tmp_path, "call_uac_no_te.xml", pause_ms=4000,
                                         rtp_port=sender.port)
                rc, uas_out = uas.result()
            finally:
                uas.stop()
            assert sender.digit_sent, "the caller's peer never learned the PBX's address"
            assert (ok, failed) == (1, 0), out
            assert rc == 0, uas_out
    finally:
        sender.close()
        callee_rtp.close()
    # the digit arrived as RFC 4733 telephone-event 7 (with its end bit) ...
    assert callee_rtp.events, "no telephone-event packets reached the callee"
    assert {e[0] for e in callee_rtp.events} == {7}
    assert any(e[1] & 0x80 for e in callee_rtp.events)
    # ... and not as a tone: no DTMF anywhere in what the callee received
    heard = callee_rtp.pcm()
    assert heard.size > 8000 * 2, heard.size
    assert [d.digit for d in DtmfDetector(8000).process(heard)] == []
    tone_frames = [i for i, w in enumerate(windows(heard, 160, 80)) if is_dtmf_frame(w, 8000)]
    assert tone_frames == [], f"DTMF energy at half-frames {tone_frames[:20]}"
    # the caller's voice is there, before and after the digit
    voice = [tone_ratio(w, 440.0, 8000) > 0.5 for w in windows(heard)]
    assert sum(voice) >= 20, voice
    assert voice.index(True) < len(voice) - 1 - voice[::-1].index(True) - 5


# -------------------------------------------------------------- 3. re-latch after a re-offer


class Sprayer:
    """An attacker on 127.0.0.2: sprays in-sequence RTP with a marked payload at ``target``
    every 5 ms, counting whatever comes back."""

    PAYLOAD = bytes([0x5A]) * 160

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.2", 0))
        self.sock.settimeout(0.005)
        self.target: tuple[str, int] | None = None
        self.sent = 0
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 1
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                self.sock.recvfrom(2048)
                self.received += 1
            if self.target is not None:
                pkt = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xBAD) + self.PAYLOAD
                with contextlib.suppress(OSError):
                    self.sock.sendto(pkt, self.target)
                    self.sent += 1
                seq += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_caller_reinvite_moves_media_relatched_and_spray_refused(tmp_path: Path) -> None:
    first = RtpPeer(send_hz=1000.0)  # keeps sending from the old port after the move
    moved = RtpPeer(send_hz=1400.0)
    callee_rtp = RtpPeer(send_hz=700.0)
    sprayer = Sprayer()
    stop = threading.Event()

    def aim() -> None:
        # the sprayer learns the PBX's caller-side port from the 200 OK in the caller's log
        while not stop.is_set() and sprayer.target is None:
            own = {first.port, moved.port}
            for p in re.findall(r"^m=audio (\d+) ", messages(tmp_path), re.M):
                if int(p) not in own:
                    sprayer.target = ("127.0.0.1", int(p))
                    return
            time.sleep(0.05)

    aimer = threading.Thread(target=aim, daemon=True)
    try:
        with pbx_media2(tmp_path) as pbx:
            port = free_port()
            register_port(pbx, "101", USERS[1][1], port)
            uas = SippUas(tmp_path, "call_uas_answer.xml", port,
                          keys={"rtp_port": str(callee_rtp.port)})
            aimer.start()
            try:
                ok, failed, out = caller(pbx, tmp_path, "call_uac_move_media.xml",
                                         pause_ms=3000, rtp_port=first.port,
                                         extra=["-key", "rtp_port2", str(moved.port)])
                rc, uas_out = uas.result()
            finally:
                uas.stop()
            assert (ok, failed) == (1, 0), out + messages(tmp_path)[-3000:]
            assert rc == 0, uas_out
    finally:
        stop.set()
        for p in (first, moved, callee_rtp):
            p.close()
        sprayer.close()
    assert sprayer.target is not None and sprayer.sent > 500, (sprayer.target, sprayer.sent)
    # the new port gets the callee's audio (packet count and tone) ...
    assert moved.received, "nothing reached the caller's new port"
    moved_at = moved.received[0][0]
    assert len(moved.received) >= 100, len(moved.received)
    assert hears(moved.pcm(), 700.0)
    # ... the old port nothing after the move (a packet or two may have been under way)
    back = [t for t, _ in first.received if t > moved_at + 0.05]
    assert len(back) <= 3, f"{len(back)} packets went to the old port after the move"
    # the callee hears the caller before the move (1000 Hz) and its new port after (1400 Hz),
    # never the old port's stale packets once the new one spoke, never the spray
    before = callee_rtp.pcm(until=moved_at)
    after = callee_rtp.pcm(since=moved_at + 0.5)
    assert hears(before, 1000.0)
    assert hears(after, 1400.0) and not hears(after, 1000.0, minimum=1)
    assert len([1 for t, _ in callee_rtp.received if t > moved_at]) >= 100
    assert all(p != Sprayer.PAYLOAD for _, p in callee_rtp.received)
    assert sprayer.received == 0
    ended = events(pbx, "call.ended")
    assert ended and ended[-1]["answered"] is True
