"""The portal's softphone against a baresip phone, run as a script inside a network namespace
with only ``lo`` by tests/interop/test_portal_comm_browser.py (``python -m
tests.interop.portal_comm_phone DIR`` writes ``DIR/result.json``): the PBX in-process (SIP over
UDP and WS, the portal on HTTP), 100 signs in to the portal in headless Debian chromium, opens
``/portal/phone?tone=600`` (the page's microphone is a 600 Hz oscillator, a test hook) — the
page registers by itself with the browser device's HA1 — and calls 101, a baresip phone
(auto-answer, a 1209 Hz file as its microphone, sndfile recording what it hears)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from tests.interop.inprocess import serving
from tests.interop.portal_harness import axe_check, browser, login, screenshot
from tests.interop.test_calls_sipp import USERS

CONFIG = ('[media]\nport_min = 47500\nport_max = 47999\n[calls]\nbusy_tone = 1.0\n'
          '[webrtc]\nice_addresses = ["127.0.0.1"]\nport_min = 48000\nport_max = 48499\n')
PORTAL_PASSWORD = "portal-100-pw"


async def _wait_until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def until(page: Any, expression: str, timeout: float = 15.0) -> Any:
    """Poll ``expression`` in the page until it is truthy (its value); TimeoutError after
    ``timeout`` s. (Playwright's wait_for_function compiles its predicate in the page, which
    the portal's CSP forbids: no 'unsafe-eval'; evaluate goes through DevTools.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {expression}")
        await asyncio.sleep(0.1)


async def _listen(page: Any, seconds: float) -> list[dict[str, float]]:
    out = []
    for _ in range(int(seconds / 0.25)):
        out.append(await page.evaluate("window.softphone.analyse()"))
        await asyncio.sleep(0.25)
    return out


async def scenario(server: Any, files: Any, base: str, tmp: Path) -> dict[str, Any]:
    from tests.interop.harness import need
    from tests.interop.test_calls_baresip import baresip_dir, best_ratio, recording, stop, tone_file

    user = server.store.user("100")
    server.store.set_portal_password(user.id, PasswordHasher().hash(PORTAL_PASSWORD),
                                     now=time.time())
    host, port = files.addr("udp")
    d101 = baresip_dir(tmp, "101", USERS[1][1], (host, port), tone_file(1209.0), "PCMU")
    with (d101 / "config").open("a") as config:  # the namespace has no default route
        config.write("net_interface 127.0.0.1\n")
    out: dict[str, Any] = {}
    log = (d101 / "out.log").open("w")
    phone = subprocess.Popen([need("baresip"), "-f", str(d101)], stdin=subprocess.PIPE,
                             stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        async with browser() as b:
            page = await login(b, base, "100", PORTAL_PASSWORD)
            await page.goto(f"{base}/portal/phone?tone=600")
            await until(page, "window.softphone.registered || window.softphone.registrationFailed", 15)
            out["registered"] = await page.evaluate("window.softphone.registered")
            out["registration_failed"] = await page.evaluate(
                "window.softphone.registrationFailed")
            out["created_device"] = await page.evaluate("window.softphone.account.created")
            out["axe_idle"] = await axe_check(page)
            aor = server.b2bua.aor("101")
            out["phone_registered"] = await _wait_until(
                lambda: bool(server.registrar.bindings(aor, time.time())), 10)
            await page.fill("#dial-target", "101")
            await page.click("#btn-call")
            await until(page, "window.softphone.events.includes('confirmed') || window.softphone.failed.length", 15)
            out["events"] = await page.evaluate("window.softphone.events")
            await asyncio.sleep(1.0)
            out["heard"] = await _listen(page, 2.0)
            out["status_connected"] = await page.text_content("#phone-status")
            await page.click("#key-5")  # DTMF by INFO
            await asyncio.sleep(1.5)
            out["quality"] = await page.evaluate("window.softphone.quality()")
            out["quality_shown"] = await page.text_content("#q-received")
            await page.click("#btn-mute")
            out["muted_pressed"] = await page.get_attribute("#btn-mute", "aria-pressed")
            await page.click("#btn-mute")
            out["axe"] = await axe_check(page)
            await screenshot(page, "portal-phone-en")
            await page.click("#btn-hangup")
            await until(page, "window.softphone.ended >= 1", 10)
            out["ended"] = await _wait_until(lambda: not server.b2bua.calls, 10)
            out["status_after"] = await page.text_content("#phone-status")
    finally:
        stop(phone)
        log.close()
    pcm, rate = recording(d101)
    out["phone_600"] = best_ratio(pcm, 600, rate)
    out["phone_1209"] = best_ratio(pcm, 1209, rate)
    out["phone_log"] = (d101 / "out.log").read_text(errors="replace")[-2000:]
    out["axe"] = out["axe"] + out.pop("axe_idle")
    return out


async def main(tmp: Path) -> dict[str, Any]:
    async with serving(tmp, USERS, CONFIG, transports=("udp", "ws")) as (server, files):
        assert server.http is not None
        base = f"http://127.0.0.1:{server.http.port}"
        return await asyncio.wait_for(scenario(server, files, base, tmp), 100)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    result = asyncio.run(main(out))
    (out / "result.json").write_text(json.dumps(result))
