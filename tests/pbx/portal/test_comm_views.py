"""The portal's communication pages over aiohttp's test client (issue 17): chat (list,
conversation, send by form, marked read, the badge), directory with search and contacts
(add, edit, delete by form), call-back by form, the feature codes in English and German, the
phone page and its account route (CSRF header, no-store), and another tenant's user never
reachable."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from argon2 import PasswordHasher

from pbx.api.logins import COOKIE
from pbx.api.passwords import Passwords
from pbx.portal.core import LANG_COOKIE
from tests.pbx.api.conftest import Api, pbx_api  # noqa: F401  (the fixture)
from tests.pbx.api.test_api_chat_pickup import _with_chat


@pytest.fixture
def portal(pbx_api: Api) -> Api:  # noqa: F811  (the imported fixture)
    pbx_api.ctx.passwords = Passwords(PasswordHasher(time_cost=1, memory_cost=8,
                                                     parallelism=1))
    return pbx_api


def sign_in(api: Api, ext: str) -> str:
    """A session for ``ext`` (its cookie set on the client); returns its CSRF token."""
    store = api.store
    user = api.users[ext]
    if store.portal_login(user.id) is None:
        store.set_portal_password(user.id, api.ctx.passwords.hash("portal-pw-" + ext), now=time.time())
    session_id, session = store.create_portal_session(user.id, now=time.time(),
                                                      lifetime=3600)
    api.client.session.cookie_jar.clear()
    api.client.session.cookie_jar.update_cookies({COOKIE: session_id, LANG_COOKIE: "en"})
    return session.csrf_token


def origin(api: Api) -> dict[str, str]:
    url = api.client.make_url("/")
    return {"Origin": f"{url.scheme}://{url.host}:{url.port}"}


async def get(api: Api, path: str) -> tuple[int, str]:
    async with api.client.get(path, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def post(api: Api, path: str, data: dict[str, Any], **kw: Any) -> tuple[int, str, str]:
    async with api.client.post(path, data=data, headers=origin(api), allow_redirects=False,
                               **kw) as resp:
        return resp.status, resp.headers.get("Location", ""), await resp.text()


async def test_chat_pages(portal: Api) -> None:
    _with_chat(portal)
    ben = portal.users["101"]
    csrf = sign_in(portal, "100")
    status, html = await get(portal, "/portal/chat")
    assert status == 200 and "No conversations yet." in html and ">Ben (101)<" in html
    status, location, _ = await post(portal, f"/portal/chat/{ben.id}",
                                     {"csrf": csrf, "text": "Hallo <Ben>"})
    assert status == 303 and location.startswith(f"/portal/chat/{ben.id}")
    status, html = await get(portal, f"/portal/chat/{ben.id}")
    assert status == 200 and "Hallo &lt;Ben&gt;" in html and 'data-live="chat.message"' in html
    status, _, html = await post(portal, f"/portal/chat/{ben.id}", {"csrf": csrf, "text": " "})
    assert status == 422 and "Write a message first" in html
    status, _, _ = await post(portal, f"/portal/chat/{ben.id}", {"csrf": "bad", "text": "x"})
    assert status == 403
    carl = portal.users["200"]
    status, _ = await get(portal, f"/portal/chat/{carl.id}")
    assert status == 404  # another tenant's user
    # Ben has one unread message: the badge says so until he opens the conversation
    sign_in(portal, "101")
    _, html = await get(portal, "/portal/chat")
    badge = re.search(r'id="badge-chat">(.*?)</span></a>', html)
    assert badge and badge.group(1).endswith("1"), html
    await get(portal, f"/portal/chat/{portal.users['100'].id}")
    _, html = await get(portal, "/portal/chat")
    assert re.search(r'id="badge-chat"></span>', html), html


async def test_directory_contacts_and_call_back(portal: Api) -> None:
    csrf = sign_in(portal, "100")
    status, html = await get(portal, "/portal/directory?q=ben")
    assert status == 200 and "<td>Ben</td>" in html and "<td>Anna</td>" not in html
    status, location, _ = await post(portal, "/portal/directory/contacts", {
        "csrf": csrf, "name": "Dora", "company": "Acme", "email": "",
        "number0": "+49 170 1234567", "label0": "mobile", "number1": "", "label1": "work"})
    assert status == 303 and "notice=created" in location
    contacts = portal.store.contacts(portal.users["100"].id)
    assert [(c.name, [n.number for n in c.numbers]) for c in contacts] == \
        [("Dora", ["+491701234567"])]
    status, _, html = await post(portal, "/portal/directory/contacts",
                                 {"csrf": csrf, "name": "X", "number0": "abc"})
    assert status == 422 and "Check the name and the numbers" in html
    cid = contacts[0].id
    status, html = await get(portal, f"/portal/directory/contacts/{cid}")
    assert status == 200 and 'value="Dora"' in html
    status, _, _ = await post(portal, f"/portal/directory/contacts/{cid}",
                              {"csrf": csrf, "name": "Dora D.", "number0": "0301234"})
    assert status == 303
    _, html = await get(portal, "/portal/directory")
    assert "Dora D." in html and "0301234" in html
    # call-back: the PBX is asked (here: recorded), the page says the phone rings first
    asked: list[tuple[str, str, str | None]] = []
    portal.ctx.call_back = lambda user, target, phone: (asked.append(
        (user.extension, target, phone)), "cb-1")[1]
    status, location, _ = await post(portal, "/portal/call-back",
                                     {"csrf": csrf, "target": "0301234", "phone": "",
                                      "back": "/portal/directory"})
    assert status == 303 and location == "/portal/directory?notice=calling", location
    assert asked == [("100", "0301234", None)]
    status, _, html = await post(portal, "/portal/call-back",
                                 {"csrf": csrf, "target": "x", "phone": ""})
    assert status == 422 and "Enter a number to call" in html
    status, _, _ = await post(portal, f"/portal/directory/contacts/{cid}/delete", {"csrf": csrf})
    assert status == 303 and portal.store.contacts(portal.users["100"].id) == []
    sign_in(portal, "101")
    status, _ = await get(portal, f"/portal/directory/contacts/{cid}")
    assert status == 404


async def test_codes_in_both_languages(portal: Api) -> None:
    sign_in(portal, "100")
    status, html = await get(portal, "/portal/codes?lang=en")
    assert status == 200 and "Do not disturb: on" in html and "<kbd>*78</kbd>" in html
    assert "<kbd>78878</kbd>" in html  # the digits-only form
    assert "<kbd>*3</kbd>" in html and "Add the number to the call (conference)" in html
    assert html.index("Do not disturb: on") < html.index("Do not disturb: off")
    status, html = await get(portal, "/portal/codes?lang=de")
    assert status == 200 and "Nicht stören einschalten" in html and "Funktionscodes" in html


async def test_phone_page_and_account(portal: Api) -> None:
    csrf = sign_in(portal, "100")
    status, html = await get(portal, "/portal/phone?dial=101")
    assert status == 200 and 'value="101"' in html and "/portal/vendor/jssip.min.js" in html
    async with portal.client.post("/portal/phone/account") as resp:
        assert resp.status == 403
    async with portal.client.post("/portal/phone/account",
                                  headers={"X-CSRF-Token": csrf}) as resp:
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        account = await resp.json()
    assert account["uri"] == "sip:100@pbx.test" and len(account["ha1"]) == 32
    assert account["websockets"] == []


def test_a_cpim_message_shows_its_content() -> None:
    from pbx.portal.views.chat import _shown

    body = ("From: <sip:100@pbx.test>\r\nTo: <sip:101@pbx.test>\r\nimdn.Message-ID: x1\r\n\r\n"
            "Content-Type: text/plain\r\n\r\nHallo über CPIM\r\n")
    assert _shown({"body": body, "content_type": "message/cpim"})["body"] == "Hallo über CPIM"
    assert _shown({"body": " plain ", "content_type": "text/plain"})["body"] == "plain"


def test_the_policy_lets_the_phone_reach_a_listener_on_every_address() -> None:
    from pbx.portal.core import Portal

    portal = Portal.__new__(Portal)
    portal.phone = lambda: {"websockets": ["ws://0.0.0.0:5066/", "wss://[::]:5067/",
                                           "ws://127.0.0.1:5068/"]}
    policy = portal.csp()
    assert "connect-src 'self' ws://*:5066/ wss://*:5067/ ws://127.0.0.1:5068/;" in policy
