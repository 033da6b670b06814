"""Call-back as a user starts it, against a running server (a subprocess) over real SIP/RTP:

* ``asyncpbx call-back 100 101 --phone mobile`` (another process: it goes through the
  server's REST API) rings 100's mobile on the SIPp carrier first; only once the mobile
  answered does 101's SIPp phone get an INVITE, from 100; both hear each other (a tone each
  way, told apart by Goertzel); 101 hangs up and the PBX hangs up the mobile; 100's history
  shows one outgoing call;
* with permanent call-back switched on (``asyncpbx settings set``), 100's desk phone dialling
  101 is answered, hears the announcement, is hung up, and the call goes on as a call-back to
  the mobile — one call record again.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from media.dtmf import tone_ratio
from pbx.store import Store
from tests.interop.harness import PbxProcess, free_port, read_log, running_pbx, sipp, users_csv
from tests.interop.test_calls_sipp import USERS, RtpPeer, SippUas, register_port
from tests.interop.test_carrier_calls import CARRIER_HOST, carrier_setup
from tests.interop.test_incoming_sipp import mobile

pytestmark = pytest.mark.interop

CONFIG = "[media]\nport_min = 44000\nport_max = 44999\n[calls]\nring_timeout = 5.0\n"
MOBILE_100 = "+491709876543"
MOBILE_HZ, DESK_HZ = 600.0, 1400.0


def setup(carrier_port: int) -> Callable[[Store], None]:
    base = carrier_setup(carrier_port)

    def run(store: Store) -> None:
        base(store)
        store.update_user("100", mobile_number=MOBILE_100)

    return run


def cli(pbx: PbxProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbx", *args, "--config", str(pbx.workdir / "asyncpbx.toml"),
         "--data-dir", str(pbx.data_dir)], capture_output=True, text=True, timeout=30)


def heard(peer: RtpPeer, hz: float) -> bool:
    """``peer`` received ``hz`` for at least a second."""
    pcm = peer.pcm()
    windows = [pcm[i:i + 800] for i in range(0, len(pcm) - 800, 800)]  # 100 ms
    loud = [w for w in windows if np.sqrt(np.mean(w.astype(np.float64) ** 2)) > 300]
    return sum(1 for w in loud if tone_ratio(w, hz, 8000) > 0.8) >= 10


def outgoing_history(pbx: PbxProcess, ext: str) -> list[str]:
    store = Store(pbx.data_dir)
    try:
        user = store.user(ext)
        return [e.direction for e in store.history(user.id)]
    finally:
        store.close()


def first_at(log: str, start: str) -> datetime:
    """When SIPp logged the first message starting with ``start`` (its trace's timestamp)."""
    for entry in log.split("-----------------------------------------------")[1:]:
        stamp, _, rest = entry.partition("\n")
        if rest.split("\n\n", 1)[-1].lstrip().startswith(start):
            return datetime.fromisoformat(stamp.strip())
    raise AssertionError(f"no {start!r} in the trace")


def invite_line_at(log: str) -> str:
    return log.split("INVITE sip:", 1)[1].split("\n", 1)[0]


def test_cli_call_back_rings_the_mobile_first_then_the_target_and_both_hear_each_other(
        tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=CONFIG,
                     store_setup=setup(carrier_port)) as pbx:
        host, port = pbx.addr("http")
        api = f"http://{host}:{port}"
        desk_rtp = RtpPeer(send_hz=DESK_HZ)
        ear = RtpPeer(send_hz=MOBILE_HZ, host=CARRIER_HOST)
        phone_port = free_port()
        register_port(pbx, "101", USERS[1][1], phone_port)
        # 101 answers at once and hangs up 3 s later
        target = SippUas(tmp_path, "call_uas_bye.xml", phone_port,
                         keys={"rtp_port": str(desk_rtp.port)}, name="phone101",
                         pause_ms=3000)
        try:
            with mobile(tmp_path, carrier_port, ear.port, answer_ms=1500) as carrier:
                started = time.monotonic()
                done = cli(pbx, "call-back", "100", "101", "--phone", "mobile", "--api", api)
                assert done.returncode == 0, done.stderr
                assert "calling 100's phone (mobile), then 101" in done.stdout
                rc, out = target.result(30.0)
                assert rc == 0, out
                carrier_out, _ = carrier.communicate(timeout=30)
                assert carrier.returncode == 0, carrier_out + read_log(
                    tmp_path / "mobile-errors.log")
            elapsed = time.monotonic() - started
        finally:
            target.stop()
            desk_rtp.close()
            ear.close()
        mobile_log = read_log(tmp_path / "mobile-messages.log")
        assert invite_line_at(mobile_log).startswith(MOBILE_100 + "@"), mobile_log[:400]
        invite_101 = target.log().split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
        assert "<sip:100@" in invite_101.split("From:", 1)[1].split("\n", 1)[0], invite_101
        # the target was called only after the mobile answered (it answers 1.5 s after its
        # INVITE came), and the call ran ~3 s. (Not "after the mobile's 200 in its trace": two
        # SIPp processes stamp their traces when they write them, and a loaded machine lets the
        # PBX's INVITE to 101 be written first by some microseconds.)
        waited = (first_at(target.log(), "INVITE sip:")
                  - first_at(mobile_log, "INVITE sip:")).total_seconds()
        assert waited >= 1.4, waited
        answered = [e for e in pbx.log_events() if e.get("event") == "call.answered"]
        assert len(answered) == 1 and answered[0]["callee"] == "101", answered
        assert elapsed >= 1.5 + 3.0 - 0.5, elapsed
        assert heard(ear, DESK_HZ), "the mobile did not hear the target"
        assert heard(desk_rtp, MOBILE_HZ), "the target did not hear the mobile"
    assert outgoing_history(pbx, "100") == ["out"]
    assert outgoing_history(pbx, "101") == ["in"]


def test_permanent_call_back_turns_a_desk_phone_call_into_a_call_back(tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=CONFIG,
                     store_setup=setup(carrier_port)) as pbx:
        changed = cli(pbx, "settings", "set", "100", "call_back", "permanent=true",
                      "phone=mobile")
        assert changed.returncode == 0, changed.stderr
        time.sleep(1.5)  # the server reads the change on its next poll
        desk_rtp, ear = RtpPeer(send_hz=DESK_HZ), RtpPeer(send_hz=MOBILE_HZ, host=CARRIER_HOST)
        phone_port = free_port()
        register_port(pbx, "101", USERS[1][1], phone_port)
        target = SippUas(tmp_path, "call_uas_bye.xml", phone_port,
                         keys={"rtp_port": str(desk_rtp.port)}, name="phone101",
                         pause_ms=2500)
        inf = users_csv(tmp_path / "caller.csv", [USERS[0]])
        sip_host, sip_port = pbx.addr("udp")
        log = tmp_path / "desk-messages.log"
        try:
            with mobile(tmp_path, carrier_port, ear.port, answer_ms=500) as carrier, \
                    ThreadPoolExecutor(1) as pool:
                # the desk phone dials 101 and waits for the PBX's BYE (after the prompt)
                desk = pool.submit(sipp, "call_uac_wait_bye.xml", (sip_host, sip_port),
                                   tmp_path, inf=inf, timeout=30,
                                   extra=["-auth_uri", f"101@{sip_host}:{sip_port}",
                                          "-key", "dst", "101", "-key", "rtp_port",
                                          str(free_port()), "-trace_msg",
                                          "-message_file", str(log)])
                res = desk.result(40)
                assert (res.successful, res.failed) == (1, 0), res.output
                rc, out = target.result(30.0)
                assert rc == 0, out
                carrier_out, _ = carrier.communicate(timeout=30)
                assert carrier.returncode == 0, carrier_out
        finally:
            target.stop()
            desk_rtp.close()
            ear.close()
        assert "BYE sip:" in read_log(log)  # the PBX hung the desk phone up
        instead = [e for e in pbx.log_events() if e.get("event") == "call.callback_instead"]
        assert len(instead) == 1 and instead[0]["dialled"] == "101", instead
        assert heard(ear, DESK_HZ) and heard(desk_rtp, MOBILE_HZ)
    assert outgoing_history(pbx, "100") == ["out"]
