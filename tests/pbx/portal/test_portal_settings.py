"""The settings page: every section renders with the stored values, a form goes to its PATCH
operation (the settings service: stored, one settings.changed event), an invalid value is
shown beside its form with the API's reason, the greeting is uploaded and deleted."""

from __future__ import annotations

import io
import wave

import numpy as np

from pbx.voicemail import Boxes
from tests.pbx.api.conftest import pbx_api
from tests.pbx.portal.user_pages import Portal, portal_user

__all__ = ["pbx_api", "portal_user"]


async def test_the_page_shows_every_section(portal_user: Portal) -> None:
    status, html = await portal_user.get("/portal/settings")
    assert status == 200, html
    for section in ("call-method", "privacy", "displayed-number", "forward-immediate",
                    "forward-busy", "forward-no-answer", "forward-unreachable", "dnd",
                    "call-waiting", "anonymous-rejection", "mobile", "remote-office",
                    "voicemail", "voicemail-mail", "greeting"):
        assert f'id="{section}"' in html, section
    assert html.count('data-live="settings.changed"') >= 14
    assert 'id="state-forward-no-answer">off<' in html


async def test_forwarding_on_no_answer_is_saved_through_the_api(portal_user: Portal) -> None:
    api = portal_user.api
    seen: list[dict[str, object]] = []
    api.ctx.bus.subscribe(lambda e: seen.append(dict(e.data)), "settings.changed")
    await portal_user.get("/portal/settings")
    status, _, where = await portal_user.post("/portal/settings/forward-no-answer", {
        "forwards/no-answer.enabled": "on", "forwards/no-answer.target": "101",
        "forwards/no-answer.rings": "2"})
    assert status == 303 and where.startswith("/portal/settings?notice=saved"), where
    user = api.users["100"]
    now = api.ctx.settings.get(user.id, "forward_no_answer")
    assert (now["enabled"], now["target"], now["rings"], now["voicemail"]) == \
        (True, "101", 2, False)
    assert [e["feature"] for e in seen] == ["forward_no_answer"]
    status, html = await portal_user.get("/portal/settings")
    assert 'id="state-forward-no-answer">on → 101<' in html


async def test_an_invalid_value_is_shown_beside_its_form(portal_user: Portal) -> None:
    await portal_user.get("/portal/settings")
    status, html, _ = await portal_user.post("/portal/settings/forward-no-answer", {
        "forwards/no-answer.enabled": "on", "forwards/no-answer.target": "101",
        "forwards/no-answer.rings": "99"})
    assert status == 422, html
    assert 'id="error-forward-no-answer"' in html
    assert 'value="99"' in html  # what was sent stays in the form
    status, html, _ = await portal_user.post("/portal/settings/mobile", {
        "user.mobile_number": "not a number"})
    assert status == 422 and 'id="error-mobile"' in html
    status, _, _ = await portal_user.post("/portal/settings/voicemail", {
        "voicemail.enabled": "on", "voicemail.max_length": "120",
        "voicemail.silence_timeout": "5", "user.voicemail_pin": "1234"})
    assert status == 303
    assert portal_user.api.store.user("100").has_voicemail_pin


async def test_a_form_without_the_csrf_token_changes_nothing(portal_user: Portal) -> None:
    await portal_user.get("/portal/settings")
    status, _, _ = await portal_user.post("/portal/settings/dnd", {"csrf": "forged",
                                                                  "dnd.enabled": "on"})
    assert status == 403
    user = portal_user.api.users["100"]
    assert portal_user.api.ctx.settings.get(user.id, "dnd")["enabled"] is False


def _wav(hz: float = 500.0, seconds: float = 1.0) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        n = np.arange(int(8000 * seconds))
        w.writeframes((8000 * np.sin(2 * np.pi * hz * n / 8000)).astype("<i2").tobytes())
    return out.getvalue()


async def test_the_greeting_is_uploaded_played_and_deleted(portal_user: Portal) -> None:
    import aiohttp

    await portal_user.get("/portal/settings")
    form = aiohttp.FormData()
    form.add_field("csrf", portal_user.csrf)
    form.add_field("file", _wav(), filename="hello.wav", content_type="audio/wav")
    status, body, _ = await portal_user.post("/portal/settings/greeting", form)
    assert status == 303, body
    path = Boxes(portal_user.api.store.data_dir).greeting("default", "100")
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and abs(w.getnframes() - 16000) < 400
    status, html = await portal_user.get("/portal/settings")
    assert 'src="/portal/settings/greeting.wav"' in html
    async with portal_user.client.get("/portal/settings/greeting.wav") as resp:
        assert resp.status == 200 and resp.content_type == "audio/wav"
    bad = aiohttp.FormData()
    bad.add_field("csrf", portal_user.csrf)
    bad.add_field("file", b"no audio", filename="x.mp3", content_type="audio/mpeg")
    status, html, _ = await portal_user.post("/portal/settings/greeting", bad)
    assert status == 422 and 'id="error-greeting"' in html
    status, _, _ = await portal_user.post("/portal/settings/greeting/delete", {})
    assert status == 303 and not path.exists()
