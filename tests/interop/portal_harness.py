"""What the portal's browser tests share: a PBX with portal logins, headless Debian chromium
(Playwright), signing in through the login form, screenshots as artefacts, and the axe-core
check.

Portal passwords are set the way an administrator does it, with ``asyncpbx user password EXT
[--role ROLE]`` against the server's data directory (the password on stdin). Screenshots go to
``$ASYNCPBX_ARTIFACTS/screenshots`` (default ``build/artifacts/screenshots``, git-ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import ROOT, PbxProcess, running_pbx
from tests.interop.test_calls_sipp import USERS

__all__ = ["ARTIFACTS", "CHROMIUM", "CHROMIUM_ARGS", "axe_check", "browser", "login",
           "portal_password", "portal_pbx", "screenshot"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("ASYNCPBX_ARTIFACTS", ROOT / "build" / "artifacts"))
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"


def portal_password(pbx: PbxProcess, extension: str, password: str, role: str | None = None,
                    tenant: str | None = None) -> None:
    """``asyncpbx user password EXTENSION`` (with ``--role``) against ``pbx``'s data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCPBX_")}
    args = [sys.executable, "-m", "pbx", "user", "password", extension,
            "--data-dir", str(pbx.data_dir)]
    if role:
        args += ["--role", role]
    if tenant:
        args += ["--tenant", tenant]
    done = subprocess.run(args, input=password + "\n", text=True, capture_output=True,
                          cwd=ROOT, env=env, timeout=60)
    assert done.returncode == 0, done.stderr


def portal_passwords_of(users: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The portal password the tests give each user (``portal-<ext>-pw``)."""
    return {ext: f"portal-{ext}-pw" for ext, _ in users}


@contextlib.contextmanager
def portal_pbx(workdir: Path, *, users: Sequence[tuple[str, str]] = USERS,
               admin: str | None = "100", **kwargs: Any) -> Iterator[PbxProcess]:
    """A PBX with HTTP on loopback; every user has the portal password of
    :func:`portal_passwords_of`, ``admin`` is the tenant's administrator."""
    kwargs.setdefault("transports", ("udp",))
    with running_pbx(workdir, users=users, **kwargs) as pbx:
        for ext, password in portal_passwords_of(users).items():
            portal_password(pbx, ext, password, role="tenant_admin" if ext == admin else None)
        yield pbx


def base_url(pbx: PbxProcess) -> str:
    """``http://127.0.0.1:PORT`` of ``pbx``'s HTTP listener."""
    host, port = pbx.addr("http")
    return f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def browser(args: Sequence[str] = ()) -> AsyncIterator[Any]:
    """Headless Debian chromium (fake media devices, autoplay allowed)."""
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed: run ./test.sh (it apt-installs chromium)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=[*CHROMIUM_ARGS, *args])
        try:
            yield b
        finally:
            await b.close()


async def login(browser_: Any, base: str, extension: str, password: str, *,
                lang: str = "en", tenant: str = "") -> Any:
    """A new page (own context: own cookies) signed in through the login form, speaking
    ``lang`` (chosen with the footer's language switcher, which outranks the user's setting)."""
    context = await browser_.new_context(locale="de-DE" if lang == "de" else "en-GB",
                                         ignore_https_errors=True)
    page = await context.new_page()
    page.on("console", lambda msg: print(f"[{extension}] {msg.text}", file=sys.stderr))
    await page.goto(f"{base}/portal/lang?to={lang}&next=/portal/login")
    if tenant:
        await page.fill("#tenant", tenant)
    await page.fill("#extension", extension)
    await page.fill("#password", password)
    await page.click("#submit")
    await page.wait_for_url(f"{base}/portal/**")
    assert "/portal/login" not in page.url, await page.content()
    return page


async def screenshot(page: Any, name: str) -> Path:
    """Save the page as ``ARTIFACTS/screenshots/NAME.png`` (full page)."""
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def axe_check(page: Any) -> list[dict[str, Any]]:
    """The serious and critical violations axe-core finds on the page (``web/node_modules``,
    installed from npm with the rest of web/; evaluated through the DevTools protocol, which
    the page's CSP does not govern — the page itself stays under its policy)."""
    assert AXE.is_file(), f"{AXE} is missing: npm ci in web/ (scripts/install-test-peers.sh)"
    source = AXE.read_text()
    result = await page.evaluate(
        "(src) => { if (!window.axe) { (0, eval)(src); } "
        "return axe.run(document, {resultTypes: ['violations']}); }", source)
    serious = [v for v in result["violations"] if v.get("impact") in ("serious", "critical")]
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [json.dumps(n.get("target")) for n in v.get("nodes", [])][:5]}
            for v in serious]
