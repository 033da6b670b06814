"""Overload control on the wire (issue 12 §2, pbx/overload.py): with the server held in the
overloaded state (``[overload] force = true``, the test hook), a new INVITE and a REGISTER
from an untrusted source (127.0.0.4) are answered 503 with ``Retry-After`` at once, while a
call in progress ends normally: the callee — an untrusted phone on 127.0.0.3, registered
before the restart into the overloaded state — hangs up, and its BYE (in-dialog) is relayed
and answered on both sides. The caller is on the trusted 127.0.0.1 (trusted peers are never
refused)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.interop.harness import SCENARIOS, free_port, need, read_log, running_pbx
from tests.interop.test_calls_sipp import USERS, caller, events, register_port
from tests.security.test_enumeration import record
from tests.security.wire import SipClient, need_aliases

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

PHONE = "127.0.0.3"
STRANGER = "127.0.0.4"
MEDIA = "[media]\nport_min = 46200\nport_max = 46399\n"


def wait_event(pbx: object, name: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events(pbx, name):  # type: ignore[arg-type]
            return True
        time.sleep(0.05)
    return False


def test_overloaded_new_work_gets_503_while_a_call_in_progress_ends(tmp_path: Path) -> None:
    need_aliases(PHONE, STRANGER)
    phone_port = free_port(PHONE)
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=MEDIA) as pbx:
        register_port(pbx, "101", USERS[1][1], phone_port, host=PHONE)
        time.sleep(1.5)  # registrations are written behind once a second
        pbx.stop()
        pbx.users = ()  # the data directory keeps them
        pbx.config_extra = MEDIA + "[overload]\nforce = true\nretry_after = 7\n"
        pbx.start()
        phone = subprocess.Popen(
            [need("sipp"), "-sf", str(SCENARIOS / "call_uas_bye.xml"), "-t", "u1", "-i", PHONE,
             "-p", str(phone_port), "-m", "1", "-d", "2500", "-nostdin", "-timeout", "40s",
             "-timeout_error", "-key", "rtp_port", str(free_port(PHONE)), "-trace_msg",
             "-message_file", str(tmp_path / "phone-messages.log")],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace")
        time.sleep(0.3)
        result: dict[str, tuple[int, int, str]] = {}
        runner = threading.Thread(target=lambda: result.setdefault(
            "caller", caller(pbx, tmp_path, "call_uac_wait_bye.xml")), daemon=True)
        runner.start()
        try:
            assert wait_event(pbx, "call.answered"), read_log(pbx.log_path)[-3000:]
            with SipClient(STRANGER, pbx.addr("udp")) as stranger:
                first = stranger.request("INVITE", "101", 1)
                invite = stranger.send(first)
                # a retransmission is answered again, statelessly, with the same To tag
                # (RFC 3261 §8.2.7), and the ACK of the 503 is absorbed (no answer)
                again = stranger.send_raw(first.serialize())
                assert invite is not None and again is not None
                tag = invite.response.to.tag
                ack = (first.serialize().replace(b"INVITE sip:", b"ACK sip:", 1)
                       .replace(b" INVITE\r\n", b" ACK\r\n")
                       .replace(b"\r\nTo: " + first.headers.get("To").encode(),
                                b"\r\nTo: " + first.headers.get("To").encode()
                                + b";tag=" + tag.encode()))
                ack_answer = stranger.send_raw(ack)
                register = stranger.send(stranger.request("REGISTER", "102", 1,
                                                          contact_port=stranger.port))
            runner.join(40)
            out, _ = phone.communicate(timeout=40)
        finally:
            if phone.poll() is None:
                phone.kill()
                phone.communicate()
        ended = events(pbx, "call.ended")
    assert invite is not None and register is not None
    assert again.response.status == 503 and again.response.to.tag == tag
    assert tag.startswith("sl-") and ack_answer is None
    for answer in (invite, register):
        assert answer.response.status == 503, answer
        assert answer.response.headers.get("Retry-After") == "7", answer
        assert answer.seconds < 0.05, answer.seconds
    ok, failed, caller_out = result["caller"]
    assert (ok, failed) == (1, 0), caller_out
    assert phone.returncode == 0, out + read_log(tmp_path / "phone-messages.log")[-2000:]
    assert ended and ended[0]["cause"] == "callee hung up" and ended[0]["answered"] is True
    record("overload_wire", {"invite_503_ms": invite.seconds * 1000,
                             "register_503_ms": register.seconds * 1000,
                             "call_in_progress_ended": True})
