"""The `asyncpbx` command line: clear one-line errors, users, and serve's start-up checks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pbx.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_user_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert main(["user", "add", "100", "--password", "s3cret", "--name", "Anna", "--data-dir", d]) == 0
    assert main(["user", "add", "101", "--password", "s3cret", "--data-dir", d]) == 0
    capsys.readouterr()
    assert main(["user", "list", "--data-dir", d]) == 0
    assert capsys.readouterr().out.splitlines() == ["100\tAnna\tnational\t1 device(s)",
                                                    "101\t\tnational\t1 device(s)"]
    assert main(["user", "remove", "101", "--data-dir", d]) == 0
    assert main(["user", "remove", "101", "--data-dir", d]) == 2
    assert "no user 101" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["user", "add", "1", "--password", "s3cret"], "extension '1' must be 2 to 8 digits"),
        (["user", "add", "100", "--password", "x"], "at least 4"),
    ],
)
def test_user_add_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                         message: str) -> None:
    assert main([*args, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_duplicate_user(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["user", "add", "100", "--password", "s3cret", "--data-dir", str(tmp_path)]) == 0
    assert main(["user", "add", "100", "--password", "s3cret", "--data-dir", str(tmp_path)]) == 2
    assert "exists already" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[sip]\nlisten = ["udp:127.0.0.1:0"]\nbogus = 1\n', "sip.bogus"),
        ('[sip]\nlisten = ["carrier-pigeon:127.0.0.1:0"]\n', "sip.listen[0]"),
        ('[tls]\ncert = "/nonexistent.pem"\n', "tls.key"),
        ('[sip]\nlisten = ["tls:127.0.0.1:0"]\n[tls]\ncert = "/nonexistent.pem"\nkey = "/x.key"\n',
         "tls.cert"),
    ],
)
def test_serve_refuses_bad_config_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    proc = subprocess.run(
        [sys.executable, "-m", "pbx", "serve", "--config", str(cfg), "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"configuration error: {key}: " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_reports_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[sip]\nlisten = ["udp:127.0.0.1:{port}"]\n')
        proc = subprocess.run(
            [sys.executable, "-m", "pbx", "serve", "--config", str(cfg), "--data-dir",
             str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr


def _run(capsys: pytest.CaptureFixture[str], d: str, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--data-dir", d])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_single_company_shortcut_makes_a_device(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from pbx.store import Store
    from sipcore.digest import compute_ha1

    d = str(tmp_path)
    code, out, _ = _run(capsys, d, "user", "add", "100", "--password", "pw100")
    assert code == 0 and "tenant default" in out and "SIP device 100" in out
    s = Store(d)
    (t,) = s.tenants()
    (dev,) = s.devices()
    assert (t.name, t.domain, dev.username, dev.realm) == ("default", "127.0.0.1", "100",
                                                          "127.0.0.1")
    assert dev.ha1_md5 == compute_ha1("MD5", "100", "127.0.0.1", "pw100")
    s.close()


def test_tenants_users_devices_numbers_trunks(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    ok = [
        ("tenant", "add", "acme", "--domain", "acme.example.com", "--company", "ACME GmbH",
         "--area-code", "30", "--extension-length", "3"),
        ("user", "add", "100", "--tenant", "acme", "--name", "Anna", "--permission",
         "international", "--premium", "--pin", "1234", "--mobile", "0171 1234567"),
        ("device", "add", "100", "--tenant", "acme", "--username", "anna-desk", "--password",
         "deskpw", "--kind", "desk"),
        ("number", "add", "+4930123456", "--user", "100", "--tenant", "acme"),
        ("number", "add", "030 123457", "--company", "--tenant", "acme"),
        ("trunk", "add", "carrier", "--tenant", "acme", "--kind", "ip", "--host", "127.0.0.3",
         "--trusted"),
    ]
    for args in ok:
        code, _out, err = _run(capsys, d, *args)
        assert code == 0, (args, err)
    code, out, _ = _run(capsys, d, "device", "add", "100", "--tenant", "acme", "--username", "anna-soft")
    assert code == 0 and "password " in out  # generated and shown once
    listings = {
        ("tenant", "list"): ["acme\tacme.example.com\tACME GmbH\text 3\t+49 30\t\tde"],
        ("user", "list", "--tenant", "acme"): ["100\tAnna\tinternational+premium\t2 device(s)"],
        ("device", "list", "--tenant", "acme"): [
            "anna-desk\t100\tdesk\tacme.example.com", "anna-soft\t100\tsoftphone\tacme.example.com"],
        ("number", "list", "--tenant", "acme"): ["+4930123456\tuser\t100", "+4930123457\tcompany"],
        ("trunk", "list", "--tenant", "acme"): ["carrier\tip\tudp:127.0.0.3:5060\ttrusted"],
    }
    for args, lines in listings.items():
        code, out, _ = _run(capsys, d, *args)
        assert code == 0 and out.splitlines() == lines, args
    for args in [("trunk", "remove", "carrier"), ("number", "remove", "+4930123457"),
                 ("device", "remove", "anna-soft"), ("user", "remove", "100")]:
        code, out, err = _run(capsys, d, *args, "--tenant", "acme")
        assert code == 0 and out.startswith("removed"), err
    code, out, _ = _run(capsys, d, "tenant", "remove", "acme")
    assert code == 0
    code, out, _ = _run(capsys, d, "tenant", "list")
    assert out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tenant", "add", "Acme", "--domain", "a.example"], "tenant name 'Acme'"),
        (["tenant", "add", "acme"], "the following arguments are required: --domain"),
        (["tenant", "add", "acme", "--domain", "a.example", "--extension-length", "9"],
         "argument --extension-length: '9' is not N or N-M"),
        (["tenant", "add", "acme", "--domain", "a.example", "--main-number", "abc"],
         "main number 'abc' is not a telephone number"),
        (["tenant", "remove", "nope"], "no tenant nope"),
        (["user", "add", "100", "--tenant", "nope"], "no tenant nope"),
        (["user", "add", "100", "--password", "pw100", "--permission", "galaxy"],
         "argument --permission: invalid choice"),
        (["user", "add", "100", "--password", "pw100", "--pin", "12"], "voicemail PIN"),
        (["user", "add", "100", "--password", "pw100", "--email", "x"], "e-mail address"),
        (["user", "add", "112", "--password", "pw100"], "emergency number"),
        (["user", "remove", "100"], "no default tenant"),
        (["device", "add", "100", "--username", "x"], "no default tenant"),
        (["device", "add", "100"], "required: --username"),
        (["number", "add", "+4930123456"], "one of the arguments --user --group --company"),
        (["number", "add", "+4930123456", "--user", "1", "--group", "g"], "not allowed with"),
        (["trunk", "add", "t", "--kind", "ip"], "required: --host"),
        (["trunk", "add", "t", "--kind", "sms", "--host", "h"], "invalid choice: 'sms'"),
        (["trunk", "add", "t", "--kind", "ip", "--host", "h", "--port", "x"], "invalid int"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["user", "frobnicate"], "argument ACTION: invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      args: list[str], message: str) -> None:
    assert main([*args, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_store_errors_after_the_default_tenant_exists(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert main(["user", "add", "100", "--password", "pw100", "--data-dir", d]) == 0
    for args, message in [
        (["number", "add", "12", "--company"], "number '12' is not a telephone number"),
        (["number", "add", "+4930123456", "--user", "101"], "no user 101"),
        (["trunk", "add", "t", "--kind", "ip", "--host", "carrier_1.example"],
         "trunk host 'carrier_1.example' is neither an IP address nor a DNS name"),
        (["trunk", "add", "t", "--kind", "ip", "--host", "10.0.0.256"],
         "trunk host '10.0.0.256' is neither an IP address nor a DNS name"),
        (["trunk", "add", "t", "--kind", "register", "--host", "c.example"], "needs --username"),
        (["device", "add", "100", "--username", "100", "--password", "pw1234"], "exists already"),
        (["device", "remove", "nope"], "no device nope"),
    ]:
        capsys.readouterr()
        assert main([*args, "--data-dir", d]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_ip_trunk_with_a_dns_name_needs_no_allow(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The server resolves a named host (TrunkManager); the CLI no longer asks for --allow."""
    d = str(tmp_path)
    assert _run(capsys, d, "user", "add", "100", "--password", "pw100")[0] == 0
    code, out, err = _run(capsys, d, "trunk", "add", "sbc", "--kind", "ip", "--host",
                          "sbc.carrier.example", "--port", "5080")
    assert code == 0, err
    assert out.strip() == "added ip trunk sbc to udp:sbc.carrier.example:5080"
    code, out, err = _run(capsys, d, "trunk", "add", "lit", "--kind", "ip", "--host",
                          "192.0.2.7")
    assert code == 0, err
    code, out, _ = _run(capsys, d, "trunk", "list")
    assert out.splitlines() == ["lit\tip\tudp:192.0.2.7:5060\tuntrusted",
                                "sbc\tip\tudp:sbc.carrier.example:5080\tuntrusted"]
    code, out, _ = _run(capsys, d, "trunk", "add", "--help")
    assert code == 0 and "IP address or DNS name" in out


