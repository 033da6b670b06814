"""SRTP per leg: a baresip softphone that insists on SDES-SRTP (``mediaenc=srtp-mand``: RTP/SAVP
with ``a=crypto``) calls a plain-RTP baresip through asyncpbx. The PBX answers the caller with
RTP/SAVP and its own key, offers the callee plain RTP, and relays between them (SRTP terminated
per leg). Each side must hear the other's tone."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.interop.harness import need, read_log, running_pbx
from tests.interop.test_calls_baresip import (
    TONE_100,
    TONE_101,
    USERS,
    baresip_dir,
    best_ratio,
    recording,
    stop,
    tone_file,
    wait_for,
)

pytestmark = pytest.mark.interop


def test_srtp_caller_talks_to_plain_rtp_callee(tmp_path: Path) -> None:
    binary = need("baresip")
    extra = "[media]\nport_min = 45000\nport_max = 45999\n"
    with running_pbx(tmp_path / "pbx", transports=("udp",), users=USERS,
                     config_extra=extra) as pbx:
        server = pbx.addr("udp")
        d101 = baresip_dir(tmp_path, "101", USERS[1][1], server, tone_file(TONE_101), "PCMU")
        callee = subprocess.Popen([binary, "-f", str(d101)], stdin=subprocess.PIPE,
                                  stdout=(d101 / "out.log").open("w"), stderr=subprocess.STDOUT,
                                  text=True)
        caller = None
        try:
            assert wait_for(pbx, "sip.register.added"), "101 did not register"
            d100 = baresip_dir(tmp_path, "100", USERS[0][1], server, tone_file(TONE_100), "PCMU")
            # the caller offers (and accepts) only SDES-SRTP
            accounts = (d100 / "accounts").read_text().rstrip("\n")
            (d100 / "accounts").write_text(accounts + ";mediaenc=srtp-mand\n")
            config = (d100 / "config").read_text()
            # the media-encryption module must be loaded before the account that names it
            (d100 / "config").write_text(config.replace("module account.so\n",
                                                        "module srtp.so\nmodule account.so\n"))
            caller = subprocess.Popen(
                [binary, "-f", str(d100), "-e", f"/dial sip:101@{server[0]}:{server[1]}"],
                stdin=subprocess.PIPE, stdout=(d100 / "out.log").open("w"),
                stderr=subprocess.STDOUT, text=True)
            assert wait_for(pbx, "call.answered"), read_log(d100 / "out.log")[-3000:]
            time.sleep(3.0)  # talk
        finally:
            if caller is not None:
                stop(caller)
            assert wait_for(pbx, "call.ended", timeout=10)
            stop(callee)
        answered = next(e for e in pbx.log_events() if e.get("event") == "call.answered")
    # SRTP on the caller's leg only
    assert answered["srtp"] == [True, False], answered
    heard_100, rate_100 = recording(d100)
    heard_101, rate_101 = recording(d101)
    assert best_ratio(heard_100, TONE_101, rate_100) > 0.6
    assert best_ratio(heard_101, TONE_100, rate_101) > 0.6
    assert best_ratio(heard_101, TONE_101, rate_101) < 0.2
