"""``asyncpbx user password EXT``: the password comes from stdin (never argv), is stored as an
argon2 hash the portal login accepts, with the role given; a short one is refused."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pbx.api.passwords import Passwords
from pbx.cli import main
from pbx.store import Store


def test_user_password_from_stdin(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    d = str(tmp_path)
    assert main(["user", "add", "100", "--data-dir", d]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a-portal-password\n"))
    assert main(["user", "password", "100", "--role", "tenant_admin", "--data-dir", d]) == 0
    assert "portal password of user 100 set (role tenant_admin)" in capsys.readouterr().out
    store = Store(tmp_path)
    try:
        login = store.portal_login(store.user("100").id)
        assert login is not None and login.role == "tenant_admin"
        assert login.password_hash.startswith("$argon2id$")
        assert "a-portal-password" not in login.password_hash
        assert Passwords().verify(login.password_hash, "a-portal-password")
    finally:
        store.close()
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["user", "password", "100", "--data-dir", d]) != 0
    assert "at least 8" in capsys.readouterr().err