@pytest.mark.parametrize("command", ["tenant", "user", "device", "number", "trunk"])
@pytest.mark.parametrize("action", ["add", "list", "remove"])
def test_every_command_has_help(command: str, action: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, action, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: asyncpbx {command} {action}") and "--tenant" in out + (
        "--tenant" if command == "tenant" else "")


def test_demo_users_make_a_tenant_with_softphones(tmp_path: Path) -> None:
    from pbx.cli import demo_users
    from pbx.store import Store

    s = Store(tmp_path)
    made = demo_users(s, "realm.example", "pbx.example.com")
    assert [m[0] for m in made] == ["100", "101", "102", "103"]
    assert s.tenants()[0].domain == "pbx.example.com"
    devices = s.devices()
    assert [(d.username, d.kind, d.realm) for d in devices] == [
        (e, "softphone", "realm.example") for e in ("100", "101", "102", "103")]
    assert demo_users(s, "realm.example") == []  # only when there are no users
    s.close()


def test_serve_demo_prints_credentials_of_working_devices(tmp_path: Path) -> None:
    import signal

    from pbx.store import Store
    from sipcore.digest import compute_ha1

    cfg = tmp_path / "c.toml"
    cfg.write_text('[sip]\nlisten = ["udp:127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n')

    def start() -> str:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pbx", "serve", "--demo", "--config", str(cfg), "--data-dir",
             str(tmp_path / "data")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if line.strip() == "ready":
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        return "\n".join(lines)

    text = start()
    assert "listening udp 127.0.0.1 " in text and "listening http 127.0.0.1 " in text, text
    creds = re.findall(r"^  (\d+)  password (\S+)  \((.+)\)$", text, re.M)
    assert [c[0] for c in creds] == ["100", "101", "102", "103"], text
    s = Store(tmp_path / "data")
    devices = {d.username: d for d in s.devices()}
    for ext, password, _name in creds:
        d = devices[ext]
        assert d.kind == "softphone"
        assert d.ha1_md5 == compute_ha1("MD5", ext, "127.0.0.1", password)
    assert s.tenants()[0].name == "default"
    s.close()
    # a second start: the users are named, no password is printed again
    again = start()
    assert "users: 100, 101, 102, 103 (their passwords were printed" in again, again
    assert not re.findall(r"password \S+  \(", again), again
