"""The bans in force, visible and liftable from the command line (``asyncpbx bans``).

The running server owns the ban table (pbx/bans.py, in memory). Once a second it writes the
bans in force to ``DATA_DIR/bans.json`` (atomically: a temporary file renamed into place) and
takes the lift requests that ``asyncpbx bans lift ADDRESS`` appended to ``DATA_DIR/bans.lift``
(one address per line; taken by renaming the file first, so a request appended meanwhile is
never lost). The REST API will later offer the same two operations.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from pbx.bans import Ban

__all__ = ["LIFT_FILE", "STATE_FILE", "read_bans", "request_lift", "take_lift_requests",
           "write_bans"]

STATE_FILE = "bans.json"
LIFT_FILE = "bans.lift"


def write_bans(data_dir: str | Path, bans: Iterable[Ban]) -> None:
    """Replace ``bans.json`` with ``bans`` (times as the table has them: POSIX seconds)."""
    path = Path(data_dir) / STATE_FILE
    rows = [{"src": b.source, "reason": b.reason, "count": b.count, "since": b.since,
             "until": b.until} for b in bans]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_bans(data_dir: str | Path) -> list[Ban]:
    """The bans the server last wrote (empty when it wrote none or the file is unreadable)."""
    try:
        rows = json.loads((Path(data_dir) / STATE_FILE).read_text(encoding="utf-8"))
        return [Ban(str(r["src"]), str(r["reason"]), float(r["since"]), float(r["until"]),
                    int(r["count"])) for r in rows]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def request_lift(data_dir: str | Path, source: str) -> None:
    """Ask the running server to lift ``source``'s ban (it does within about a second)."""
    with open(Path(data_dir) / LIFT_FILE, "a", encoding="utf-8") as f:
        f.write(source.strip() + "\n")


def take_lift_requests(data_dir: str | Path) -> list[str]:
    """The addresses asked to be lifted since the last call (the requests are consumed)."""
    path = Path(data_dir) / LIFT_FILE
    taking = path.with_name(path.name + ".taking")
    try:
        os.replace(path, taking)
    except FileNotFoundError:
        return []
    try:
        text = taking.read_text(encoding="utf-8")
    finally:
        with contextlib.suppress(OSError):
            taking.unlink()
    return [line.strip() for line in text.splitlines() if line.strip()]
