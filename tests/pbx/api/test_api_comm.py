"""The portal's communication operations (issue 17): a user's conversations with unread counts
and ``chat.message``/``chat.read`` on the bus, the company directory a plain user may read
(``?q=``, never another tenant's), personal contacts (CRUD, only their owner's), and the
browser phone's SIP account (made once, digest credentials, only for the user themselves)."""

from __future__ import annotations

from pbx.services.events import Event
from tests.pbx.api.conftest import Api
from tests.pbx.api.test_api_chat_pickup import _with_chat


async def test_conversations_unread_and_events(pbx_api: Api) -> None:
    service = _with_chat(pbx_api)
    service.events = pbx_api.ctx.bus
    seen: list[Event] = []
    pbx_api.ctx.bus.subscribe(seen.append)
    anna, ben = pbx_api.users["100"], pbx_api.users["101"]
    for text in ("one", "two"):
        status, _, _ = await pbx_api.call("POST", f"/api/v1/users/me/chats/{ben.id}",
                                          who="anna", json={"text": text})
        assert status == 201
    status, _, _ = await pbx_api.call("POST", f"/api/v1/users/me/chats/{anna.id}",
                                      who="ben", json={"text": "three"})
    assert status == 201
    kinds = [e for e in seen if e.kind == "chat.message"]
    assert len(kinds) == 3 and kinds[0].data["user_ids"] == sorted([anna.id, ben.id])
    assert kinds[0].data["source"] == "api" and "body" not in kinds[0].data
    status, page, _ = await pbx_api.call("GET", "/api/v1/users/me/chats", who="ben")
    assert status == 200 and page["total"] == 1, page
    item = page["items"][0]
    assert item["other"] == {"id": anna.id, "extension": "100", "name": "Anna"}
    assert item["last_message"]["body"] == "three" and item["unread"] == 2
    assert page["unread"] == 2
    status, read, _ = await pbx_api.call("POST", f"/api/v1/users/me/chats/{anna.id}/read",
                                         who="ben", json={})
    assert status == 200 and read["unread"] == 0, read
    assert [e.data["unread"] for e in seen if e.kind == "chat.read"] == [0]
    _, page, _ = await pbx_api.call("GET", "/api/v1/users/me/chats", who="ben")
    assert page["items"][0]["unread"] == 0
    _, page, _ = await pbx_api.call("GET", "/api/v1/users/me/chats", who="anna")
    assert page["items"][0]["unread"] == 1  # ben's "three"
    # another tenant's user sees nothing of it, and cannot mark it
    _, page, _ = await pbx_api.call("GET", "/api/v1/users/me/chats", who="carl")
    assert page["total"] == 0
    status, _, _ = await pbx_api.call("POST", f"/api/v1/users/me/chats/{anna.id}/read",
                                      who="carl", json={})
    assert status == 404


async def test_directory_for_a_plain_user(pbx_api: Api) -> None:
    status, page, _ = await pbx_api.call("GET", "/api/v1/directory", who="anna")
    assert status == 200, page
    assert [(e["extension"], e["name"]) for e in page["items"]] == [("100", "Anna"),
                                                                     ("101", "Ben")]
    _, page, _ = await pbx_api.call("GET", "/api/v1/directory?q=be", who="anna")
    assert [e["extension"] for e in page["items"]] == ["101"] and page["total"] == 1
    _, page, _ = await pbx_api.call("GET", "/api/v1/directory?q=carl", who="anna")
    assert page["total"] == 0  # another tenant's
    _, page, _ = await pbx_api.call("GET", "/api/v1/directory", who="carl")
    assert [e["name"] for e in page["items"]] == ["Carl"]
    status, _, _ = await pbx_api.call("GET", "/api/v1/directory", who="root")
    assert status == 422
    status, _, _ = await pbx_api.call("GET", "/api/v1/directory?tenant_id=1", who="anna")
    assert status in (200, 404)


async def test_contacts_crud_and_isolation(pbx_api: Api) -> None:
    base = "/api/v1/users/me/contacts"
    status, made, _ = await pbx_api.call(
        "POST", base, who="anna",
        json={"name": "Dora Dienst", "company": "Acme",
              "numbers": [{"label": "mobile", "number": "+491701234567"}]})
    assert status == 201, made
    assert made["numbers"] == [{"label": "mobile", "number": "+491701234567"}]
    for bad in ({}, {"name": ""}, {"name": "x", "numbers": [{"number": "abc"}]},
                {"name": "x", "numbers": [{"number": "1"}] * 5}, {"name": "x", "y": 1}):
        status, problem, _ = await pbx_api.call("POST", base, who="anna", json=bad)
        assert status == 422, (bad, problem)
    url = f"{base}/{made['id']}"
    status, changed, _ = await pbx_api.call("PATCH", url, who="anna",
                                            json={"email": "dora@acme.test"})
    assert status == 200 and changed["email"] == "dora@acme.test"
    assert changed["name"] == "Dora Dienst" and len(changed["numbers"]) == 1
    _, page, _ = await pbx_api.call("GET", base + "?q=dora", who="anna")
    assert page["total"] == 1
    _, page, _ = await pbx_api.call("GET", base + "?q=zzz", who="anna")
    assert page["total"] == 0
    # Ben sees neither the list nor the contact (not even by id)
    _, page, _ = await pbx_api.call("GET", base, who="ben")
    assert page["total"] == 0
    status, _, _ = await pbx_api.call("GET", f"{base}/{made['id']}", who="ben")
    assert status == 404
    anna_id = pbx_api.users["100"].id
    status, _, _ = await pbx_api.call("GET", f"/api/v1/users/{anna_id}/contacts", who="ben")
    assert status == 404
    status, page, _ = await pbx_api.call("GET", f"/api/v1/users/{anna_id}/contacts",
                                         who="admin")
    assert status == 200 and page["total"] == 1
    status, _, _ = await pbx_api.call("DELETE", url, who="anna")
    assert status == 204
    status, _, _ = await pbx_api.call("DELETE", url, who="anna")
    assert status == 404


async def test_webphone_account(pbx_api: Api) -> None:
    status, first, headers = await pbx_api.call("POST", "/api/v1/users/me/webphone", who="anna")
    assert status == 200 and first["created"], first
    assert headers["Cache-Control"] == "no-store"
    assert first["uri"] == "sip:100@pbx.test" and first["username"] == "100-web"
    assert len(first["ha1"]) == 32 and first["realm"] == "pbx.test"
    devices = [d for d in pbx_api.store.devices() if d.username == "100-web"]
    assert [d.kind for d in devices] == ["browser"]
    status, again, _ = await pbx_api.call("POST", "/api/v1/users/me/webphone", who="anna")
    assert status == 200 and not again["created"] and again["ha1"] == first["ha1"]
    assert again["device_id"] == first["device_id"]
    # an admin does not get another user's browser credentials
    anna_id = pbx_api.users["100"].id
    status, _, _ = await pbx_api.call("POST", f"/api/v1/users/{anna_id}/webphone", who="admin")
    assert status == 404


async def test_in_call_codes(pbx_api: Api) -> None:
    status, page, _ = await pbx_api.call("GET", "/api/v1/in-call-codes", who="anna")
    assert status == 200, page
    codes = {c["key"]: (c["code"], c["argument"]) for c in page["items"]}
    assert codes["incall.blind_transfer"] == ("##", "number")
    assert codes["incall.toggle_hold"] == ("*4", "")
    assert page["total"] == len(page["items"]) >= 4
