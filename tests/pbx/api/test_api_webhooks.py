"""``/webhooks`` through aiohttp's test client: CRUD by a tenant admin (the secret shown once,
rotated), users refused, another tenant's endpoint a 404, bad input a problem+json that
changes nothing, the SSRF guard at creation, the delivery log and the test event."""

from __future__ import annotations

import time

import pytest

from pbx.config import WebhooksConfig
from pbx.webhooks import WebhookService
from tests.pbx.api.conftest import Api

HOOKS = "/api/v1/webhooks"


def _service(api: Api, allow_private: bool = True) -> WebhookService:
    service = WebhookService(api.store, WebhooksConfig(allow_private=allow_private),
                             lambda uid: None)
    api.ctx.webhooks = service
    return service


async def test_crud_secret_once_rotate_and_reenable(pbx_api: Api) -> None:
    service = _service(pbx_api)
    status, made, h = await pbx_api.call("POST", HOOKS, json={
        "url": "https://crm.example.com/in", "event_types": ["call.*", "settings.changed"],
        "description": "CRM"})
    assert status == 201, made
    assert made["secret"].startswith("whsec_") and h["Location"] == f"{HOOKS}/{made['id']}"
    assert made["event_types"] == ["call.*", "settings.changed"] and made["enabled"] is True
    assert [w.id for w in service._hooks] == [made["id"]]  # the service's cache follows
    status, got, h = await pbx_api.call("GET", f"{HOOKS}/{made['id']}")
    assert status == 200 and "secret" not in got and got["description"] == "CRM"
    etag = h["ETag"]
    status, page, _ = await pbx_api.call("GET", HOOKS)
    assert page["total"] == 1 and "secret" not in page["items"][0]
    # rotate: a new secret, shown once, stored
    status, rotated, _ = await pbx_api.call("POST", f"{HOOKS}/{made['id']}/secret")
    assert status == 200 and rotated["secret"] != made["secret"]
    assert pbx_api.store.webhook(made["id"]).secret == rotated["secret"]  # type: ignore[union-attr]
    # a stale ETag changes nothing
    status, problem, _ = await pbx_api.call("PATCH", f"{HOOKS}/{made['id']}",
                                            json={"description": "x"},
                                            headers={"If-Match": '"stale"'})
    assert status == 412 and problem["code"] == "precondition_failed"
    assert etag  # the GET gave one
    # the failure rule disabled it: visible, and re-enabled through the API
    pbx_api.store.update_webhook(made["id"], enabled=False)
    status, got, _ = await pbx_api.call("GET", f"{HOOKS}/{made['id']}")
    assert got["enabled"] is False and got["disabled_reason"]
    status, got, _ = await pbx_api.call("PATCH", f"{HOOKS}/{made['id']}", json={"enabled": True})
    assert status == 200 and got["enabled"] is True and got["disabled_reason"] == ""
    assert got["description"] == "CRM"  # not sent, not reset
    status, _, _ = await pbx_api.call("DELETE", f"{HOOKS}/{made['id']}")
    assert status == 204 and pbx_api.store.webhooks() == [] and service._hooks == []


async def test_deliveries_log_and_test_event(pbx_api: Api) -> None:
    service = _service(pbx_api)
    _, made, _ = await pbx_api.call("POST", HOOKS, json={"url": "https://crm.example.com/in"})
    status, queued, _ = await pbx_api.call("POST", f"{HOOKS}/{made['id']}/test")
    assert status == 202 and queued["message_id"].startswith("msg_")
    delivery = pbx_api.store.webhook_due(time.time() + 1)[0]
    assert delivery.message_id == queued["message_id"]
    pbx_api.store.webhook_attempted(delivery, at=time.time(), status_code=503, latency=0.25,
                                    error="HTTP 503", retry_at=time.time() + 60)
    status, page, _ = await pbx_api.call("GET", f"{HOOKS}/{made['id']}/deliveries")
    assert status == 200 and page["total"] == 1
    item = page["items"][0]
    assert item["event_type"] == "webhook.test" and item["status"] == "pending"
    assert item["log"] == [{"attempt": 1, "at": pytest.approx(time.time(), abs=5),
                            "status_code": 503, "latency": 0.25, "error": "HTTP 503"}]
    status, page, _ = await pbx_api.call("GET", f"{HOOKS}/{made['id']}/deliveries"
                                                "?status=delivered")
    assert page["total"] == 0
    assert service.stats["queued"] == 0  # the test went to the store directly


