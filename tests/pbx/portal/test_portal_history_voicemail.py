"""The call history and voicemail pages: entries with missed highlighted and a link to the
directory, the filters, deleting one and all; messages with new/heard, the audio route (the
API's recording of the signed-in user only), marking heard, deleting, the navigation badge."""

from __future__ import annotations

import time

from tests.pbx.api.conftest import leave_message, pbx_api
from tests.pbx.portal.user_pages import Portal, portal_user

__all__ = ["pbx_api", "portal_user"]


def _calls(portal: Portal) -> tuple[int, int]:
    store = portal.api.store
    user = portal.api.users["100"]
    now = time.time()
    missed = store.history_start(user.id, "c1", "in", "Ben", "101", now - 60)
    store.history_end(missed, now - 50)
    out = store.history_start(user.id, "c2", "out", "", "+49301234", now - 30)
    store.history_answered(out, now - 28)
    store.history_end(out, now - 10)
    return missed, out


async def test_the_history_with_missed_highlighted_filters_and_deletes(
        portal_user: Portal) -> None:
    missed, out = _calls(portal_user)
    status, html = await portal_user.get("/portal/history")
    assert status == 200, html
    assert f'<tr id="call-{missed}" class="missed"' in html
    assert f'<tr id="call-{out}" class="out"' in html
    assert '<a href="/portal/directory?q=101">Ben</a>' in html
    assert '<a href="/portal/directory?q=%2B49301234">+49301234</a>' in html
    assert "0:18" in html and 'data-live="call"' in html
    assert 'href="/api/v1/users/me/history.csv?limit=500"' in html
    status, html = await portal_user.get("/portal/history?filter=missed")
    assert f'id="call-{missed}"' in html and f'id="call-{out}"' not in html
    status, html = await portal_user.get("/portal/history?filter=out")
    assert f'id="call-{missed}"' not in html and f'id="call-{out}"' in html
    status, _, where = await portal_user.post(f"/portal/history/{missed}/delete",
                                              {"filter": "missed"})
    assert status == 303 and where == "/portal/history?filter=missed&notice=deleted", where
    status, html = await portal_user.get("/portal/history")
    assert f'id="call-{missed}"' not in html and f'id="call-{out}"' in html
    status, _, _ = await portal_user.post("/portal/history/clear", {})
    assert status == 303  # not confirmed: nothing deleted
    status, html = await portal_user.get("/portal/history")
    assert f'id="call-{out}"' in html
    status, _, _ = await portal_user.post("/portal/history/clear", {"confirm": "yes"})
    assert status == 303
    status, html = await portal_user.get("/portal/history")
    assert 'id="history-empty"' in html
    async with portal_user.client.get("/api/v1/users/me/history.csv") as resp:
        assert resp.status == 200  # the CSV link works with the portal's session


async def test_voicemail_list_audio_mark_delete_and_badge(portal_user: Portal) -> None:
    api = portal_user.api
    anna = api.users["100"]
    mid = leave_message(api.store, anna, "default", seconds=1.5, caller="101")
    ben = leave_message(api.store, api.users["101"], "default")
    status, html = await portal_user.get("/portal/voicemail")
    assert status == 200, html
    assert f'<tr id="vm-{mid}" class="new"' in html
    assert f'src="/portal/voicemail/{mid}/audio"' in html
    assert 'id="badge-voicemail"><span class="visually-hidden">new: </span>1</span>' in html
    assert 'data-live="voicemail.changed"' in html
    status, home = await portal_user.get("/portal/")
    assert "New voicemail messages: 1" in home
    async with portal_user.client.get(f"/portal/voicemail/{mid}/audio") as resp:
        assert resp.status == 200 and resp.content_type == "audio/wav"
        assert len(await resp.read()) > 12000
    async with portal_user.client.get(f"/portal/voicemail/{ben}/audio") as resp:
        assert resp.status == 404  # another user's message
    status, _, _ = await portal_user.post(f"/portal/voicemail/{mid}/heard", {"heard": "true"})
    assert status == 303
    status, html = await portal_user.get("/portal/voicemail")
    assert f'<tr id="vm-{mid}" class="heard"' in html
    assert 'id="badge-voicemail"></span>' in html
    status, _, _ = await portal_user.post(f"/portal/voicemail/{mid}/delete", {})
    assert status == 303
    status, html = await portal_user.get("/portal/voicemail")
    assert 'id="voicemail-empty"' in html
    assert api.store.voicemails(anna.id) == []
