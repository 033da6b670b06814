"""Store v2: the v1 → v2 migration, tenants, users, devices, numbers, trunks, settings, history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pbx.routing.dialplan import Permission
from pbx.settings_schema import Setting
from pbx.store import (
    DEFAULT_TENANT,
    MIGRATIONS,
    Store,
    StoreError,
    check_pin,
    hash_pin,
    validate_settings,
)
from sipcore.digest import compute_ha1


def _v1_database(path: Path) -> None:
    """A data directory as asyncpbx with schema 1 left it: two users, one registration."""
    path.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path / Store.FILENAME, isolation_level=None)
    first = MIGRATIONS[0]
    assert isinstance(first, str)
    db.executescript("BEGIN;" + first + ";PRAGMA user_version=1;COMMIT;")
    for ext, name, pw in (("100", "Anna", "secret100"), ("205", "", "secret205")):
        db.execute("INSERT INTO users(extension, name, realm, ha1_md5, ha1_sha256, created_at) "
                   "VALUES (?,?,?,?,?,?)",
                   (ext, name, "oldrealm", compute_ha1("MD5", ext, "oldrealm", pw),
                    compute_ha1("SHA-256", ext, "oldrealm", pw), 1234.0))
    db.execute("INSERT INTO registrations(aor, uri, contact, expires_at, q, call_id, cseq) "
               "VALUES ('sip:100@pbx.example.com', 'sip:100@10.0.0.1', '<sip:100@10.0.0.1>', "
               "9e12, 1.0, 'c', 1)")
    db.execute("INSERT INTO meta(key, value) VALUES ('secret:nonce', 'abcd')")
    db.close()


def test_v1_data_directory_upgrades(tmp_path: Path) -> None:
    _v1_database(tmp_path)
    s = Store(tmp_path, domain="pbx.example.com")
    assert s.schema_version == len(MIGRATIONS) >= 5
    (t,) = s.tenants()
    assert (t.name, t.domain, t.realm) == (DEFAULT_TENANT, "pbx.example.com", "oldrealm")
    assert t.language == "de"  # migration 5: an old tenant speaks German, as its users do
    users = s.users()
    assert [(u.extension, u.name, u.tenant_id) for u in users] == [("100", "Anna", t.id),
                                                                   ("205", "", t.id)]
    devices = {d.username: d for d in s.devices()}
    assert set(devices) == {"100", "205"}
    d = devices["100"]
    assert d.user_id == users[0].id and d.realm == "oldrealm"
    # The same HA1s: phones keep registering with their old passwords.
    assert d.credentials().ha1_for("MD5") == compute_ha1("MD5", "100", "oldrealm", "secret100")
    assert d.credentials().ha1_for("SHA-256") == compute_ha1("SHA-256", "100", "oldrealm",
                                                             "secret100")
    assert s.secret("nonce") == bytes.fromhex("abcd")
    assert [b.aor for b in s.load_bindings(now=0.0)] == ["sip:100@pbx.example.com"]
    assert s.integrity_ok()
    tables = {r[0] for r in s._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "users_v1" not in tables
    s.close()
    # Reopening migrates nothing again.
    s = Store(tmp_path, domain="other.example.com")
    assert len(s.users()) == 2 and s.tenants()[0].domain == "pbx.example.com"
    s.close()


def test_v1_without_domain_uses_the_realm(tmp_path: Path) -> None:
    _v1_database(tmp_path)
    s = Store(tmp_path)
    assert s.tenant(DEFAULT_TENANT).domain == "oldrealm"
    s.close()


def test_empty_v1_directory_makes_no_tenant(tmp_path: Path) -> None:
    path = tmp_path / "d"
    path.mkdir()
    db = sqlite3.connect(path / Store.FILENAME, isolation_level=None)
    first = MIGRATIONS[0]
    assert isinstance(first, str)
    db.executescript("BEGIN;" + first + ";PRAGMA user_version=1;COMMIT;")
    db.close()
    s = Store(path, domain="x.example")
    assert s.tenants() == [] and s.schema_version == len(MIGRATIONS)
    s.close()


def test_failed_migration_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _v1_database(tmp_path)
    import pbx.store.schema as store_mod

    ddl, _step = store_mod.MIGRATIONS[1]  # type: ignore[misc]

    def boom(db: sqlite3.Connection, ctx: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store_mod, "MIGRATIONS", (store_mod.MIGRATIONS[0], (ddl, boom)))
    with pytest.raises(RuntimeError):
        Store(tmp_path)
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 2  # still the v1 table
    db.close()
    monkeypatch.undo()
    s = Store(tmp_path, domain="pbx.example.com")  # and the real migration still works
    assert len(s.devices()) == 2
    s.close()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path, domain="pbx.example.com")
    s.add_tenant("acme", "acme.example.com", company="ACME GmbH", area_code="030",
                 main_number="030 1234560")
    return s


def test_tenants(store: Store) -> None:
    t = store.tenant("acme")
    assert (t.company, t.realm, t.area_code, t.main_number) == ("ACME GmbH", "acme.example.com",
                                                                  "30", "+49301234560")
    assert (t.ext_min_len, t.ext_max_len, t.country_code) == (3, 3, "49")
    assert t.dialplan.area_code == "30"
    with pytest.raises(StoreError, match="exists already"):
        store.add_tenant("acme", "other.example.com")
    with pytest.raises(StoreError, match="belongs to another tenant"):
        store.add_tenant("acme2", "ACME.example.com")
    for kwargs, match in [
        ({"name": "Bad Name", "domain": "b.example"}, "tenant name"),
        ({"name": "b", "domain": "b example"}, "domain"),
        ({"name": "b", "domain": "b.example", "country_code": "x"}, "country code"),
        ({"name": "b", "domain": "b.example", "ext_min_len": 9}, "between 2 and 8"),
        ({"name": "b", "domain": "b.example", "main_number": "hello"}, "not a telephone number"),
    ]:
        with pytest.raises(StoreError, match=match):
            store.add_tenant(**kwargs)  # type: ignore[arg-type]
    store.remove_tenant("acme")
    with pytest.raises(StoreError, match="no tenant acme"):
        store.tenant("acme")


def test_default_tenant_follows_the_domain(store: Store) -> None:
    t = store.ensure_default_tenant("pbx.example.com", "realm1")
    assert (t.name, t.domain, t.realm) == (DEFAULT_TENANT, "pbx.example.com", "realm1")
    t2 = store.ensure_default_tenant("10.0.0.5", "realm2")
    assert (t2.id, t2.domain, t2.realm) == (t.id, "10.0.0.5", "realm1")  # realm kept
    # A domain owned by another tenant is not taken over.
    assert store.ensure_default_tenant("acme.example.com", "r").domain == "10.0.0.5"


def test_users_in_tenants(store: Store) -> None:
    u = store.add_user("100", "devpass1", tenant="acme", name="Anna", email="anna@acme.example",
                       language="en", voicemail_pin="1234", mobile_number="0171 1234567",
                       remote_office_number="+49 89 123456", permission="international",
                       premium_allowed=True)
    assert (u.extension, u.email, u.language, u.mobile_number, u.remote_office_number) == (
        "100", "anna@acme.example", "en", "+491711234567", "+4989123456")
    assert u.permission is Permission.INTERNATIONAL and u.premium_allowed and u.has_voicemail_pin
    assert store.user("100", tenant="acme") == u
    (d,) = store.devices("acme")
    assert (d.username, d.realm, d.kind) == ("100", "acme.example.com", "softphone")
    assert store.check_voicemail_pin(u.id, "1234") and not store.check_voicemail_pin(u.id, "4321")
    raw = (Path(store.path)).read_bytes()
    assert b"devpass1" not in raw
    # The same extension in another tenant is another user; default tenant is created on demand.
    store.add_user("100", "pw100", "realmX")
    assert len(store.users()) == 2 and len(store.users("acme")) == 1
    with pytest.raises(StoreError, match="user 100 exists already"):
        store.add_user("100", tenant="acme")
    for kwargs, match in [
        ({"extension": "10"}, "must be 3 digits"),
        ({"extension": "1000"}, "must be 3 digits"),
        ({"extension": "110"}, "emergency"),
        ({"extension": "101", "email": "nope"}, "e-mail"),
        ({"extension": "101", "language": "fr"}, "language"),
        ({"extension": "101", "voicemail_pin": "12"}, "PIN"),
        ({"extension": "101", "permission": "galactic"}, "permission"),
        ({"extension": "101", "mobile_number": "call me"}, "mobile number"),
        ({"extension": "101", "device_kind": "fax"}, "device kind"),
        ({"extension": "101", "name": "a\x07b"}, "control characters"),
    ]:
        with pytest.raises(StoreError, match=match):
            store.add_user(tenant="acme", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="no tenant nope"):
        store.add_user("100", tenant="nope")


def test_update_user(store: Store) -> None:
    u = store.add_user("100", tenant="acme")
    assert u.permission is Permission.NATIONAL and not u.premium_allowed
    assert not u.has_voicemail_pin and store.devices("acme") == []
    u = store.update_user("100", tenant="acme", permission="internal", premium_allowed=True,
                          voicemail_pin="9876", mobile_number="01511234567", name="Ben")
    assert (u.permission, u.premium_allowed, u.mobile_number, u.name) == (
        Permission.INTERNAL, True, "+491511234567", "Ben")
    assert store.check_voicemail_pin(u.id, "9876")
    u = store.update_user("100", tenant="acme", voicemail_pin=None, mobile_number=None)
    assert not u.has_voicemail_pin and u.mobile_number is None
    with pytest.raises(StoreError, match="unknown user field"):
        store.update_user("100", tenant="acme", colour="blue")


def test_devices(store: Store) -> None:
    store.add_user("100", tenant="acme")
    d = store.add_device("100", "anna-desk", "pw-desk", tenant="acme", kind="desk")
    m = store.add_device("100", "anna-mobile", "pw-mob", tenant="acme", kind="mobile")
    assert (d.kind, d.mobile, m.kind, m.mobile) == ("desk", False, "mobile", True)
    assert d.credentials().ha1_for("MD5") == compute_ha1("MD5", "anna-desk", "acme.example.com",
                                                         "pw-desk")
    with pytest.raises(StoreError, match="exists already"):
        store.add_device("100", "anna-desk", "pw2x", tenant="acme")
    with pytest.raises(StoreError, match="username"):
        store.add_device("100", "anna desk", "pw2x", tenant="acme")
    with pytest.raises(StoreError, match="no user 101"):
        store.add_device("101", "x", "pw2x", tenant="acme")
    d2 = store.set_device_password("anna-desk", "newpass", tenant="acme")
    assert d2.ha1_md5 == compute_ha1("MD5", "anna-desk", "acme.example.com", "newpass")
    store.remove_device("anna-desk", tenant="acme")
    assert [x.username for x in store.devices("acme")] == ["anna-mobile"]
    with pytest.raises(StoreError, match="no device anna-desk"):
        store.remove_device("anna-desk", tenant="acme")
    store.remove_user("100", tenant="acme")
    assert store.devices() == []  # devices go with their user


def test_numbers(store: Store) -> None:
    u = store.add_user("100", tenant="acme")
    n = store.add_number("030 1234561", tenant="acme", user="100")
    assert (n.e164, n.owner_kind, n.user_id) == ("+49301234561", "user", u.id)
    g = store.add_number("+49 30 1234562", tenant="acme", group="sales")
    c = store.add_number("1234563", tenant="acme")  # local: the tenant's area code
    assert (g.owner_kind, g.group_name, c.owner_kind, c.e164) == ("group", "sales", "company",
                                                                   "+49301234563")
    with pytest.raises(StoreError, match="assigned already"):
        store.add_number("+49301234561", tenant="acme")
    with pytest.raises(StoreError, match="not a telephone number"):
        store.add_number("12", tenant="acme")
    with pytest.raises(StoreError, match="not both"):
        store.add_number("+49301234569", tenant="acme", user="100", group="x")
    assert [x.e164 for x in store.numbers("acme")] == ["+49301234561", "+49301234562",
                                                       "+49301234563"]
    store.remove_number("+49301234563", tenant="acme")
    with pytest.raises(StoreError, match="no number"):
        store.remove_number("+49301234563", tenant="acme")
    store.remove_user("100", tenant="acme")
    assert [x.e164 for x in store.numbers()] == ["+49301234562"]


def test_trunks(store: Store) -> None:
    tr = store.add_trunk("carrier", tenant="acme", kind="register", host="sip.carrier.example",
                         username="acct", password="s3cret", realm="carrier", trusted=True)
    assert (tr.kind, tr.port, tr.transport, tr.trusted, tr.register_expiry) == (
        "register", 5060, "udp", True, 600)
    ip = store.add_trunk("pbxnet", tenant="acme", kind="ip", host="127.0.0.3",
                         allowed_sources=["127.0.0.3", "udp:10.1.0.0/16:5060", "[::1]:5060"])
    assert ip.allowed_sources == ("127.0.0.3", "udp:10.1.0.0/16:5060", "[::1]:5060")
    assert [t.name for t in store.trunks("acme")] == ["carrier", "pbxnet"]
    assert store.trunks("acme")[0].password == "s3cret"
    for kwargs, match in [
        ({"name": "x", "kind": "sms", "host": "h"}, "trunk kind"),
        ({"name": "x", "kind": "register", "host": "h"}, "needs --username"),
        ({"name": "x", "kind": "ip", "host": "carrier..example"}, "trunk host 'carrier..ex"),
        ({"name": "x", "kind": "ip", "host": "1.2.3.4", "allowed_sources": ["a.b"]}, "not an IP"),
        ({"name": "x", "kind": "ip", "host": "1.2.3.4", "port": 0}, "port"),
        ({"name": "x", "kind": "ip", "host": "1.2.3.4", "transport": "sctp"}, "transport"),
        ({"name": "carrier", "kind": "ip", "host": "1.2.3.4"}, "exists already"),
    ]:
        with pytest.raises(StoreError, match=match):
            store.add_trunk(tenant="acme", **kwargs)  # type: ignore[arg-type]
    store.remove_trunk("carrier", tenant="acme")
    assert [t.name for t in store.trunks()] == ["pbxnet"]


def test_ip_trunk_by_dns_name_needs_no_allow(store: Store) -> None:
    """TrunkManager resolves a named host and knows the trunk by its addresses: --allow is
    optional; an address literal works as before (its address is the source)."""
    named = store.add_trunk("sbc", tenant="acme", kind="ip", host="sbc.carrier.example")
    assert (named.host, named.allowed_sources) == ("sbc.carrier.example", ())
    fqdn = store.add_trunk("fqdn", tenant="acme", kind="ip", host="sbc.carrier.example.")
    single = store.add_trunk("lan", tenant="acme", kind="ip", host="localhost")
    v4 = store.add_trunk("v4", tenant="acme", kind="ip", host="192.0.2.7")
    v6 = store.add_trunk("v6", tenant="acme", kind="ip", host="[2001:db8::7]")
    bare6 = store.add_trunk("bare6", tenant="acme", kind="ip", host="2001:db8::8")
    assert [t.host for t in (fqdn, single, v4, v6, bare6)] == [
        "sbc.carrier.example.", "localhost", "192.0.2.7", "[2001:db8::7]", "2001:db8::8"]
    stored = {t.name: t for t in store.trunks("acme")}
    assert stored["sbc"].host == "sbc.carrier.example" and stored["sbc"].allowed_sources == ()

    from pbx.trunks import TrunkConfig

    # What the server builds from the rows: the name waits for DNS, the literal is its source.
    config = TrunkConfig.from_store(stored["sbc"], tenant="acme")
    assert config.named and config.addresses == ()
    literal = TrunkConfig.from_store(stored["v4"], tenant="acme")
    assert not literal.named and [str(r.network) for r in literal.sources] == ["192.0.2.7/32"]


@pytest.mark.parametrize(("host", "why"), [
    ("1.2.3.999", "last label '999' must begin with a letter"),
    ("10.0.0", "last label '0' must begin with a letter"),
    ("carrier..example", "empty label"),
    (".carrier.example", "empty label"),
    ("-sbc.example", "label '-sbc'"),
    ("sbc-.example", "label 'sbc-'"),
    ("sbc_1.example", "label 'sbc_1'"),
    ("x" * 64 + ".example", "label 'xxxx"),
    (("a" * 60 + ".") * 5 + "com", "longer than 253"),
    ("sbc.example:5060", "port goes in the port field (--port)"),
    ("2001:db8::zz", "not a valid IPv6 address"),
    ("[2001:db8::1", "not a valid IPv6 address"),
    ("[192.0.2.7]", "only IPv6 addresses are written in brackets"),
    ("fe80::1%eth0", "zone index"),
    (".", "empty"),
])
def test_trunk_host_neither_address_nor_name_is_refused(store: Store, host: str,
                                                        why: str) -> None:
    for kind, username in (("ip", ""), ("register", "u")):
        with pytest.raises(StoreError) as caught:
            store.add_trunk("x", tenant="acme", kind=kind, host=host, username=username,
                            password=username)
        message = str(caught.value)
        assert message.startswith(f"trunk host {host!r} is neither an IP address nor a DNS "
                                  "name: "), message
        assert why in message, message
    assert store.trunks("acme") == []


SCHEMA = {
    "enabled": Setting(bool, False),
    "rings": Setting(int, 4, minimum=1, maximum=20),
    "target": Setting(str, "", max_length=32),
    "mode": Setting(str, "always", choices=("always", "busy")),
    "targets": Setting(list, []),
}


def test_feature_settings(store: Store) -> None:
    u = store.add_user("100", tenant="acme")
    assert store.feature_settings(u.id, "forwarding", SCHEMA) == {
        "enabled": False, "rings": 4, "target": "", "mode": "always", "targets": []}
    got = store.set_feature_settings(u.id, "forwarding", SCHEMA, {"enabled": True, "rings": 6})
    assert got["enabled"] is True and got["rings"] == 6
    got = store.set_feature_settings(u.id, "forwarding", SCHEMA, {"targets": ["101", "102"]})
    assert got["rings"] == 6 and got["targets"] == ["101", "102"]  # earlier values kept
    assert store.feature_settings(u.id, "forwarding", SCHEMA) == got
    for value, match in [
        ({"rings": 0}, "forwarding.rings: must be at least 1"),
        ({"rings": "4"}, "forwarding.rings: must be a number"),
        ({"rings": 4.5}, "forwarding.rings: must be a whole number"),
        ({"rings": True}, "must be a number"),
        ({"enabled": 1}, "must be true or false"),
        ({"mode": "never"}, "not one of"),
        ({"target": "x" * 33}, "longer than 32"),
        ({"targets": [1]}, "strings"),
        ({"colour": "red"}, "unknown setting"),
    ]:
        with pytest.raises(StoreError, match=match):
            store.set_feature_settings(u.id, "forwarding", SCHEMA, value)
    with pytest.raises(StoreError, match="no user"):
        store.set_feature_settings(99999, "forwarding", SCHEMA, {"rings": 5})
    assert store.feature_settings(u.id, "forwarding", SCHEMA)["rings"] == 6
    assert store.all_feature_settings()[(u.id, "forwarding")]["rings"] == 6
    assert validate_settings("f", {"x": Setting(float, 1.0)}, {"x": 2}) == {"x": 2.0}


def test_history(store: Store) -> None:
    u = store.add_user("100", tenant="acme")
    answered = store.history_start(u.id, "call-1", "in", "Ben", "+49301111", started_at=100.0)
    store.history_answered(answered, 105.0)
    store.history_answered(answered, 107.0)  # a second answer does not move the first
    e = store.history_end(answered, 165.0)
    assert e is not None and (e.duration, e.missed, e.answered_at) == (60.0, False, 105.0)
    missed = store.history_start(u.id, "call-2", "in", "", "+49302222", started_at=200.0)
    e = store.history_end(missed, 230.0)
    assert e is not None and (e.duration, e.missed) == (0.0, True)
    out = store.history_start(u.id, "call-3", "out", "", "+49303333", started_at=300.0)
    e = store.history_end(out, 310.0)
    assert e is not None and (e.duration, e.missed) == (0.0, False)  # unanswered, not missed
    assert store.history_end(out, 999.0).ended_at == 310.0  # type: ignore[union-attr]
    running = store.history_start(u.id, "call-4", "in", "", "+49304444", started_at=400.0)
    assert [h.call_id for h in store.history(u.id)] == ["call-4", "call-3", "call-2", "call-1"]
    assert store.history(u.id)[0].ended_at is None
    assert store.history_close_unfinished(now=500.0) == 1
    assert store.history(u.id)[0].ended_at == 500.0 and store.history(u.id)[0].missed
    with pytest.raises(StoreError, match="direction"):
        store.history_start(u.id, "c", "sideways", "", "", 1.0)
    other = store.add_user("101", tenant="acme")
    assert not store.history_delete(other.id, answered)  # not theirs
    assert store.history_delete(u.id, answered)
    assert not store.history_delete(u.id, answered)
    assert store.history_end(running, 600.0) is not None
    assert store.history_clear(u.id) == 3 and store.history(u.id) == []


def test_history_survives_reopen(tmp_path: Path) -> None:
    s = Store(tmp_path, domain="d.example")
    u = s.add_user("100", "pw100", "r")
    entry = s.history_start(u.id, "c1", "out", "Eva", "+4930555", 1.0)
    s.close()
    s = Store(tmp_path)
    (h,) = s.history(u.id)
    assert (h.id, h.other_name, h.other_number, h.ended_at) == (entry, "Eva", "+4930555", None)
    s.close()


def test_pin_hashing() -> None:
    h = hash_pin("4711")
    assert "4711" not in h and h != hash_pin("4711")  # salted
    assert check_pin(h, "4711") and not check_pin(h, "4712")
    assert not check_pin("garbage", "4711") and not check_pin("md5$1$2$3$ab$cd", "4711")


def test_listeners_hear_configuration_changes_only(store: Store) -> None:
    heard: list[str] = []
    store.add_listener(heard.append)
    u = store.add_user("100", "pw100", tenant="acme")
    store.add_device("100", "dev2", "pw-dev2", tenant="acme")
    store.add_number("+49301234561", tenant="acme", user="100")
    store.add_trunk("t", tenant="acme", kind="ip", host="127.0.0.3")
    store.set_feature_settings(u.id, "dnd", {"on": Setting(bool, False)},
                               {"on": True})
    store.history_start(u.id, "c", "in", "", "", 1.0)
    store.save_bindings([], [])
    assert heard == ["users", "devices", "numbers", "trunks", "feature_settings"]


def test_a_tenants_language_is_its_new_users_default(tmp_path: Path) -> None:
    s = Store(tmp_path, domain="pbx.example.com")
    s.add_tenant("acme", "acme.example.com", language="en")
    assert s.tenant("acme").language == "en"
    assert s.add_user("100", "pw-100-secret", tenant="acme").language == "en"
    assert s.add_user("101", "pw-101-secret", tenant="acme", language="de").language == "de"
    with pytest.raises(StoreError, match="language"):
        s.add_tenant("bad", "bad.example.com", language="fr")
    s.close()
