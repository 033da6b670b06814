"""Conference, pickup and call pull over real SIP/RTP: SIPp phones for the signalling, small
Python RTP peers for the audio, each sending its own tone; who hears whom is told apart with
Goertzel (``media.dtmf.tone_ratio``).

* a 3- and a 5-party conference built from a phone with in-call ``*3`` + number + ``#``
  (RFC 4733 from the caller's RTP): every participant hears all the others' tones, never its
  own; the conference ends (BYE to the last one) when fewer than two remain;
* ``*97`` + extension: the picker talks to the caller, the ringing phone gets CANCEL;
* ``*98``: the same within a pickup group made with ``asyncpbx pickup-group``;
* ``*11``: the call moves to the dialling device, the old one gets BYE, the remote party's
  dialog stays as it was (its SIPp scenario allows no re-INVITE) and it hears the new device;
* ``*33`` + extension: the barger joins the answered call as a third party.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from media.dtmf import tone_ratio
from tests.interop.harness import (
    ROOT,
    PbxProcess,
    free_port,
    read_log,
    running_pbx,
    users_csv,
)
from tests.interop.test_calls_sipp import SippUas, register_port, ulaw_decode, ulaw_encode

pytestmark = pytest.mark.interop

USERS = [(f"{n}", f"pw-{n}-secret") for n in (100, 101, 102, 103, 104)]
PASSWORD = dict(USERS)
CONFIG = "[media]\nport_min = 45000\nport_max = 45999\n[calls]\nring_timeout = 8.0\n"
#: the tone each extension's phone sends (Hz): far apart, none a harmonic of another's
TONES = {"100": 500.0, "101": 700.0, "102": 1100.0, "103": 1500.0, "104": 1900.0,
         "101b": 900.0}
_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


class TonePeer:
    """A phone's RTP: sends ``hz`` as PCMU every 20 ms once the PBX's first packet told it
    where to (symmetric RTP), records what it gets, and sends RFC 4733 digits on request."""

    def __init__(self, hz: float) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.005)
        self.port = self.sock.getsockname()[1]
        self.hz = hz
        self.received: list[tuple[float, bytes]] = []
        self.remote: tuple[str, int] | None = None
        self._digits: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def press(self, digits: str) -> None:
        """Send ``digits`` as RFC 4733 events (100 ms each, 60 ms apart)."""
        with self._lock:
            self._digits.extend(digits)

    def _packets(self, seq: int, ts: int) -> Iterator[tuple[bytes, int]]:
        """The audio packet or the event packets due now (and the timestamp step)."""
        with self._lock:
            digit = self._digits.pop(0) if self._digits else None
        if digit is None:
            n = np.arange(ts, ts + 160)
            pcm = (6000 * np.sin(2 * np.pi * self.hz * n / 8000)).astype(np.int16)
            yield struct.pack("!BBHII", 0x80, 0, seq, ts, 0x4321) + ulaw_encode(pcm), 160
            return
        event = _EVENTS[digit]
        for i in range(1, 6):  # 5 x 20 ms, the last one (and two copies) with the E bit
            end = i == 5
            payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, 160 * i)
            marker = 0x80 if i == 1 else 0
            yield struct.pack("!BBHII", 0x80, marker | 101, seq, ts, 0x4321) + payload, 0
            if end:
                for _ in range(2):
                    yield struct.pack("!BBHII", 0x80, 101, seq, ts, 0x4321) + payload, 0
        yield b"", 160 * 8  # the event's time, plus a pause before the next digit

    def _run(self) -> None:
        seq, ts = 1, 0
        next_send = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                data, addr = self.sock.recvfrom(2048)
                if self.remote is None:
                    self.remote = addr
                    next_send = time.monotonic()
                if len(data) > 12 and data[1] & 0x7F == 0:
                    self.received.append((time.monotonic(), data[12:]))
            if self.remote is None or time.monotonic() < next_send:
                continue
            step = 0
            for pkt, advance in self._packets(seq, ts):
                if pkt:
                    with contextlib.suppress(OSError):
                        self.sock.sendto(pkt, self.remote)
                    seq = (seq + 1) & 0xFFFF
                    if advance == 0:
                        time.sleep(0.02)
                step += advance
            ts = (ts + max(step, 160)) & 0xFFFFFFFF
            next_send += 0.02 * max(step, 160) / 160

    def pcm(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        chunks = [ulaw_decode(p) for t, p in self.received if since <= t < until]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def first_packet(self) -> float | None:
        return self.received[0][0] if self.received else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def heard(pcm: np.ndarray) -> dict[str, float]:
    """Per extension: the median share of 200 ms windows' energy at its tone."""
    assert len(pcm) >= 8000, f"only {len(pcm)} samples of audio"
    windows = [pcm[i:i + 1600] for i in range(0, len(pcm) - 1600 + 1, 1600)]
    return {ext: float(np.median([tone_ratio(w, hz, 8000) for w in windows]))
            for ext, hz in TONES.items()}


