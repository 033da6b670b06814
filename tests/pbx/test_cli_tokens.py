"""``asyncpbx token create|list|revoke`` and the store's token table: printed once, kept as a
SHA-256, scoped to role/tenant/user, expiring, revocable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pbx.cli import main
from pbx.store import Store, StoreError


def _store(d: Path) -> Store:
    return Store(d, domain="pbx.test")


def test_create_prints_once_and_stores_the_hash(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert main(["user", "add", "100", "--password", "s3cret", "--data-dir", d]) == 0
    capsys.readouterr()
    assert main(["token", "create", "--role", "user", "--user", "100", "--days", "30",
                 "--name", "crm", "--data-dir", d]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[0]
    assert token.startswith("apx_") and "user, tenant default, user 100" in out[1]
    store = _store(tmp_path)
    try:
        record = store.api_token(token)
        assert record is not None and record.role == "user" and record.name == "crm"
        assert record.user_id == store.user("100").id
        assert record.expires_at is not None and record.expires_at > time.time() + 29 * 86400
        assert token.encode() not in store.path.read_bytes()
    finally:
        store.close()
    assert main(["token", "list", "--data-dir", d]) == 0
    listing = capsys.readouterr().out
    assert "\tuser\tdefault\t" in listing and "active" in listing and token not in listing
    assert main(["token", "revoke", str(record.id), "--data-dir", d]) == 0
    assert main(["token", "list", "--data-dir", d]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["token", "revoke", "999", "--data-dir", d]) == 2


@pytest.mark.parametrize(("args", "message"), [
    (["--role", "user"], "needs --user"),
    (["--role", "tenant_admin", "--tenant", "nope"], "no tenant nope"),
    (["--role", "user", "--user", "555"], "no user 555"),
])
def test_create_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                       message: str) -> None:
    d = str(tmp_path)
    assert main(["user", "add", "100", "--password", "s3cret", "--data-dir", d]) == 0
    assert main(["token", "create", *args, "--data-dir", d]) == 2
    assert message in capsys.readouterr().err


def test_system_admin_token_for_every_tenant(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "create", "--role", "system_admin", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "every tenant" in out[1]
    store = _store(tmp_path)
    try:
        record = store.api_token(out[0])
        assert record is not None and record.tenant_id is None
    finally:
        store.close()


def test_store_refuses_inconsistent_tokens(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        store.ensure_default_tenant("pbx.test", "pbx.test")
        other = store.add_tenant("acme", "acme.test")
        user = store.add_user("100", "s3cret")
        now = time.time()
        with pytest.raises(StoreError, match="needs a tenant"):
            store.create_api_token(role="tenant_admin", tenant_id=None, now=now)
        with pytest.raises(StoreError, match="in that tenant"):
            store.create_api_token(role="user", tenant_id=other.id, user_id=user.id, now=now)
        with pytest.raises(StoreError, match="role"):
            store.create_api_token(role="root", tenant_id=other.id, now=now)
        with pytest.raises(StoreError, match="future"):
            store.create_api_token(role="tenant_admin", tenant_id=other.id, expires_at=now - 1,
                                   now=now)
        token, _record = store.create_api_token(role="tenant_admin", tenant_id=other.id, now=now)
        # last use: written once a minute at most
        assert store.api_token(token, now=now + 1) is not None
        assert store.api_token(token, now=now + 30).last_used_at == now + 1  # type: ignore[union-attr]
        assert store.api_token(token, now=now + 70).last_used_at == now + 1  # type: ignore[union-attr]
        assert store.api_token(token).last_used_at == now + 70  # type: ignore[union-attr]
    finally:
        store.close()
