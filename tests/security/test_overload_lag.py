"""Overload control driven by real event-loop lag (issue 12 §2): the server runs inside the
test's event loop; callbacks that stall the loop (300 ms each, again and again) make the probe
measure lag, the server turns overloaded on its own and answers a stranger's new INVITE
(127.0.0.4) with 503 + Retry-After; once the stalls stop it recovers by itself
(``recover_after``) and the same stranger gets the normal challenge (407) again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pbx.overload import LoadState
from tests.interop.inprocess import serving
from tests.security.wire import SipClient, need_aliases

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

STRANGER = "127.0.0.4"
CONFIG = "[overload]\nlag_threshold = 0.1\nrecover_after = 0.5\nretry_after = 3\n"


async def _invite_status(client: SipClient, cseq: int) -> tuple[int | None, str | None]:
    answer = await asyncio.to_thread(client.send, client.request("INVITE", "101", cseq))
    if answer is None:
        return None, None
    return answer.response.status, answer.response.headers.get("Retry-After")


async def test_real_lag_overloads_then_recovers_by_itself(tmp_path: Path) -> None:
    need_aliases(STRANGER)
    async with serving(tmp_path, [("100", "pw-100"), ("101", "pw-101")], CONFIG) as (server, pbx):
        detector = server.overload
        with SipClient(STRANGER, pbx.addr("udp"), timeout=3.0) as stranger:
            assert await _invite_status(stranger, 1) == (407, None)  # normal: challenged
            loop = asyncio.get_running_loop()
            stalling = True

            def stall() -> None:  # the loop is busy: 300 ms of work every 50 ms
                if stalling:
                    time.sleep(0.3)
                    loop.call_later(0.05, stall)

            loop.call_soon(stall)
            deadline = time.monotonic() + 10
            while detector.state is LoadState.NORMAL and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert detector.overloaded, detector.lag
            status, retry_after = await _invite_status(stranger, 2)
            assert (status, retry_after) == (503, "3")
            stalling = False
            deadline = time.monotonic() + 10
            while detector.overloaded and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert detector.state is LoadState.NORMAL, detector.lag
            assert await _invite_status(stranger, 3) == (407, None)
        assert detector.stats["overloads"] >= 1 and detector.stats["recoveries"] >= 1
        assert detector.stats["rejected"] >= 1
