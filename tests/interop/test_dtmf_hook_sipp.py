"""Digits in a connected call reach the features' on_dtmf hook over real SIP: a SIPp phone
(100) calls another (101) through the PBX and sends a digit by SIP INFO; a probe feature in
the running server's registry sees it, for the right user, while the digit still reaches the
other phone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pbx.callcontrol import BaseFeature, CallContext, Continue, Decision
from tests.interop.harness import free_port
from tests.interop.inprocess import serving
from tests.interop.test_calls_sipp import USERS, RtpPeer, SippUas, caller, register_port

pytestmark = pytest.mark.interop

CONFIG = "[media]\nport_min = 43000\nport_max = 43999\n"


class Probe(BaseFeature):
    """Records every on_dtmf call."""

    name = "probe"
    priority = 10

    def __init__(self) -> None:
        self.digits: list[tuple[str, str]] = []

    async def on_dtmf(self, ctx: CallContext) -> Decision:
        self.digits.append((ctx.user.extension if ctx.user else "", ctx.digits))
        return Continue()


async def test_a_digit_by_sip_info_reaches_on_dtmf_of_the_sender(tmp_path: Path) -> None:
    probe = Probe()
    async with serving(tmp_path, USERS, CONFIG) as (server, files):
        server.features.register(probe)
        port = free_port()
        await asyncio.to_thread(register_port, files, "101", USERS[1][1], port)
        callee_rtp = RtpPeer()
        uas = SippUas(tmp_path, "call_uas_answer.xml", port,
                      keys={"rtp_port": str(callee_rtp.port)}, name="phone101")
        try:
            ok, failed, out = await asyncio.to_thread(
                caller, files, tmp_path, "call_uac_info.xml", pause_ms=1000)
            rc, uas_out = await asyncio.to_thread(uas.result, 30.0)
        finally:
            uas.stop()
            callee_rtp.close()
        assert (ok, failed) == (1, 0), out
        assert rc == 0, uas_out
    assert probe.digits == [("100", "5")]
    # and the digit still reached the other phone (as RFC 4733 events)
    assert {e[0] for e in callee_rtp.events} == {5}
