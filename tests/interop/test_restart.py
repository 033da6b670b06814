"""Restart with a call in progress: SIGTERM during an answered call, start again.

The server releases the call on the way down (BYE to both parties) and closes its history
entries; after the restart the registrations come back from the store (the callee's phone is
reached at the very port it registered from, without registering again), the history of the
interrupted call is there and closed for both users, and new calls work.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pbx.store import Store
from tests.interop.harness import PbxProcess, free_port, running_pbx, sipp, users_csv
from tests.interop.test_calls_sipp import USERS, SippUas, caller, register_port

pytestmark = pytest.mark.interop


def _wait_for_event(pbx: PbxProcess, name: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == name for e in pbx.log_events()):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {name} in the server log")


def test_restart_during_a_call_keeps_registrations_and_history(tmp_path: Path) -> None:
    config = "[media]\nport_min = 48000\nport_max = 49999\n"
    phone_port = free_port()
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=config) as pbx:
        register_port(pbx, "101", USERS[1][1], phone_port)
        phone = SippUas(tmp_path, "call_uas_answer.xml", phone_port, keys={"rtp_port": str(free_port())},
                        name="phone-a")
        # a long call (30 s of talk) in the background; the server goes down in the middle
        inf = users_csv(tmp_path / "caller-a.csv", [USERS[0]])
        host, port = pbx.addr("udp")
        runner = threading.Thread(target=sipp, args=("call_uac.xml", pbx.addr("udp"), tmp_path),
                                  kwargs={"inf": inf, "timeout": 40, "extra": [
                                      "-auth_uri", f"101@{host}:{port}", "-key", "dst", "101",
                                      "-key", "rtp_port", str(free_port()), "-d", "30000"]},
                                  daemon=True)
        runner.start()
        try:
            _wait_for_event(pbx, "call.answered")
            # flush interval: the registration is written behind once a second
            rc = pbx.stop()
            assert rc in (0, None), rc
            phone_rc, phone_out = phone.result(timeout=20)
        finally:
            phone.stop()
        assert phone_rc == 0, phone_out  # the callee got the BYE of the shutdown
        runner.join(45)

        pbx.users = ()  # the data directory keeps them
        pbx.start()
        restarted = [e for e in pbx.log_events() if e.get("event") == "server.started"]
        assert len(restarted) == 2 and restarted[-1]["registrations_restored"] == 1

        # the restored binding is used: the phone did not register again
        phone2 = SippUas(tmp_path, "call_uas_answer.xml", phone_port,
                         keys={"rtp_port": str(free_port())}, name="phone-b")
        try:
            ok, failed, out = caller(pbx, tmp_path, pause_ms=500, rtp_port=free_port())
            rc2, out2 = phone2.result()
        finally:
            phone2.stop()
        assert (ok, failed) == (1, 0), out
        assert rc2 == 0, out2

    store = Store(tmp_path / "data")
    try:
        u100, u101 = store.user("100"), store.user("101")
        h100, h101 = store.history(u100.id), store.history(u101.id)
    finally:
        store.close()
    # two calls each: the interrupted one and the new one, all closed and answered
    assert len(h100) == 2 and len(h101) == 2, (h100, h101)
    assert {e.direction for e in h100} == {"out"} and {e.direction for e in h101} == {"in"}
    for entry in (*h100, *h101):
        assert entry.ended_at is not None and entry.answered_at is not None, entry
        assert not entry.missed
    first = min(h100, key=lambda e: e.started_at)
    assert first.other_number == "101"
