"""Portal logins and sessions through aiohttp's test client: login by extension or
EXT@DOMAIN, one answer for unknown user and wrong password, failures in the SIP ban table
(5 ban the source, one security line each) and the per-account slow-down across sources,
cookie flags, CSRF (Origin and token) on changes by cookie but not by token, logout, idle and
absolute expiry on an injected clock, a user's session sees their own data only and a tenant
admin's their tenant, passwords set by the user (old one required) or an admin, rehash."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher
from structlog.testing import capture_logs

from pbx.api.logins import COOKIE, SessionPolicy, login
from pbx.api.passwords import Passwords
from pbx.api.problems import ApiProblem
from pbx.bans import Ban, BanPolicy, BanTable
from tests.pbx.api.conftest import Api

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ANNA = "anna-portal-pw"


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def portal(pbx_api: Api) -> Api:
    ctx = pbx_api.ctx
    ctx.passwords = Passwords(FAST)
    ctx.clock = Clock()
    ctx.bans = BanTable()
    ctx.sessions = SessionPolicy(idle=600.0, lifetime=3600.0)
    store = pbx_api.store
    store.set_portal_password(pbx_api.users["100"].id, ctx.passwords.hash(ANNA), now=0)
    store.set_portal_password(pbx_api.users["101"].id, ctx.passwords.hash("ben-portal-pw"),
                              now=0, role="tenant_admin")
    store.set_portal_password(pbx_api.users["200"].id, ctx.passwords.hash("carl-portal-pw"),
                              now=0)
    pbx_api.client.session.cookie_jar.clear()
    return pbx_api


def stored(api: Api, ext: str) -> str:
    login = api.store.portal_login(api.users[ext].id)
    assert login is not None
    return login.password_hash


def origin(api: Api) -> str:
    url = api.client.make_url("/")
    return f"{url.scheme}://{url.host}:{url.port}"


async def log_in(api: Api, **body: Any) -> tuple[int, Any, Any]:
    return await api.call("POST", "/api/v1/session", who=None, json=body)


async def test_login_sets_a_strict_http_only_cookie_and_the_session_reads_me(portal: Api
                                                                             ) -> None:
    status, body, headers = await log_in(portal, extension="100", password=ANNA)
    assert status == 201, body
    assert body["user_id"] == portal.users["100"].id and body["role"] == "user"
    assert len(body["csrf_token"]) >= 32
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=")
    flags = {f.strip().split("=")[0].lower(): f.strip() for f in cookie.split(";")[1:]}
    assert "httponly" in flags and flags["samesite"].lower() == "samesite=strict"
    assert flags["path"] == "Path=/" and "secure" not in flags  # plain HTTP here
    status, me, _ = await portal.call("GET", "/api/v1/users/me", who=None)
    assert status == 200 and me["extension"] == "100"
    status, who, _ = await portal.call("GET", "/api/v1/me", who=None)
    assert status == 200 and who["role"] == "user" and who["user_id"] == me["id"]
    status, session, _ = await portal.call("GET", "/api/v1/session", who=None)
    assert status == 200 and session["csrf_token"] == body["csrf_token"]
    # only the id's hash is stored
    raw = cookie.split(";")[0].split("=", 1)[1]
    rows = portal.store._db.execute("SELECT session_hash FROM portal_sessions").fetchall()
    assert rows and all(raw not in r[0] for r in rows)


async def test_login_by_ext_at_domain(portal: Api) -> None:
    status, body, _ = await log_in(portal, login="200@acme.test", password="carl-portal-pw")
    assert status == 201 and body["user_id"] == portal.users["200"].id
    status, _, _ = await log_in(portal, login="200@acme", password="carl-portal-pw")
    assert status == 201


async def test_unknown_user_and_wrong_password_answer_alike(portal: Api) -> None:
    answers = []
    for body in ({"extension": "100", "password": "wrong-one"},
                 {"extension": "999", "password": "wrong-one"},
                 {"tenant": "nowhere", "extension": "100", "password": ANNA},
                 {"extension": "102", "password": ANNA}):
        status, problem, headers = await log_in(portal, **body)
        assert "Set-Cookie" not in headers
        answers.append((status, problem["code"], problem["detail"]))
    assert len(set(answers)) == 1 and answers[0][:2] == (401, "login_failed")
    status, _, _ = await portal.call("GET", "/api/v1/users/me", who=None)
    assert status == 401


async def test_five_failures_ban_the_source_for_sip_too(portal: Api) -> None:
    made: list[Ban] = []
    portal.ctx.bans = BanTable(on_ban=made.append)
    with capture_logs() as logs:
        for n in range(5):
            status, _, _ = await log_in(portal, extension="100", password=f"guess-{n}")
            assert status == 401
    failed = [e for e in logs if e["event"] == "security.auth.failed"]
    assert len(failed) == 5 and failed[0]["src"] == "127.0.0.1"
    assert [(b.source, b.reason) for b in made] == [("127.0.0.1", "auth failures")]
    assert not portal.ctx.bans.admit("127.0.0.1", portal.ctx.clock())  # SIP drops it too
    status, body, headers = await log_in(portal, extension="100", password=ANNA)
    assert status == 429 and body["code"] == "too_many_failures" and "Retry-After" in headers


async def test_guessing_one_account_from_many_sources_is_slowed(portal: Api) -> None:
    ctx = portal.ctx
    bans = BanTable(BanPolicy(account_failures=3, account_interval=2.0))
    now = 1000.0
    for n in range(3):
        with pytest.raises(ApiProblem):
            await login(ctx.store, ctx.passwords, bans, ctx.sessions, source=f"192.0.2.{n}",
                        password="guess", now=now, extension="100")
    # the right password from a fresh source: verified once now, so the next is slowed
    with pytest.raises(ApiProblem):
        await login(ctx.store, ctx.passwords, bans, ctx.sessions, source="192.0.2.50",
                    password="guess", now=now + 0.1, extension="100")
    with pytest.raises(ApiProblem) as slowed:
        await login(ctx.store, ctx.passwords, bans, ctx.sessions, source="192.0.2.51",
                    password=ANNA, now=now + 0.2, extension="100")
    assert slowed.value.status == 401 and slowed.value.code == "login_failed"
    _, session = await login(ctx.store, ctx.passwords, bans, ctx.sessions,
                             source="192.0.2.52", password=ANNA, now=now + 3.0,
                             extension="100")
    assert session.user_id == portal.users["100"].id
    assert not any(bans.banned(f"192.0.2.{n}", now) for n in (0, 1, 2, 50, 51, 52))


async def test_changes_by_cookie_need_origin_and_csrf_token(portal: Api) -> None:
    _, session, _ = await log_in(portal, extension="100", password=ANNA)
    token = session["csrf_token"]
    path = "/api/v1/users/me/password"
    change = {"password": "anna-new-pw-1", "old_password": ANNA}
    for headers in ({}, {"X-CSRF-Token": token}, {"Origin": origin(portal)},
                    {"Origin": "http://evil.example", "X-CSRF-Token": token},
                    {"Referer": "http://evil.example/x", "X-CSRF-Token": token},
                    # a wrong last character (never the same: "A" was the right one in 1 of 64)
                    {"Origin": origin(portal),
                     "X-CSRF-Token": token[:-1] + ("B" if token.endswith("A") else "A")}):
        status, body, _ = await portal.call("PUT", path, who=None, json=change,
                                            headers=headers)
        assert (status, body["code"]) == (403, "csrf_failed"), headers
    assert portal.ctx.passwords.verify(stored(portal, "100"), ANNA)  # unchanged
    status, _, _ = await portal.call("PUT", path, who=None, json=change,
                                     headers={"Referer": origin(portal) + "/portal",
                                              "X-CSRF-Token": token})
    assert status == 204
    # reading needs neither; a bearer token needs neither for a change
    status, _, _ = await portal.call("GET", "/api/v1/users/me", who=None)
    assert status == 200
    status, _, _ = await portal.call("PUT", f"/api/v1/users/{portal.users['100'].id}/password",
                                     json={"password": "set-by-admin"})
    assert status == 204


async def test_login_from_a_foreign_origin_is_refused(portal: Api) -> None:
    status, body, _ = await portal.call("POST", "/api/v1/session", who=None,
                                        json={"extension": "100", "password": ANNA},
                                        headers={"Origin": "http://evil.example"})
    assert status == 403 and body["code"] == "csrf_failed"


async def test_logout_ends_the_session(portal: Api) -> None:
    _, session, _ = await log_in(portal, extension="100", password=ANNA)
    status, _, headers = await portal.call(
        "DELETE", "/api/v1/session", who=None,
        headers={"Origin": origin(portal), "X-CSRF-Token": session["csrf_token"]})
    assert status == 204 and "Max-Age=0" in headers["Set-Cookie"]
    assert portal.store._db.execute("SELECT COUNT(*) FROM portal_sessions").fetchone()[0] == 0
    status, body, _ = await portal.call("GET", "/api/v1/users/me", who=None)
    assert status == 401 and body["code"] in ("unauthenticated", "session_ended")


async def test_sessions_expire_when_idle_and_at_their_end(portal: Api) -> None:
    clock = portal.ctx.clock
    assert isinstance(clock, Clock)
    cookie: dict[str, str] = {}

    async def me() -> int:
        status, _, _ = await portal.call("GET", "/api/v1/users/me", who=None,
                                         headers={"Cookie": f"{COOKIE}={cookie['v']}"})
        return status

    _, _, headers = await log_in(portal, extension="100", password=ANNA)
    cookie["v"] = headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    portal.client.session.cookie_jar.clear()
    clock.now += 599.0
    assert await me() == 200
    clock.now += 599.0  # used 599 s ago: still alive
    assert await me() == 200
    clock.now += 601.0
    assert await me() == 401  # idle too long
    _, _, headers = await log_in(portal, extension="100", password=ANNA)
    cookie["v"] = headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    portal.client.session.cookie_jar.clear()
    for _ in range(6):  # busy, but the absolute end (3600 s) comes
        clock.now += 500.0
        assert await me() == 200
    clock.now += 601.0
    assert await me() == 401


async def test_a_users_session_sees_only_their_own_data(portal: Api) -> None:
    await log_in(portal, extension="100", password=ANNA)
    status, page, _ = await portal.call("GET", "/api/v1/users", who=None)
    assert status == 200 and [u["extension"] for u in page["items"]] == ["100"]
    ben, carl = portal.users["101"].id, portal.users["200"].id
    for path in (f"/api/v1/users/{ben}", f"/api/v1/users/{carl}",
                 f"/api/v1/users/{ben}/dnd"):
        status, _, _ = await portal.call("GET", path, who=None)
        assert status == 404, path
    status, _, _ = await portal.call("GET", "/api/v1/users/me/dnd", who=None)
    assert status == 200


async def test_a_tenant_admins_session_sees_their_tenant(portal: Api) -> None:
    _, session, _ = await log_in(portal, extension="101", password="ben-portal-pw")
    assert session["role"] == "tenant_admin"
    status, page, _ = await portal.call("GET", "/api/v1/users", who=None)
    assert status == 200 and sorted(u["extension"] for u in page["items"]) == ["100", "101"]
    status, _, _ = await portal.call("GET", f"/api/v1/users/{portal.users['200'].id}",
                                     who=None)
    assert status == 404
    # the admin sets Anna's password without hers
    status, _, _ = await portal.call(
        "PUT", f"/api/v1/users/{portal.users['100'].id}/password", who=None,
        json={"password": "from-the-admin"},
        headers={"Origin": origin(portal), "X-CSRF-Token": session["csrf_token"]})
    assert status == 204
    status, _, _ = await log_in(portal, extension="100", password="from-the-admin")
    assert status == 201


async def test_own_password_change_needs_the_old_one_and_ends_other_sessions(portal: Api
                                                                              ) -> None:
    other = portal.store.create_portal_session(portal.users["100"].id, now=portal.ctx.clock(),
                                               lifetime=60)[0]
    path = "/api/v1/users/me/password"
    status, body, _ = await portal.call("PUT", path, who="anna", json={"password": "long-new-1"})
    assert status == 422 and body["code"] == "old_password_required"
    status, body, _ = await portal.call("PUT", path, who="anna",
                                        json={"password": "long-new-1", "old_password": "no"})
    assert status == 403 and body["code"] == "wrong_password"
    status, body, _ = await portal.call("PUT", path, who="anna",
                                        json={"password": "short", "old_password": ANNA})
    assert status == 422
    status, _, _ = await portal.call("PUT", path, who="anna",
                                     json={"password": "long-new-1", "old_password": ANNA})
    assert status == 204
    assert portal.store.portal_session(other) is None
    status, _, _ = await log_in(portal, extension="100", password=ANNA)
    assert status == 401
    status, _, _ = await log_in(portal, extension="100", password="long-new-1")
    assert status == 201
    # a tenant admin may not set a system admin's password
    portal.store.set_portal_password(portal.users["101"].id, "x", now=0, role="system_admin")
    status, _, _ = await portal.call("PUT", f"/api/v1/users/{portal.users['101'].id}/password",
                                     json={"password": "long-new-2"})
    assert status == 403


async def test_login_rehashes_a_hash_of_old_parameters(portal: Api) -> None:
    old = Passwords(PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    anna = portal.users["100"].id
    portal.store.set_portal_password(anna, old.hash(ANNA), now=0)
    assert portal.ctx.passwords.needs_rehash(stored(portal, "100"))
    status, _, _ = await log_in(portal, extension="100", password=ANNA)
    assert status == 201
    now = stored(portal, "100")
    assert not portal.ctx.passwords.needs_rehash(now)
    assert portal.ctx.passwords.verify(now, ANNA)


def test_the_cookie_is_secure_over_https() -> None:
    import ssl

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from pbx.api.logins import set_cookie

    for context, secure in ((ssl.create_default_context(), True), (None, False)):
        request = make_mocked_request("POST", "/api/v1/session", sslcontext=context)
        response = web.Response()
        set_cookie(response, request, "id", 60)
        morsel = response.cookies[COOKIE]
        assert bool(morsel["secure"]) is secure
        assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"


async def test_every_login_does_the_same_argon2_work(portal: Api) -> None:
    calls: list[str | None] = []

    class Counting(Passwords):
        def verify(self, stored: str | None, password: str) -> bool:
            calls.append(stored)
            return super().verify(stored, password)

    portal.ctx.passwords = Counting(FAST)
    for body in ({"extension": "100", "password": "wrong-one"},
                 {"extension": "999", "password": "wrong-one"},
                 {"tenant": "nowhere", "extension": "1", "password": "x"},
                 {"extension": "100", "password": "x" * 1000}):
        status, _, _ = await log_in(portal, **body)
        assert status == 401
    assert len(calls) == 4 and calls[0] is not None and calls[1] is None


async def test_the_event_websocket_by_cookie_needs_the_servers_origin(portal: Api) -> None:
    import aiohttp

    await log_in(portal, extension="100", password=ANNA)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await portal.client.ws_connect("/api/v1/events", headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    ws = await portal.client.ws_connect("/api/v1/events", headers={"Origin": origin(portal)})
    try:
        status, _, _ = await portal.call("PATCH", "/api/v1/users/me/dnd", who="anna",
                                         json={"enabled": True})
        assert status == 200
        message = await ws.receive_json(timeout=5)
        assert message["kind"] == "settings.changed"
        assert message["data"]["user_id"] == portal.users["100"].id
    finally:
        await ws.close()
