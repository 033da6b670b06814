"""bench overload --pairs: each overload step judged against the S step just before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import overload


def _fake_steps(monkeypatch: pytest.MonkeyPatch, completed: list[float]) -> list[int]:
    offered: list[int] = []

    def step(scenario: Path, target: tuple[str, int], rate: int, seconds: float,
             workdir: Path, cpu: int | None, server: Any) -> dict[str, Any]:
        offered.append(rate)
        return {"completed_per_s": completed[len(offered) - 1], "failed_other": 0}

    monkeypatch.setattr(overload, "_overload_step", step)
    monkeypatch.setattr("bench.overload.time.sleep", lambda s: None)
    return offered


def test_a_pair_offers_s_then_the_overload_and_divides_by_what_s_completed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    offered = _fake_steps(monkeypatch, [380.0, 342.0])
    pair = overload._pair(Path("x.xml"), ("127.0.0.1", 5060), 400, 800, 10.0, Path("."), None,
                          object())  # type: ignore[arg-type]
    assert offered == [400, 800]
    assert pair["reference_per_s"] == 380.0  # the server completed less than S just then
    assert pair["completed_fraction"] == 0.9


def test_the_reference_is_never_more_than_s(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_steps(monkeypatch, [410.0, 300.0])  # stragglers of the step before
    pair = overload._pair(Path("x.xml"), ("127.0.0.1", 5060), 400, 800, 10.0, Path("."), None,
                          object())  # type: ignore[arg-type]
    assert pair["reference_per_s"] == 400.0
    assert pair["completed_fraction"] == 0.75


def test_the_collector_pauses_of_a_step_are_read_from_the_servers_log(tmp_path: Path) -> None:
    class _Server:
        workdir = tmp_path

    log = tmp_path / "server.log"
    log.write_text("2026-12-08T00:00:00Z [warning  ] gc.pause   [pbx.gc] generation=2 ms=75.5\n")
    since = overload._log_size(_Server())  # type: ignore[arg-type]
    with log.open("a") as f:
        f.write("2026-12-08T00:00:01Z [warning  ] mail.off   [pbx.mail] pending=0\n"
                "2026-12-08T00:00:02Z [warning  ] gc.pause   [pbx.gc] collected=3 "
                "generation=1 ms=52.0 uncollectable=0\n")
    assert overload._gc_pauses(_Server(), since) == [52.0]  # type: ignore[arg-type]
    assert overload._gc_pauses(_Server(), 0) == [75.5, 52.0]  # type: ignore[arg-type]


def test_the_overload_state_changes_of_a_step_are_read_in_order(tmp_path: Path) -> None:
    class _Server:
        workdir = tmp_path

    (tmp_path / "server.log").write_text(
        "t [warning  ] overload.started [pbx] fraction=0.5\n"
        "t [warning  ] mail.off [pbx.mail]\n"
        "t [warning  ] overload.ended [pbx] fraction=1.0\n"
        "t [warning  ] overload.started [pbx] fraction=0.5\n")
    assert overload._state_changes(_Server(), 0) == [  # type: ignore[arg-type]
        "started", "ended", "started"]
