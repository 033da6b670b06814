"""The directory cache: lookups, write-through on store changes, other processes' changes,
and the asynchronous call-history hook."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from pbx.directory import AsyncHistory, Directory
from pbx.settings_schema import Setting
from pbx.store import Store
from sipcore.digest import compute_ha1

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path, domain="127.0.0.1")
    s.ensure_default_tenant("127.0.0.1", "asyncpbx")
    s.add_tenant("acme", "acme.example.com", area_code="30")
    return s


def test_lookups(store: Store) -> None:
    d = Directory(store)
    u = store.add_user("100", "pw100", tenant="acme", name="Anna")
    store.add_device("100", "anna-desk", "deskpw", tenant="acme", kind="desk")
    store.add_user("100", "pw-default", "asyncpbx")
    store.add_number("+4930123456", tenant="acme", user="100")
    store.add_number("+4930123457", tenant="acme", group="sales")
    tr = store.add_trunk("carrier", tenant="acme", kind="ip", host="127.0.0.3",
                         allowed_sources=["127.0.0.3", "10.9.0.0/16", "udp:10.9.8.0/24:5060",
                                          "[2001:db8::1]:5060"])

    creds = d.credentials("acme.example.com", "anna-desk")
    assert creds is not None and creds.ha1_for("MD5") == compute_ha1(
        "MD5", "anna-desk", "acme.example.com", "deskpw")
    assert d.credentials("asyncpbx", "anna-desk") is None
    assert d.credentials("asyncpbx", "100") is not None
    assert d.user_of_device("acme.example.com", "anna-desk") == u
    assert {x.username for x in d.devices_of(u.id)} == {"100", "anna-desk"}
    assert d.realms() == {"acme.example.com", "asyncpbx"}

    assert d.user("ACME.example.com", "100") == u
    default_100 = d.user("127.0.0.1", "100")
    assert default_100 is not None and default_100 != u
    assert d.user("192.0.2.7", "100") == default_100  # unknown host → default tenant
    assert d.user("acme.example.com", "101") is None
    t = d.tenant_for_domain("acme.example.com")
    assert t is not None and t.name == "acme" and d.tenant(t.id) == t
    default = d.tenant_for_domain("10.1.2.3")
    assert default is not None and default.name == "default" and d.default_tenant == default
    assert d.user_in_tenant(t.id, "100") == u and d.user_by_id(u.id) == u

    n = d.owner_of_did("+4930123456")
    assert n is not None and n.user_id == u.id
    g = d.owner_of_did("+4930123457")
    assert g is not None and (g.owner_kind, g.group_name) == ("group", "sales")
    assert d.owner_of_did("+4930999999") is None
    assert [x.e164 for x in d.numbers_of(u.id)] == ["+4930123456"]
    assert d.extension_of_did(t.id, "+4930123456") == "100"
    assert d.extension_of_did(t.id, "+4930123457") is None  # a group's number
    assert d.extension_of_did(default.id, "+4930123456") is None  # another tenant's

    assert d.trunk_for_source("127.0.0.3") == tr
    assert d.trunk_for_source("10.9.200.1") == tr
    assert d.trunk_for_source("10.9.8.7") == tr
    assert d.trunk_for_source("2001:db8::1") == tr
    assert d.trunk_for_source("2001:0db8::1") == tr  # another spelling of the same address
    assert d.trunk_for_source("127.0.0.4") is None
    assert d.trunk_for_source("not-an-ip") is None
    assert d.trunks_of(t.id) == (tr,) and d.all_trunks() == (tr,)


def test_ip_trunk_without_list_is_known_by_its_host(store: Store) -> None:
    d = Directory(store)
    tr = store.add_trunk("c", tenant="acme", kind="ip", host="127.0.0.3")
    reg = store.add_trunk("r", tenant="acme", kind="register", host="sip.carrier.example",
                          username="u", password="p")
    assert d.trunk_for_source("127.0.0.3") == tr
    assert d.trunks_of(tr.tenant_id) == (tr, reg)


def test_most_specific_network_wins(store: Store) -> None:
    d = Directory(store)
    wide = store.add_trunk("wide", tenant="acme", kind="ip", host="10.0.0.1",
                           allowed_sources=["10.0.0.0/8"])
    narrow = store.add_trunk("narrow", tenant="acme", kind="ip", host="10.1.0.1",
                             allowed_sources=["10.1.0.0/16"])
    assert d.trunk_for_source("10.1.2.3") == narrow
    assert d.trunk_for_source("10.2.2.3") == wide


def test_write_through_keeps_the_cache_current(store: Store) -> None:
    d = Directory(store)
    store.add_user("100", "pw100", tenant="acme")
    assert d.credentials("acme.example.com", "100") is not None
    store.set_device_password("100", "newpw", tenant="acme")
    creds = d.credentials("acme.example.com", "100")
    assert creds is not None and creds.ha1_for("MD5") == compute_ha1(
        "MD5", "100", "acme.example.com", "newpw")
    store.add_number("+4930123456", tenant="acme", user="100")
    assert d.owner_of_did("+4930123456") is not None
    u = store.update_user("100", tenant="acme", permission="international")
    assert d.user("acme.example.com", "100") == u
    schema = {"on": Setting(bool, False)}
    assert d.settings(u.id, "dnd", schema) == {"on": False}
    store.set_feature_settings(u.id, "dnd", schema, {"on": True})
    assert d.settings(u.id, "dnd", schema) == {"on": True}
    assert d.settings(u.id, "dnd") == {"on": True}
    store.remove_number("+4930123456", tenant="acme")
    assert d.owner_of_did("+4930123456") is None
    store.remove_user("100", tenant="acme")
    assert d.credentials("acme.example.com", "100") is None
    assert d.user("acme.example.com", "100") is None
    store.remove_tenant("acme")
    assert d.tenant_for_domain("acme.example.com") == d.default_tenant


def test_on_reload_is_called(store: Store) -> None:
    d = Directory(store)
    seen: list[int] = []
    d.on_reload = lambda snap: seen.append(len(snap.users))
    store.add_user("100", tenant="acme")
    store.add_user("101", tenant="acme")
    assert seen == [1, 2]


def test_changes_from_another_process_are_picked_up(store: Store, tmp_path: Path) -> None:
    d = Directory(store)
    assert not d.refresh_if_changed()
    proc = subprocess.run(
        [sys.executable, "-m", "pbx", "user", "add", "150", "--password", "pw150",
         "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert d.credentials("127.0.0.1", "150") is None  # not yet: another connection wrote it
    assert d.refresh_if_changed()
    assert d.credentials("127.0.0.1", "150") is not None
    assert not d.refresh_if_changed()


async def test_async_history_writes_in_order_without_blocking(store: Store) -> None:
    u = store.add_user("100", tenant="acme")
    errors: list[BaseException] = []
    h = AsyncHistory(store, on_error=errors.append)
    rec = h.call_started(u.id, "call-1", "in", "Ben", "+49301111", at=10.0)
    h.call_answered(rec, 12.0)
    h.call_ended(rec, 72.0)
    missed = h.call_started(u.id, "call-2", "in", "", "+49302222", at=100.0)
    h.call_ended(missed, 130.0)
    await h.drain()
    entries = await asyncio.to_thread(h.history, u.id)
    assert [(e.call_id, e.duration, e.missed) for e in entries] == [("call-2", 0.0, True),
                                                                   ("call-1", 60.0, False)]
    # A failing start (unknown user) is reported once; its answer/end do nothing.
    bad = h.call_started(99999, "call-3", "out", "", "", at=1.0)
    h.call_answered(bad, 2.0)
    h.call_ended(bad, 3.0)
    await h.drain()
    assert len(errors) == 1
    h.close()


async def test_call_record_hook_writes_both_users_histories(store: Store) -> None:
    from dataclasses import dataclass

    from pbx.directory import CallRecordHistory, directory_parties

    @dataclass
    class Record:  # the shape of pbx.callcontrol.CallRecord
        call_id: str
        direction: str
        caller: str
        callee: str
        started: float
        answered: float | None = None
        ended: float | None = None
        tenant_id: int | None = None

    d = Directory(store)
    anna = store.add_user("100", "pw100", tenant="acme", name="Anna")
    ben = store.add_user("101", "pw101", tenant="acme", name="Ben")
    store.add_number("+4930555", tenant="acme", user="101")
    h = AsyncHistory(store)
    hook = CallRecordHistory(h, directory_parties(d, "acme.example.com"))
    r = Record("c1", "internal", "100", "101", started=10.0)
    hook(r)
    r.answered = 12.0
    hook(r)
    hook(r)  # repeated updates do not answer twice
    r.ended = 42.0
    hook(r)
    inbound = Record("c2", "inbound", "+4989777", "+4930555", started=50.0)
    hook(inbound)
    inbound.ended = 60.0
    hook(inbound)
    outbound = Record("c3", "outbound", "100", "+4989777", started=70.0, ended=71.0)
    hook(outbound)
    await h.drain()
    a = [(e.call_id, e.direction, e.other_name, e.other_number, e.duration, e.missed)
         for e in store.history(anna.id)]
    b = [(e.call_id, e.direction, e.other_name, e.other_number, e.duration, e.missed)
         for e in store.history(ben.id)]
    assert a == [("c3", "out", "", "+4989777", 0.0, False), ("c1", "out", "Ben", "101", 30.0, False)]
    assert b == [("c2", "in", "", "+4989777", 0.0, True), ("c1", "in", "Anna", "100", 30.0, False)]
    assert hook._open == {}
    h.close()


async def test_call_record_hook_looks_parties_up_in_the_records_tenant(store: Store) -> None:
    """Two tenants with the same extensions: a call in the second tenant lands in the history
    of that tenant's users, not in the default (or first) tenant's."""
    from pbx.callcontrol import CallRecord
    from pbx.directory import CallRecordHistory, directory_parties

    d = Directory(store)
    store.add_tenant("beta", domain="beta.example.com")
    acme_100 = store.add_user("100", "pw-long", tenant="acme", name="Anna Acme")
    acme_101 = store.add_user("101", "pw-long", tenant="acme", name="Ben Acme")
    beta_100 = store.add_user("100", "pw-long", tenant="beta", name="Anna Beta")
    beta_101 = store.add_user("101", "pw-long", tenant="beta", name="Ben Beta")
    beta = next(t for t in store.tenants() if t.name == "beta")
    h = AsyncHistory(store)
    hook = CallRecordHistory(h, directory_parties(d, "acme.example.com"))
    r = CallRecord("c-beta", "internal", "100", "101", started=1.0, tenant_id=beta.id)
    hook(r)
    r.answered, r.ended = 2.0, 5.0
    hook(r)
    await h.drain()
    assert [(e.direction, e.other_name) for e in store.history(beta_100.id)] == [("out", "Ben Beta")]
    assert [(e.direction, e.other_name) for e in store.history(beta_101.id)] == [("in", "Anna Beta")]
    assert store.history(acme_100.id) == [] and store.history(acme_101.id) == []
    h.close()


def test_async_history_group_commits_what_queued_meanwhile(store: Store) -> None:
    """While a commit runs, new writes queue; the next commit takes them all in one
    transaction, and an entry whose start, answer and end queued together is one row with the
    right duration. Updates of an entry stored by an earlier batch find its id."""
    import threading

    u = store.add_user("100", tenant="acme")
    gate, entered = threading.Event(), threading.Event()
    real_write = store.history_write
    sizes: list[int] = []

    def slow_write(writes):  # type: ignore[no-untyped-def]
        sizes.append(len(writes))
        entered.set()
        gate.wait(5)
        return real_write(writes)

    store.history_write = slow_write  # type: ignore[method-assign]
    h = AsyncHistory(store)
    first = h.call_started(u.id, "long", "in", "Ben", "101", at=1.0)
    assert entered.wait(5)  # the worker is inside the first commit now
    records = []
    for i in range(50):
        r = h.call_started(u.id, f"c{i}", "out", "", "102", at=10.0 + i)
        h.call_answered(r, 11.0 + i)
        h.call_ended(r, 21.0 + i)
        records.append(r)
    h.call_answered(first, 3.0)  # an update of the entry in the running batch
    h.call_ended(first, 8.0)
    gate.set()
    assert h.wait_idle(5)
    assert sizes[0] == 1 and sizes[1] == 51  # 50 whole calls + the update, one transaction
    entries = {e.call_id: e for e in store.history(u.id, limit=100)}
    assert len(entries) == 51
    assert all(entries[f"c{i}"].duration == 10.0 and not entries[f"c{i}"].missed
               for i in range(50))
    assert (entries["long"].answered_at, entries["long"].ended_at, entries["long"].duration) == (
        3.0, 8.0, 5.0)
    assert all(r.entry_id == entries[r_id].id for r, r_id in zip(records, [f"c{i}" for i in range(50)], strict=True))
    h.close()


def test_async_history_one_bad_write_costs_only_itself(store: Store) -> None:
    """A batch holding a write that fails (its user is gone) is retried write by write: the
    good entries are stored, the error is reported once, the bad entry's updates do nothing."""
    u = store.add_user("100", tenant="acme")
    errors: list[BaseException] = []
    h = AsyncHistory(store, on_error=errors.append)
    with h._cond:  # hold the worker so that all of these land in one batch
        good1 = h.call_started(u.id, "good1", "in", "", "1", at=1.0)
        bad = h.call_started(424242, "bad", "in", "", "2", at=2.0)
        good2 = h.call_started(u.id, "good2", "in", "", "3", at=3.0)
        h.call_ended(good1, 4.0)
    assert h.wait_idle(5)
    h.call_answered(bad, 5.0)
    h.call_ended(bad, 6.0)
    h.call_ended(good2, 7.0)
    assert h.wait_idle(5)
    assert len(errors) == 1 and bad.failed and bad.entry_id is None
    got = sorted((e.call_id, e.ended_at, e.missed) for e in store.history(u.id))
    assert got == [("good1", 4.0, True), ("good2", 7.0, True)]
    h.close()


def test_a_settings_write_puts_its_entry_in_without_a_full_reload(store: Store) -> None:
    d = Directory(store)
    u = store.add_user("100", tenant="acme")
    v = store.add_user("101", tenant="acme")
    schema = {"on": Setting(bool, False), "target": Setting(str, "")}
    store.set_feature_settings(v.id, "dnd", schema, {"on": True})
    reloads, users = d.reloads, d.snapshot.users
    before = d.snapshot
    store.set_feature_settings(u.id, "dnd", schema, {"target": "555"})
    assert d.reloads == reloads and d.snapshot.users is users  # nothing else was read again
    assert d.snapshot is not before and before.settings.get((u.id, "dnd")) is None  # swapped
    assert d.settings(u.id, "dnd", schema) == {"on": False, "target": "555"}
    assert d.settings(v.id, "dnd", schema) == {"on": True, "target": ""}
    assert d.snapshot.settings == Directory(store).snapshot.settings  # what a reload reads
