"""Blind transfer from a real softphone: baresip 101 answers 100's call and transfers it to
baresip 102 with its own ``/transfer`` (a REFER in the dialog). The PBX takes the REFER:
100 and 102 then hear each other (Goertzel on baresip's recordings), 101's dialog is over."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.interop.harness import need, read_log, running_pbx
from tests.interop.test_calls_baresip import (
    baresip_dir,
    best_ratio,
    recording,
    stop,
    tone_file,
    wait_for,
)
from tests.interop.test_calls_sipp import USERS

pytestmark = pytest.mark.interop

TONE_100, TONE_101, TONE_102 = 697.0, 1209.0, 1477.0


def phone(binary: str, tmp: Path, index: int, server: tuple[str, int], tone: float,
          *args: str) -> tuple[subprocess.Popen[str], Path]:
    ext, password = USERS[index]
    d = baresip_dir(tmp, ext, password, server, tone_file(tone), "PCMU")
    with (d / "config").open("a") as config:
        config.write("module stdio.so\n")  # commands on stdin (/transfer)
    proc = subprocess.Popen([binary, "-f", str(d), *args], stdin=subprocess.PIPE,
                            stdout=(d / "out.log").open("w"), stderr=subprocess.STDOUT,
                            text=True)
    return proc, d


def test_baresip_blind_transfer_by_refer(tmp_path: Path) -> None:
    binary = need("baresip")
    extra = "[media]\nport_min = 40000\nport_max = 43999\n"
    procs: list[subprocess.Popen[str]] = []
    with running_pbx(tmp_path / "pbx", transports=("udp",), users=USERS,
                     config_extra=extra) as pbx:
        server = pbx.addr("udp")
        try:
            p101, d101 = phone(binary, tmp_path, 1, server, TONE_101)
            p102, d102 = phone(binary, tmp_path, 2, server, TONE_102)
            procs += [p101, p102]
            assert wait_for(pbx, "sip.register.added", count=2), "101/102 did not register"
            p100, d100 = phone(binary, tmp_path, 0, server, TONE_100,
                               "-e", f"/dial sip:101@{server[0]}:{server[1]}")
            procs.append(p100)
            assert wait_for(pbx, "call.answered"), read_log(d100 / "out.log")[-3000:]
            time.sleep(1.5)  # 100 talks to 101
            assert p101.stdin is not None
            p101.stdin.write(f"/transfer sip:102@{server[0]}:{server[1]}\n")
            p101.stdin.flush()
            assert wait_for(pbx, "call.answered", count=2), (
                read_log(d101 / "out.log")[-3000:] + read_log(pbx.log_path)[-3000:])
            # the transferor's call ends (its BYE after the NOTIFY, or ours after the grace)
            assert wait_for(pbx, "call.ended", count=1, timeout=10), read_log(pbx.log_path)
            time.sleep(3.0)  # 100 talks to 102
        finally:
            for proc in procs[2:] + procs[:2]:  # the caller hangs up first
                stop(proc)
        assert wait_for(pbx, "call.ended", count=2, timeout=10), read_log(pbx.log_path)[-3000:]
        logged = pbx.log_events()
    blind = [e for e in logged if e.get("event") == "transfer.blind"]
    assert len(blind) == 1 and blind[0]["target"] == "102", blind
    heard_100, rate_100 = recording(d100)
    heard_102, rate_102 = recording(d102)
    assert best_ratio(heard_100, TONE_101, rate_100) > 0.6  # before the transfer
    assert best_ratio(heard_100, TONE_102, rate_100) > 0.6  # after it
    assert best_ratio(heard_102, TONE_100, rate_102) > 0.6
    assert best_ratio(heard_102, TONE_101, rate_102) < 0.2  # 102 never heard the transferor
