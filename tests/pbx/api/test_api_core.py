"""The API's foundation through aiohttp's test client: the OpenAPI document, the offline docs,
bearer tokens, and RFC 9457 problems for bad input (nothing changes when input is refused)."""

from __future__ import annotations

import time

import pytest

from pbx.api.routes import MAX_BODY
from tests.pbx.api.conftest import Api


async def test_openapi_document_is_generated_and_valid(pbx_api: Api) -> None:
    status, doc, _headers = await pbx_api.call("GET", "/api/v1/openapi.json", who=None)
    assert status == 200 and doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    for path in ("/api/v1/users/{user}/dnd", "/api/v1/users/{user}/forwards/immediate",
                 "/api/v1/users/{user}/forwards/no-answer", "/api/v1/users/{user}/privacy",
                 "/api/v1/users/{user}/call-waiting", "/api/v1/users/{user}/remote-office",
                 "/api/v1/users/{user}/parallel-ringing", "/api/v1/users/{user}/displayed-number",
                 "/api/v1/users/{user}/anonymous-rejection", "/api/v1/feature-codes",
                 "/api/v1/registrations", "/api/v1/system/health", "/api/v1/events",
                 "/api/v1/users/{user}/history.csv"):
        assert path in paths, path
    # the settings models come from the features' schemas: bounds and descriptions included
    rings = doc["components"]["schemas"]["ForwardNoAnswerSettingsPatch"]["properties"]["rings"]
    assert rings["type"] == "integer" and rings["minimum"] == 1 and "maximum" in rings
    assert doc["components"]["schemas"]["DndSettingsPatch"]["additionalProperties"] is False
    from openapi_spec_validator import validate

    validate(doc)


