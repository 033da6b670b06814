"""The token cache: a token the store confirmed is authenticated without the store for a few
seconds; expiry still counts on every use; a revocation through the API takes effect at once,
one by the store (the CLI's way) within the cache's lifetime; unknown tokens never enter."""

from __future__ import annotations

import time

from pbx.api.token_cache import TTL, TokenCache
from pbx.store import ApiToken
from tests.pbx.api.conftest import Api


def _record(token_id: int = 1, expires_at: float | None = None) -> ApiToken:
    return ApiToken(token_id, "t", "user", 1, None, 0.0, expires_at, None, False)


def test_entries_live_for_the_ttl_and_are_bounded() -> None:
    cache = TokenCache(ttl=5.0, max_entries=2)
    cache.put("apx_a", _record(1), 100.0)
    assert cache.get("apx_a", 104.9) is not None
    assert cache.get("apx_a", 105.0) is None
    assert cache.get("apx_b", 101.0) is None
    cache.put("apx_b", _record(2), 100.0)
    cache.put("apx_c", _record(3), 100.0)
    assert len(cache) == 2 and cache.get("apx_a", 101.0) is None  # the oldest went
    cache.forget(2)
    assert cache.get("apx_b", 101.0) is None and cache.get("apx_c", 101.0) is not None


async def test_a_revoked_token_stops_at_once_through_the_api(pbx_api: Api) -> None:
    status, made, _ = await pbx_api.call("POST", "/api/v1/tokens", json={
        "name": "crm", "role": "user", "user_id": pbx_api.users["100"].id})
    assert status == 201, made
    token = made["token"]
    headers = {"Authorization": f"Bearer {token}"}
    status, _, _ = await pbx_api.call("GET", "/api/v1/users/me", who=None, headers=headers)
    assert status == 200 and len(pbx_api.ctx.token_cache) >= 1
    # the store is no longer asked while the entry is fresh
    reads = []
    real = pbx_api.store.api_token
    pbx_api.store.api_token = lambda *a, **k: reads.append(1) or real(*a, **k)  # type: ignore[method-assign]
    for _ in range(5):
        assert (await pbx_api.call("GET", "/api/v1/users/me", who=None,
                                   headers=headers))[0] == 200
    assert reads == []
    status, _, _ = await pbx_api.call("DELETE", f"/api/v1/tokens/{made['id']}")
    assert status == 204
    status, problem, _ = await pbx_api.call("GET", "/api/v1/users/me", who=None,
                                            headers=headers)
    assert status == 401 and problem["code"] == "invalid_token"


async def test_a_revocation_in_the_store_counts_within_the_ttl(pbx_api: Api) -> None:
    clock = [time.time()]
    pbx_api.ctx.clock = lambda: clock[0]
    token, record = pbx_api.store.create_api_token(role="user", tenant_id=pbx_api.users[
        "100"].tenant_id, user_id=pbx_api.users["100"].id, now=clock[0])
    headers = {"Authorization": f"Bearer {token}"}
    assert (await pbx_api.call("GET", "/api/v1/users/me", who=None, headers=headers))[0] == 200
    pbx_api.store.revoke_api_token(record.id)  # what `asyncpbx token revoke` does
    clock[0] += TTL + 0.1
    assert (await pbx_api.call("GET", "/api/v1/users/me", who=None, headers=headers))[0] == 401


async def test_expiry_counts_on_every_use(pbx_api: Api) -> None:
    clock = [time.time()]
    pbx_api.ctx.clock = lambda: clock[0]
    token, _ = pbx_api.store.create_api_token(role="user", tenant_id=pbx_api.users[
        "100"].tenant_id, user_id=pbx_api.users["100"].id, now=clock[0],
        expires_at=clock[0] + 1.0)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await pbx_api.call("GET", "/api/v1/users/me", who=None, headers=headers))[0] == 200
    clock[0] += 1.5  # still in the cache, but expired
    assert (await pbx_api.call("GET", "/api/v1/users/me", who=None, headers=headers))[0] == 401
