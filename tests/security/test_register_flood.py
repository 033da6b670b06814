"""A REGISTER flood against the running server (issue 12 §3, SECURITY.md "what the tests must
show"): 5,000 REGISTERs a second from one loopback address (127.0.0.66) for 30 s, while 50
users, each a phone on its own address (127.0.1.1 … 127.0.1.50), re-register every second and
a phone on 127.0.1.60 places calls to a SIPp UAS. Legitimate traffic: ≥ 99 % ok, p95 of a
registration (challenge + credentials) ≤ 250 ms, every call completes; the flooder is banned
(one ``security.ban`` line); the server's memory grows ≤ 50 MB and comes back afterwards.

The flooder is a separate process (it must not share the test's interpreter with the phones
it competes against); the phones are threads with a phone's retransmission timer (RFC 3261
timer E: 500 ms, doubling) and give up after 4 s. The figures go to
``tests/security/figures/register_flood.json`` for docs/security.md.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sipcore.message import Response, parse_message
from tests.interop.harness import SippResult, free_port, read_log, running_pbx, sipp, users_csv
from tests.interop.test_calls_sipp import SippUas, register_port
from tests.security.wire import SipClient, need_aliases

pytestmark = pytest.mark.interop

FLOODER = "127.0.0.66"
PHONES = [f"127.0.1.{i}" for i in range(1, 51)]
CALLER = "127.0.1.60"
USERS = [(str(200 + i), f"pw-{200 + i}-secret") for i in range(50)]
CALLER_USER, CALLEE_USER = ("300", "pw-300-secret"), ("301", "pw-301-secret")
FLOOD_RATE = 5000
FLOOD_SECONDS = 30.0
FIGURES = Path(__file__).parent / "figures"

#: The flooder: unauthenticated REGISTERs for random extensions, paced in 10 ms batches;
#: prints how many it sent and how many answers it got.
_FLOOD = r"""
import os, socket, sys, time
host, server, port, rate, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((host, 0)); s.setblocking(False)
lp = s.getsockname()[1]
tpl = ("REGISTER sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;rport;branch=z9hG4bKfl%%d\r\n"
       "From: <sip:%%d@%s>;tag=f%%d\r\nTo: <sip:%%d@%s>\r\nCall-ID: flood-%%d\r\n"
       "CSeq: 1 REGISTER\r\nContact: <sip:x@%s:%d>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
       % (server, host, lp, server, server, host, lp))
sent = answered = 0
start = time.monotonic()
while True:
    elapsed = time.monotonic() - start
    if elapsed >= seconds:
        break
    due = int(elapsed * rate) + rate // 100
    while sent < due:
        n = sent
        try:
            s.sendto((tpl % (n, 1000 + n % 9000, n, 1000 + n % 9000, n)).encode(), (server, port))
        except BlockingIOError:
            pass
        sent += 1
    try:
        while True:
            s.recv(65535); answered += 1
    except (BlockingIOError, InterruptedError):
        pass
    time.sleep(0.01)
