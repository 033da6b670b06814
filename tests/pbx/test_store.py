"""The SQLite store: migrations, users, registrations written behind and restored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pbx.store import MIGRATIONS, Store, StoreError
from sipcore.digest import compute_ha1
from sipcore.registrar import Binding
from sipcore.transport import Peer


def test_migrations_run_once_and_version_is_recorded(tmp_path: Path) -> None:
    s = Store(tmp_path)
    assert s.schema_version == len(MIGRATIONS)
    s.add_user("100", "secret1", "r")
    s.close()
    s = Store(tmp_path)  # reopening runs nothing again and keeps the data
    assert s.schema_version == len(MIGRATIONS)
    assert [u.extension for u in s.users()] == ["100"]
    assert s.integrity_ok()
    s.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this asyncpbx"):
        Store(tmp_path)


def test_not_a_database(tmp_path: Path) -> None:
    (tmp_path / Store.FILENAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        Store(tmp_path)


def test_users_store_ha1_not_password(tmp_path: Path) -> None:
    s = Store(tmp_path)
    u = s.add_user("205", "pa55word", "asyncpbx", "Eva")
    (d,) = s.devices()
    assert d.user_id == u.id and d.username == "205" and d.realm == "asyncpbx"
    assert d.ha1_md5 == compute_ha1("MD5", "205", "asyncpbx", "pa55word")
    assert d.credentials().ha1_for("SHA-256") == compute_ha1("SHA-256", "205", "asyncpbx", "pa55word")
    raw = (tmp_path / Store.FILENAME).read_bytes()
    assert b"pa55word" not in raw
    s.close()


@pytest.mark.parametrize(
    ("ext", "pw", "match"),
    [("1", "secret", "2 to 8 digits"), ("12a", "secret", "2 to 8 digits"),
     ("123456789", "secret", "2 to 8 digits"), ("100", "abc", "at least 4"),
     ("100", "abc\ndef", "control characters"), ("112", "secret", "emergency number"),
     ("012", "secret", "must not start with 0")],
)
def test_bad_users_are_refused(tmp_path: Path, ext: str, pw: str, match: str) -> None:
    s = Store(tmp_path)
    with pytest.raises(StoreError, match=match):
        s.add_user(ext, pw, "r")
    assert s.user_count() == 0
    s.close()


def test_duplicate_and_remove(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.add_user("100", "secret1", "r")
    with pytest.raises(StoreError, match="exists already"):
        s.add_user("100", "secret2", "r")
    s.remove_user("100")
    with pytest.raises(StoreError, match="no user 100"):
        s.remove_user("100")
    s.close()


def test_secret_is_stable(tmp_path: Path) -> None:
    s = Store(tmp_path)
    a = s.secret("nonce")
    s.close()
    s = Store(tmp_path)
    assert s.secret("nonce") == a and len(a) == 32
    assert s.secret("other") != a
    s.close()


def _binding(uri: str, expires_at: float, **kw: object) -> Binding:
    return Binding(aor="sip:100@example.com", uri=uri, contact=f"<{uri}>", expires_at=expires_at,
                   call_id="c1", cseq=7, **kw)  # type: ignore[arg-type]


def test_bindings_round_trip_and_expiry(tmp_path: Path) -> None:
    s = Store(tmp_path)
    b1 = _binding("sip:100@127.0.0.1:5070", 1000.0, q=0.5, path=("<sip:p1>", "<sip:p2>"),
                  received=Peer("tcp", "127.0.0.1", 5070), user_agent="UA", instance="<urn:x>",
                  reg_id=1)
    b2 = _binding("sip:100@127.0.0.2:5070", 50.0)
    s.save_bindings([b1, b2], [])
    s.close()
    s = Store(tmp_path)
    loaded = s.load_bindings(now=100.0)
    assert loaded == [b1]  # b2 expired at 50 and is gone (from the file too)
    s.save_bindings([], [(b1.aor, b1.uri)])
    assert s.load_bindings(now=100.0) == []
    s.close()