async def test_other_tenants_and_plain_users_get_nothing(pbx_api: Api) -> None:
    _service(pbx_api)
    _, made, _ = await pbx_api.call("POST", HOOKS, json={"url": "https://crm.example.com/in"})
    hook = f"{HOOKS}/{made['id']}"
    for method, path in (("GET", hook), ("PATCH", hook), ("DELETE", hook),
                         ("POST", hook + "/secret"), ("POST", hook + "/test"),
                         ("GET", hook + "/deliveries")):
        kwargs = {"json": {"description": "stolen"}} if method == "PATCH" else {}
        status, body, h = await pbx_api.call(method, path, who="acme", **kwargs)
        assert status == 404, (method, path, body)
        assert h["Content-Type"].startswith("application/problem+json")
        status, body, _ = await pbx_api.call(method, path, who="anna", **kwargs)
        assert status == 403, (method, path, body)
    status, page, _ = await pbx_api.call("GET", HOOKS, who="acme")
    assert page["total"] == 0
    status, _, _ = await pbx_api.call("POST", HOOKS, who="acme", json={
        "url": "https://x.example.com/", "tenant_id": made["tenant_id"]})
    assert status == 404
    # a system admin sees every tenant's and names the tenant of a new one
    status, page, _ = await pbx_api.call("GET", HOOKS, who="root")
    assert page["total"] == 1
    status, problem, _ = await pbx_api.call("POST", HOOKS, who="root",
                                            json={"url": "https://x.example.com/"})
    assert status == 422 and problem["field"] == "/tenant_id"
    assert [w.description for w in pbx_api.store.webhooks()] == [""]


@pytest.mark.parametrize("body,status,code,field", [
    ({"url": "https://x.example.com/", "evil": 1}, 422, "unknown_field", "/evil"),
    ({"url": 42}, 422, "validation_failed", "/url"),
    ({"url": "gopher://x.example.com/"}, 422, "validation_failed", "/url"),
    ({"url": "https://x.example.com/", "event_types": ["no.such"]}, 422, "validation_failed",
     "/event_types/0"),
    ({"url": "https://x.example.com/", "event_types": ["call.*", "BAD KIND"]}, 422,
     "validation_failed", "/event_types/1"),
])
async def test_bad_input_is_a_problem_and_changes_nothing(
        pbx_api: Api, body: dict[str, object], status: int, code: str, field: str) -> None:
    _service(pbx_api)
    got, problem, h = await pbx_api.call("POST", HOOKS, json=body)
    assert got == status, problem
    assert h["Content-Type"].startswith("application/problem+json")
    assert problem["code"] == code and problem["field"] == field, problem
    assert pbx_api.store.webhooks() == []


async def test_malformed_json_and_private_targets(pbx_api: Api) -> None:
    _service(pbx_api, allow_private=False)
    got, problem, _ = await pbx_api.call("POST", HOOKS, data=b"{nope",
                                         headers={"Content-Type": "application/json"})
    assert got == 400 and problem["code"] == "malformed_json"
    for url in ("http://127.0.0.1:8080/in", "http://169.254.169.254/", "http://10.1.2.3/",
                "http://localhost/"):
        got, problem, _ = await pbx_api.call("POST", HOOKS, json={"url": url})
        assert got == 422 and problem["field"] == "/url", (url, problem)
        assert "refused" in problem["detail"]
    # no service (the API without a running server): the guard's default applies too
    pbx_api.ctx.webhooks = None
    got, _, _ = await pbx_api.call("POST", HOOKS, json={"url": "http://127.0.0.1/"})
    assert got == 422
    assert pbx_api.store.webhooks() == []
