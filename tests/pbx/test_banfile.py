"""pbx/banfile: the bans the server writes are what `asyncpbx bans list` reads, and lift
requests are taken exactly once, none lost."""

from __future__ import annotations

from pathlib import Path

from pbx.banfile import LIFT_FILE, read_bans, request_lift, take_lift_requests, write_bans
from pbx.bans import Ban
from pbx.cli import main


def test_written_bans_read_back(tmp_path: Path) -> None:
    bans = [Ban("203.0.113.5", "auth failures", 10.0, 310.0, 5),
            Ban("2001:db8::7", "request flood", 11.5, 311.5, 17)]
    assert read_bans(tmp_path) == []
    write_bans(tmp_path, bans)
    assert read_bans(tmp_path) == bans
    write_bans(tmp_path, [])
    assert read_bans(tmp_path) == []
    (tmp_path / "bans.json").write_text("{not json")
    assert read_bans(tmp_path) == []


def test_lift_requests_are_taken_once(tmp_path: Path) -> None:
    assert take_lift_requests(tmp_path) == []
    request_lift(tmp_path, "203.0.113.5")
    request_lift(tmp_path, " 198.51.100.1 \n")
    assert take_lift_requests(tmp_path) == ["203.0.113.5", "198.51.100.1"]
    assert take_lift_requests(tmp_path) == [] and not (tmp_path / LIFT_FILE).exists()


def test_cli_lists_bans_in_force(tmp_path: Path, capsys: object) -> None:
    import time

    now = time.time()
    write_bans(tmp_path, [Ban("203.0.113.5", "auth failures", now, now + 300, 5),
                          Ban("203.0.113.6", "auth failures", now - 400, now - 100, 5)])
    assert main(["bans", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "203.0.113.5  auth failures (5)" in out and "203.0.113.6" not in out
    write_bans(tmp_path, [])
    assert main(["bans", "list", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "no bans\n"  # type: ignore[attr-defined]
    # no server takes the request: said so, exit status 1
    assert main(["bans", "lift", "203.0.113.5", "--data-dir", str(tmp_path)]) == 1
    assert "has not taken the request" in capsys.readouterr().out  # type: ignore[attr-defined]
