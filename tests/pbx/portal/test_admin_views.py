"""The administrator view's pages through aiohttp's test client: an administrator signs in with
the login form and uses every page (forms posted with the session's CSRF token); a plain user
gets the 403 page for every one of them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pbx.portal.views.admin import devices, overview, tokens, users
from tests.pbx.api.conftest import Api

ADMIN_PAGES = ("/portal/admin/", "/portal/admin/users", "/portal/admin/numbers",
               "/portal/admin/devices", "/portal/admin/pickup-groups", "/portal/admin/trunks",
               "/portal/admin/music-on-hold", "/portal/admin/feature-codes",
               "/portal/admin/tokens", "/portal/admin/webhooks")
assert overview and users and devices and tokens  # the modules the pages come from


class Browser:
    """A signed-in client: the session cookie in the jar, the CSRF token from the page."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.csrf = ""
        api.client.session.cookie_jar.update_cookies({"apx_lang": "en"})

    async def login(self, ext: str, password: str, role: str | None = None) -> None:
        store, ctx = self.api.store, self.api.ctx
        store.set_portal_password(self.api.users[ext].id, ctx.passwords.hash(password), now=0,
                                  role=role)
        status, _ = await self.post("/portal/login", {"extension": ext, "password": password})
        assert status == 303

    async def get(self, path: str) -> tuple[int, str]:
        async with self.api.client.get(path, allow_redirects=False) as resp:
            text = await resp.text()
        found = re.search(r'name="csrf" value="([^"]+)"', text)
        if found:
            self.csrf = found.group(1)
        return resp.status, text

    async def post(self, path: str, form: dict[str, Any]) -> tuple[int, str]:
        data = {"csrf": self.csrf, **form}
        origin = str(self.api.client.make_url("/")).rstrip("/")
        async with self.api.client.post(path, data=data, allow_redirects=False,
                                        headers={"Origin": origin}) as resp:
            text = await resp.text()
            if resp.status == 303:
                return 303, resp.headers["Location"]
        return resp.status, text


@pytest.fixture
async def admin(pbx_api: Api) -> Browser:
    b = Browser(pbx_api)
    await b.login("100", "admin-portal-pw", role="tenant_admin")
    return b


async def test_every_admin_page_renders_for_the_administrator(admin: Browser) -> None:
    for path in ADMIN_PAGES:
        status, html = await admin.get(path)
        assert status == 200, (path, html[-2000:])
        assert '<nav class="sub"' in html, path  # the admin sub-navigation


async def test_a_plain_user_gets_403_everywhere_and_no_admin_nav(pbx_api: Api) -> None:
    b = Browser(pbx_api)
    await b.login("101", "ben-portal-pw")
    status, html = await b.get("/portal/")
    assert status == 200 and "/portal/admin/" not in html
    for path in ADMIN_PAGES:
        status, html = await b.get(path)
        assert status == 403, path
    status, _ = await b.post("/portal/admin/users", {"extension": "150"})
    assert status == 403
    assert pbx_api.store.directory_snapshot if hasattr(pbx_api.store, "directory_snapshot") \
        else True


async def test_create_edit_and_delete_a_user_with_a_device(admin: Browser) -> None:
    await admin.get("/portal/admin/users")
    status, where = await admin.post("/portal/admin/users", {
        "extension": "150", "name": "Nina Neu", "email": "nina@example.com",
        "mobile_number": "+491701234567", "remote_office_number": "", "language": "en"})
    assert status == 303, where
    user_id = int(where.split("/")[-1].split("?")[0])
    status, html = await admin.get(f"/portal/admin/users/{user_id}")
    assert status == 200 and "Nina Neu" in html and "+491701234567" in html
    assert "No portal password is set" in html
    status, _ = await admin.post(f"/portal/admin/users/{user_id}", {
        "name": "Nina Alt", "email": "", "mobile_number": "", "remote_office_number": "",
        "language": "de"})
    assert status == 303
    status, html = await admin.get(f"/portal/admin/users/{user_id}")
    assert "Nina Alt" in html
    status, _ = await admin.post(f"/portal/admin/users/{user_id}/password",
                                 {"password": "nina-portal-pw", "role": "tenant_admin"})
    assert status == 303
    login = admin.api.store.portal_login(user_id)
    assert login is not None and login.role == "tenant_admin"
    # a tenant admin cannot make a system admin
    status, html = await admin.post(f"/portal/admin/users/{user_id}/password",
                                    {"password": "nina-portal-pw", "role": "system_admin"})
    assert status == 403 and "password-error" in html

    await admin.get("/portal/admin/devices")
    status, html = await admin.post("/portal/admin/devices", {
        "user_id": str(user_id), "username": "nina-desk", "kind": "desk"})
    assert status == 201, html
    password = re.search(r'id="cred-password"><code>([^<]+)</code>', html)
    assert password is not None and len(password.group(1)) >= 16
    assert 'id="cred-domain"><code>pbx.test</code>' in html
    status, html = await admin.get(f"/portal/admin/devices?user={user_id}")
    assert "nina-desk" in html and password.group(1) not in html  # shown once only
    device = next(d for d in admin.api.ctx.directory.snapshot.devices_of[user_id])
    status, html = await admin.post(f"/portal/admin/devices/{device.id}/password", {})
    assert status == 200 and 'id="cred-password"' in html
    status, where = await admin.post(f"/portal/admin/devices/{device.id}/delete", {})
    assert status == 303
    status, where = await admin.post(f"/portal/admin/users/{user_id}/delete", {})
    assert status == 303 and where.startswith("/portal/admin/users")
    assert admin.api.ctx.directory.user_by_id(user_id) is None


