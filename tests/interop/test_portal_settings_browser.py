"""The settings page in a real browser, proven on real SIP (issue 17):

a. user 101 signs in and switches call forwarding on no answer to colleague 102 with 2 rings
   in the page's form; a SIPp call from 100 rings 101's SIPp phone for about 2 rings (10 s)
   and then reaches 102's SIPp phone (which answers; the INVITE carries the diversion);
b. the same forwarding is switched off with ``*93`` from a SIPp phone of 101, and the open page
   shows "off" less than a second after SIPp got the code's 200 — without a reload; switched
   on again in the page, it goes off with the digits-only form ``78893`` from 101's device
   flagged mobile, the same way.

Also: screenshots in English and German, and axe-core finds no serious violation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pbx.callcontrol import Prompt
from tests.interop.harness import free_port, read_log
from tests.interop.portal_harness import (
    axe_check,
    base_url,
    browser,
    login,
    portal_passwords_of,
    portal_pbx,
    screenshot,
)
from tests.interop.portal_user_harness import (
    CONFIG,
    MOBILE_DEVICE,
    mark_no_reload,
    received_at,
    watch_text,
)
from tests.interop.test_calls_sipp import USERS, RtpPeer, SippUas, caller, register_port
from tests.interop.test_feature_codes_sipp import dial as dial_account
from tests.interop.test_features_sipp import assert_announced, dial

pytestmark = [pytest.mark.interop, pytest.mark.timeout(150)]

PASSWORDS = portal_passwords_of(USERS)
STATE = "#state-forward-no-answer"


def _mobile(store: Any) -> None:
    store.add_device("101", *MOBILE_DEVICE, kind="mobile")


async def _switch_on(page: Any, base: str) -> None:
    """Forwarding on no answer to 102 after 2 rings, in the page's form."""
    await page.check("#f-forwards-no-answer-enabled")
    await page.fill("#f-forwards-no-answer-target", "102")
    await page.fill("#f-forwards-no-answer-rings", "2")
    await page.click("#save-forward-no-answer")
    await page.wait_for_url(f"{base}/portal/settings?notice=saved*")
    assert (await page.text_content(STATE) or "").strip() == "on → 102"


def _code(pbx: Any, tmp: Path, code: str, account: tuple[str, str] | None) -> tuple[Any, Path]:
    """Dial ``code`` from 101's desk phone (or ``account``); the PBX's audio and SIPp's log."""
    peer = RtpPeer()
    try:
        if account is None:
            ok, failed, out = dial(pbx, tmp, 1, code, "feature_code_uac.xml",
                                   rtp_port=peer.port)
        else:
            ok, failed, out = dial_account(pbx, tmp, account, code, "feature_code_uac.xml",
                                           rtp_port=peer.port)
    finally:
        peer.close()
    assert (ok, failed) == (1, 0), out + read_log(pbx.log_path)[-3000:]
    return peer.pcm(), tmp / f"dial-{code}.log"


async def _off_by_code(page: Any, pbx: Any, tmp: Path, code: str,
                       account: tuple[str, str] | None = None) -> float:
    """Dial ``code``; how long after SIPp's 200 the open page showed "off" (seconds)."""
    await mark_no_reload(page)
    await watch_text(page, STATE, "off")
    pcm, log = await asyncio.to_thread(_code, pbx, tmp, code, account)
    assert_announced(pcm, Prompt("deactivated"))
    answered = received_at(log, "SIP/2.0 200 OK")
    assert answered, read_log(log)[-2000:]
    await page.wait_for_function(f"window.__seen && window.__seen[{STATE!r}]", timeout=5000)
    shown = await page.evaluate(f"window.__seen[{STATE!r}]") / 1000.0
    assert await page.evaluate("window.__noReload") == "still here"  # no reload
    assert (await page.text_content(STATE) or "").strip() == "off"
    assert not await page.is_checked("#f-forwards-no-answer-enabled")
    return shown - answered[0]


def _call_forwarded_after_two_rings(pbx: Any, tmp: Path) -> dict[str, Any]:
    """100 calls 101; 101's phone rings unanswered, 102's phone answers."""
    port101, port102 = free_port(), free_port()
    register_port(pbx, "101", USERS[1][1], port101)
    register_port(pbx, "102", USERS[2][1], port102)
    ringing = SippUas(tmp, "call_uas_ring.xml", port101, keys={"rtp_port": str(free_port())},
                      name="phone101")
    answering = SippUas(tmp, "call_uas_answer.xml", port102,
                        keys={"rtp_port": str(free_port())}, name="phone102")
    try:
        # SIPp waits 10 s for a response by default: 2 rings take that long
        ok, failed, out = caller(pbx, tmp, dst="101", pause_ms=1000,
                                 extra=["-recv_timeout", "30000"])
        rc101, out101 = ringing.result(20)
        rc102, out102 = answering.result(20)
    finally:
        ringing.stop()
        answering.stop()
    assert (ok, failed) == (1, 0), out + read_log(pbx.log_path)[-3000:]
    assert rc101 == 0, out101
    assert rc102 == 0, out102
    invite = answering.log().split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
    return {"rang": received_at(ringing.messages, "INVITE sip:"),
            "cancelled": received_at(ringing.messages, "CANCEL sip:"),
            "forwarded": received_at(answering.messages, "INVITE sip:"), "invite": invite}


async def test_forwarding_on_no_answer_set_in_the_page_switched_off_by_code(
        tmp_path: Path) -> None:
    with portal_pbx(tmp_path, config_extra=CONFIG, store_setup=_mobile) as pbx:
        base = base_url(pbx)
        async with browser() as b:
            page = await login(b, base, "101", PASSWORDS["101"])
            await page.goto(base + "/portal/settings")
            assert (await page.text_content(STATE) or "").strip() == "off"
            await _switch_on(page, base)
            axe = await axe_check(page)
            await screenshot(page, "portal-settings-en")
            await page.wait_for_function("window.portal && window.portal.connected")

            # a: the call rings 101 for 2 rings, then 102
            call = await asyncio.to_thread(_call_forwarded_after_two_rings, pbx, tmp_path)
            # b: *93 from the desk phone, then (on again) 78893 from the mobile
            desk = await _off_by_code(page, pbx, tmp_path, "*93")
            await _switch_on(page, base)
            await page.wait_for_function("window.portal && window.portal.connected")
            mobile = await _off_by_code(page, pbx, tmp_path, "78893", MOBILE_DEVICE)

            german = await login(b, base, "101", PASSWORDS["101"], lang="de")
            await german.goto(base + "/portal/settings")
            heading = await german.text_content("#forward-no-answer-h")
            axe_de = await axe_check(german)
            await screenshot(german, "portal-settings-de")
    assert axe == [] and axe_de == [], (axe, axe_de)
    (rang,), (forwarded,) = call["rang"], call["forwarded"]
    assert 9.0 <= forwarded - rang <= 12.0, call  # 2 rings of 5 s
    assert call["cancelled"] and abs(call["cancelled"][0] - forwarded) < 1.0, call
    assert "reason=no-answer" in call["invite"], call["invite"]
    assert desk < 1.0 and mobile < 1.0, (desk, mobile)
    assert heading is not None and heading.startswith("Rufumleitung wenn keine Antwort"), \
        heading
    print(f"forwarded after {forwarded - rang:.2f} s; page showed off {desk:.3f} s (*93) and "
          f"{mobile:.3f} s (78893) after the 200")
