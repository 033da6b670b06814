"""A browser signs in to the portal and out again: the portal password is set with the CLI
(``asyncpbx user password 100``, from stdin) against the running server's data, then headless
Debian chromium opens ``/`` (which leads to the login form), submits a wrong password (one
answer for every failure, counted like a wrong SIP password), then the right one, lands on
the start page with the session cookie — HttpOnly and SameSite=Strict, so the page's script
cannot see it — and logs out, after which the cookie opens nothing. A form posted without the
session's CSRF token is refused and changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.interop.portal_harness import (
    axe_check,
    base_url,
    browser,
    login,
    portal_passwords_of,
    portal_pbx,
    screenshot,
)
from tests.interop.test_calls_sipp import USERS

pytestmark = pytest.mark.interop

PASSWORDS = portal_passwords_of(USERS)


async def _browse(base: str) -> dict[str, Any]:
    async with browser() as b:
        context = await b.new_context(locale="en-GB")
        page = await context.new_page()
        await page.goto(base + "/")
        assert page.url.startswith(base + "/portal/login"), page.url
        login_axe = await axe_check(page)
        await screenshot(page, "portal-login-en")
        await page.fill("#extension", "100")
        await page.fill("#password", "not-the-password")
        await page.click("#submit")
        failed = await page.text_content("#login-error")
        page = await login(b, base, "100", PASSWORDS["100"])
        heading = await page.text_content("h1")
        home_axe = await axe_check(page)
        await screenshot(page, "portal-home-en")
        script_cookie = await page.evaluate("document.cookie")
        cookies = await page.context.cookies()
        forged = await page.evaluate(
            "fetch('/portal/logout', {method: 'POST', body: new URLSearchParams({csrf: 'x'})})"
            ".then(r => r.status)")
        still = await page.evaluate("fetch('/api/v1/users/me').then(r => r.status)")
        await page.click("form.logout button")
        await page.wait_for_url(base + "/portal/login**")
        notice = await page.text_content(".notice")
        after = await page.evaluate("fetch('/api/v1/users/me').then(r => r.status)")
        await page.goto(base + "/portal/")
        return {"failed": failed, "heading": heading, "script_cookie": script_cookie,
                "cookies": cookies, "forged": forged, "still": still, "notice": notice,
                "after": after, "url_after": page.url, "axe": login_axe + home_axe}


async def test_a_browser_signs_in_and_out(tmp_path: Path) -> None:
    with portal_pbx(tmp_path) as pbx:
        seen = await asyncio.wait_for(_browse(base_url(pbx)), 90)
        events = pbx.log_events()
    assert seen["failed"] == "Wrong login or password.", seen
    assert seen["heading"] == "Hello, User 100", seen
    assert seen["script_cookie"] == "", seen  # HttpOnly: the page's script sees no cookie
    session = [c for c in seen["cookies"] if c["name"] == "apx_session"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict", seen
    assert seen["forged"] == 403 and seen["still"] == 200, seen  # a forged form: no logout
    assert seen["notice"] == "You are logged out.", seen
    assert seen["after"] == 401, seen
    assert "/portal/login" in seen["url_after"], seen
    assert seen["axe"] == [], seen["axe"]
    failures = [e for e in events if e.get("event") == "security.auth.failed"]
    assert len(failures) == 1 and failures[0]["method"] == "HTTP", failures