async def test_docs_are_served_offline(pbx_api: Api) -> None:
    status, page, headers = await pbx_api.call("GET", "/api/v1/docs", who=None)
    assert status == 200 and "swagger-ui-bundle.js" in page
    assert "http" not in page.replace("http-equiv", "")  # nothing from elsewhere: no CDN
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, script, _ = await pbx_api.call("GET", "/api/v1/docs/assets/swagger-ui-bundle.js",
                                           who=None)
    assert status == 200 and "SwaggerUIBundle" in script
    status, init, _ = await pbx_api.call("GET", "/api/v1/docs/init.js", who=None)
    assert status == 200 and "/api/v1/openapi.json" in init


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer apx_nope"])
async def test_no_or_bad_token_is_401_problem(pbx_api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    status, body, h = await pbx_api.call("GET", "/api/v1/users", who=None, headers=headers)
    assert status == 401 and h["Content-Type"].startswith("application/problem+json")
    assert body["code"] in ("unauthenticated", "invalid_token")
    assert body["type"] == "urn:asyncpbx:problem:" + body["code"] and body["status"] == 401
    assert "Bearer" in h["WWW-Authenticate"]


async def test_expired_and_revoked_tokens_are_refused(pbx_api: Api) -> None:
    store = pbx_api.store
    tenant = store.tenant("default")
    now = time.time()
    token, _record = store.create_api_token(role="tenant_admin", tenant_id=tenant.id,
                                           expires_at=now + 0.2, now=now)
    headers = {"Authorization": f"Bearer {token}"}
    status, body, _ = await pbx_api.call("GET", "/api/v1/me", who=None, headers=headers)
    assert status == 200 and body["role"] == "tenant_admin" and body["tenant"] == "default"
    found = store.api_token(token)
    assert found is not None and found.last_used_at is not None  # last use recorded
    time.sleep(0.25)
    status, body, _ = await pbx_api.call("GET", "/api/v1/me", who=None, headers=headers)
    assert status == 401 and body["code"] == "invalid_token"
    token2, record2 = store.create_api_token(role="tenant_admin", tenant_id=tenant.id, now=now)
    assert store.revoke_api_token(record2.id)
    status, _, _ = await pbx_api.call("GET", "/api/v1/me", who=None,
                                      headers={"Authorization": f"Bearer {token2}"})
    assert status == 401


def test_tokens_are_stored_hashed(pbx_api: Api) -> None:
    raw = pbx_api.store.path.read_bytes()
    for token in pbx_api.tokens.values():
        assert token.encode() not in raw
    assert all(t.startswith("apx_") and len(t) > 40 for t in pbx_api.tokens.values())


async def test_unknown_path_and_method_are_problems(pbx_api: Api) -> None:
    status, body, h = await pbx_api.call("GET", "/api/v1/nothing-here")
    assert status == 404 and body["code"] == "not_found"
    status, body, h = await pbx_api.call("PUT", "/api/v1/users")
    assert status == 405 and body["code"] == "method_not_allowed" and "GET" in h["Allow"]
    status, body, _ = await pbx_api.call("GET", "/health", who=None)  # outside the API: as was
    assert status == 200


async def _dnd(api: Api) -> dict[str, object]:
    status, body, _ = await api.call("GET", "/api/v1/users/me/dnd", who="anna")
    assert status == 200
    return dict(body)


@pytest.mark.parametrize(("body", "ctype", "status", "code", "field"), [
    (b"{not json", "application/json", 400, "malformed_json", None),
    (b"", "application/json", 400, "malformed_json", None),
    (b'{"enabled": "yes"}', "application/json", 422, "bool_type", "/enabled"),
    (b'{"enabled": 1}', "application/json", 422, "bool_type", "/enabled"),
    (b'{"enabled": null}', "application/json", 422, "bool_type", "/enabled"),
    (b'{"enabled": true, "colour": "red"}', "application/json", 422, "unknown_field",
     "/colour"),
    (b"[true]", "application/json", 422, "model_type", None),
    (b'{"enabled": true}', "text/plain", 415, "unsupported_media_type", None),
    (b'{"enabled": true, "x": "' + b"a" * MAX_BODY + b'"}', "application/json", 413,
     "body_too_large", None),
])
async def test_bad_input_is_a_problem_and_changes_nothing(
        pbx_api: Api, body: bytes, ctype: str, status: int, code: str, field: str | None
) -> None:
    before = await _dnd(pbx_api)
    seq = pbx_api.ctx.bus.last_seq
    got, problem, headers = await pbx_api.call("PATCH", "/api/v1/users/me/dnd", who="anna",
                                               data=body, headers={"Content-Type": ctype})
    assert got == status, problem
    assert headers["Content-Type"].startswith("application/problem+json")
    assert problem["code"] == code or any(e["code"] == code for e in problem["errors"])
    assert problem["status"] == status and problem["instance"] == "/api/v1/users/me/dnd"
    if field is not None:
        assert problem["field"] == field
    assert await _dnd(pbx_api) == before
    assert pbx_api.ctx.bus.last_seq == seq  # no settings.changed


async def test_out_of_range_and_bad_query_are_422(pbx_api: Api) -> None:
    status, p, _ = await pbx_api.call("PATCH", "/api/v1/users/me/forwards/no-answer",
                                      who="anna", json={"rings": 99})
    assert status == 422 and p["field"] == "/rings"
    status, p, _ = await pbx_api.call("GET", "/api/v1/users?limit=0")
    assert status == 422 and p["field"] == "query:limit"
    status, p, _ = await pbx_api.call("GET", "/api/v1/users?sort=password")
    assert status == 422 and p["field"] == "query:sort"
    status, p, _ = await pbx_api.call("GET", "/api/v1/users?bogus=1")
    assert status == 422 and p["code"] == "unknown_field"


async def test_metrics_in_prometheus_text_format(pbx_api: Api) -> None:
    await pbx_api.call("GET", "/api/v1/me")
    status, text, headers = await pbx_api.call("GET", "/metrics", who=None)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert "asyncpbx_active_calls 1.0" in text and "asyncpbx_registrations 2.0" in text
    assert 'asyncpbx_sip_responses_sent_total{class="2xx"} 5.0' in text
    assert "asyncpbx_sip_transactions 3.0" in text
    assert "asyncpbx_sip_parse_errors_total 1.0" in text
    assert "asyncpbx_sip_connections_current 2.0" in text
    assert ('asyncpbx_http_requests_total{method="GET",route="/api/v1/me",status="200"} 1.0'
            in text)
