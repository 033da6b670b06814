"""/health over real HTTP on loopback (aiohttp client), and the [http] listen syntax."""

from __future__ import annotations

import socket
import time

import aiohttp
import pytest

from pbx.http import HttpService, parse_http_listen, start_http


async def test_health_reports_figures_and_uptime() -> None:
    figures = {"registrations": 3, "active_calls": 1}
    service = await start_http("127.0.0.1:0", lambda: figures, started=time.monotonic() - 42)
    assert service is not None
    try:
        assert service.host == "127.0.0.1" and service.port > 0
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{service.port}/health"
            async with http.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("application/json")
                assert resp.headers["Cache-Control"] == "no-store"
                body = await resp.json()
            assert body["status"] == "ok"
            assert (body["registrations"], body["active_calls"]) == (3, 1)
            assert 42 <= body["uptime"] < 3600
            figures["registrations"] = 7  # live figures, not a snapshot taken at start
            async with http.get(url) as resp:
                assert (await resp.json())["registrations"] == 7
            async with http.get(f"http://127.0.0.1:{service.port}/nope") as resp:
                assert resp.status == 404
            async with http.post(url) as resp:
                assert resp.status == 405
    finally:
        await service.close()


async def test_health_says_error_when_figures_fail() -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("registrar gone")

    service = HttpService(broken)
    _host, port = await service.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{port}/health") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["status"] == "error" and body["error"] == "RuntimeError"
    finally:
        await service.close()


async def test_port_in_use_raises_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = HttpService(lambda: {})
        with pytest.raises(OSError):
            await service.start("127.0.0.1", port)
        await service.close()


async def test_empty_listen_means_no_http() -> None:
    assert await start_http("", lambda: {}) is None


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:0", ("::1", 0)),
     ("localhost:80", ("localhost", 80)), ("", None), ("  ", None)],
)
def test_parse_listen(text: str, parsed: tuple[str, int] | None) -> None:
    assert parse_http_listen(text) == parsed


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":80",
                                  "::1:80", "[::1]80", "a b:80"])
def test_parse_listen_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_http_listen(text)


async def test_serve_prints_http_and_answers_health(tmp_path: object) -> None:
    """The real server: ``listening http HOST PORT`` in the banner, /health live."""
    from pathlib import Path

    from tests.interop.harness import running_pbx

    assert isinstance(tmp_path, Path)
    with running_pbx(tmp_path, transports=("udp",), users=[("100", "pw100")],
                     config_extra='[http]\nlisten = "127.0.0.1:0"\n') as pbx:
        host, port = pbx.addr("http")
        assert host == "127.0.0.1" and port > 0
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://{host}:{port}/health") as resp:
            body = await resp.json()
    assert resp.status == 200 and body["status"] == "ok"
    assert (body["registrations"], body["active_calls"]) == (0, 0)


async def _get_health(service: HttpService) -> dict[str, object]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{service.port}/health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert isinstance(body, dict)
    return body


async def test_health_trunk_entries_carry_dns_fields_and_nothing_secret() -> None:
    """A named trunk's addresses, dns_error and next_resolve reach /health; fields outside
    TRUNK_FIELDS (password, username, host, anything new) stay inside."""
    entry = {"name": "carrier", "tenant": "acme", "kind": "register", "state": "registered",
             "host": "sip.carrier.test", "addresses": ["192.0.2.7", "2001:db8::7"],
             "dns_error": "cannot resolve sip.carrier.test: timed out", "next_resolve": 42,
             "password": "s3cret", "username": "4930111", "secret_sauce": "x"}
    service = await start_http("127.0.0.1:0", lambda: {"trunks": [entry]})
    assert service is not None
    try:
        body = await _get_health(service)
    finally:
        await service.close()
    trunks = body["trunks"]
    assert isinstance(trunks, list) and len(trunks) == 1
    shown = trunks[0]
    assert shown["addresses"] == ["192.0.2.7", "2001:db8::7"]
    assert shown["dns_error"] == "cannot resolve sip.carrier.test: timed out"
    assert shown["next_resolve"] == 42
    assert set(shown) == {"name", "tenant", "kind", "state", "addresses", "dns_error",
                          "next_resolve"}
    assert "s3cret" not in str(body) and "4930111" not in str(body)


async def test_health_shows_an_unresolved_named_trunk_from_the_manager() -> None:
    """TrunkManager.health_list() of a name that does not resolve, through /health."""
    from tests.pbx.test_trunks_dns import FakeResolver, named
    from tests.pbx.test_trunks_manager import manager_for, until

    resolver = FakeResolver()  # knows no names: every query fails
    async with manager_for(named(kind="ip"), resolver=resolver, resolve_retry=30.0,
                           resolve_interval=300.0) as (manager, _):
        await until(lambda: manager.states().get("carrier") == "failed")
        service = await start_http("127.0.0.1:0", lambda: {"trunks": manager.health_list()})
        assert service is not None
        try:
            body = await _get_health(service)
        finally:
            await service.close()
    trunks = body["trunks"]
    assert isinstance(trunks, list)
    (shown,) = trunks
    assert shown["state"] == "failed" and shown["addresses"] == []
    assert str(shown["dns_error"]).startswith("cannot resolve sip.carrier.test: ")
    assert 0 < int(shown["next_resolve"]) <= 30
    assert "s3cret" not in str(body)


async def test_unparseable_request_is_400_and_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    """A NUL in a header (schemathesis probes this): 400, logged as one line, no traceback."""
    import asyncio
    import logging

    service = HttpService(lambda: {})
    _host, port = await service.start("127.0.0.1", 0)
    try:
        with caplog.at_level(logging.WARNING, logger="aiohttp.server"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: \x00\r\n\r\n")
            await writer.drain()
            answer = await reader.read(100)
            writer.close()
    finally:
        await service.close()
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records and all(r.exc_info is None for r in records)
    assert "BadHttpMessage" in records[0].getMessage()
