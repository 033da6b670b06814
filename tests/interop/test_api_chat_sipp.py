"""Chat sent through the API over real SIP: 100's token POSTs a message to 101 while 101 is
offline (kept, ``online: false``); 101's phone registers and gets it as a SIP MESSAGE from 100
(the service delivers what waited); a second POST while 101 is registered goes straight to
the phone. Both end up delivered in the history."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.interop.inprocess import serving
from tests.interop.test_calls_sipp import USERS
from tests.interop.test_chat_sipp import come_online
from tests.interop.test_voicemail_sipp import CONFIG, until

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]


async def test_a_message_posted_as_a_user_reaches_the_other_users_phone(
        tmp_path: Path) -> None:
    tokens: dict[str, str] = {}

    def setup(store: Any) -> None:
        user = store.user("100")
        tokens["100"] = store.create_api_token(role="user", tenant_id=user.tenant_id,
                                               user_id=user.id, now=time.time())[0]

    async with serving(tmp_path, USERS, CONFIG, store_setup=setup) as (server, files):
        assert server.http is not None
        anna, ben = server.store.user("100"), server.store.user("101")
        url = (f"http://{server.http.host}:{server.http.port}/api/v1/users/me/chats/"
               f"{ben.id}")
        auth = {"Authorization": f"Bearer {tokens['100']}"}
        async with aiohttp.ClientSession(headers=auth,
                                         timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.post(url, json={"text": "first, while you were away"}) as resp:
                assert resp.status == 201
                first = await resp.json()
            assert first["online"] is False and first["delivered_at"] is None
            phone = asyncio.create_task(asyncio.to_thread(
                come_online, files, "101", USERS[1][1], wait=15.0, expect=2))
            await until(lambda: server.store.chat_pending(ben.id) == [] or phone.done(), 10,
                        "the waiting message to be delivered")
            async with http.post(url, json={"text": "second, now you are here"}) as resp:
                assert resp.status == 201
                second = await resp.json()
            assert second["online"] is True
            got = await asyncio.wait_for(phone, 30)
        assert [m.body.decode() for m in got] == ["first, while you were away",
                                                  "second, now you are here"]
        assert [m.headers.get("X-Message-ID") for m in got] == [first["message_id"],
                                                                 second["message_id"]]
        assert all("sip:100@" in (m.headers.get("From") or "") for m in got)
        await until(lambda: all(m.delivered_at is not None for m in
                                server.store.chat_conversation(anna.id, ben.id)), 5,
                    "both to be marked delivered")
