"""The voicemail resource: list, metadata, the recording (never a path from the request), heard
and new again, delete — each change published as ``voicemail.changed``; foreign tokens get 404."""

from __future__ import annotations

import io
import os
import wave
from typing import Any

from yarl import URL

from tests.pbx.api.conftest import Api, leave_message


def _events(api: Api) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    api.ctx.bus.subscribe(lambda e: seen.append(dict(e.data)), "voicemail.changed")
    return seen


async def test_list_get_audio_of_the_own_box(pbx_api: Api) -> None:
    anna = pbx_api.users["100"]
    first = leave_message(pbx_api.store, anna, "default", seconds=1.5, received_at=1000.0)
    second = leave_message(pbx_api.store, anna, "default", seconds=0.5, caller="",
                           received_at=2000.0)
    status, page, _ = await pbx_api.call("GET", "/api/v1/users/me/voicemail/messages", who="anna")
    assert status == 200, page
    assert page["total"] == 2 and page["new"] == 2 and page["old"] == 0
    assert [m["id"] for m in page["items"]] == [first, second]
    assert page["items"][0]["caller"] == "+4930777" and page["items"][0]["duration"] == 1.5
    assert page["items"][1]["caller"] == "" and page["items"][0]["new"] is True
    status, same, _ = await pbx_api.call("GET", f"/api/v1/users/{anna.id}/voicemail/messages",
                                         who="admin")
    assert status == 200 and same == page
    status, one, _ = await pbx_api.call("GET", f"/api/v1/users/me/voicemail/messages/{first}",
                                        who="anna")
    assert status == 200 and one == page["items"][0]
    async with pbx_api.client.get(f"/api/v1/users/me/voicemail/messages/{first}/audio",
                                  headers=pbx_api.auth("anna")) as resp:
        assert resp.status == 200 and resp.content_type == "audio/wav"
        data = await resp.read()
    with wave.open(io.BytesIO(data)) as w:
        assert w.getframerate() == 8000 and w.getnframes() == 12000


async def test_heard_new_again_and_delete_publish_the_counts(pbx_api: Api) -> None:
    anna = pbx_api.users["100"]
    mid = leave_message(pbx_api.store, anna, "default")
    seen = _events(pbx_api)
    url = f"/api/v1/users/me/voicemail/messages/{mid}"
    status, body, _ = await pbx_api.call("PATCH", url, who="anna", json={"heard": True})
    assert status == 200 and body["new"] is False, body
    assert seen[-1] == {"tenant": "default", "user": "100", "user_id": anna.id, "new": 0,
                        "old": 1, "new_urgent": 0, "old_urgent": 0}
    status, body, _ = await pbx_api.call("PATCH", url, who="anna", json={"heard": True})
    assert status == 200 and len(seen) == 1  # no change, no event
    status, body, _ = await pbx_api.call("PATCH", url, who="anna", json={"heard": False})
    assert status == 200 and body["new"] is True and seen[-1]["new"] == 1
    assert pbx_api.store.voicemail_counts(anna.id) == (1, 0, 0, 0)
    path = pbx_api.store.voicemail(mid).audio_path  # type: ignore[union-attr]
    status, _, _ = await pbx_api.call("DELETE", url, who="anna")
    assert status == 204
    assert seen[-1]["new"] == 0 and seen[-1]["old"] == 0
    assert pbx_api.store.voicemail(mid) is None
    assert not os.path.exists(path)
    status, body, headers = await pbx_api.call("DELETE", url, who="anna")
    assert status == 404 and headers["Content-Type"].startswith("application/problem+json")


async def test_bad_input_is_a_problem(pbx_api: Api) -> None:
    anna = pbx_api.users["100"]
    mid = leave_message(pbx_api.store, anna, "default")
    url = f"/api/v1/users/me/voicemail/messages/{mid}"
    for body in ({}, {"heard": "yes"}, {"heard": 1}, {"heard": True, "extra": 1}):
        status, problem, _ = await pbx_api.call("PATCH", url, who="anna", json=body)
        assert status == 422 and problem["field"] is not None, (body, problem)
    status, problem, _ = await pbx_api.call("PATCH", url, who="anna", data="heard",
                                            headers={"Content-Type": "text/plain"})
    assert status == 415, problem
    assert pbx_api.store.voicemail_counts(anna.id) == (1, 0, 0, 0)


async def test_path_traversal_and_foreign_messages_are_404(pbx_api: Api) -> None:
    anna, ben, carl = pbx_api.users["100"], pbx_api.users["101"], pbx_api.users["200"]
    mine = leave_message(pbx_api.store, anna, "default")
    bens = leave_message(pbx_api.store, ben, "default")
    carls = leave_message(pbx_api.store, carl, "acme")
    base = "/api/v1/users/me/voicemail/messages/"
    attempts = ["..%2F..%2Fasyncpbx.sqlite3/audio", "%2e%2e/audio", "%2e%2e%2f%2e%2e/audio",
                "..%5C..%5Casyncpbx.sqlite3/audio", mine.upper() + "/audio",
                mine + "%00/audio", f"..%2F{mine}/audio", "asyncpbx.sqlite3/audio",
                f"{bens}/audio", f"{carls}/audio", bens, carls]
    for tail in attempts:
        async with pbx_api.client.get(URL(base + tail, encoded=True),
                                      headers=pbx_api.auth("anna")) as resp:
            assert resp.status == 404, tail
            assert resp.content_type == "application/problem+json", tail
            problem = await resp.json(content_type=None)
            assert problem["code"] == "not_found" and "SQLite format" not in str(problem)
    for verb in ("PATCH", "DELETE"):
        status, _, _ = await pbx_api.call(verb, base + bens, who="anna", json={"heard": True})
        assert status == 404
    # tokens of another user or tenant see nothing of Anna's box
    for who in ("ben", "acme", "carl"):
        for tail in ("", mine, mine + "/audio"):
            status, problem, _ = await pbx_api.call(
                "GET", f"/api/v1/users/{anna.id}/voicemail/messages/{tail}".rstrip("/"), who=who)
            assert status == 404 and problem["code"] == "not_found", (who, tail)
    assert len(pbx_api.store.voicemails()) == 3
    assert pbx_api.store.voicemail_counts(ben.id) == (1, 0, 0, 0)
