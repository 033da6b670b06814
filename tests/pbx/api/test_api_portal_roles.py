"""``PUT /users/{user}/password`` with ``role`` and ``GET /users/{user}/portal-login``: an
admin sets a user's portal password and role (at most their own role); a user may not give
themselves a role; the login's state is readable by the user and the tenant's admins."""

from __future__ import annotations

from tests.pbx.api.conftest import Api


async def test_admin_sets_password_and_role(pbx_api: Api) -> None:
    ben = pbx_api.users["101"].id
    status, state, _ = await pbx_api.call("GET", f"/api/v1/users/{ben}/portal-login")
    assert status == 200 and state == {"user_id": ben, "has_password": False, "role": None,
                                       "changed_at": None}
    status, _, _ = await pbx_api.call("PUT", f"/api/v1/users/{ben}/password",
                                      json={"password": "ben-new-portal", "role":
                                            "tenant_admin"})
    assert status == 204
    status, state, _ = await pbx_api.call("GET", f"/api/v1/users/{ben}/portal-login")
    assert state["has_password"] and state["role"] == "tenant_admin"
    # a new password without role keeps the role
    status, _, _ = await pbx_api.call("PUT", f"/api/v1/users/{ben}/password",
                                      json={"password": "ben-newer-portal"})
    assert status == 204
    assert pbx_api.store.portal_login(ben).role == "tenant_admin"  # type: ignore[union-attr]
    status, problem, _ = await pbx_api.call("PUT", f"/api/v1/users/{ben}/password",
                                            json={"password": "ben-newer-portal",
                                                  "role": "system_admin"})
    assert status == 403 and problem["field"] == "/role"
    status, _, _ = await pbx_api.call("PUT", f"/api/v1/users/{ben}/password", who="root",
                                      json={"password": "ben-newer-portal",
                                            "role": "system_admin"})
    assert status == 204


async def test_users_read_their_own_login_and_set_no_role(pbx_api: Api) -> None:
    anna = pbx_api.users["100"].id
    ben = pbx_api.users["101"].id
    assert (await pbx_api.call("GET", "/api/v1/users/me/portal-login", who="anna"))[0] == 200
    assert (await pbx_api.call("GET", f"/api/v1/users/{ben}/portal-login", who="anna"))[0] \
        == 404
    assert (await pbx_api.call("GET", f"/api/v1/users/{anna}/portal-login", who="acme"))[0] \
        == 404
    status, _, _ = await pbx_api.call("PUT", "/api/v1/users/me/password", who="anna",
                                      json={"password": "anna-portal-pw", "old_password": "x",
                                            "role": "tenant_admin"})
    assert status == 403
    assert pbx_api.store.portal_login(anna) is None
