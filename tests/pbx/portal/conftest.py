"""The portal on the API's test server (tests/pbx/api/conftest.py: tenants default and acme,
users 100 Anna, 101 Ben, 200 Carl): portal logins set the way the CLI does (argon2 hash in the
store), and a browser-like client per signed-in user (own cookies; Origin sent like a browser's
form post)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from pbx.api.passwords import Passwords
from tests.pbx.api.conftest import Api, pbx_api  # noqa: F401 - the fixture, re-exported

PASSWORDS = {"100": "portal-pw-anna", "101": "portal-pw-ben", "200": "portal-pw-carl"}
ROLES = {"100": "tenant_admin", "101": "user", "200": "user"}


@dataclass
class Browser:
    """A signed-in user's client: GET pages, POST forms (with the page's CSRF token)."""

    session: aiohttp.ClientSession
    base: str
    csrf: str = ""

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with self.session.get(self.base + path, allow_redirects=True, **kwargs) as r:
            text = await r.text()
            found = re.search(r'name="csrf" value="([^"]+)"', text)
            if found:
                self.csrf = found.group(1)
            return r.status, text

    async def post(self, path: str, data: dict[str, Any], *, csrf: bool = True,
                   follow: bool = False) -> tuple[int, str, str]:
        form = {**data, **({"csrf": self.csrf} if csrf else {})}
        async with self.session.post(self.base + path, data=form, allow_redirects=follow,
                                     headers={"Origin": self.base}) as r:
            return r.status, await r.text(), r.headers.get("Location", "")


@dataclass
class PortalSite:
    api: Api
    base: str
    browsers: list[aiohttp.ClientSession]

    async def sign_in(self, extension: str, *, tenant: str = "", lang: str = "en") -> Browser:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.browsers.append(session)
        b = Browser(session, self.base)
        await b.get(f"/portal/lang?to={lang}&next=/portal/login")
        status, _, where = await b.post(
            "/portal/login", {"extension": extension, "password": PASSWORDS[extension],
                              "tenant": tenant, "next": "/portal/"}, csrf=False)
        assert status == 303 and where == "/portal/", (status, where)
        return b


@pytest.fixture
async def portal(pbx_api: Api) -> AsyncIterator[PortalSite]:  # noqa: F811
    hasher = Passwords()
    for ext, user in pbx_api.users.items():
        pbx_api.store.set_portal_password(user.id, hasher.hash(PASSWORDS[ext]), now=time.time(),
                                          role=ROLES[ext])
    site = PortalSite(pbx_api, str(pbx_api.client.make_url("")).rstrip("/"), [])
    try:
        yield site
    finally:
        for s in site.browsers:
            await s.close()
