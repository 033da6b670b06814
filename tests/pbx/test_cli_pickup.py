"""``asyncpbx pickup-group add|list|remove|members`` and the store's pickup-group tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.cli import main
from pbx.store import Store


def test_groups_and_members_from_the_command_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    for ext in ("201", "202", "203"):
        assert main(["user", "add", ext, "--password", f"pw{ext}x", "--data-dir", d]) == 0
    assert main(["pickup-group", "add", "sales", "--data-dir", d]) == 0
    assert main(["pickup-group", "members", "sales", "--add", "201", "202", "203",
                 "--data-dir", d]) == 0
    assert main(["pickup-group", "members", "sales", "--remove", "203", "--data-dir", d]) == 0
    capsys.readouterr()
    assert main(["pickup-group", "list", "--data-dir", d]) == 0
    assert capsys.readouterr().out.splitlines() == ["group\tmembers", "sales\t201 202"]
    store = Store(tmp_path, domain="pbx.test")
    try:
        u201, u202, u203 = (store.user(e).id for e in ("201", "202", "203"))
        assert store.pickup_peers(u201) == (u201, u202)
        assert store.pickup_peers(u203) == ()
    finally:
        store.close()
    # a name twice, a member who does not exist, a group that does not exist: one-line errors
    assert main(["pickup-group", "add", "sales", "--data-dir", d]) == 2
    assert main(["pickup-group", "members", "sales", "--add", "999", "--data-dir", d]) == 2
    assert main(["pickup-group", "remove", "nope", "--data-dir", d]) == 2
    assert main(["pickup-group", "remove", "sales", "--data-dir", d]) == 0
    capsys.readouterr()
    assert main(["pickup-group", "list", "--data-dir", d]) == 0
    assert capsys.readouterr().out.splitlines() == ["group\tmembers"]