print(sent, answered, flush=True)
"""


@dataclass
class PhoneFigures:
    """What the legitimate phones saw."""

    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _transact(client: SipClient, data: bytes, call_id: str, cseq: int) -> Response | None:
    """Send ``data`` with a phone's retransmissions (500 ms doubling, 4 s in all); the final
    answer to (``call_id``, ``cseq``) or None."""
    deadline = time.monotonic() + 4.0
    interval = 0.5
    client.sock.sendto(data, client.server)
    next_send = time.monotonic() + interval
    while time.monotonic() < deadline:
        client.sock.settimeout(max(0.01, min(next_send, deadline) - time.monotonic()))
        try:
            message = parse_message(client.sock.recv(65535))
        except TimeoutError:
            if time.monotonic() >= next_send:
                client.sock.sendto(data, client.server)
                interval = min(interval * 2, 4.0)
                next_send = time.monotonic() + interval
            continue
        if (isinstance(message, Response) and message.status >= 200
                and (message.call_id, message.cseq.seq) == (call_id, cseq)):
            return message
    return None


def _phone(host: str, user: tuple[str, str], server: tuple[str, int], stop: threading.Event,
           figures: PhoneFigures) -> None:
    """Re-register every second until ``stop``: challenge, then credentials, timed."""
    ext, password = user
    call_id = f"legit-{ext}-{os.urandom(3).hex()}"
    cseq = 1
    with SipClient(host, server) as client:
        while not stop.is_set():
            began = time.perf_counter()
            first = client.request("REGISTER", ext, cseq, call_id=call_id,
                                   contact_port=client.port, expires=60)
            challenge = _transact(client, first.serialize(), call_id, cseq)
            outcome = "no answer to the first REGISTER"
            if challenge is not None and challenge.status == 401:
                authed = client.authorize(
                    client.request("REGISTER", ext, cseq + 1, call_id=call_id,
                                   contact_port=client.port, expires=60),
                    challenge, ext, password)
                ok = _transact(client, authed.serialize(), call_id, cseq + 1)
                outcome = "ok" if ok is not None and ok.status == 200 else (
                    f"answer {ok.status}" if ok is not None else "no answer with credentials")
            elif challenge is not None:
                outcome = f"first answer {challenge.status}"
            took = time.perf_counter() - began
            with figures.lock:
                if outcome == "ok":
                    figures.times.append(took)
                else:
                    figures.failures.append(f"{ext}: {outcome}")
            cseq += 2
            stop.wait(max(0.0, 1.0 - took))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_register_flood_leaves_the_office_working(tmp_path: Path) -> None:
    need_aliases(FLOODER, CALLER, *PHONES)
    config = ("[security]\ntrusted = []\nban_time = 300\n"
              "[media]\nport_min = 47000\nport_max = 47199\n")
    with running_pbx(tmp_path, transports=("udp",), users=[*USERS, CALLER_USER, CALLEE_USER],
                     config_extra=config) as pbx:
        server = pbx.addr("udp")
        assert pbx.proc is not None
        pid = pbx.proc.pid
        # the callee: a SIPp UAS on 127.0.0.1 (not trusted here), registered as 301
        uas_port = free_port()
        register_port(pbx, CALLEE_USER[0], CALLEE_USER[1], uas_port)  # from that port
        calls = int(FLOOD_SECONDS / 2)  # one every 2 s, each talking 1 s
        uas = SippUas(tmp_path, "call_uas_answer.xml", uas_port, calls=calls,
                      keys={"rtp_port": str(free_port())}, timeout=int(FLOOD_SECONDS) + 30)
        figures = PhoneFigures()
        stop = threading.Event()
        phones = [threading.Thread(target=_phone, args=(host, user, server, stop, figures),
                                   daemon=True) for host, user in zip(PHONES, USERS, strict=True)]
        try:
            for phone in phones:
                phone.start()
            time.sleep(2.0)  # every phone registered once before the flood
            rss_before = _rss_kib(pid)
            flooder = subprocess.Popen(
                [sys.executable, "-c", _FLOOD, FLOODER, server[0], str(server[1]),
                 str(FLOOD_RATE), str(FLOOD_SECONDS)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            inf = users_csv(tmp_path / "caller.csv", [CALLER_USER])
            caller_result: list[SippResult] = []

            def place_calls() -> None:
                caller_result.append(sipp(
                    "call_uac.xml", server, tmp_path, inf=inf, calls=calls, rate=0.5,
                    local_ip=CALLER, timeout=FLOOD_SECONDS + 30,
                    extra=["-auth_uri", f"{CALLEE_USER[0]}@{server[0]}:{server[1]}",
                           "-key", "dst", CALLEE_USER[0], "-key", "rtp_port", str(free_port()),
                           "-d", "1000"]))

            caller_thread = threading.Thread(target=place_calls, daemon=True)
            caller_thread.start()
            rss_peak = rss_before
            while flooder.poll() is None:
                rss_peak = max(rss_peak, _rss_kib(pid))
                time.sleep(0.5)
            flood_out, flood_err = flooder.communicate(timeout=10)
            caller_thread.join(timeout=60)
            stop.set()
            for phone in phones:
                phone.join(timeout=10)
            time.sleep(3.0)
            rss_after = _rss_kib(pid)
            uas_rc, uas_out = uas.result(timeout=30)
        finally:
            stop.set()
            uas.stop()
        assert flooder.returncode == 0, flood_err
        sent, answered = (int(x) for x in flood_out.split())
        log = read_log(pbx.log_path)

    bans = [json.loads(line) for line in log.splitlines() if '"security.ban"' in line]
    flooder_bans = [b for b in bans if b.get("src") == FLOODER]
    ok = len(figures.times)
    total = ok + len(figures.failures)
    p95 = statistics.quantiles(figures.times, n=20)[-1] if len(figures.times) >= 20 else None
    call = caller_result[0] if caller_result else None
    result = {
        "flood_rate": FLOOD_RATE, "flood_seconds": FLOOD_SECONDS, "flood_sent": sent,
        "flood_answered": answered, "flooder_banned": bool(flooder_bans),
        "registrations": total, "registrations_ok": ok,
        "ok_fraction": round(ok / total, 4) if total else None,
        "p50_ms": round(statistics.median(figures.times) * 1000, 2) if figures.times else None,
        "p95_ms": round(p95 * 1000, 2) if p95 is not None else None,
        "calls": calls, "calls_ok": call.successful if call else None,
        "calls_failed": call.failed if call else None,
        "rss_before_mib": round(rss_before / 1024, 1), "rss_peak_mib": round(rss_peak / 1024, 1),
        "rss_after_mib": round(rss_after / 1024, 1),
        "failures": figures.failures[:20],
    }
    FIGURES.mkdir(exist_ok=True)
    (FIGURES / "register_flood.json").write_text(json.dumps(result, indent=2))

    assert sent >= FLOOD_RATE * FLOOD_SECONDS * 0.9, result  # the flood was offered
    assert flooder_bans, result
    assert len(flooder_bans) == 1, result  # one line per ban, not one per dropped packet
    # banned early: a handful of answers (challenges) before the ban, then silence
    assert answered < 100, result
    assert total >= len(PHONES) * FLOOD_SECONDS * 0.8, result
    assert ok / total >= 0.99, result
    assert p95 is not None and p95 <= 0.250, result
    assert call is not None and (call.successful, call.failed) == (calls, 0), (result, call)
    assert uas_rc == 0, uas_out
    assert (rss_peak - rss_before) / 1024 <= 50, result
    assert (rss_after - rss_before) / 1024 <= 50, result
