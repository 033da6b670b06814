"""sipsak and baresip register against `asyncpbx serve` (UDP, TCP, TLS); baresip stays
registered by refreshing; a WebSocket client registers over WS and WSS (RFC 7118)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from sipcore.digest import DigestClient
from sipcore.message import Request, Response, parse_message
from tests.interop.harness import free_port, need, running_pbx

pytestmark = pytest.mark.interop

USERS = [("100", "pw-100-secret"), ("101", "pw-101-secret"), ("102", "pw-102-secret")]


def _events(pbx: object, name: str) -> list[dict[str, object]]:
    return [e for e in pbx.log_events() if e.get("event") == name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_sipsak_registers(tmp_path: Path, transport: str) -> None:
    binary = need("sipsak")
    with running_pbx(tmp_path, transports=(transport,), users=USERS) as pbx:
        host, port = pbx.addr(transport)
        # -u: sipsak 0.9.8 derives the auth username "100@" from the URI; -x: its default
        # Expires of 15 s is below our min_expires (it would get 423, correctly).
        args = [binary, "-U", "-s", f"sip:100@{host}:{port}", "-u", "100", "-a", USERS[0][1],
                "-x", "300", "-vv",
                "--transport", transport, "-l", str(free_port(kind=socket.SOCK_DGRAM if transport == "udp"
                                              else socket.SOCK_STREAM))]
        if transport == "tls":
            args.append("--tls-ignore-cert-failure")
        proc = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=40)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert "successful" in out, out
        added = _events(pbx, "sip.register.added")
        assert added and added[0]["aor"] == "sip:100@127.0.0.1", added


def _baresip_dir(tmp: Path, account: str, listen_port: int) -> Path:
    d = tmp / "baresip"
    d.mkdir(exist_ok=True)
    (d / "accounts").write_text(account + "\n")
    (d / "config").write_text(
        "module_path /usr/lib/baresip/modules\n"
        f"sip_listen 127.0.0.1:{listen_port}\n"
        "sip_trans_def udp\n"
        "module account.so\n"
        "audio_player aufile,/dev/null\n"
        "audio_source aufile,/dev/null\n"
    )
    return d


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_baresip_registers_and_refreshes(tmp_path: Path, transport: str) -> None:
    binary = need("baresip")
    extra = 'min_expires = 4\n[log]\nlevel = "debug"\n'
    with running_pbx(tmp_path, transports=(transport,), users=USERS, config_extra=extra) as pbx:
        host, port = pbx.addr(transport)
        account = (f"<sip:101@{host}:{port};transport={transport}>;auth_pass={USERS[1][1]};"
                   "regint=6")
        d = _baresip_dir(tmp_path, account, 0)  # port 0: libre picks free UDP/TCP/TLS ports
        proc = subprocess.Popen([binary, "-f", str(d)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        try:
            deadline = time.monotonic() + 30
            refreshed: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                time.sleep(0.5)
                refreshed = _events(pbx, "sip.register.refreshed")
                if refreshed:
                    break
            added = _events(pbx, "sip.register.added")
        finally:
            proc.terminate()
            out = proc.communicate(timeout=10)[0]
        assert added and added[0]["aor"] == "sip:101@127.0.0.1", out[-3000:]
        # regint=6: baresip refreshes before its binding runs out, and nothing expired meanwhile.
        assert refreshed, "baresip did not refresh its registration:\n" + out[-3000:]
        assert not [e for e in _events(pbx, "sip.register.removed") if e.get("reason") == "expired"]


async def _ws_register(url: str, ext: str, password: str, ssl_ctx: ssl.SSLContext | None) -> int:
    """REGISTER over a WebSocket with the `sip` subprotocol; returns the final status."""
    async with aiohttp.ClientSession() as session, session.ws_connect(
        url, protocols=("sip",), ssl=ssl_ctx if ssl_ctx is not None else False,
        timeout=aiohttp.ClientWSTimeout(ws_close=10)
    ) as ws:
        assert ws.protocol == "sip"
        host = url.split("//")[1].split("/")[0]
        call_id = os.urandom(8).hex()

        def register(cseq: int) -> Request:
            text = (
                f"REGISTER sip:{host.split(':')[0]} SIP/2.0\r\n"
                f"Via: SIP/2.0/{'WSS' if url.startswith('wss') else 'WS'} df7jal23ls0d.invalid;"
                f"branch=z9hG4bK{os.urandom(6).hex()}\r\n"
                f"From: <sip:{ext}@{host.split(':')[0]}>;tag={os.urandom(4).hex()}\r\n"
                f"To: <sip:{ext}@{host.split(':')[0]}>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n"
                f"Contact: <sip:{ext}@df7jal23ls0d.invalid;transport=ws>;expires=300\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            msg = parse_message(text.encode())
            assert isinstance(msg, Request)
            return msg

        first = register(1)
        await ws.send_str(first.serialize().decode())
        challenge = parse_message((await ws.receive(timeout=5)).data.encode())
        assert isinstance(challenge, Response) and challenge.status == 401
        second = DigestClient().authorize(register(2), challenge, ext, password,
                                          realm="asyncpbx-test")
        await ws.send_str(second.serialize().decode())
        final = parse_message((await ws.receive(timeout=5)).data.encode())
        assert isinstance(final, Response)
        return final.status


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_websocket_client_registers(tmp_path: Path, transport: str) -> None:
    with running_pbx(tmp_path, transports=(transport,), users=USERS) as pbx:
        host, port = pbx.addr(transport)
        ctx = None
        if transport == "wss":
            ctx = ssl.create_default_context(cafile=str(pbx.data_dir / "tls" / "selfsigned.crt"))
        status = asyncio.run(_ws_register(f"{transport}://{host}:{port}/", "102", USERS[2][1], ctx))
        assert status == 200
        added = _events(pbx, "sip.register.added")
        assert added and added[0]["aor"] == "sip:102@127.0.0.1", added
