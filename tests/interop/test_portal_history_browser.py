"""The call history page in a real browser, with calls over real SIP (issue 17): user 101 has
the page open; a SIPp caller (100) calls 101, who has no phone registered — a missed call —
and then again, answered by 101's SIPp phone. Both calls appear in the open page without a
reload; the missed one is highlighted (``tr.missed``, the warning colour), names the caller
and links to the directory with its number; the filter "Missed" shows only it, the CSV link
downloads it, and its delete button removes it; then the whole history goes (confirmed). Screenshots in English and German; axe-core
finds no serious violation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

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
from tests.interop.portal_user_harness import CONFIG, mark_no_reload
from tests.interop.test_calls_sipp import USERS, SippUas, register_port
from tests.interop.test_features_sipp import dial

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

PASSWORDS = portal_passwords_of(USERS)


def _missed_call(pbx: Any, tmp: Path) -> None:
    ok, failed, out = dial(pbx, tmp, 0, "101", "call_uac_fail.xml")
    assert (ok, failed) == (1, 0), out + read_log(pbx.log_path)[-3000:]


def _answered_call(pbx: Any, tmp: Path) -> None:
    port = free_port()
    register_port(pbx, "101", USERS[1][1], port)
    uas = SippUas(tmp, "call_uas_answer.xml", port, keys={"rtp_port": str(free_port())},
                  name="phone101")
    try:
        ok, failed, out = dial(pbx, tmp, 0, "101", pause_ms=1500)
        rc, uas_out = uas.result(20)
    finally:
        uas.stop()
    assert (ok, failed) == (1, 0), out
    assert rc == 0, uas_out


async def test_a_missed_call_appears_highlighted_and_is_deleted(tmp_path: Path) -> None:
    with portal_pbx(tmp_path, config_extra=CONFIG) as pbx:
        base = base_url(pbx)
        async with browser() as b:
            page = await login(b, base, "101", PASSWORDS["101"])
            await page.goto(base + "/portal/history")
            empty = await page.is_visible("#history-empty")
            await page.wait_for_function("window.portal && window.portal.connected")
            await mark_no_reload(page)
            await asyncio.to_thread(_missed_call, pbx, tmp_path)
            await page.wait_for_selector("#history-table tr.missed", timeout=5000)
            await asyncio.to_thread(_answered_call, pbx, tmp_path)
            # the entry is there from the call's start; its duration once it ended
            await page.wait_for_function(
                "() => { const r = document.querySelector('#history-table tr.in');"
                " return r && r.cells[4].innerText.trim() !== '0:00'; }", timeout=5000)
            assert await page.evaluate("window.__noReload") == "still here"
            rows = await page.eval_on_selector_all(
                "#history-table tbody tr",
                "rows => rows.map(r => ({cls: r.className, cells: [...r.cells].map("
                "c => c.innerText.trim()), color: getComputedStyle(r.cells[1]).color,"
                " link: r.querySelector('a') && r.querySelector('a').getAttribute('href')}))")
            axe = await axe_check(page)
            await screenshot(page, "portal-history-en")
            csv = await page.evaluate(
                "fetch(document.querySelector('#history-csv').href).then(r => r.text())")

            await page.click("#filter-missed")
            await page.wait_for_url(f"{base}/portal/history?filter=missed")
            only_missed = await page.eval_on_selector_all("#history-table tbody tr",
                                                          "rows => rows.map(r => r.className)")
            german = await login(b, base, "101", PASSWORDS["101"], lang="de")
            await german.goto(base + "/portal/history")
            de_kind = await german.text_content("#history-table tr.missed td")
            axe_de = await axe_check(german)
            await screenshot(german, "portal-history-de")

            await page.click("#history-table tr.missed button")
            await page.wait_for_url(f"{base}/portal/history?filter=missed&notice=deleted")
            gone = await page.is_visible("#history-empty")
            await page.goto(base + "/portal/history")
            left = await page.eval_on_selector_all("#history-table tbody tr",
                                                   "rows => rows.map(r => r.className)")
            await page.check("#confirm-clear")  # the whole history, confirmed
            await page.click("#clear-history")
            await page.wait_for_url(f"{base}/portal/history?notice=deleted")
            cleared = await page.is_visible("#history-empty")
    assert empty, "the history was not empty at first"
    answered, missed = rows  # newest first
    assert missed["cls"] == "missed" and answered["cls"] == "in", rows
    assert missed["cells"][0] == "✕ Missed" and missed["cells"][1] == "User 100", rows
    assert missed["cells"][2] == "100" and missed["cells"][4] == "0:00", rows
    assert missed["link"] == "/portal/directory?q=100", rows
    assert missed["color"] == "rgb(164, 0, 15)" != answered["color"], rows  # highlighted
    assert answered["cells"][0] == "↙ Incoming" and answered["cells"][4] in ("0:01", "0:02")
    assert csv.count("\r\n") == 3 and ",100," in csv, csv  # header and two calls
    assert only_missed == ["missed"], only_missed
    assert de_kind is not None and de_kind.strip() == "✕ Verpasst", de_kind
    assert gone and left == ["in"] and cleared, (gone, left, cleared)
    assert axe == [] and axe_de == [], (axe, axe_de)
