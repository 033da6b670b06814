"""/phone: the browser phone page, its script, JsSIP from web/dist and /phone/config.json."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from pbx.http import start_http
from pbx.phone import WEB_DIR, PhonePage


async def _get(port: int, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_phone_page_script_and_config(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "phone.html").write_text("<html>phone</html>")
    (tmp_path / "phone.js").write_text("// phone")
    settings = {"domain": "pbx.example.com", "websockets": ["ws://127.0.0.1:8088/"]}
    page = PhonePage(lambda: settings, root=tmp_path)
    service = await start_http("127.0.0.1:0", lambda: {}, started=time.monotonic(),
                               routes=page.add_routes)
    assert service is not None
    try:
        status, ctype, text = await _get(service.port, "/phone")
        assert (status, text) == (200, "<html>phone</html>") and ctype.startswith("text/html")
        status, ctype, _ = await _get(service.port, "/phone/phone.js")
        assert status == 200 and ctype.startswith("text/javascript")
        # JsSIP not built: a 404 that says what to run
        status, _, text = await _get(service.port, "/phone/jssip.min.js")
        assert status == 404 and "install-test-peers.sh" in text
        (tmp_path / "dist" / "jssip.min.js").write_text("var JsSIP = {};")
        assert (await _get(service.port, "/phone/jssip.min.js"))[0] == 200
        status, ctype, text = await _get(service.port, "/phone/config.json")
        assert status == 200 and ctype.startswith("application/json")
        assert '"pbx.example.com"' in text and "ws://127.0.0.1:8088/" in text
        assert (await _get(service.port, "/phone/other"))[0] == 404
    finally:
        await service.close()


def test_the_shipped_page_loads_jssip_from_the_pbx_not_a_cdn() -> None:
    html = (WEB_DIR / "phone.html").read_text()
    assert '<script src="/phone/jssip.min.js">' in html
    assert "http://" not in html and "https://" not in html
    assert (WEB_DIR / "package-lock.json").is_file()
