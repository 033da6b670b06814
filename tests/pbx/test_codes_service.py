"""Changing the feature-code table: the store's migration and rows, the codes service (check,
store, put in force, one ``codes.changed`` event; another process's change picked up after the
directory reloads), ``asyncpbx codes`` and the ``[features]`` configuration."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import pbx.store.schema as store_schema
from features import default_features
from pbx.callcontrol import FeatureRegistry
from pbx.cli import main
from pbx.config import ConfigError, load_config
from pbx.directory import Directory
from pbx.feature_codes import CodeError
from pbx.services import Event, EventBus
from pbx.services.codes import CodesService
from pbx.store import MIGRATIONS, Store, StoreError


def test_a_v2_data_directory_gets_the_feature_codes_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(store_schema, "MIGRATIONS", MIGRATIONS[:2])
        old = Store(tmp_path, domain="pbx.example.com")
        assert old.schema_version == 2
        old.close()
    # rows as a v2 server wrote them (today's Store would write today's columns)
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    db.execute("INSERT INTO tenants(name, domain, realm) VALUES "
               "('default', 'pbx.example.com', 'asyncpbx')")
    db.execute("INSERT INTO users(tenant_id, extension, name) VALUES (1, '100', 'Anna')")
    db.commit()
    db.close()
    store = Store(tmp_path)
    assert store.schema_version == len(MIGRATIONS) >= 5
    assert [u.extension for u in store.users()] == ["100"]
    assert store.feature_codes() == {}
    store.close()


def test_store_rows(tmp_path: Path) -> None:
    store = Store(tmp_path)
    seen: list[str] = []
    store.add_listener(seen.append)
    store.set_feature_code("dnd", "on", "*80", "#80")
    store.set_feature_code("dnd", "on", "*81")
    store.set_feature_code("dnd", "off", "*82")
    assert store.feature_codes() == {("dnd", "on"): ("*81", ""), ("dnd", "off"): ("*82", "")}
    assert seen == ["feature_codes"] * 3
    for bad in (("dnd", "on", "81", ""), ("dnd", "on", "*81", "x"), ("dnd", "on", "*8", "*8"),
                ("Dnd!", "on", "*8", "")):
        with pytest.raises(StoreError):
            store.set_feature_code(*bad)
    assert store.reset_feature_codes([("dnd", "on"), ("nope", "x")]) == 1
    assert store.reset_feature_codes() == 1
    assert store.reset_feature_codes() == 0 and len(seen) == 5  # nothing dropped: no notice
    store.close()


def _service(store: Store) -> tuple[CodesService, Directory, FeatureRegistry, list[Event]]:
    directory = Directory(store)
    registry = FeatureRegistry(default_features())
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    return CodesService(store, directory, registry, bus), directory, registry, events


def test_set_checks_stores_puts_in_force_and_publishes_once(tmp_path: Path) -> None:
    store = Store(tmp_path)
    service, _, registry, events = _service(store)
    row = service.set("dnd.on", "*80", source="cli")
    assert (row.code, row.alternate) == ("*80", "")
    assert store.feature_codes() == {("dnd", "on"): ("*80", "")}
    assert registry.match("*80") is not None and registry.match("*78") is None
    assert [(e.kind, e.data["source"], e.data["changed"]) for e in events] == [
        ("codes.changed", "cli", ["dnd.on"])]
    assert events[0].data["before"] == {"dnd.on": {"code": "*78", "alternate": ""}}
    service.set("dnd.on", "*80", alternate="#80")  # alternate added, code kept
    assert store.feature_codes()[("dnd", "on")] == ("*80", "#80")
    service.set("dnd.on", "*81")  # alternate None: kept
    assert store.feature_codes()[("dnd", "on")] == ("*81", "#80")
    assert len(events) == 3
    store.close()


@pytest.mark.parametrize(("key", "code", "alternate", "message"), [
    ("dnd.on", "*72", None, "belongs to forward_immediate.on"),
    ("dnd.on", "*21", None, "belongs to forward_immediate.voicemail_on"),  # not implemented
    ("dnd.on", "*720", None, "unreachable"),
    ("dnd.on", "78", None, "must be"),
    ("dnd.on", "*80", "*80", "must differ"),
    ("dnd.on", "*80", "*73", "belongs to forward_immediate.off"),
    ("dnd.maybe", "*80", None, "no such feature code"),
    ("dnd", "*80", None, "FEATURE.ACTION"),
])
def test_a_refused_change_stores_nothing(tmp_path: Path, key: str, code: str,
                                         alternate: str | None, message: str) -> None:
    store = Store(tmp_path)
    service, _, registry, events = _service(store)
    with pytest.raises(CodeError, match=message):
        service.set(key, code, alternate)
    assert store.feature_codes() == {} and events == []
    assert registry.match("*78") is not None
    store.close()


def test_reset(tmp_path: Path) -> None:
    store = Store(tmp_path)
    service, _, registry, events = _service(store)
    service.set("dnd.on", "*80")
    service.set("anonymous_rejection.on", "*78")  # free now
    with pytest.raises(CodeError, match="belongs to"):  # *78 would be dnd.on's again
        service.reset(["dnd.on"])
    assert service.reset(["anonymous_rejection.on"]) == 1
    assert service.reset(None) == 1
    assert store.feature_codes() == {} and registry.match("*78") is not None
    assert service.reset(None) == 0
    assert len(events) == 4
    with pytest.raises(CodeError, match="no such"):
        service.reset(["dnd.maybe"])
    store.close()


def test_another_processs_change_is_in_force_after_the_directory_reloads(
        tmp_path: Path) -> None:
    server_store = Store(tmp_path)
    service, directory, registry, events = _service(server_store)
    assert not service.refresh()
    cli_store = Store(tmp_path)  # `asyncpbx codes set` in another process
    cli, *_ = _service(cli_store)
    cli.set("dnd.on", "*80", source="cli")
    assert registry.match("*78") is not None  # not yet: the server has not polled
    assert directory.refresh_if_changed()  # the server's once-a-second poll
    assert service.refresh()
    assert registry.match("*80") is not None and registry.match("*78") is None
    assert [(e.data["source"], e.data["changed"]) for e in events] == [("store", ["dnd.on"])]
    directory.load()  # a reload for anything else: no change, no event
    assert not service.refresh() and len(events) == 1
    cli_store.close()
    server_store.close()


def test_stored_changes_are_in_force_from_the_start_and_a_bad_one_is_left_out(
        tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.set_feature_code("dnd", "off", "*81")
    store.set_feature_code("dnd", "on", "*72")  # clashes (written past the service)
    logged: list[tuple[str, dict[str, Any]]] = []
    log = SimpleNamespace(error=lambda e, **kw: logged.append((e, kw)),
                          debug=lambda e, **kw: None, info=lambda e, **kw: None)
    registry = FeatureRegistry(default_features())
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    CodesService(store, Directory(store), registry, bus, log=log)
    assert registry.match("*81") is not None and registry.match("*78") is not None
    assert [e for e, _ in logged] == ["codes.change_ignored"] and events == []
    store.close()


def test_cli_codes_list_set_reset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert main(["codes", "list", "--data-dir", d]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["code", "alternate", "mobile", "feature.action", "argument",
                                    "description", "notes"]
    table = {line.split("\t")[3]: line.split("\t") for line in lines[1:]}
    assert table["dnd.on"] == ["*78", "", "78878", "dnd.on", "", "do not disturb on"]
    assert table["forward_immediate.on"][:5] == ["*72", "", "78872", "forward_immediate.on",
                                                 "number"]
    assert table["pickup.group"][-1] == "not implemented"
    assert len(table) == 47

    assert main(["codes", "set", "dnd.on", "*80", "--alternate", "#80", "--data-dir", d]) == 0
    assert capsys.readouterr().out.strip() == (
        "dnd.on: *80 (alternate #80), dialled 78880 from a mobile")
    assert main(["codes", "list", "--data-dir", d]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "\tdnd.on\t" in x)
    assert line.split("\t") == ["*80", "#80", "78880", "dnd.on", "", "do not disturb on",
                                "changed"]

    assert main(["codes", "set", "dnd.off", "*80", "--data-dir", d]) == 2
    err = capsys.readouterr().err
    assert "dnd.off: feature code *80 belongs to dnd.on" in err and "Traceback" not in err
    assert main(["codes", "reset", "--data-dir", d]) == 2
    assert "--all" in capsys.readouterr().err
    assert main(["codes", "reset", "dnd.on", "--data-dir", d]) == 0
    assert capsys.readouterr().out.strip() == "reset 1 changed code(s) to the defaults"
    store = Store(tmp_path)
    assert store.feature_codes() == {}
    store.close()


def test_cli_uses_the_configured_escapes(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "asyncpbx.toml"
    cfg.write_text('[features]\ndigits_only_star = "55"\ndigits_only_hash = "56"\n')
    assert main(["codes", "list", "--config", str(cfg), "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "*78\t\t5578\tdnd.on" in out and "#43\t\t5643\tcall_waiting.off" in out


@pytest.mark.parametrize(("features", "key"), [
    ({"digits_only_star": "78a"}, "features.digits_only_star"),
    ({"digits_only_hash": ""}, "features.digits_only_hash"),
    ({"digits_only_star": "78", "digits_only_hash": "789"}, "features.digits_only_hash"),
    ({"digits_only": "788"}, "features.digits_only"),
])
def test_bad_escapes_are_a_config_error_naming_the_key(features: dict[str, str],
                                                       key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"features": features}, environ={})
    assert info.value.key == key


def test_escapes_configured() -> None:
    config = load_config(overrides={"features": {"digits_only_star": "55",
                                                 "digits_only_hash": "56"}}, environ={})
    assert (config.features.digits_only_star, config.features.digits_only_hash) == ("55", "56")
