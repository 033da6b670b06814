"""The resources through aiohttp's test client: users, devices, numbers, trunks, feature
settings (through the settings service: one settings.changed per change), the feature-code
table, registrations, call history (filters, paging, CSV, delete) — and a walk over every
operation of the document with tokens of another tenant and of a plain user: 403/404 for every
foreign object, nothing changed."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from typing import Any

import pytest

from pbx.api import LiveCall
from pbx.services.events import Event
from pbx.voicemail import Boxes
from tests.pbx.api.conftest import Api, leave_message


async def test_users_list_get_patch_with_etag(pbx_api: Api) -> None:
    status, page, _ = await pbx_api.call("GET", "/api/v1/users?sort=-extension&limit=1")
    assert status == 200 and page["total"] == 2 and [u["extension"] for u in page["items"]] \
        == ["101"]
    anna = pbx_api.users["100"]
    status, user, h = await pbx_api.call("GET", f"/api/v1/users/{anna.id}")
    assert status == 200 and user["name"] == "Anna" and user["language"] == "de"
    etag = h["ETag"]
    status, user, h2 = await pbx_api.call(
        "PATCH", f"/api/v1/users/{anna.id}", json={"mobile_number": "0171 5550100",
                                                  "language": "en"},
        headers={"If-Match": etag})
    assert status == 200, user
    assert user["mobile_number"] == "+491715550100" and user["language"] == "en"
    assert user["name"] == "Anna"  # not sent: kept
    assert h2["ETag"] != etag
    # the old ETag is stale now: 412, nothing changed
    status, problem, _ = await pbx_api.call("PATCH", f"/api/v1/users/{anna.id}",
                                            json={"name": "Mallory"}, headers={"If-Match": etag})
    assert status == 412 and problem["code"] == "precondition_failed"
    assert pbx_api.store.user("100").name == "Anna"
    # null removes a number
    status, user, _ = await pbx_api.call("PATCH", f"/api/v1/users/{anna.id}",
                                         json={"mobile_number": None})
    assert status == 200 and user["mobile_number"] is None


async def test_tenants_made_and_removed_by_a_system_admin(pbx_api: Api) -> None:
    body = {"name": "beta", "domain": "beta.test", "ext_min_len": 4}
    status, _, _ = await pbx_api.call("POST", "/api/v1/tenants", json=body)
    assert status == 403  # a tenant admin
    status, tenant, _ = await pbx_api.call("POST", "/api/v1/tenants", who="root", json=body)
    assert status == 201 and tenant["ext_max_len"] == 4 and tenant["realm"] == "beta.test"
    status, _, _ = await pbx_api.call("POST", "/api/v1/tenants", who="root", json=body)
    assert status == 409
    status, page, _ = await pbx_api.call("GET", "/api/v1/tenants", who="admin")
    assert [t["name"] for t in page["items"]] == ["default"]
    status, user, _ = await pbx_api.call("POST", "/api/v1/users", who="root",
                                         json={"extension": "1000", "tenant_id": tenant["id"]})
    assert status == 201 and user["tenant_id"] == tenant["id"]
    status, _, _ = await pbx_api.call("POST", "/api/v1/users", who="root",
                                      json={"extension": "1001"})
    assert status == 422  # a system admin of every tenant must name one
    default = pbx_api.store.tenant("default").id
    status, p, _ = await pbx_api.call("DELETE", f"/api/v1/tenants/{default}", who="root")
    assert status == 409 and p["code"] == "conflict" and pbx_api.store.find_tenant("default")
    status, _, _ = await pbx_api.call("DELETE", f"/api/v1/tenants/{tenant['id']}", who="root")
    assert status == 204 and pbx_api.store.find_tenant("beta") is None


async def test_tokens_made_listed_revoked_through_the_api(pbx_api: Api) -> None:
    anna = pbx_api.users["100"]
    status, made, _ = await pbx_api.call("POST", "/api/v1/tokens",
                                         json={"role": "user", "user_id": anna.id, "days": 1,
                                               "name": "anna's crm"})
    assert status == 201 and made["token"].startswith("apx_") and made["role"] == "user"
    headers = {"Authorization": f"Bearer {made['token']}"}
    status, me, _ = await pbx_api.call("GET", "/api/v1/me", who=None, headers=headers)
    assert status == 200 and me["user_id"] == anna.id
    status, p, _ = await pbx_api.call("POST", "/api/v1/tokens", json={"role": "system_admin"})
    assert status == 403 and p["code"] == "forbidden"  # not above the caller's own role
    carl = pbx_api.users["200"]
    status, _, _ = await pbx_api.call("POST", "/api/v1/tokens",
                                      json={"role": "user", "user_id": carl.id})
    assert status == 404  # another tenant's user
    status, page, _ = await pbx_api.call("GET", "/api/v1/tokens")
    assert made["id"] in [t["id"] for t in page["items"]] and "token" not in page["items"][0]
    status, page, _ = await pbx_api.call("GET", "/api/v1/tokens", who="acme")
    assert made["id"] not in [t["id"] for t in page["items"]]
    status, _, _ = await pbx_api.call("DELETE", f"/api/v1/tokens/{made['id']}", who="acme")
    assert status == 404
    status, _, _ = await pbx_api.call("DELETE", f"/api/v1/tokens/{made['id']}")
    assert status == 204
    status, _, _ = await pbx_api.call("GET", "/api/v1/me", who=None, headers=headers)
    assert status == 401


async def test_plain_user_sees_and_changes_only_themselves(pbx_api: Api) -> None:
    status, page, _ = await pbx_api.call("GET", "/api/v1/users", who="anna")
    assert status == 200 and [u["extension"] for u in page["items"]] == ["100"]
    status, me, _ = await pbx_api.call("GET", "/api/v1/users/me", who="anna")
    assert me["extension"] == "100"
    status, _, _ = await pbx_api.call("PATCH", "/api/v1/users/me", who="anna",
                                      json={"name": "Anna S."})
    assert status == 200
    status, problem, _ = await pbx_api.call("PATCH", "/api/v1/users/me", who="anna",
                                            json={"permission": "international"})
    assert status == 403 and problem["code"] == "forbidden"
    assert pbx_api.store.user("100").permission.value == "national"
    status, _, _ = await pbx_api.call("POST", "/api/v1/users", who="anna",
                                      json={"extension": "150"})
    assert status == 403


async def test_create_and_delete_user_device_number_trunk(pbx_api: Api) -> None:
    status, user, h = await pbx_api.call("POST", "/api/v1/users",
                                         json={"extension": "150", "name": "Dora",
                                               "language": "en"})
    assert status == 201 and h["Location"] == f"/api/v1/users/{user['id']}"
    status, p, _ = await pbx_api.call("POST", "/api/v1/users", json={"extension": "150"})
    assert status == 409 and p["code"] == "conflict"
    status, dev, _ = await pbx_api.call("POST", "/api/v1/devices",
                                        json={"user_id": user["id"], "username": "dora-desk"})
    assert status == 201 and len(dev["password"]) >= 16 and dev["domain"] == "pbx.test"
    status, shown, _ = await pbx_api.call("GET", f"/api/v1/devices/{dev['id']}")
    assert status == 200 and "password" not in shown and "ha1_md5" not in str(shown)
    status, num, _ = await pbx_api.call("POST", "/api/v1/numbers",
                                        json={"number": "+49 30 5550150", "user_id": user["id"]})
    assert status == 201 and num["e164"] == "+49305550150" and num["owner_kind"] == "user"
    status, trunk, _ = await pbx_api.call("POST", "/api/v1/trunks", json={
        "name": "carrier", "kind": "register", "host": "192.0.2.10", "username": "4930555",
        "password": "trunk-secret"})
    assert status == 201 and trunk["has_password"] is True
    status, listed, _ = await pbx_api.call("GET", "/api/v1/trunks")
    assert "trunk-secret" not in str(listed) and listed["total"] == 1
    status, again, _ = await pbx_api.call("POST", f"/api/v1/devices/{dev['id']}/password",
                                          json={"password": "a-new-secret"})
    assert status == 200 and again["password"] == "a-new-secret"
    from sipcore.digest import make_credentials

    stored = pbx_api.ctx.directory.device("pbx.test", "dora-desk")
    assert stored is not None
    assert stored.ha1_md5 == make_credentials("dora-desk", "pbx.test", "a-new-secret").ha1["MD5"]
    for path in (f"/api/v1/numbers/{num['e164']}", f"/api/v1/devices/{dev['id']}",
                 f"/api/v1/trunks/{trunk['id']}", f"/api/v1/users/{user['id']}"):
        status, _, _ = await pbx_api.call("DELETE", path)
        assert status == 204, path
        status, _, _ = await pbx_api.call("GET", path)
        assert status == 404, path


async def test_feature_settings_go_through_the_settings_service(pbx_api: Api) -> None:
    seen: list[Event] = []
    pbx_api.ctx.bus.subscribe(seen.append, "settings.changed")
    status, dnd, h = await pbx_api.call("GET", "/api/v1/users/me/dnd", who="anna")
    assert status == 200 and dnd == {"enabled": False, "ring_burst": False}
    status, dnd, _h2 = await pbx_api.call("PATCH", "/api/v1/users/me/dnd", who="anna",
                                         json={"enabled": True}, headers={"If-Match": h["ETag"]})
    assert status == 200 and dnd == {"enabled": True, "ring_burst": False}
    # what calls read (the directory cache) has it, and one event says so
    anna = pbx_api.users["100"]
    assert pbx_api.ctx.directory.settings(anna.id, "dnd")["enabled"] is True
    assert len(seen) == 1 and seen[0].data["source"] == "api"
    assert seen[0].data["changed"] == {"enabled": True}
    status, p, _ = await pbx_api.call("PATCH", "/api/v1/users/me/dnd", who="anna",
                                      json={"enabled": False}, headers={"If-Match": h["ETag"]})
    assert status == 412 and p["code"] == "precondition_failed" and len(seen) == 1
    # forwarding: typed, partial
    status, fwd, _ = await pbx_api.call("PATCH", f"/api/v1/users/{anna.id}/forwards/immediate",
                                        json={"enabled": True, "target": "101"})
    assert status == 200 and fwd["target"] == "101" and fwd["ring_reminder"] is False
    status, every, _ = await pbx_api.call("GET", "/api/v1/users/me/settings", who="anna")
    assert every["forwards/immediate"]["enabled"] is True and every["dnd"]["enabled"] is True
    assert every["privacy"] == {"enabled": False}
    status, fwd, _ = await pbx_api.call("PATCH", "/api/v1/users/me/forwards/no-answer",
                                        who="anna", json={"rings": 3})
    assert status == 200 and fwd["rings"] == 3 and fwd["enabled"] is False


async def test_feature_code_table_read_by_all_changed_by_system_admin(pbx_api: Api) -> None:
    status, table, _ = await pbx_api.call("GET", "/api/v1/feature-codes?limit=500", who="anna")
    assert status == 200
    rows = {r["key"]: r for r in table["items"]}
    assert rows["dnd.on"]["code"] == "*78" and rows["dnd.on"]["implemented"] is True
    status, _, _ = await pbx_api.call("PATCH", "/api/v1/feature-codes/dnd.on",
                                      json={"code": "*80"})
    assert status == 403  # a tenant admin: the table is system-wide
    seen: list[Event] = []
    pbx_api.ctx.bus.subscribe(seen.append, "codes.changed")
    status, row, _ = await pbx_api.call("PATCH", "/api/v1/feature-codes/dnd.on", who="root",
                                        json={"code": "*80"})
    assert status == 200 and row["code"] == "*80" and row["changed"] is True
    assert pbx_api.ctx.features.match("*80") is not None and len(seen) == 1
    status, p, _ = await pbx_api.call("PATCH", "/api/v1/feature-codes/dnd.off", who="root",
                                      json={"code": "*80"})  # taken: the codes service refuses
    assert status == 422 and p["code"] == "refused"
    status, _, _ = await pbx_api.call("GET", "/api/v1/feature-codes/nope.never")
    assert status == 404
    status, row, _ = await pbx_api.call("DELETE", "/api/v1/feature-codes/dnd.on", who="root")
    assert status == 200 and row["code"] == "*78" and row["changed"] is False
    assert pbx_api.ctx.features.match("*80") is None and len(seen) == 2


async def test_a_refused_setting_names_its_field_and_a_noop_is_no_event(pbx_api: Api) -> None:
    from pbx.settings_schema import SettingError

    def check(user_id: int, feature: str, settings: dict[str, object]) -> None:
        if feature == "displayed_number" and settings.get("number") == "+4930999":
            raise SettingError("displayed_number.number: +4930999 is not a number of user 100")

    pbx_api.ctx.settings.check = check  # type: ignore[assignment]
    seen: list[Event] = []
    pbx_api.ctx.bus.subscribe(seen.append)
    status, p, _ = await pbx_api.call("PATCH", "/api/v1/users/me/displayed-number", who="anna",
                                      json={"number": "+4930999"})
    assert status == 422 and p["code"] == "refused" and p["field"] == "/number"
    status, _, _ = await pbx_api.call("PATCH", "/api/v1/users/me/dnd", who="anna",
                                      json={"enabled": False})  # as it is
    assert status == 200 and seen == []


async def test_history_filters_paging_csv_delete(pbx_api: Api) -> None:
    store = pbx_api.store
    anna = pbx_api.users["100"]
    t0 = time.time() - 1000
    ids = []
    for i, (direction, number, answered) in enumerate(
            [("in", "101", True), ("in", "+4930999", False), ("out", "101", True)]):
        entry = store.history_start(anna.id, f"c{i}", direction, "", number, t0 + i * 100)
        if answered:
            store.history_answered(entry, t0 + i * 100 + 5)
        store.history_end(entry, t0 + i * 100 + 50)
        ids.append(entry)
    status, page, _ = await pbx_api.call("GET", "/api/v1/users/me/history", who="anna")
    assert status == 200 and page["total"] == 3
    assert [e["id"] for e in page["items"]] == ids[::-1]  # newest first
    status, page, _ = await pbx_api.call("GET", "/api/v1/users/me/history?missed=true",
                                         who="anna")
    assert [e["other_number"] for e in page["items"]] == ["+4930999"]
    status, page, _ = await pbx_api.call(
        "GET", f"/api/v1/users/me/history?direction=in&since={t0 + 50}", who="anna")
    assert [e["id"] for e in page["items"]] == [ids[1]]
    status, page, _ = await pbx_api.call("GET", "/api/v1/users/me/history?number=101&limit=1"
                                         "&offset=1", who="anna")
    assert page["total"] == 2 and [e["id"] for e in page["items"]] == [ids[0]]
    status, text, h = await pbx_api.call("GET", "/api/v1/users/me/history.csv?direction=out",
                                         who="anna")
    assert status == 200 and h["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1 and rows[0]["call_id"] == "c2" and rows[0]["missed"] == "False"
    status, _, _ = await pbx_api.call("DELETE", f"/api/v1/users/me/history/{ids[0]}",
                                      who="anna")
    assert status == 204
    status, _, _ = await pbx_api.call("DELETE", f"/api/v1/users/me/history/{ids[0]}",
                                      who="anna")
    assert status == 404
    status, gone, _ = await pbx_api.call("DELETE", "/api/v1/users/me/history", who="anna")
    assert status == 200 and gone == {"deleted": 2} and store.history(anna.id) == []


async def test_registrations_and_health(pbx_api: Api) -> None:
    from sipcore.registrar import Binding
    from sipcore.transport import Peer

    bindings = [Binding("sip:100@pbx.test", "sip:100@192.0.2.1:5062", "<sip:100@192.0.2.1:5062>",
                        time.time() + 60, received=Peer("udp", "192.0.2.1", 5062)),
                Binding("sip:200@acme.test", "sip:200@192.0.2.2", "<sip:200@192.0.2.2>",
                        time.time() + 60)]
    pbx_api.ctx.bindings = lambda: bindings
    status, page, _ = await pbx_api.call("GET", "/api/v1/registrations")
    assert status == 200 and [r["aor"] for r in page["items"]] == ["sip:100@pbx.test"]
    assert page["items"][0]["source"] == "192.0.2.1:5062" and page["items"][0]["expires_in"] > 50
    status, page, _ = await pbx_api.call("GET", "/api/v1/registrations", who="ben")
    assert page["total"] == 0
    status, page, _ = await pbx_api.call("GET", "/api/v1/registrations", who="root")
    assert page["total"] == 2
    status, health, _ = await pbx_api.call("GET", "/api/v1/system/health", who="anna")
    assert status == 200 and health["active_calls"] == 1 and health["registrations"] == 2


# -- every operation, with foreign tokens ----------------------------------------------------


def _victim_objects(api: Api) -> dict[str, str]:
    """Anna's (tenant default, user 100) objects, by path parameter."""
    store = api.store
    anna = api.users["100"]
    store.add_number("+49 30 1234100", user="100")
    store.add_trunk("victim", kind="ip", host="192.0.2.50")
    entry = store.history_start(anna.id, "victim-call", "in", "", "+4930777", time.time())
    device = next(d for d in store.devices("default") if d.user_id == anna.id)
    trunk = store.trunks("default")[0]
    group = store.add_pickup_group(anna.tenant_id, "victims")
    api.ctx.live_calls = lambda: [LiveCall("victim-call@192.0.2.1", anna.tenant_id, (anna.id,),
                                           "outbound", "100", "+4930777", "answered", 1.0,
                                           2.0)]
    api.ctx.hang_up = lambda call_id: api.figures.setdefault("hung", []).append(call_id) or True
    store.set_pickup_members(group.id, add=(anna.id,))
    hook = store.create_webhook(tenant_id=anna.tenant_id, url="https://hooks.example.com/victim",
                                secret="whsec_dmljdGltLXNlY3JldA==", event_types=(),
                                now=time.time())
    return {"webhook": str(hook.id), "user": str(anna.id), "device": str(device.id), "number": "+49301234100",
            "trunk": str(trunk.id), "entry": str(entry), "tenant": str(anna.tenant_id),
            "key": "dnd.on", "token": str(store.api_token(api.tokens["anna"]).id),  # type: ignore[union-attr]
            "other": str(api.users["101"].id),  # Anna's chat with Ben
            "message": leave_message(store, anna, "default"),  # a voicemail in Anna's box
            "group": str(group.id), "member": str(anna.id),  # her pickup group
            "call": "victim-call@192.0.2.1",  # her call in progress
            "participant": "L1",  # a participant of its conference
            "contact": str(store.add_contact(anna.id, name="victim", now=time.time()).id),
            "kind": _greeting(store, anna)}  # her voicemail greeting


