"""Live call control over the REST API with real SIP phones (SIPp) and audio checked by
Goertzel: 101's own token holds, resumes and transfers its calls.

* hold → resume → blind transfer: 100 (1000 Hz) calls 101 (700 Hz); on hold 100 gets a
  re-INVITE with sendonly and hears music on hold, after resume (re-INVITE sendrecv) 101 again, after the transfer to 102 (1500 Hz) 102 — and 102 hears
  100; 101's leg ends with the PBX's BYE; the bus publishes call.held/resumed/transferred.
* attended: 100 and 102 both call 101; transferring 101's first call to its second connects
  100 and 102, both of 101's legs get a BYE.
* a failed blind transfer (102 busy) is recalled: 101's phone rings again while 100 hears
  music on hold, and once 101 answers the two talk again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pbx.services import Event
from tests.interop.harness import free_port, read_log
from tests.interop.inprocess import serving
from tests.interop.test_calls_sipp import USERS, RtpPeer, SippUas, register_port
from tests.interop.test_features_sipp import dial
from tests.interop.test_transfer_sipp import (
    CALLER_HZ,
    TARGET_HZ,
    TRANSFEROR_HZ,
    compact,
    heard,
)
from tests.interop.test_voicemail_sipp import until

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

CONFIG = "[media]\nport_min = 51000\nport_max = 51999\n[calls]\nring_timeout = 5.0\n"
TONES = {"transferor": TRANSFEROR_HZ, "target": TARGET_HZ, "caller": CALLER_HZ}


class Api:
    """101's token against the server's /api/v1/calls."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base = http, base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def calls(self) -> list[dict[str, Any]]:
        async with self.http.get(self.base, headers=self.headers) as resp:
            assert resp.status == 200, await resp.text()
            items: list[dict[str, Any]] = (await resp.json())["items"]
            return items

    async def answered(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``count`` calls are answered; returns them, oldest first."""
        deadline = time.monotonic() + timeout
        while True:
            calls = [c for c in await self.calls() if c["state"] == "answered"]
            if len(calls) >= count:
                return calls
            assert time.monotonic() < deadline, calls
            await asyncio.sleep(0.1)

    async def post(self, call_id: str, verb: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.http.post(f"{self.base}/{call_id}/{verb}", json=body,
                                  headers=self.headers) as resp:
            text = await resp.text()
            return resp.status, text


@asynccontextmanager
async def pbx(tmp: Path) -> AsyncIterator[tuple[Any, Any, Api, list[Event]]]:
    """The server, its files, 101's API client and the events the bus published."""
    tokens: dict[str, str] = {}

    def setup(store: Any) -> None:
        user = store.user("101")
        tokens["101"] = store.create_api_token(role="user", tenant_id=user.tenant_id,
                                               user_id=user.id, now=time.time())[0]

    async with serving(tmp, USERS, CONFIG, store_setup=setup) as (server, files):
        assert server.http is not None
        events: list[Event] = []
        server.events.subscribe(events.append)
        base = f"http://{server.http.host}:{server.http.port}/api/v1/calls"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            yield server, files, Api(http, base, tokens["101"]), events


async def phone(tmp: Path, files: Any, ext: str, scenario: str, rtp: RtpPeer | None, *,
                calls: int = 1, pause_ms: int = 300) -> SippUas:
    """``ext`` registered from a SIPp UAS playing ``scenario``."""
    port = free_port()
    index = [u for u, _ in USERS].index(ext)
    await asyncio.to_thread(register_port, files, ext, USERS[index][1], port)
    return await asyncio.to_thread(
        SippUas, tmp, scenario, port, calls=calls, pause_ms=pause_ms, name=f"phone{ext}",
        keys={"rtp_port": str(rtp.port if rtp is not None else free_port())}, timeout=30)


def start_dial(files: Any, tmp: Path, user: int, dst: str, rtp: RtpPeer, talk_ms: int,
               scenario: str = "call_uac.xml") -> asyncio.Task[tuple[int, int, str]]:
    return asyncio.create_task(asyncio.to_thread(dial, files, tmp, user, dst, scenario,
                                                 rtp_port=rtp.port, pause_ms=talk_ms))


async def finish(dialling: asyncio.Task[tuple[int, int, str]], *uas: SippUas,
                 log: Path) -> None:
    """The dialling phone and every UAS completed their scenarios (each got its BYE)."""
    ok, failed, out = await asyncio.wait_for(dialling, 40)
    assert (ok, failed) == (1, 0), out + read_log(log)[-3000:]
    for phone_uas in uas:
        rc, uas_out = await asyncio.to_thread(phone_uas.result, 20)
        assert rc == 0, uas_out + phone_uas.log()[-2000:] + read_log(log)[-3000:]


async def test_api_hold_resume_and_blind_transfer(tmp_path: Path) -> None:
    rtp = {name: RtpPeer(send_hz=hz) for name, hz in
           (("caller", CALLER_HZ), ("transferor", TRANSFEROR_HZ), ("target", TARGET_HZ))}
    try:
        async with pbx(tmp_path) as (server, files, api, events):
            user = await phone(tmp_path, files, "101", "call_uas_answer.xml", rtp["transferor"])
            target = await phone(tmp_path, files, "102", "call_uas_answer.xml", rtp["target"])
            try:
                # 100's SIPp expects the PBX's re-INVITEs: sendonly (hold), sendrecv (resume)
                dialling = start_dial(files, tmp_path, 0, "101", rtp["caller"], 5500,
                                      "call_uac_held.xml")
                (call,) = await api.answered(1)
                await asyncio.sleep(1.5)
                assert await api.post(call["call_id"], "hold", {}) == (204, "")
                await asyncio.sleep(3.5)  # ~17 windows of 200 ms: at least 8 of them music
                assert await api.post(call["call_id"], "resume", {}) == (204, "")
                await asyncio.sleep(1.5)
                status, text = await api.post(call["call_id"], "transfer", {"target": "102"})
                assert status == 200 and '"blind"' in text, text
                # the user's leg is gone: its call is not theirs to transfer again
                status, _ = await api.post(call["call_id"], "hold", {})
                assert status in (404, 409), status
                await finish(dialling, user, target, log=files.log_path)
            finally:
                user.stop()
                target.stop()
            await until(lambda: not server.b2bua.calls, 5, "the calls to end")
    finally:
        for peer in rtp.values():
            peer.close()
    by_caller = heard(rtp["caller"].pcm(), TONES)
    assert compact(by_caller) == ["transferor", "moh", "transferor", "target"], \
        "hold, 100 heard: " + " ".join(by_caller)
    assert by_caller.count("moh") >= 8 and by_caller.count("target") >= 10, " ".join(by_caller)
    assert compact(heard(rtp["target"].pcm(), TONES)) == ["caller"]
    kinds = [e.kind for e in events if e.kind in ("call.held", "call.resumed",
                                                  "call.transferred")]
    assert kinds == ["call.held", "call.resumed", "call.transferred"], kinds
    transferred = next(e for e in events if e.kind == "call.transferred")
    assert transferred.data["kind"] == "blind" and transferred.data["target"] == "102"
    assert transferred.data["call_id"] == call["call_id"]


async def test_api_attended_transfer_connects_the_users_two_calls(tmp_path: Path) -> None:
    rtp = {name: RtpPeer(send_hz=hz) for name, hz in
           (("caller", CALLER_HZ), ("transferor", TRANSFEROR_HZ), ("target", TARGET_HZ))}
    try:
        async with pbx(tmp_path) as (server, files, api, events):
            user = await phone(tmp_path, files, "101", "call_uas_answer.xml", rtp["transferor"],
                               calls=2)
            try:
                first = start_dial(files, tmp_path, 0, "101", rtp["caller"], 8000)
                (one,) = await api.answered(1)
                second = start_dial(files, tmp_path, 2, "101", rtp["target"], 0,
                                    "call_uac_wait_bye.xml")
                calls = await api.answered(2)
                other = next(c for c in calls if c["call_id"] != one["call_id"])
                assert other["caller"] == "102", calls
                await asyncio.sleep(1.0)
                status, text = await api.post(one["call_id"], "transfer",
                                              {"call_id": other["call_id"]})
                assert status == 200 and '"attended"' in text, text
                await finish(first, user, log=files.log_path)
                ok, failed, out = await asyncio.wait_for(second, 20)
                assert (ok, failed) == (1, 0), out  # 102 got the BYE when 100 hung up
            finally:
                user.stop()
            await until(lambda: not server.b2bua.calls, 5, "the calls to end")
    finally:
        for peer in rtp.values():
            peer.close()
    by_caller, by_target = (heard(rtp[n].pcm(), TONES) for n in ("caller", "target"))
    assert compact(by_caller)[-1] == "target" and by_caller.count("target") >= 10, \
        "attended, 100 heard: " + " ".join(by_caller)
    assert compact(by_target)[-1] == "caller" and by_target.count("caller") >= 10, \
        "attended, 102 heard: " + " ".join(by_target)
    attended = [e.data for e in events if e.kind == "call.transferred"]
    assert [d["kind"] for d in attended] == ["attended"], attended


async def test_a_failed_blind_transfer_rings_the_transferor_back(tmp_path: Path) -> None:
    rtp = {name: RtpPeer(send_hz=hz) for name, hz in
           (("caller", CALLER_HZ), ("transferor", TRANSFEROR_HZ))}
    try:
        async with pbx(tmp_path) as (server, files, api, _):
            # 101 answers its first call and, after the transfer's BYE, the recall (2 s ring):
            # its SIPp completes both calls only if the recall came
            user = await phone(tmp_path, files, "101", "call_uas_answer.xml", rtp["transferor"],
                               calls=2, pause_ms=2000)
            target = await phone(tmp_path, files, "102", "call_uas_busy.xml", None)
            try:
                dialling = start_dial(files, tmp_path, 0, "101", rtp["caller"], 9000)
                (call,) = await api.answered(1)
                await asyncio.sleep(1.5)
                status, text = await api.post(call["call_id"], "transfer", {"target": "102"})
                assert status == 200, text
                await finish(dialling, user, target, log=files.log_path)
            finally:
                user.stop()
                target.stop()
            await until(lambda: not server.b2bua.calls, 5, "the calls to end")
    finally:
        for peer in rtp.values():
            peer.close()
    by_caller = heard(rtp["caller"].pcm(), TONES)
    # the caller talked to 101, held (music) while 102 was busy and 101 rang, then 101 again
    assert compact(by_caller) == ["transferor", "moh", "transferor"], \
        "recall, 100 heard: " + " ".join(by_caller)
    assert by_caller.count("moh") >= 5 and by_caller[-10:].count("transferor") >= 8, \
        "recall, 100 heard: " + " ".join(by_caller)
