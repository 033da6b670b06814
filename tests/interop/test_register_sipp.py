"""SIPp drives `asyncpbx serve`: REGISTER with digest over UDP, TCP and TLS; OPTIONS; wrong
passwords; queries; unregistration; expiry; restart; and a load of thousands of registrations."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.interop.harness import running_pbx, sipp, stunnel_client, users_csv

pytestmark = pytest.mark.interop

USERS = [("100", "pw-100-secret"), ("101", "pw-101-secret")]


def _added(pbx: object, ext: str) -> list[dict[str, object]]:
    return [e for e in pbx.log_events()  # type: ignore[attr-defined]
            if e.get("event") == "sip.register.added" and str(e.get("aor", "")).startswith(f"sip:{ext}@")]


def test_register_with_digest_over_udp_tcp_and_tls(tmp_path: Path) -> None:
    with running_pbx(tmp_path, transports=("udp", "tcp", "tls"), users=USERS) as pbx:
        inf = users_csv(tmp_path / "u.csv", USERS[:1])
        r = sipp("register_auth.xml", pbx.addr("udp"), tmp_path, transport="u1", inf=inf)
        assert (r.returncode, r.successful, r.failed) == (0, 1, 0), r.output
        r = sipp("register_auth.xml", pbx.addr("tcp"), tmp_path, transport="t1", inf=inf)
        assert (r.returncode, r.successful, r.failed) == (0, 1, 0), r.output
        with stunnel_client(tmp_path, pbx.addr("tls")) as tunnel:
            r = sipp("register_auth.xml", tunnel, tmp_path, transport="t1", inf=inf)
        assert (r.returncode, r.successful, r.failed) == (0, 1, 0), r.output
        added = _added(pbx, "100")
        assert len(added) == 3, added  # three contacts (three SIPp local ports) bound


def test_wrong_password_is_challenged_again_and_never_registers(tmp_path: Path) -> None:
    with running_pbx(tmp_path, users=USERS) as pbx:
        inf = users_csv(tmp_path / "u.csv", USERS[:1], auth_password="not-the-password")
        r = sipp("register_wrong_password.xml", pbx.addr("udp"), tmp_path, inf=inf)
        assert (r.returncode, r.successful, r.failed) == (0, 1, 0), r.output
        assert _added(pbx, "100") == []
        failures = [e for e in pbx.log_events() if e.get("event") == "security.auth.failed"]
        assert len(failures) == 1 and failures[0]["src"] == "127.0.0.1", failures


def test_options_answered_over_udp_and_tcp(tmp_path: Path) -> None:
    with running_pbx(tmp_path) as pbx:
        for transport, flag in (("udp", "u1"), ("tcp", "t1")):
            r = sipp("options.xml", pbx.addr(transport), tmp_path, transport=flag)
            assert (r.returncode, r.successful) == (0, 1), r.output


def test_query_unregister_and_expiry(tmp_path: Path) -> None:
    extra = "min_expires = 1\ndefault_expires = 60\n"
    with running_pbx(tmp_path, users=USERS, config_extra=extra) as pbx:
        addr = pbx.addr("udp")
        inf = users_csv(tmp_path / "q.csv", USERS[:1], "sip:100@")
        r = sipp("register_auth.xml", addr, tmp_path, inf=users_csv(tmp_path / "u.csv", USERS[:1]))
        assert r.returncode == 0, r.output
        r = sipp("register_query.xml", addr, tmp_path, inf=inf)
        assert (r.returncode, r.successful) == (0, 1), r.output
        r = sipp("unregister_all.xml", addr, tmp_path, inf=users_csv(tmp_path / "u.csv", USERS[:1]))
        assert (r.returncode, r.successful) == (0, 1), r.output
        removed = [e for e in pbx.log_events() if e.get("event") == "sip.register.removed"]
        assert [e["reason"] for e in removed] == ["unregistered"], removed
        # A binding of 2 s expires on time: gone from the log within a few housekeeping rounds.
        r = sipp("register_expires.xml", addr, tmp_path,
                 inf=users_csv(tmp_path / "e.csv", USERS[1:2], "2"))
        assert r.returncode == 0, r.output
        deadline = time.monotonic() + 10
        expired: list[dict[str, object]] = []
        while time.monotonic() < deadline and not expired:
            time.sleep(0.25)
            expired = [e for e in pbx.log_events() if e.get("event") == "sip.register.removed"
                       and e.get("reason") == "expired"]
        assert expired and str(expired[0]["aor"]).startswith("sip:101@"), expired
        # and the query no longer shows it (Contact header absent: regexp must not match)
        r = sipp("register_query.xml", addr, tmp_path,
                 inf=users_csv(tmp_path / "q2.csv", USERS[1:2], "sip:"))
        assert r.failed == 1, "expired binding still listed: " + r.output


def test_registrations_survive_a_restart(tmp_path: Path) -> None:
    with running_pbx(tmp_path, users=USERS) as pbx:
        r = sipp("register_auth.xml", pbx.addr("udp"), tmp_path,
                 inf=users_csv(tmp_path / "u.csv", USERS))
        assert r.returncode == 0, r.output
    # SIGTERM flushed the write-behind; a new process restores from the store.
    with running_pbx(tmp_path, users=()) as pbx:
        started = [e for e in pbx.log_events() if e.get("event") == "server.started"]
        assert started[-1]["registrations_restored"] == 1, started
        r = sipp("register_query.xml", pbx.addr("udp"), tmp_path,
                 inf=users_csv(tmp_path / "q.csv", USERS[:1], "sip:100@127.0.0.1"))
        assert (r.returncode, r.successful) == (0, 1), r.output


@pytest.mark.slow
def test_register_load_thousands_without_failure(tmp_path: Path) -> None:
    users = [(str(2000 + i), f"pw{i:05d}x") for i in range(3000)]
    with running_pbx(tmp_path, users=users, config_extra='[log]\nlevel = "warning"\n') as pbx:
        r = sipp("register_auth.xml", pbx.addr("udp"), tmp_path,
                 inf=users_csv(tmp_path / "load.csv", users), calls=len(users), rate=600,
                 limit=400, timeout=120)
        assert r.successful == len(users) and r.failed == 0, r.output
        assert r.returncode == 0
