"""A phone registered over TCP stays reachable: its connection outlives the idle timeout for as
long as the binding lives (RFC 5626 §5.2); an unregistered idle connection is closed."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from sipcore.digest import DigestClient
from sipcore.message import Request, Response, parse_message
from tests.interop.harness import running_pbx

pytestmark = pytest.mark.interop


def _read_message(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _register(sock: socket.socket, cseq: int, auth: Response | None) -> Response:
    lp = sock.getsockname()[1]
    text = (
        f"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{lp};branch=z9hG4bK-f{cseq};rport\r\n"
        "From: <sip:100@127.0.0.1>;tag=f1\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: flow-1\r\n"
        f"CSeq: {cseq} REGISTER\r\nContact: <sip:100@127.0.0.1:{lp};transport=tcp>\r\n"
        "Max-Forwards: 70\r\nExpires: 120\r\nContent-Length: 0\r\n\r\n"
    )
    req = parse_message(text.encode())
    assert isinstance(req, Request)
    if auth is not None:
        req = DigestClient().authorize(req, auth, "100", "pw-100-secret", realm="asyncpbx-test")
    sock.sendall(req.serialize())
    resp = parse_message(_read_message(sock))
    assert isinstance(resp, Response)
    return resp


def _options(sock: socket.socket) -> bytes:
    lp = sock.getsockname()[1]
    sock.sendall(
        (f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{lp};branch=z9hG4bK-o{time.monotonic_ns()}\r\n"
         "From: <sip:100@127.0.0.1>;tag=o1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: opt-1\r\n"
         "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    )
    return _read_message(sock)


def test_registered_connection_outlives_idle_timeout(tmp_path: Path) -> None:
    with running_pbx(tmp_path, transports=("tcp",), users=[("100", "pw-100-secret")],
                     config_extra="idle_timeout = 1.0\n") as pbx:
        addr = pbx.addr("tcp")
        phone = socket.create_connection(addr, timeout=5)
        idle = socket.create_connection(addr, timeout=5)
        try:
            challenge = _register(phone, 1, None)
            assert challenge.status == 401
            assert _register(phone, 2, challenge).status == 200
            time.sleep(3.0)  # three idle timeouts
            # the unregistered connection was closed by the server ...
            idle.settimeout(2)
            assert idle.recv(100) == b""
            # ... the registered one is still open and answered on
            assert _options(phone).startswith(b"SIP/2.0 200")
        finally:
            phone.close()
            idle.close()