def assert_hears_exactly(who: str, pcm: np.ndarray, others: Sequence[str]) -> None:
    """``who`` hears each of ``others`` and neither itself nor anyone else."""
    shares = heard(pcm)
    for ext, share in shares.items():
        if ext in others:
            assert share > 0.5 / len(others) / 2, (who, ext, shares)
        else:
            assert share < 0.02, (who, ext, shares)


@contextlib.contextmanager
def pbx_for_conference(tmp: Path, *, setup: object = None) -> Iterator[PbxProcess]:
    with running_pbx(tmp, transports=("udp",), users=USERS, config_extra=CONFIG,
                     store_setup=setup) as pbx:  # type: ignore[arg-type]
        yield pbx


class Phones:
    """The SIPp phones and RTP peers of one test; everything is stopped at the end."""

    def __init__(self, pbx: PbxProcess, tmp: Path) -> None:
        self.pbx, self.tmp = pbx, tmp
        self.rtp: dict[str, TonePeer] = {}
        self.uas: dict[str, SippUas] = {}
        self.uac: dict[str, subprocess.Popen[str]] = {}

    def peer(self, ext: str) -> TonePeer:
        if ext not in self.rtp:
            self.rtp[ext] = TonePeer(TONES[ext])
        return self.rtp[ext]

    def callee(self, ext: str, scenario: str, pause_ms: int = 500) -> SippUas:
        """A registered SIPp UAS for ``ext`` (its RTP is :meth:`peer`)."""
        port = free_port()
        register_port(self.pbx, ext, PASSWORD[ext], port)
        uas = SippUas(self.tmp, scenario, port, keys={"rtp_port": str(self.peer(ext).port)},
                      pause_ms=pause_ms, name=f"uas{ext}", timeout=40)
        self.uas[ext] = uas
        return uas

    def dial(self, ext: str, dst: str, scenario: str, *, pause_ms: int = 500,
             account: tuple[str, str] | None = None,
             keys: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """``ext``'s phone (or ``account``'s) dials ``dst`` in the background (SIPp UAC);
        ``keys``: more ``-key NAME VALUE`` for the scenario."""
        user, password = account or (ext, PASSWORD[ext])
        inf = users_csv(self.tmp / f"uac-{ext}-{time.monotonic_ns()}.csv", [(user, password)])
        host, port = self.pbx.addr("udp")
        stat = self.tmp / f"uac-{ext}.csv"
        from tests.interop.harness import SCENARIOS, need
        args = [need("sipp"), "-sf", str(SCENARIOS / scenario), "-t", "u1", "-i", "127.0.0.1",
                "-p", str(free_port()), "-m", "1", "-d", str(pause_ms), "-nostdin",
                "-timeout", "40s", "-timeout_error", "-trace_stat", "-stf", str(stat),
                "-trace_err", "-error_file", str(self.tmp / f"uac-{ext}-errors.log"),
                "-trace_msg", "-message_file", str(self.tmp / f"uac-{ext}-messages.log"),
                "-inf", str(inf), "-auth_uri", f"{dst}@{host}:{port}", "-key", "dst", dst,
                "-key", "rtp_port", str(self.peer(ext).port),
                *[a for k, v in (keys or {}).items() for a in ("-key", k, v)], f"{host}:{port}"]
        proc = subprocess.Popen(args, cwd=self.tmp, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                errors="replace")
        self.uac[ext] = proc
        return proc

    def uac_result(self, ext: str, timeout: float = 45.0) -> tuple[int, str]:
        proc = self.uac[ext]
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        err = read_log(self.tmp / f"uac-{ext}-errors.log")[-2000:]
        return proc.returncode, (out or "")[-2000:] + err

    def close(self) -> None:
        for uas in self.uas.values():
            uas.stop()
        for proc in self.uac.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        for peer in self.rtp.values():
            peer.close()


@contextlib.contextmanager
def phones(pbx: PbxProcess, tmp: Path) -> Iterator[Phones]:
    p = Phones(pbx, tmp)
    try:
        yield p
    finally:
        p.close()


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def events(pbx: PbxProcess, name: str) -> list[dict[str, object]]:
    return [e for e in pbx.log_events() if e.get("event") == name]


def _conference(tmp: Path, others: Sequence[str]) -> None:
    """100 calls ``others[0]`` and adds the rest with ``*3`` + number + ``#``; each callee hangs
    up by itself, the first one last; the PBX hangs up 100 when it is alone."""
    with pbx_for_conference(tmp) as pbx, phones(pbx, tmp) as ph:
        # the first callee stays longest; the added ones leave one after another
        stay = {ext: 11000 - 1000 * i for i, ext in enumerate(others)}
        for ext in others:
            ph.callee(ext, "call_uas_bye.xml", pause_ms=stay[ext])
        ph.dial("100", others[0], "call_uac_wait_bye.xml")
        me = ph.peer("100")
        wait_until(lambda: ph.peer(others[0]).first_packet() is not None, 10, "the answer")
        for ext in others[1:]:
            me.press(f"*3{ext}#")
            wait_until(lambda ext=ext: ph.peer(ext).first_packet() is not None, 10,
                       f"{ext} to join")
        joined = time.monotonic()
        time.sleep(3.2)
        window = (joined + 0.6, joined + 3.0)  # everyone in, no one gone yet
        everyone = ["100", *others]
        for ext in everyone:
            assert_hears_exactly(ext, ph.peer(ext).pcm(*window),
                                 [o for o in everyone if o != ext])
        rc, out = ph.uac_result("100")
        assert rc == 0, out  # the PBX's BYE when fewer than two remained
        for ext in others:
            rc, out = ph.uas[ext].result()
            assert rc == 0, out
        ended = events(pbx, "conference.ended")
        assert len(ended) == 1, ended
        assert len(events(pbx, "conference.joined")) == len(everyone)


def test_three_party_conference_by_star3(tmp_path: Path) -> None:
    _conference(tmp_path, ["101", "102"])


def test_five_party_conference_by_star3(tmp_path: Path) -> None:
    _conference(tmp_path, ["101", "102", "103", "104"])


def test_star97_picks_up_and_cancels_the_ringing_phone(tmp_path: Path) -> None:
    with pbx_for_conference(tmp_path) as pbx, phones(pbx, tmp_path) as ph:
        ringing = ph.callee("101", "call_uas_ring.xml")
        ph.dial("100", "101", "call_uac_wait_bye.xml")
        wait_until(lambda: "INVITE" in ringing.log(), 10, "101 to ring")
        ph.dial("102", "*97101", "call_uac.xml", pause_ms=4000)
        wait_until(lambda: ph.peer("102").first_packet() is not None and
                   ph.peer("100").first_packet() is not None, 10, "the pickup")
        start = time.monotonic()
        time.sleep(2.5)
        assert_hears_exactly("100", ph.peer("100").pcm(start + 0.4, start + 2.4), ["102"])
        assert_hears_exactly("102", ph.peer("102").pcm(start + 0.4, start + 2.4), ["100"])
        rc, out = ringing.result()
        assert rc == 0, out  # CANCEL, 487: the ring scenario passed
        assert "CANCEL" in ringing.log()
        assert ph.uac_result("102")[0] == 0
        rc, out = ph.uac_result("100")
        assert rc == 0, out  # the picker's BYE reached the caller


def test_star98_picks_up_within_the_group_made_by_cli(tmp_path: Path) -> None:
    with pbx_for_conference(tmp_path) as pbx, phones(pbx, tmp_path) as ph:
        for argv in (["add", "sales"], ["members", "sales", "--add", "101", "102"]):
            done = subprocess.run([sys.executable, "-m", "pbx", "pickup-group", *argv,
                                   "--data-dir", str(pbx.data_dir)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
        ringing = ph.callee("101", "call_uas_ring.xml")
        ph.dial("100", "101", "call_uac_wait_bye.xml")
        wait_until(lambda: "INVITE" in ringing.log(), 10, "101 to ring")
        ph.dial("102", "*98", "call_uac.xml", pause_ms=3500)
        wait_until(lambda: ph.peer("102").first_packet() is not None and
                   ph.peer("100").first_packet() is not None, 10, "the pickup")
        start = time.monotonic()
        time.sleep(2.2)
        assert_hears_exactly("102", ph.peer("102").pcm(start + 0.4, start + 2.1), ["100"])
        assert ringing.result()[0] == 0 and "CANCEL" in ringing.log()
        assert ph.uac_result("102")[0] == 0
        assert ph.uac_result("100")[0] == 0


def _add_second_device(store: object) -> None:
    store.add_device("101", "101b", "pw-101b-secret")  # type: ignore[attr-defined]


def test_star11_moves_the_call_and_keeps_the_remote_dialog(tmp_path: Path) -> None:
    with pbx_for_conference(tmp_path, setup=_add_second_device) as pbx, \
            phones(pbx, tmp_path) as ph:
        desk = ph.callee("101", "call_uas_answer.xml")  # waits for the PBX's BYE
        ph.dial("100", "101", "call_uac_wait_bye.xml")
        wait_until(lambda: ph.peer("101").first_packet() is not None, 10, "the answer")
        time.sleep(1.6)
        before = time.monotonic()
        ph.dial("101b", "*11", "call_uac.xml", pause_ms=4000,
                account=("101b", "pw-101b-secret"))
        wait_until(lambda: ph.peer("101b").first_packet() is not None, 10, "the pull")
        pulled = time.monotonic()
        rc, out = desk.result(15)
        assert rc == 0, out  # the old device got BYE
        time.sleep(2.5)
        assert_hears_exactly("100", ph.peer("100").pcm(before - 1.4, before - 0.1), ["101"])
        assert_hears_exactly("100", ph.peer("100").pcm(pulled + 0.4, pulled + 2.4), ["101b"])
        assert_hears_exactly("101b", ph.peer("101b").pcm(pulled + 0.4, pulled + 2.4), ["100"])
        assert ph.uac_result("101b")[0] == 0
        rc, out = ph.uac_result("100")
        assert rc == 0, out  # one dialog from INVITE to BYE, no re-INVITE in between
        msgs = read_log(tmp_path / "uac-100-messages.log")
        assert msgs.count("INVITE sip:") <= 2  # its own INVITE (and the one with digest) only


def test_star33_barges_into_the_answered_call(tmp_path: Path) -> None:
    with pbx_for_conference(tmp_path) as pbx, phones(pbx, tmp_path) as ph:
        callee = ph.callee("101", "call_uas_bye.xml", pause_ms=7000)
        ph.dial("100", "101", "call_uac_wait_bye.xml")
        wait_until(lambda: ph.peer("101").first_packet() is not None, 10, "the answer")
        ph.dial("102", "*33101", "call_uac.xml", pause_ms=3500)
        wait_until(lambda: ph.peer("102").first_packet() is not None, 10, "the barge-in")
        start = time.monotonic()
        time.sleep(2.6)
        for ext in ("100", "101", "102"):
            assert_hears_exactly(ext, ph.peer(ext).pcm(start + 0.5, start + 2.5),
                                 [o for o in ("100", "101", "102") if o != ext])
        assert ph.uac_result("102")[0] == 0
        assert callee.result()[0] == 0
        assert ph.uac_result("100")[0] == 0


def test_a_phones_own_conference_by_factory_uri_and_refer(tmp_path: Path) -> None:
    """RFC 4579 ad hoc: 100's phone calls the conference factory (``sip:conference@pbx``):
    the PBX answers as the focus, Contact ``<sip:conf-100@…>;isfocus``. The phone's two other
    calls (to 101 and to 102) are each referred into the conference (``REFER``, ``Refer-To:
    <sip:conf-100@pbx>``, 202, NOTIFY 100 then 200, the phone hangs that leg up). Then all
    three talk — each hears exactly the other two. 101 and 102 hang up in turn, and with one member left the conference ends
    (the PBX's BYE to the focus dialog)."""
    with pbx_for_conference(tmp_path) as pbx, phones(pbx, tmp_path) as ph:
        ph.callee("101", "call_uas_bye.xml", pause_ms=16000)
        ph.callee("102", "call_uas_bye.xml", pause_ms=16000)
        ph.dial("100", "conference", "call_uac_wait_bye.xml")  # the focus dialog
        wait_until(lambda: bool(events(pbx, "conference.focus_started")), 10, "the focus")
        for n, callee in enumerate(("101", "102")):
            line = f"100{'ab'[n]}"
            ph.rtp[line] = TonePeer(TONES["100"])  # the phone's other lines, its own voice
            ph.dial(line, callee, "call_uac_refer.xml", pause_ms=1500,
                    account=("100", PASSWORD["100"]), keys={"refer_to": "conf-100"})
            rc, out = ph.uac_result(line, timeout=20)
            assert rc == 0, out  # 202, NOTIFY 100 and 200, its BYE answered
        assert len(events(pbx, "conference.referred")) == 2
        start = time.monotonic() + 0.5
        time.sleep(2.7)
        for ext, others in (("100", ["101", "102"]), ("101", ["100", "102"]),
                            ("102", ["100", "101"])):
            assert_hears_exactly(ext, ph.peer(ext).pcm(start, start + 2.2), others)
        for ext in ("101", "102"):
            rc, out = ph.uas[ext].result()
            assert rc == 0, out
        rc, out = ph.uac_result("100")  # the conference ended: BYE on the focus dialog
        assert rc == 0, out
        messages = read_log(tmp_path / "uac-100-messages.log")
        assert "isfocus" in messages and "conf-100@" in messages, messages[-3000:]
        assert len(events(pbx, "conference.ended")) == 1


def test_a_refer_to_the_focus_rings_and_joins_the_number(tmp_path: Path) -> None:
    """RFC 4579 §5.5: in its dialog with the focus (a call to the factory URI), 100's phone
    REFERs ``sip:101@pbx``; the PBX rings 101 and joins it when it answers, the final NOTIFY
    says 200; both hear each other. 101 hangs up, one member is left: the focus dialog gets
    BYE."""
    with pbx_for_conference(tmp_path) as pbx, phones(pbx, tmp_path) as ph:
        ph.callee("101", "call_uas_bye.xml", pause_ms=8000)
        ph.dial("100", "conference", "call_uac_focus_refer.xml", pause_ms=1000,
                keys={"refer_to": "101"})
        wait_until(lambda: ph.peer("101").first_packet() is not None, 10, "101 to answer")
        start = time.monotonic() + 1.0
        time.sleep(3.5)
        for ext, others in (("100", ["101"]), ("101", ["100"])):
            assert_hears_exactly(ext, ph.peer(ext).pcm(start, start + 2.2), others)
        rc, out = ph.uas["101"].result()
        assert rc == 0, out
        rc, out = ph.uac_result("100")  # NOTIFY 100 then 200; BYE when one was left
        assert rc == 0, out
        assert len(events(pbx, "conference.invited")) == 1
        assert len(events(pbx, "conference.ended")) == 1
