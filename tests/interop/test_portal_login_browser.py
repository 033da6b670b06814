"""A browser logs in to the portal: the portal password is set with the CLI (``asyncpbx user
password 100``, from stdin) against the running server's data, then headless Debian chromium
(Playwright) opens /portal/login on the PBX's HTTP server, submits the form and shows
/api/v1/users/me read with the session cookie — which the page's script cannot see (HttpOnly)
— then logs out with the session's CSRF token, after which the cookie reads nothing. A wrong
password in the same form is refused with the one login-failed answer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.harness import ROOT, running_pbx
from tests.interop.test_calls_sipp import USERS

pytestmark = pytest.mark.interop

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "portal-pass-100"


def _set_password(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCPBX_")}
    done = subprocess.run([sys.executable, "-m", "pbx", "user", "password", "100",
                           "--data-dir", str(data_dir)], input=PASSWORD + "\n", text=True,
                          capture_output=True, cwd=ROOT, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "portal password of user 100 set" in done.stdout


async def _browse(base: str) -> dict[str, object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            await page.goto(base + "/portal/login")
            await page.fill("#extension", "100")
            await page.fill("#password", "not-the-password")
            await page.click("#submit")
            await page.locator("#status", has_text="login failed").wait_for(timeout=10_000)
            failed = await page.text_content("#status")
            await page.fill("#password", PASSWORD)
            await page.click("#submit")
            await page.locator("#me", has_text="extension").wait_for(timeout=10_000)
            me = json.loads(await page.text_content("#me") or "{}")
            script_cookie = await page.evaluate("document.cookie")
            cookies = await page.context.cookies()
            await page.click("#logout")
            await page.locator("#status", has_text="logged out").wait_for(timeout=10_000)
            after = await page.evaluate(
                "fetch('/api/v1/users/me', {credentials: 'same-origin'}).then(r => r.status)")
            return {"failed": failed, "me": me, "script_cookie": script_cookie,
                    "cookies": cookies, "after": after}
        finally:
            await browser.close()


async def test_a_browser_logs_in_reads_me_and_logs_out(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed: run ./test.sh (it apt-installs chromium)")
    with running_pbx(tmp_path, transports=("udp",), users=USERS) as pbx:
        await asyncio.to_thread(_set_password, pbx.data_dir)
        host, port = pbx.addr("http")
        seen = await asyncio.wait_for(_browse(f"http://{host}:{port}"), 60)
        events = pbx.log_events()
    assert seen["failed"] == "login failed: wrong login or password", seen
    me = seen["me"]
    assert isinstance(me, dict) and me["extension"] == "100", seen
    assert seen["script_cookie"] == "", seen  # HttpOnly: the page's script sees no cookie
    cookies = seen["cookies"]
    assert isinstance(cookies, list)
    session = [c for c in cookies if c["name"] == "apx_session"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict", cookies
    assert session[0]["path"] == "/"
    assert seen["after"] == 401, seen
    failures = [e for e in events if e.get("event") == "security.auth.failed"]
    assert len(failures) == 1 and failures[0]["method"] == "HTTP", failures