def _greeting(store: Any, anna: Any) -> str:
    path = Boxes(store.data_dir).greeting("default", anna.extension)
    path.write_bytes(b"RIFF victim greeting")
    return "personal"


def _state(api: Api) -> Any:
    store = api.store
    anna = api.users["100"]
    return (store.tenants(), store.user("100"), store.devices("default"), store.numbers(), store.trunks(),
            store.history(anna.id), store.all_feature_settings(), store.feature_codes(),
            [(t.id, t.revoked) for t in store.api_tokens()], store.voicemails(),
            store.pickup_groups(), store.chat_conversation(anna.id, api.users["101"].id),
            api.figures.get("hung"), store.webhooks(), store.contacts(anna.id),
            [store.webhook_deliveries(h.id) for h in store.webhooks()],
            Boxes(store.data_dir).greeting("default", "100").read_bytes())


async def test_foreign_tokens_get_403_or_404_for_every_operation(pbx_api: Api) -> None:
    victim = _victim_objects(pbx_api)
    anna = pbx_api.users["100"]
    _, doc, _ = await pbx_api.call("GET", "/api/v1/openapi.json", who=None)
    before = _state(pbx_api)
    walked = 0
    for path, ops in doc["paths"].items():
        params = re.findall(r"{([a-z_]+)}", path)
        for method, op in ops.items():
            if not op.get("security") or op["operationId"] == "events":
                continue
            for attacker in ("acme", "carl", "ben"):
                url = path
                for name in params:
                    url = url.replace("{" + name + "}", victim[name])
                kwargs: dict[str, Any] = {}
                if method in ("patch", "post"):
                    kwargs["json"] = {"user_id": anna.id, "username": "stolen",
                                      "number": "+4930555999"} \
                        if method == "post" and not params else {}
                if method == "put":  # a valid body, so only the access rule can refuse it
                    kwargs["json"] = {"password": "stolen-password"}
                status, body, _ = await pbx_api.call(method.upper(), url, who=attacker,
                                                     **kwargs)
                walked += 1
                if not params:
                    # lists and creates: nothing of the victim's may appear or be made
                    if method == "post":
                        assert status in (403, 404, 422), (attacker, method, path, status, body)
                    else:
                        # /session: a token is no session (404 for GET and DELETE alike)
                        assert status in (200, 403) or (path == "/api/v1/session"
                                                        and status == 404), (attacker, path,
                                                                             status)
                        if status == 200 and path == "/api/v1/directory" and attacker == "ben":
                            # the company directory: a colleague's name, extension and DIDs
                            # are what it is for — and nothing else of theirs
                            assert {k for i in body["items"] for k in i} == {
                                "id", "extension", "name", "numbers"}, body
                            continue
                        if status == 200 and "items" in body:
                            text = str(body["items"])
                            assert f"'user_id': {anna.id}" not in text, (attacker, path)
                            assert "victim" not in text and "+49301234100" not in text
                    continue
                shared = method == "get" and (
                    params == ["key"] or (attacker == "ben" and params == ["tenant"]))
                if shared:  # the system-wide code table; Ben's own tenant
                    assert status == 200, (attacker, method, path, status)
                else:
                    assert status in (403, 404), (attacker, method, path, status, body)
                    assert body["status"] == status
    assert walked > 100
    assert _state(pbx_api) == before


