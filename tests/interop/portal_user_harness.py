"""What the browser tests of the user's pages (settings, call history, voicemail) share: the
PBX (their media ports), SIPp message-log times and waiting in the page for a DOM state."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from tests.interop.harness import read_log

__all__ = ["CONFIG", "MOBILE_DEVICE", "mark_no_reload", "received_at", "watch_text"]

CONFIG = "[media]\nport_min = 47000\nport_max = 47499\n[calls]\nring_timeout = 20.0\n"
#: A device of 101 flagged mobile (it dials the digits-only form of the codes).
MOBILE_DEVICE = ("101m", "pw-101m-secret")

_STAMP = re.compile(r"^-+ (\d{4}-\d\d-\d\d)\s+(\d\d:\d\d:\d\d\.\d+)\s*$")


def received_at(message_log: Path, first_line: str, *, sent: bool = False) -> list[float]:
    """POSIX times (wall clock, as the browser's ``Date.now()``) at which SIPp received (or
    sent) a message whose first line starts with ``first_line``, from its ``-trace_msg``
    log."""
    times: list[float] = []
    stamp: float | None = None
    direction = ""
    lines = read_log(message_log).splitlines()
    for i, line in enumerate(lines):
        found = _STAMP.match(line)
        if found:
            when = dt.datetime.fromisoformat(f"{found.group(1)} {found.group(2)}")
            stamp = when.timestamp()
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            direction = "sent" if "message sent" in nxt else "received"
            continue
        if stamp is not None and line.startswith(first_line) and \
                direction == ("sent" if sent else "received"):
            times.append(stamp)
            stamp = None
    return times


async def mark_no_reload(page: Any) -> None:
    """Leave a mark in the page's window: a reload would wipe it."""
    await page.evaluate("window.__noReload = 'still here'")


async def watch_text(page: Any, selector: str, wanted: str) -> None:
    """Record in the page (``window.__seen[selector]``, ``Date.now()``) the moment the
    element's text first reads ``wanted`` — elements are swapped by the live refresh, so the
    whole document is observed."""
    await page.evaluate(
        """([sel, wanted]) => {
             window.__seen = window.__seen || {};
             delete window.__seen[sel];
             const check = () => {
               const el = document.querySelector(sel);
               if (el && el.textContent.trim() === wanted && !(sel in window.__seen)) {
                 window.__seen[sel] = Date.now();
               }
             };
             new MutationObserver(check).observe(document.body,
               {childList: true, subtree: true, characterData: true});
             check();
           }""", [selector, wanted])