async def test_refused_input_is_shown_beside_the_form(admin: Browser) -> None:
    await admin.get("/portal/admin/users")
    status, html = await admin.post("/portal/admin/users", {"extension": "100", "name": "Dup"})
    assert status in (409, 422) and 'id="user-error"' in html and 'value="Dup"' in html


async def test_numbers_pickup_trunks_tokens_webhooks(admin: Browser) -> None:
    anna = admin.api.users["100"]
    await admin.get("/portal/admin/numbers")
    status, _ = await admin.post("/portal/admin/numbers", {"number": "+4930111222",
                                                           "user_id": str(anna.id)})
    assert status == 303
    status, html = await admin.get("/portal/admin/numbers")
    assert "+4930111222" in html
    status, _ = await admin.post("/portal/admin/numbers/release", {"number": "+4930111222"})
    assert status == 303
    assert "+4930111222" not in (await admin.get("/portal/admin/numbers"))[1]

    status, _ = await admin.post("/portal/admin/pickup-groups",
                                 {"name": "sales", "members": str(anna.id)})
    assert status == 303
    group = admin.api.store.pickup_groups()[0]
    ben = admin.api.users["101"]
    assert (await admin.post(f"/portal/admin/pickup-groups/{group.id}/members",
                             {"user_id": str(ben.id)}))[0] == 303
    assert set(admin.api.store.pickup_groups()[0].members) == {anna.id, ben.id}
    assert (await admin.post(f"/portal/admin/pickup-groups/{group.id}/members/{anna.id}/remove",
                             {}))[0] == 303
    assert admin.api.store.pickup_groups()[0].members == (ben.id,) or \
        list(admin.api.store.pickup_groups()[0].members) == [ben.id]
    assert (await admin.post(f"/portal/admin/pickup-groups/{group.id}/delete", {}))[0] == 303
    assert admin.api.store.pickup_groups() == [] or not admin.api.store.pickup_groups()

    status, _ = await admin.post("/portal/admin/trunks", {
        "name": "carrier", "kind": "register", "host": "sip.example.net", "port": "5060",
        "transport": "udp", "username": "u1", "password": "secret-pw", "register_expiry": "600"})
    assert status == 303
    status, html = await admin.get("/portal/admin/trunks")
    assert "sip.example.net" in html and "secret-pw" not in html
    trunk = next(iter(admin.api.ctx.directory.snapshot.trunks.values()))
    assert (await admin.post(f"/portal/admin/trunks/{trunk.id}/delete", {}))[0] == 303

    status, html = await admin.post("/portal/admin/tokens", {"name": "crm", "role": "user",
                                                             "user_id": str(anna.id)})
    assert status == 201
    token = re.search(r'id="token-value" readonly value="([^"]+)"', html)
    assert token is not None
    status, html = await admin.get("/portal/admin/tokens")
    assert "crm" in html and token.group(1) not in html
    record = next(t for t in admin.api.store.api_tokens(None) if t.name == "crm")
    assert (await admin.post(f"/portal/admin/tokens/{record.id}/revoke", {}))[0] == 303
    assert next(t for t in admin.api.store.api_tokens(None) if t.name == "crm").revoked

    status, html = await admin.post("/portal/admin/webhooks", {
        "url": "https://hooks.example.com/pbx", "event_types": "call.*"})
    assert status == 201, html
    assert re.search(r'id="secret-value" readonly value="whsec_', html)
    hook = admin.api.store.webhooks(None)[0]
    assert (await admin.post(f"/portal/admin/webhooks/{hook.id}/disable", {}))[0] == 303
    assert not admin.api.store.webhook(hook.id).enabled
    assert (await admin.post(f"/portal/admin/webhooks/{hook.id}/enable", {}))[0] == 303
    assert admin.api.store.webhook(hook.id).enabled
    assert (await admin.post(f"/portal/admin/webhooks/{hook.id}/test", {}))[0] == 303
    status, html = await admin.get(f"/portal/admin/webhooks/{hook.id}")
    assert status == 200 and "webhook.test" in html
    assert (await admin.post(f"/portal/admin/webhooks/{hook.id}/delete", {}))[0] == 303


