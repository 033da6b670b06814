"""The live-call resource over real SIP: a SIPp phone (100) calls 101 (a SIPp phone that
answers and waits); GET /calls shows the call to 101's token (answered, 100 → 101) and not to
another tenant's admin; DELETE /calls/{call} hangs it up — both phones get a BYE."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.interop.inprocess import serving
from tests.interop.test_calls_sipp import USERS
from tests.interop.test_features_sipp import dial
from tests.interop.test_voicemail_sipp import CONFIG, callee, until

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]


async def test_a_call_in_progress_listed_and_hung_up_over_the_api(tmp_path: Path) -> None:
    tokens: dict[str, str] = {}

    def setup(store: Any) -> None:
        user = store.user("101")
        tokens["101"] = store.create_api_token(role="user", tenant_id=user.tenant_id,
                                               user_id=user.id, now=time.time())[0]
        other = store.add_tenant("acme", "acme.test")
        tokens["acme"] = store.create_api_token(role="tenant_admin", tenant_id=other.id,
                                                now=time.time())[0]

    async with serving(tmp_path, USERS, CONFIG, store_setup=setup) as (server, files):
        assert server.http is not None
        api = f"http://{server.http.host}:{server.http.port}/api/v1/calls"
        timeout = aiohttp.ClientTimeout(total=10)
        async with callee(tmp_path, files, "call_uas_answer.xml") as uas, \
                aiohttp.ClientSession(timeout=timeout) as http:
            mine = {"Authorization": f"Bearer {tokens['101']}"}
            theirs = {"Authorization": f"Bearer {tokens['acme']}"}
            caller = asyncio.create_task(asyncio.to_thread(
                dial, files, tmp_path, 0, "101", "call_uac_wait_bye.xml"))
            seen: list[dict[str, Any]] = []

            async def answered() -> bool:
                async with http.get(api, headers=mine) as resp:
                    assert resp.status == 200
                    page = await resp.json()
                seen[:] = page["items"]
                return bool(seen) and seen[0]["state"] == "answered"

            deadline = time.monotonic() + 10
            while not await answered():
                assert time.monotonic() < deadline and not caller.done(), seen
                await asyncio.sleep(0.1)
            (call,) = seen
            assert (call["caller"], call["callee"]) == ("100", "101"), call
            async with http.get(api, headers=theirs) as resp:
                assert (await resp.json())["total"] == 0
            async with http.delete(f"{api}/{call['call_id']}", headers=theirs) as resp:
                assert resp.status == 404
            async with http.delete(f"{api}/{call['call_id']}", headers=mine) as resp:
                assert resp.status == 204
            ok, failed, out = await asyncio.wait_for(caller, 30)
            assert (ok, failed) == (1, 0), out  # the caller got a BYE
            rc, uas_out = await asyncio.to_thread(uas.result, 20)
            assert rc == 0, uas_out  # and so did 101
            await until(lambda: not server.b2bua.calls, 5, "the call to end")  # type: ignore[union-attr]
            async with http.get(api, headers=mine) as resp:
                assert (await resp.json())["total"] == 0