async def test_two_writes_with_one_etag_at_once_one_wins(pbx_api: Api,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The store write runs in a worker thread (the event loop goes on with the calls): the
    ETag check and the write stay one step, so of two PATCHes sent at once with the same
    If-Match exactly one is stored, the other gets 412 — even with a slow disk."""
    store = pbx_api.ctx.settings.store
    write = store.set_feature_settings

    def slow_write(*args: Any) -> dict[str, Any]:
        time.sleep(0.1)  # a commit waiting for the disk, in the worker thread
        return write(*args)

    monkeypatch.setattr(store, "set_feature_settings", slow_write)
    anna = pbx_api.users["100"]
    path = f"/api/v1/users/{anna.id}/forwards/busy"
    status, _, h = await pbx_api.call("GET", path)
    assert status == 200
    writes = asyncio.gather(*(
        pbx_api.call("PATCH", path, json={"enabled": True, "target": target},
                     headers={"If-Match": h["ETag"]}) for target in ("0301111111", "0302222222")))
    await asyncio.sleep(0.02)
    status, _, _ = await pbx_api.call("GET", f"/api/v1/users/{anna.id}/dnd")
    assert status == 200 and not writes.done()  # the loop answered while the disk wrote
    first, second = await writes
    assert sorted((first[0], second[0])) == [200, 412]
    won = first if first[0] == 200 else second
    assert pbx_api.ctx.directory.settings(anna.id, "forward_busy")["target"] == won[1]["target"]
    assert pbx_api.store.feature_settings(anna.id, "forward_busy")["target"] == won[1]["target"]
