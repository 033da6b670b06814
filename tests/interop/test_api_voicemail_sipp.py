"""The voicemail REST resource over a real deposit (issue 13 + 15): 101 sends every call to the
box (``*21`` from a SIPp phone) and SUBSCRIBEs to its message summary; a SIPp caller (100)
leaves a message (a 1300 Hz tone). Then, as 101's API token: the list names it (caller 100,
new, the right duration), its recording comes back as a WAV that decodes to the caller's tone
and the right length, a path traversal gets 404 problem+json, and DELETE removes it — the file
goes and the lamp (NOTIFY) goes to ``no``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from pbx.callcontrol import Prompt
from pbx.voicemail import Boxes
from tests.interop.inprocess import serving
from tests.interop.mwi_phone import MwiPhone
from tests.interop.test_calls_sipp import USERS
from tests.interop.test_features_sipp import assert_announced, dial_code
from tests.interop.test_voicemail_sipp import (
    CONFIG,
    GREETING_HZ,
    leave_message,
    wav_tone,
    write_tone,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]


async def test_a_deposited_message_listed_served_and_deleted_over_the_api(
        tmp_path: Path) -> None:
    write_tone(Boxes(tmp_path / "data").greeting("default", "101"), GREETING_HZ, 1.0)
    tokens: dict[str, str] = {}

    def token(store: Any) -> None:
        user = store.user("101")
        tokens["101"] = store.create_api_token(role="user", tenant_id=user.tenant_id,
                                               user_id=user.id, now=time.time())[0]

    async with serving(tmp_path, USERS, CONFIG, store_setup=token) as (server, files):
        assert server.http is not None
        api = f"http://{server.http.host}:{server.http.port}/api/v1/users/me/voicemail/messages"
        auth = {"Authorization": f"Bearer {tokens['101']}"}
        pcm = await asyncio.to_thread(dial_code, files, tmp_path, 1, "*21")
        assert_announced(pcm, Prompt("activated"))
        lamp = MwiPhone("101", USERS[1][1], files.addr("udp"))
        timeout = aiohttp.ClientTimeout(total=10)
        try:
            assert (await lamp.subscribe()).status == 200
            first = await lamp.next_notify()
            assert first.summary is not None and not first.summary.waiting

            await asyncio.to_thread(leave_message, files, tmp_path, 3500)
            lit = await lamp.next_notify(10)
            assert lit.summary is not None and lit.summary.waiting

            async with aiohttp.ClientSession(headers=auth, timeout=timeout) as http:
                async with http.get(api) as resp:
                    assert resp.status == 200
                    page = await resp.json()
                assert page["total"] == 1 and page["new"] == 1, page
                (item,) = page["items"]
                assert item["caller"] == "100" and item["new"] is True
                # 3.5 s talked, less the greeting (1 s) and the beep (0.5 s)
                assert abs(item["duration"] - 2.0) < 0.5, item

                async with http.get(f"{api}/{item['id']}/audio") as resp:
                    assert resp.status == 200 and resp.content_type == "audio/wav"
                    wav = tmp_path / "fetched.wav"
                    wav.write_bytes(await resp.read())
                seconds, share = wav_tone(str(wav))
                assert abs(seconds - item["duration"]) < 0.05, (seconds, item)
                assert share > 0.9, share

                for tail in ("..%2F..%2Fasyncpbx.sqlite3/audio", "%2e%2e/audio",
                             "%2e%2e%2f%2e%2e%2fasyncpbx.sqlite3/audio"):
                    async with http.get(URL(f"{api}/{tail}", encoded=True)) \
                            as resp:
                        assert resp.status == 404, tail
                        assert resp.content_type == "application/problem+json", tail

                stored = server.store.voicemail(item["id"])
                assert stored is not None
                path = stored.audio_path
                assert Path(path).exists()
                async with http.delete(f"{api}/{item['id']}") as resp:
                    assert resp.status == 204
                async with http.get(api) as resp:
                    assert (await resp.json())["total"] == 0
            assert not Path(path).exists()
            off = await lamp.next_notify(10)
            assert off.summary is not None and not off.summary.waiting
            assert off.summary.voice.new == 0
        finally:
            lamp.close()
