"""Configuration: defaults, TOML, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.config import ConfigError, ListenSpec, load_config, parse_listen


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_embedded_default() -> None:
    c = load_config(None, environ={})
    assert [str(s) for s in c.sip.listen_specs()] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert c.domain == "127.0.0.1"
    assert c.data_dir == "asyncpbx-data"
    assert c.auth.algorithms == ("MD5",)
    assert c.auth.strict_digest_uri is False


def test_security_table() -> None:
    c = load_config(None, environ={})
    assert (c.security.failures, c.security.failure_window, c.security.requests,
            c.security.request_window, c.security.ban_time) == (5, 60.0, 16, 2.0, 300.0)
    env = {"ASYNCPBX_SECURITY_TRUSTED": "10.0.0.0/8, 192.0.2.1"}
    assert load_config(None, environ=env).security.trusted == ("10.0.0.0/8", "192.0.2.1")


def test_strict_digest_uri_from_toml_and_environment(tmp_path: Path) -> None:
    p = _write(tmp_path, "[auth]\nstrict_digest_uri = true\n")
    assert load_config(p, environ={}).auth.strict_digest_uri is True
    env = {"ASYNCPBX_AUTH_STRICT_DIGEST_URI": "1"}
    assert load_config(None, environ=env).auth.strict_digest_uri is True


def test_toml_file(tmp_path: Path) -> None:
    p = _write(tmp_path, '[sip]\nlisten = ["udp:127.0.0.1:5070", "tls:[::1]:5071", "ws:127.0.0.1:8088"]\n'
                         'domain = "pbx.example.com"\n[tls]\ncert = "a.pem"\nkey = "a.key"\n')
    c = load_config(p, environ={})
    assert c.sip.listen_specs()[1] == ListenSpec("tls", "::1", 5071)
    assert c.domain == "pbx.example.com" and c.realm == "pbx.example.com"
    assert c.tls.cert == "a.pem"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[sip]\nlistne = []\n", "sip.listne"),
        ("[sipp]\n", "sipp"),
        ('[sip]\nlisten = ["udp:127.0.0.1:5060", "sctp:1.2.3.4:5"]\n', "sip.listen[1]"),
        ('[sip]\nlisten = ["udp:127.0.0.1:99999"]\n', "sip.listen[0]"),
        ('[sip]\nlisten = ["udp:127.0.0.1"]\n', "sip.listen[0]"),
        ('[sip]\nlisten = "udp:127.0.0.1:5060"\n[sip.x]\n', "sip.x"),
        ("[sip]\nmin_expires = \"soon\"\n", "sip.min_expires"),
        ("[sip]\nmin_expires = 100\nmax_expires = 50\n", "sip.max_expires"),
        ("[sip]\nt1 = 0\n", "sip.t1"),
        ("[log]\nlevel = \"loud\"\n", "log.level"),
        ("[log]\njson = \"maybe\"\n", "log.json"),
        ('[auth]\nalgorithms = ["SHA-1"]\n', "auth.algorithms[0]"),
        ("[security]\nfailures = 0\n", "security.failures"),
        ("[security]\nrequest_window = 0\n", "security.request_window"),
        ("[security]\nban_time = -1\n", "security.ban_time"),
        ('[security]\ntrusted = ["10.0.0.0/8", "not-a-net"]\n', "security.trusted[1]"),
        ('[tls]\ncert = "x.pem"\n', "tls.key"),
        ('[sip]\ndomain = "a b"\n', "sip.domain"),
        ('[sip]\nadvertise = "a/b"\n', "sip.advertise"),
        ('[sip]\nlisten = ["udp:127.0.0.1:5060", "udp:127.0.0.1:5060"]\n', "sip.listen[1]"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    assert info.value.key == key, str(info.value)
    assert str(info.value).startswith(f"{key}: ")


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[sip\n"), environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "ASYNCPBX_SIP_LISTEN": "udp:127.0.0.2:5062, tcp:127.0.0.2:5062",
        "ASYNCPBX_SIP_MIN_EXPIRES": "30",
        "ASYNCPBX_LOG_JSON": "true",
        "ASYNCPBX_DATA_DIR": "/tmp/x",
    }
    c = load_config(_write(tmp_path, '[sip]\ndomain = "d.example"\n'), environ=env)
    assert c.sip.listen == ("udp:127.0.0.2:5062", "tcp:127.0.0.2:5062")
    assert c.sip.min_expires == 30 and c.log.json is True and c.data_dir == "/tmp/x"
    assert c.domain == "d.example"


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"ASYNCPBX_NOPE": "1"})
    assert info.value.key == "ASYNCPBX_NOPE"
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"ASYNCPBX_SIP_MIN_EXPIRES": "x"})
    assert info.value.key == "sip.min_expires"


@pytest.mark.parametrize("text", ["udp:[::1]:5060", "wss:127.0.0.1:0", "TCP:localhost:5060"])
def test_parse_listen_accepts(text: str) -> None:
    spec = parse_listen(text)
    assert spec.transport in ("udp", "wss", "tcp")
    assert parse_listen(str(spec)) == spec


@pytest.mark.parametrize("text", ["", "udp", "udp:", "udp:[::1:5060", "udp:1.2.3.4:-1", "x:1.2.3.4:1",
                                  "udp:a b:5"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(text)


def test_wildcard_listen_takes_the_advertised_host_as_domain() -> None:
    c = load_config(None, environ={"ASYNCPBX_SIP_LISTEN": "udp:0.0.0.0:5060",
                                   "ASYNCPBX_SIP_ADVERTISE": "198.51.100.7"})
    assert c.domain == "198.51.100.7" and c.realm == "198.51.100.7"


def test_http_listen(tmp_path: Path) -> None:
    assert load_config(None, environ={}).http.listen == "127.0.0.1:8080"
    c = load_config(_write(tmp_path, '[http]\nlisten = "127.0.0.1:0"\n'), environ={})
    assert c.http.listen == "127.0.0.1:0"
    assert load_config(None, environ={"ASYNCPBX_HTTP_LISTEN": ""}).http.listen == ""
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, '[http]\nlisten = "127.0.0.1"\n'), environ={})
    assert err.value.key == "http.listen"
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, '[http]\nport = 80\n'), environ={})
    assert err.value.key == "http.port"


def test_media_and_calls_defaults_and_file(tmp_path: Path) -> None:
    c = load_config(None, environ={})
    assert (c.media.host, c.media.port_min, c.media.port_max) == ("127.0.0.1", 40000, 44999)
    assert c.media.rtp_timeout == 60.0 and c.calls.ring_timeout == 20.0
    assert (c.calls.session_expires, c.calls.min_se) == (1800, 90)
    c = load_config(_write(tmp_path, "[media]\nport_min = 41000\nport_max = 41999\n"
                                     "rtp_timeout = 0\n[calls]\nring_timeout = 7.5\n"),
                    environ={"ASYNCPBX_CALLS_MIN_SE": "120"})
    assert (c.media.port_min, c.media.port_max, c.media.rtp_timeout) == (41000, 41999, 0.0)
    assert c.calls.ring_timeout == 7.5 and c.calls.min_se == 120


@pytest.mark.parametrize(("text", "key"), [
    ('[media]\nhost = "not-an-ip"\n', "media.host"),
    ("[media]\nport_min = 80\n", "media.port_min"),
    ("[media]\nport_min = 42000\nport_max = 41000\n", "media.port_max"),
    ("[media]\nrtp_timeout = -1\n", "media.rtp_timeout"),
    ('[media]\nmoh_file = "/nonexistent/moh.wav"\n', "media.moh_file"),
    ("[calls]\nring_timeout = 0\n", "calls.ring_timeout"),
    ("[calls]\nmin_se = 30\n", "calls.min_se"),
    ("[calls]\nsession_expires = 100\nmin_se = 120\n", "calls.session_expires"),
    ("[calls]\nbusy_tone = 99\n", "calls.busy_tone"),
    ('[calls]\ntones = "XX"\n', "calls.tones"),
    ("[calls]\nring_timout = 5\n", "calls.ring_timout"),
    ('[prompts]\ndefault_language = "fr"\n', "prompts.default_language"),
])
def test_media_and_calls_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text), environ={})
    assert err.value.key == key