async def test_feature_codes_read_only_for_tenant_admins_editable_for_system_admins(
        admin: Browser, pbx_api: Api) -> None:
    status, html = await admin.get("/portal/admin/feature-codes")
    assert status == 200 and "dnd.on" in html and 'action="/portal/admin/feature-codes/' \
        not in html
    assert (await admin.post("/portal/admin/feature-codes/dnd.on", {"code": "*178"}))[0] == 403
    # a system admin (the login of a user in the default tenant with the system_admin role)
    root = Browser(pbx_api)
    await root.login("101", "root-portal-pw", role="system_admin")
    status, html = await root.get("/portal/admin/feature-codes")
    assert 'action="/portal/admin/feature-codes/dnd.on"' in html
    status, _ = await root.post("/portal/admin/feature-codes/dnd.on",
                                {"code": "*178", "alternate": ""})
    assert status == 303
    assert "*178" in (await root.get("/portal/admin/feature-codes"))[1]
    assert (await root.post("/portal/admin/feature-codes/dnd.on/reset", {}))[0] == 303
    assert 'value="*178"' not in (await root.get("/portal/admin/feature-codes"))[1]


async def test_music_on_hold_upload_form(admin: Browser, tmp_path: Path) -> None:
    from tests.pbx.api.test_api_music_on_hold import tone_file

    status, html = await admin.get("/portal/admin/music-on-hold")
    assert status == 200 and 'id="moh-default"' in html
    origin = str(admin.api.client.make_url("/")).rstrip("/")

    async def post(csrf: str, data: bytes, ctype: str) -> tuple[int, str, str]:
        form = aiohttp.FormData()
        form.add_field("csrf", csrf)
        form.add_field("audio", data, filename="music.bin", content_type=ctype)
        async with admin.api.client.post("/portal/admin/music-on-hold", data=form,
                                         allow_redirects=False,
                                         headers={"Origin": origin}) as resp:
            return resp.status, await resp.text(), resp.headers.get("Location", "")

    status, _, _ = await post("forged", tone_file("wav", "pcm_s16le"), "audio/wav")
    assert status == 403
    status, html, _ = await post(admin.csrf, b"junk" * 50, "audio/mpeg")
    assert status == 422 and 'id="moh-error"' in html
    status, _, where = await post(admin.csrf, tone_file("flac", "flac", 22050), "audio/flac")
    assert status == 303, where
    tenant = admin.api.store.tenant("default").id
    assert (tmp_path / "moh" / f"tenant-{tenant}.wav").is_file()
    status, html = await admin.get("/portal/admin/music-on-hold")
    assert 'id="moh-custom"' in html
    status, _ = await admin.post("/portal/admin/music-on-hold/reset", {})
    assert status == 303
    assert not (tmp_path / "moh" / f"tenant-{tenant}.wav").exists()


async def test_an_auto_disabled_webhook_shows_its_reason_and_is_enabled_again(
        admin: Browser) -> None:
    store = admin.api.store
    tenant = store.tenant("default").id
    hook = store.create_webhook(tenant_id=tenant, url="https://hooks.example.com/x",
                                secret="whsec_x", event_types=[], description="", now=0.0)
    store._db.execute("UPDATE webhooks SET enabled=0, disabled_reason=? WHERE id=?",
                      ("failing for 5 days (HTTP 500)", hook.id))
    store._db.commit()
    _, html = await admin.get("/portal/admin/webhooks")
    assert "failing for 5 days (HTTP 500)" in html and "Enable again" in html
    assert (await admin.post(f"/portal/admin/webhooks/{hook.id}/enable", {}))[0] == 303
    found = store.webhook(hook.id)
    assert found is not None and found.enabled and found.disabled_reason == ""
