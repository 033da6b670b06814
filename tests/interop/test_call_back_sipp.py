"""Call-back over real SIP: the PBX places a call with no inbound leg. It rings user 100's SIPp
phone first; when that answers, it calls 101's SIPp phone on 100's behalf and bridges both; the
first phone hangs up and both legs end. The server runs in this process so the test can ask for
the call-back directly (the REST API that will expose it comes with its own issue)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.interop.harness import free_port
from tests.interop.inprocess import serving
from tests.interop.test_calls_sipp import USERS, SippUas, register_port

pytestmark = pytest.mark.interop

CONFIG = "[media]\nport_min = 42000\nport_max = 42999\n[calls]\nring_timeout = 5.0\n"


async def test_call_back_calls_the_user_then_the_target(tmp_path: Path) -> None:
    phones: list[SippUas] = []
    async with serving(tmp_path, USERS, CONFIG) as (server, files):
        assert server.b2bua is not None
        try:
            for ext, password in USERS[:2]:
                port = free_port()
                await asyncio.to_thread(register_port, files, ext, password, port)
                # 100 answers at once and hangs up after 3 s (-d), which ends the call; 101
                # answers 500 ms after its INVITE
                phones.append(SippUas(tmp_path, "call_uas_answer.xml" if ext == "101"
                                      else "call_uas_bye.xml", port,
                                      keys={"rtp_port": str(free_port())}, name=f"phone{ext}",
                                      pause_ms=500 if ext == "101" else 3000))
            user = server.directory.user(server.domain, "100")
            assert user is not None
            call = server.b2bua.call_back(user, "101")
            results = [await asyncio.to_thread(p.result, 30.0) for p in phones]
            for phone, (rc, out) in zip(phones, results, strict=True):
                assert rc == 0, f"{phone.messages}: {out}"
            for _ in range(100):
                if call.released:
                    break
                await asyncio.sleep(0.05)
            assert call.released and call.record.answered is not None
            assert call.record.caller == "100" and call.record.callee == "101"
            invite_100 = phones[0].log().split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
            assert "Call-back 101" in invite_100, invite_100  # the user sees whom it will call
            invite_101 = phones[1].log().split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
            from_101 = invite_101.split("From:", 1)[1].split("\n", 1)[0]
            assert "<sip:100@" in from_101, invite_101
        finally:
            for p in phones:
                p.stop()
