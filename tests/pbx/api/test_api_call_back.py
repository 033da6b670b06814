"""``POST /users/{user}/call-backs`` (tenant-scoped, validated, reaching the server's
call-back — the B2BUA's, stubbed here: the interop test drives the real one), the call-back
settings resource, and ``GET /users/{user}/chats/{other}`` (read only, inside a tenant)."""

from __future__ import annotations

from typing import Any

from pbx.store import User
from tests.pbx.api.conftest import Api


def _placer(calls: list[tuple[str, str, str | None]]) -> Any:
    def place(user: User, target: str, phone: str | None) -> str:
        calls.append((user.extension, target, phone))
        return f"cb-{len(calls)}"

    return place


async def test_a_user_starts_a_call_back_for_themselves(pbx_api: Api) -> None:
    calls: list[tuple[str, str, str | None]] = []
    pbx_api.ctx.call_back = _placer(calls)
    status, body, _ = await pbx_api.call("POST", "/api/v1/users/me/call-backs", "anna",
                                         json={"target": "0301234567"})
    assert status == 202, body
    assert body == {"call_id": "cb-1", "user_id": pbx_api.users["100"].id,
                    "target": "0301234567", "phone": None}
    assert calls == [("100", "0301234567", None)]


async def test_call_back_is_tenant_scoped_and_user_scoped(pbx_api: Api) -> None:
    calls: list[tuple[str, str, str | None]] = []
    pbx_api.ctx.call_back = _placer(calls)
    carl = pbx_api.users["200"].id
    # another tenant's admin, and another user of the same tenant, see no such user
    for who, user_id in (("admin", carl), ("ben", pbx_api.users["100"].id)):
        status, body, _ = await pbx_api.call("POST", f"/api/v1/users/{user_id}/call-backs",
                                             who, json={"target": "101"})
        assert status == 404, body
    status, _, _ = await pbx_api.call("POST", f"/api/v1/users/{carl}/call-backs", "acme",
                                      json={"target": "201", "phone": "device"})
    assert status == 202
    assert calls == [("200", "201", "device")]


async def test_call_back_input_is_checked(pbx_api: Api) -> None:
    calls: list[tuple[str, str, str | None]] = []
    pbx_api.ctx.call_back = _placer(calls)
    anna = pbx_api.users["100"].id
    for body in ({}, {"target": "030 123"}, {"target": ""}, {"target": "101", "phone": "fax"},
                 {"target": "101", "extra": 1}):
        status, _, _ = await pbx_api.call("POST", f"/api/v1/users/{anna}/call-backs",
                                          json=body)
        assert status == 422, body
    # a phone the user has not set up
    status, body, _ = await pbx_api.call("POST", f"/api/v1/users/{anna}/call-backs",
                                         json={"target": "101", "phone": "mobile"})
    assert status == 409 and "mobile" in body["detail"]
    assert calls == []
    status, _, _ = await pbx_api.call("POST", f"/api/v1/users/{anna}/call-backs", None,
                                      json={"target": "101"})
    assert status == 401


async def test_call_back_without_running_calls_is_503(pbx_api: Api) -> None:
    status, body, _ = await pbx_api.call("POST", "/api/v1/users/me/call-backs", "anna",
                                         json={"target": "101"})
    assert status == 503, body


async def test_the_operation_is_in_the_openapi_document(pbx_api: Api) -> None:
    status, doc, _ = await pbx_api.call("GET", "/api/v1/openapi.json", None)
    assert status == 200
    op = doc["paths"]["/api/v1/users/{user}/call-backs"]["post"]
    assert op["operationId"] == "start_call_back"
    assert {"202", "404", "409", "422", "503"} <= set(op["responses"])


async def test_the_call_back_settings_are_their_own_resource(pbx_api: Api) -> None:
    status, body, _ = await pbx_api.call("GET", "/api/v1/users/me/call-back", "anna")
    assert status == 200 and body == {"method": "device", "permanent": False,
                                      "phone": "mobile"}
    status, body, _ = await pbx_api.call("PATCH", "/api/v1/users/me/call-back", "anna",
                                         json={"permanent": True, "phone": "device"})
    assert status == 200 and body["permanent"] is True and body["phone"] == "device"
    status, _, _ = await pbx_api.call("PATCH", "/api/v1/users/me/call-back", "anna",
                                      json={"phone": "fax"})
    assert status == 422


async def test_the_chat_history_of_two_users_is_read_in_their_tenant_only(pbx_api: Api) -> None:
    store, users = pbx_api.store, pbx_api.users
    anna, ben, carl = users["100"], users["101"], users["200"]
    store.chat_add(tenant_id=anna.tenant_id, sender_id=anna.id, recipient_id=ben.id,
                   message_id="m1", content_type="text/plain", body=b"Hallo Ben",
                   now=1.0)
    store.chat_add(tenant_id=anna.tenant_id, sender_id=ben.id, recipient_id=anna.id,
                   message_id="m2", content_type="text/plain", body=b"Hallo Anna",
                   now=2.0)
    status, body, _ = await pbx_api.call("GET", f"/api/v1/users/me/chats/{ben.id}", "anna")
    assert status == 200 and body["total"] == 2
    assert [(m["from_user_id"], m["body"]) for m in body["items"]] == [
        (anna.id, "Hallo Ben"), (ben.id, "Hallo Anna")]
    # Ben sees the same conversation from his side; Carl (another tenant) is nobody here
    status, body, _ = await pbx_api.call("GET", f"/api/v1/users/me/chats/{anna.id}", "ben")
    assert status == 200 and body["total"] == 2
    for who, path in (("anna", f"/api/v1/users/me/chats/{carl.id}"),
                      ("carl", f"/api/v1/users/me/chats/{anna.id}"),
                      ("acme", f"/api/v1/users/{anna.id}/chats/{ben.id}"),
                      ("ben", f"/api/v1/users/{anna.id}/chats/{ben.id}")):
        status, _, _ = await pbx_api.call("GET", path, who)
        assert status == 404, (who, path)
