"""POST /users/{user}/chats/{other} (through the chat service, stored for an offline
recipient), the pickup-group resource (through the store, tenant-scoped) and the live calls
(GET /calls per token, DELETE hangs up)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pbx.api import LiveCall
from pbx.chat import ChatService, SenderLimit
from tests.pbx.api.conftest import Api


class _OfflineB2bua:
    """What :meth:`ChatService.send` asks of the B2BUA: nobody is registered."""

    def __init__(self) -> None:
        self.registrar = SimpleNamespace(bindings=lambda aor, now: [])
        self.routing = SimpleNamespace(user_key=lambda user: user.extension)

    def aor(self, key: str) -> str:
        return f"sip:{key}@pbx.test"


def _with_chat(api: Api, limit: SenderLimit | None = None) -> ChatService:
    service = ChatService(_OfflineB2bua(), api.store, api.ctx.directory,  # type: ignore[arg-type]
                          limit=limit)

    async def send(sender: Any, recipient: Any, body: bytes, content_type: str) -> Any:
        return await service.send(sender, recipient, body, content_type=content_type)

    api.ctx.chat_send = send
    return service


async def test_send_a_chat_message_as_the_user(pbx_api: Api) -> None:
    service = _with_chat(pbx_api)
    anna, ben = pbx_api.users["100"], pbx_api.users["101"]
    status, sent, _ = await pbx_api.call("POST", f"/api/v1/users/me/chats/{ben.id}",
                                         who="anna", json={"text": "Grüß dich, Ben"})
    assert status == 201, sent
    assert sent["from_user_id"] == anna.id and sent["to_user_id"] == ben.id
    assert sent["body"] == "Grüß dich, Ben" and sent["online"] is False
    assert sent["delivered_at"] is None and ben.id in service.waiting
    status, page, _ = await pbx_api.call("GET", f"/api/v1/users/{ben.id}/chats/{anna.id}",
                                         who="ben")
    assert status == 200 and [m["body"] for m in page["items"]] == ["Grüß dich, Ben"]
    assert [m.message_id for m in pbx_api.store.chat_pending(ben.id)] == [sent["message_id"]]


async def test_chat_send_bad_input_and_other_tenants(pbx_api: Api) -> None:
    _with_chat(pbx_api)
    anna, ben, carl = pbx_api.users["100"], pbx_api.users["101"], pbx_api.users["200"]
    url = f"/api/v1/users/me/chats/{ben.id}"
    for body in ({}, {"text": ""}, {"text": "   "}, {"text": 5}, {"text": "x", "to": 1},
                 {"text": "x", "content_type": "text/html"}, {"text": "é" * 5000}):
        status, problem, _ = await pbx_api.call("POST", url, who="anna", json=body)
        assert status == 422 and problem["code"] in ("validation_failed", "unknown_field"), \
            (body, problem)
    status, _, _ = await pbx_api.call("POST", f"/api/v1/users/me/chats/{anna.id}", who="anna",
                                      json={"text": "me"})
    assert status == 422
    # nothing crosses tenants, and a user speaks only for themselves
    for who, path in (("anna", f"/api/v1/users/me/chats/{carl.id}"),
                      ("carl", f"/api/v1/users/me/chats/{anna.id}"),
                      ("acme", f"/api/v1/users/{anna.id}/chats/{ben.id}"),
                      ("ben", f"/api/v1/users/{anna.id}/chats/{ben.id}")):
        status, problem, _ = await pbx_api.call("POST", path, who=who, json={"text": "hi"})
        assert status == 404 and problem["code"] == "not_found", (who, path)
    assert pbx_api.store.chat_conversation(anna.id, ben.id) == []
    assert pbx_api.store.chat_conversation(anna.id, carl.id) == []
    pbx_api.ctx.chat_send = None
    status, problem, _ = await pbx_api.call("POST", url, who="anna", json={"text": "hi"})
    assert status == 503 and problem["code"] == "unavailable"


async def test_a_sender_over_the_limit_gets_429_with_retry_after(pbx_api: Api) -> None:
    _with_chat(pbx_api, SenderLimit(rate=0.1, burst=2))
    anna, ben = pbx_api.users["100"], pbx_api.users["101"]
    url = f"/api/v1/users/me/chats/{ben.id}"
    got = [await pbx_api.call("POST", url, who="anna", json={"text": f"m{n}"}) for n in range(3)]
    assert [status for status, _, _ in got] == [201, 201, 429]
    _, problem, headers = got[2]
    assert problem["code"] == "rate_limited" and 1 <= int(headers["Retry-After"]) <= 10
    assert [m.body for m in pbx_api.store.chat_conversation(anna.id, ben.id)] == [b"m0", b"m1"]


async def test_pickup_groups_made_filled_and_removed(pbx_api: Api) -> None:
    anna, ben, carl = pbx_api.users["100"], pbx_api.users["101"], pbx_api.users["200"]
    status, group, headers = await pbx_api.call("POST", "/api/v1/pickup-groups",
                                                json={"name": "sales", "members": [anna.id]})
    assert status == 201, group
    assert group["members"] == [anna.id] and headers["Location"].endswith(str(group["id"]))
    gid = group["id"]
    status, again, _ = await pbx_api.call("POST", "/api/v1/pickup-groups",
                                          json={"name": "sales"})
    assert status == 409 and again["field"] == "/name"
    status, group, _ = await pbx_api.call("POST", f"/api/v1/pickup-groups/{gid}/members",
                                          json={"user_id": ben.id})
    assert status == 200 and group["members"] == [anna.id, ben.id]
    assert pbx_api.store.pickup_peers(anna.id) == (anna.id, ben.id)
    for body in ({}, {"user_id": carl.id}, {"user_id": "1"}, {"user_id": 99999}):
        status, problem, _ = await pbx_api.call(
            "POST", f"/api/v1/pickup-groups/{gid}/members", json=body)
        assert status == 422, (body, problem)
    bad: list[dict[str, Any]] = [{"name": "bad name"}, {"name": "x", "members": [carl.id]},
                                 {"name": ""}, {"name": "x", "tenant_id": 99}]
    for body in bad:
        status, problem, _ = await pbx_api.call("POST", "/api/v1/pickup-groups", json=body)
        assert status in (404, 422), (body, problem)
    # another tenant's admin and a plain user see and touch nothing
    status, page, _ = await pbx_api.call("GET", "/api/v1/pickup-groups", who="acme")
    assert status == 200 and page["total"] == 0
    status, _, _ = await pbx_api.call("GET", "/api/v1/pickup-groups", who="anna")
    assert status == 403
    for method, path in (("GET", f"/api/v1/pickup-groups/{gid}"),
                         ("DELETE", f"/api/v1/pickup-groups/{gid}"),
                         ("DELETE", f"/api/v1/pickup-groups/{gid}/members/{anna.id}")):
        status, _, _ = await pbx_api.call(method, path, who="acme")
        assert status == 404, (method, path)
    status, _, _ = await pbx_api.call("POST", f"/api/v1/pickup-groups/{gid}/members",
                                      who="acme", json={"user_id": carl.id})
    assert status == 404
    status, page, _ = await pbx_api.call("GET", "/api/v1/pickup-groups", who="root")
    assert page["total"] == 1
    status, _, _ = await pbx_api.call("DELETE", f"/api/v1/pickup-groups/{gid}/members/{ben.id}")
    assert status == 204 and pbx_api.store.pickup_peers(anna.id) == (anna.id,)
    status, _, _ = await pbx_api.call("DELETE", f"/api/v1/pickup-groups/{gid}/members/{ben.id}")
    assert status == 404
    status, _, _ = await pbx_api.call("DELETE", f"/api/v1/pickup-groups/{gid}")
    assert status == 204 and pbx_api.store.pickup_groups() == []


def _calls(api: Api) -> list[str]:
    """Two calls in progress (Anna → Ben answered; an outside caller ringing Carl of acme);
    returns the Call-IDs hung up through the API."""
    anna, ben, carl = api.users["100"], api.users["101"], api.users["200"]
    default, acme = anna.tenant_id, carl.tenant_id
    live = [LiveCall("c1@192.0.2.1", default, (anna.id, ben.id), "internal", "100", "101",
                     "answered", 1000.0, 1002.0),
            LiveCall("c2@192.0.2.9", acme, (carl.id,), "inbound", "+4930777", "200",
                     "ringing", 1001.0, None)]
    hung: list[str] = []

    def hang_up(call_id: str) -> bool:
        hung.append(call_id)
        live[:] = [c for c in live if c.call_id != call_id]
        return True

    api.ctx.live_calls = lambda: list(live)
    api.ctx.hang_up = hang_up
    return hung


async def test_live_calls_listed_per_token_and_hung_up(pbx_api: Api) -> None:
    hung = _calls(pbx_api)
    for who, expected in (("admin", ["c1@192.0.2.1"]), ("anna", ["c1@192.0.2.1"]),
                          ("ben", ["c1@192.0.2.1"]), ("acme", ["c2@192.0.2.9"]),
                          ("carl", ["c2@192.0.2.9"]), ("root", ["c1@192.0.2.1",
                                                                "c2@192.0.2.9"])):
        status, page, _ = await pbx_api.call("GET", "/api/v1/calls", who=who)
        assert status == 200 and [c["call_id"] for c in page["items"]] == expected, (who, page)
    status, one, _ = await pbx_api.call("GET", "/api/v1/calls/c1@192.0.2.1", who="anna")
    assert status == 200 and one["state"] == "answered" and one["caller"] == "100"
    status, _, _ = await pbx_api.call("GET", "/api/v1/calls?sort=-nope", who="anna")
    assert status == 422
    for who in ("acme", "carl"):  # another tenant's call does not exist for them
        for method in ("GET", "DELETE"):
            status, problem, _ = await pbx_api.call(method, "/api/v1/calls/c1@192.0.2.1",
                                                    who=who)
            assert status == 404 and problem["code"] == "not_found", (who, method)
    status, _, _ = await pbx_api.call("DELETE", "/api/v1/calls/c2@192.0.2.9", who="admin")
    assert status == 404 and hung == []
    status, _, _ = await pbx_api.call("DELETE", "/api/v1/calls/c1@192.0.2.1", who="ben")
    assert status == 204 and hung == ["c1@192.0.2.1"]
    status, _, _ = await pbx_api.call("DELETE", "/api/v1/calls/c1@192.0.2.1", who="ben")
    assert status == 404 and hung == ["c1@192.0.2.1"]
