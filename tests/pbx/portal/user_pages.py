"""What the unit tests of the user's pages (settings, history, voicemail) share: the API
fixture's application with portal logins, a signed-in client and the form's CSRF token."""

from __future__ import annotations

import re
from typing import Any

import pytest
from argon2 import PasswordHasher

from pbx.api.logins import SessionPolicy
from pbx.api.passwords import Passwords
from tests.pbx.api.conftest import Api

__all__ = ["Portal", "portal_user"]

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class Portal:
    """A client signed in as a user of the API fixture."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.client = api.client
        self.csrf = ""

    def origin(self) -> dict[str, str]:
        url = self.client.make_url("/")
        return {"Origin": f"{url.scheme}://{url.host}:{url.port}"}

    async def log_in(self, ext: str, password: str) -> None:
        async with self.client.post("/portal/login", data={"extension": ext,
                                                           "password": password},
                                    headers=self.origin(), allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.client.get(path, allow_redirects=False) as resp:
            text = await resp.text()
            found = re.search(r'name="csrf" value="([^"]+)"', text)
            if found:
                self.csrf = found.group(1)
            return resp.status, text

    async def post(self, path: str, data: Any = None) -> tuple[int, str, str]:
        """POST a form (with the CSRF token); (status, body, Location)."""
        if isinstance(data, dict) or data is None:
            data = {"csrf": self.csrf, **(data or {})}
        async with self.client.post(path, data=data, headers=self.origin(),
                                    allow_redirects=False) as resp:
            return resp.status, await resp.text(), resp.headers.get("Location", "")


@pytest.fixture
async def portal_user(pbx_api: Api) -> Portal:
    ctx = pbx_api.ctx
    ctx.passwords = Passwords(FAST)
    ctx.sessions = SessionPolicy(idle=600.0, lifetime=3600.0)
    pbx_api.store.set_portal_password(pbx_api.users["100"].id,
                                      ctx.passwords.hash("anna-portal-pw"), now=0)
    pbx_api.client.session.cookie_jar.clear()
    pbx_api.client.session.cookie_jar.update_cookies({"apx_lang": "en"})
    portal = Portal(pbx_api)
    await portal.log_in("100", "anna-portal-pw")
    return portal
