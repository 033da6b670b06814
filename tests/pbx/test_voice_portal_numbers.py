"""Voice-portal DIDs: the store's table (pbx.store.portal), ``asyncpbx number add
--voice-portal``, and the router's ``portal`` destination for a trunk's call to one."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.cli import main
from pbx.directory import Directory
from pbx.routing.router import Router
from pbx.store import Store, StoreError


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path, domain="127.0.0.1")
    s.ensure_default_tenant("127.0.0.1", "asyncpbx")
    s.add_tenant("acme", "acme.example.com", area_code="30")
    s.add_user("100", "pw100", tenant="acme")
    return s


def test_only_a_company_number_can_be_a_portal_number(store: Store) -> None:
    store.add_number("+4930123456", tenant="acme", user="100")
    store.add_number("+4930123499", tenant="acme")
    with pytest.raises(StoreError):
        store.set_voice_portal("+4930123456")
    with pytest.raises(StoreError):
        store.set_voice_portal("+4930000000")  # no such number
    store.set_voice_portal("+4930123499")
    assert store.voice_portal_numbers() == {"+4930123499"}
    store.set_voice_portal("+4930123499", False)
    assert store.voice_portal_numbers() == frozenset()
    store.set_voice_portal("+4930123499")
    store.remove_number("+4930123499", tenant="acme")  # the flag goes with the number
    assert store.voice_portal_numbers() == frozenset()


def test_the_router_sends_a_trunk_call_to_a_portal_did_to_the_portal(store: Store) -> None:
    store.add_number("+4930123456", tenant="acme", user="100")
    store.add_number("+4930123499", tenant="acme")
    directory = Directory(store)
    router = Router(directory)
    acme = store.tenant("acme").id
    assert router.incoming(acme, "030123499").kind == "refused"  # a plain company number
    store.set_voice_portal("+4930123499")
    directory.refresh_if_changed()
    assert directory.is_voice_portal("+4930123499")
    dest = router.incoming(acme, "030123499")
    assert (dest.kind, dest.number) == ("portal", "+4930123499")
    assert router.incoming(acme, "+4930123456").kind == "user"
    # another tenant's trunk does not reach it
    other = store.tenant("default").id
    assert router.incoming(other, "+4930123499").kind == "refused"


def test_cli_number_add_voice_portal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert main(["tenant", "add", "acme", "--domain", "acme.example.com", "--area-code", "30",
                 "--data-dir", d]) == 0
    capsys.readouterr()
    assert main(["number", "add", "030 555000", "--voice-portal", "--tenant", "acme",
                 "--data-dir", d]) == 0
    assert "+4930555000 for the voice portal" in capsys.readouterr().out
    assert main(["number", "list", "--tenant", "acme", "--data-dir", d]) == 0
    assert capsys.readouterr().out.split() == ["+4930555000", "company", "voice-portal"]
    assert Store(tmp_path).voice_portal_numbers() == {"+4930555000"}
    # --voice-portal is an owner of its own: not with --user
    assert main(["number", "add", "+4930555001", "--voice-portal", "--user", "100",
                 "--tenant", "acme", "--data-dir", d]) == 2
    assert "not allowed with" in capsys.readouterr().err
