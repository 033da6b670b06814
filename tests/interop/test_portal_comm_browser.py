"""The portal's communication pages in a real browser (issue 17), headless Debian chromium.

Chat: users 100 and 101 sign in in two browser contexts and open their conversation; each
message one sends (the page's form, through the API) appears in the other's page live — no
reload (a marker set in the page survives) — and a SIP MESSAGE from 102 (a SIPp phone) appears
in 101's list of conversations live too, with its unread badge. The directory finds a colleague
with ``?q=``, a contact is added with the form; the feature codes are shown in German. Every
page has its screenshot and passes axe-core without serious violations.

The softphone: in a network namespace of its own with only ``lo`` (WebRTC on loopback only,
as tests/interop/test_browser_phones.py does), 100 signs in, opens ``/portal/phone`` — it
registers by itself as 100, nobody types a SIP password — and calls a baresip phone (101,
auto-answer, a 1209 Hz file as its microphone, recording what it hears); the page hears the
phone's tone (WebAudio analyser), the phone hears the page's 600 Hz (Goertzel on its
recording), the call's quality figures come from getStats; a chat message to 100 during the
call shows in the page (SIP MESSAGE to the browser phone) and one is sent from the form beside
the call; DTMF (the phone gets the page's key), mute and hold work, and the page hangs up. Then the page calls 101 again and adds
102 (a SIPp phone, 1000 Hz) with "Add to conference" (the API's conference operation): 102
hears the page and 101 but not itself; the page calls 102 and transfers it blind (REFER) to
101: 102 hears 101 and the page has dropped out; the page calls 102 again, consults 101
("Consult first" holds 102) and completes the transfer (REFER with Replaces): 102 hears 101;
last 102 calls 100, whose page and SIPp desk phone ring together, the page's Answer wins and
the desk phone gets CANCEL (portal_comm_phone.py runs it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pbx.phone import WEB_DIR
from tests.interop.harness import need
from tests.interop.portal_comm_phone import until
from tests.interop.portal_harness import (
    CHROMIUM,
    axe_check,
    base_url,
    browser,
    login,
    portal_passwords_of,
    portal_pbx,
    screenshot,
)
from tests.interop.test_browser_phones import ROOT, _isolated_loopback, tone_heard
from tests.interop.test_calls_sipp import USERS
from tests.interop.test_chat_sipp import send

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

PASSWORDS = portal_passwords_of(USERS)
CONFIG = "[media]\nport_min = 47500\nport_max = 47999\n"


async def _ids(page: Any) -> dict[str, int]:
    found = await page.evaluate(
        "fetch('/api/v1/directory').then(r => r.json()).then(d => d.items)")
    return {u["extension"]: u["id"] for u in found}


async def _live(page: Any) -> None:
    await until(page, "window.portal && window.portal.connected", 10)


async def _chat(base: str, pbx: Any, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"axe": {}}
    async with browser() as b:
        anna = await login(b, base, "100", PASSWORDS["100"])
        ben = await login(b, base, "101", PASSWORDS["101"])
        ids = await _ids(anna)
        await anna.goto(f"{base}/portal/chat/{ids['101']}")
        await ben.goto(f"{base}/portal/chat/{ids['100']}")
        for page in (anna, ben):
            await _live(page)
            await page.evaluate("window.__noReload = 1")
        await anna.fill("#text", "Hallo Ben, hast du kurz Zeit?")
        await anna.click("#send")
        await ben.wait_for_selector("#messages li.theirs >> text=hast du kurz Zeit", timeout=5000)
        await ben.fill("#text", "Ja, ruf mich an")
        await ben.press("#text", "Enter")
        await anna.wait_for_selector("#messages li.theirs >> text=ruf mich an", timeout=5000)
        out["no_reload"] = [await p.evaluate("window.__noReload") for p in (anna, ben)]
        out["anna_messages"] = await anna.locator("#messages li .text").all_text_contents()
        out["ben_refreshes"] = await ben.evaluate("window.portal.refreshes")
        out["axe"]["chat_conversation"] = await axe_check(anna)
        await screenshot(anna, "portal-chat-conversation-en")
        # a SIP MESSAGE from 102's SIPp phone: it shows live in 101's conversation list
        await ben.goto(f"{base}/portal/chat")
        await _live(ben)
        await ben.evaluate("window.__noReload = 2")
        # 101 has no SIP phone registered: the message is kept (202) and shown in the portal
        status, _ = await asyncio.to_thread(send, pbx, tmp, 2, "101", "Gruss vom Tischtelefon",
                                            name="sipp-102")
        out["sip_status"] = status
        await ben.wait_for_selector("#conversations >> text=Gruss vom Tischtelefon",
                                    timeout=5000)
        out["sip_no_reload"] = await ben.evaluate("window.__noReload")
        out["badge"] = (await ben.text_content("#badge-chat") or "").strip()
        out["axe"]["chat"] = await axe_check(ben)
        await screenshot(ben, "portal-chat-en")
        # the directory: search, add a contact (plain forms)
        await anna.goto(f"{base}/portal/directory?q=101")
        out["found"] = await anna.locator("#colleagues tbody tr").count()
        await anna.fill("#c-name", "Dora Dienst")
        await anna.fill("#c-company", "Acme")
        await anna.fill("#c-number0", "+49 30 1234567")
        await anna.click("#contact-save")
        await anna.wait_for_url("**/portal/directory?notice=created")
        out["contacts"] = await anna.locator("#contacts tbody tr").all_text_contents()
        out["axe"]["directory"] = await axe_check(anna)
        await screenshot(anna, "portal-directory-en")
        await anna.goto(f"{base}/portal/codes")
        out["axe"]["codes"] = await axe_check(anna)
        await screenshot(anna, "portal-codes-en")
        await anna.goto(f"{base}/portal/call-back")
        out["axe"]["call_back"] = await axe_check(anna)
        await screenshot(anna, "portal-call-back-en")
        # German
        de = await login(b, base, "100", PASSWORDS["100"], lang="de")
        await de.goto(f"{base}/portal/codes")
        out["codes_de"] = await de.text_content("#code-dnd-on")
        out["axe"]["codes_de"] = await axe_check(de)
        await screenshot(de, "portal-codes-de")
        for name, path in (("chat", "/portal/chat"), ("directory", "/portal/directory"),
                           ("phone", "/portal/phone")):
            await de.goto(base + path)
            if name == "phone":  # it registers by itself (no call here: that needs lo only)
                out["phone_de"] = await until(
                    de, "window.softphone.registered || window.softphone.registrationFailed", 10)
                out["phone_status_de"] = await de.text_content("#phone-status")
            out["axe"][name + "_de"] = await axe_check(de)
            await screenshot(de, f"portal-{name}-de")
        out["heading_de"] = await de.text_content("h1")
    return out


def test_chat_is_live_and_the_pages_render(tmp_path: Path) -> None:
    need("sipp")
    with portal_pbx(tmp_path, config_extra=CONFIG, transports=("udp", "ws")) as pbx:
        found = asyncio.run(asyncio.wait_for(_chat(base_url(pbx), pbx, tmp_path), 120))
    assert found["no_reload"] == [1, 1], found  # live, no page load
    assert found["anna_messages"] == ["Hallo Ben, hast du kurz Zeit?", "Ja, ruf mich an"], found
    assert found["ben_refreshes"] >= 1, found
    assert found["sip_status"] == 202, found  # 101 has no SIP phone registered: kept
    assert found["sip_no_reload"] == 2, found
    assert found["badge"].endswith("1"), found  # 102's message is unread
    assert found["found"] == 1, found
    assert any("Dora Dienst" in row and "+49301234567" in row for row in found["contacts"]), found
    assert "Nicht stören einschalten" in (found["codes_de"] or ""), found
    assert found["heading_de"] == "Telefon", found
    assert found["phone_de"] is True, found  # registered as 100 without a typed password
    assert found["phone_status_de"] == "Bereit: angemeldet als 100", found
    assert {k: v for k, v in found["axe"].items() if v} == {}, found["axe"]


def test_the_portal_softphone_calls_a_baresip_phone(tmp_path: Path) -> None:
    need("baresip")
    found = _run_netns_portal(tmp_path)
    assert found["registered"], found
    assert found["created_device"], found  # the browser device was made on first use
    assert tone_heard(found["heard"], 1209), found["heard"]  # the page hears the phone
    assert found["phone_600"] > 0.6, found  # the phone hears the page (Goertzel)
    quality = found["quality"]
    assert quality["received"] > 50 and quality["lost"] >= 0, quality
    assert quality["jitterMs"] is not None and quality["rttMs"] is not None, quality
    assert found["status_connected"].startswith("Connected with"), found
    assert found["muted_pressed"] == "true", found
    assert found["hold"] == ["true", "Resume", "On hold"], found
    assert found["phone_dtmf"], found["phone_log"]  # the page's key 5 reached the phone
    assert found["ended"], found
    assert found["axe"] == [], found["axe"]
    for phase in ("conference", "transfer", "attended", "ring_together"):
        assert "error" not in found[phase], (phase, found[phase])
    # a chat message to 100 during the call reached the page (SIP MESSAGE, JsSIP said 200)
    assert found["chat_online"] and found["chat_delivered"], found
    assert found["chat_shown"].startswith("User 101: Kurze Frage?"), found["chat_shown"]
    assert found["chat_sent"] == ["Bin gleich da"], found  # and one sent beside the call
    # conference: "Add to conference" rang 102 (SIPp), who hears the page and 101, not itself
    conf = found["conference"]
    assert conf["joined"] and "conference:202" in conf["events"], conf
    heard = conf["phone_102"]
    assert heard["hears_600"] and heard["hears_1209"] and not heard["hears_1000"], conf
    assert conf["ended"] and conf["sipp_rc"] == 0, conf["sipp"]
    # blind transfer: the page's call with 102 went to 101 (REFER), the page dropped out
    xfer = found["transfer"]
    assert xfer["before"]["dominant"] == 600, xfer
    assert "transferred" in xfer["events"], xfer
    assert xfer["after"]["hears_1209"] and not xfer["after"]["hears_600"], xfer
    assert xfer["ended"] and xfer["sipp_rc"] == 0, xfer["sipp"]
    # attended: the page called 102, consulted 101 (102 held), completed (REFER/Replaces)
    att = found["attended"]
    assert att["held"] and att["status_consult"].startswith("Consultation call"), att
    assert att["events"].count("ended:Terminated") == 2 and "transferred" in att["events"], att
    assert att["after"]["hears_1209"] and not att["after"]["hears_600"], att
    assert att["calls"] == 1 and att["ended"] and att["sipp_rc"] == 0, att
    # 102 calls 100: the page and 100's desk phone ring together; Answer in the page wins,
    # the desk phone gets CANCEL, both sides hear each other
    ring = found["ring_together"]
    assert ring["status_ringing"].startswith("Incoming call from"), ring
    assert ring["answer_enabled"], ring
    assert tone_heard(ring["heard"], 1000), ring["heard"]
    assert ring["caller_hears_600"], ring
    assert ring["desk_cancelled"] and ring["desk_rc"] == 0, ring["desk"]
    assert ring["caller"] == [1, 0], ring["caller_out"]


def _run_netns_portal(tmp: Path) -> dict[str, Any]:
    """portal_comm_phone.py in a network namespace with only ``lo`` (as the browser-phone
    tests run theirs)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed: run ./test.sh (it apt-installs chromium)")
    if not (WEB_DIR / "dist" / "jssip.min.js").is_file():
        pytest.fail("JsSIP is not built: run scripts/install-test-peers.sh (npm ci in web/)")
    if not _isolated_loopback():
        pytest.fail("this test needs a network namespace of its own (root and util-linux "
                    "unshare) so that chromium gathers and sends to loopback only")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCPBX_")}
    if os.environ.get("ASYNCPBX_NO_EXTENSIONS"):
        env["ASYNCPBX_NO_EXTENSIONS"] = os.environ["ASYNCPBX_NO_EXTENSIONS"]
    command = (f"ip link set lo up && exec {sys.executable} -m tests.interop.portal_comm_phone "
               f"{tmp}")
    proc = subprocess.run(["unshare", "--net", "--", "sh", "-c", command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=150)
    result = tmp / "result.json"
    assert proc.returncode == 0 and result.is_file(), (proc.stdout[-3000:], proc.stderr[-3000:])
    return dict(json.loads(result.read_text()))
