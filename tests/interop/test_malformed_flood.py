"""Thousands of malformed datagrams and stream fragments leave the server answering OPTIONS,
with no traceback and its file descriptors back to the baseline."""

from __future__ import annotations

import os
import random
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.interop.harness import PbxProcess, running_pbx

pytestmark = pytest.mark.interop

VALID = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-fuzz-1;rport\r\n"
    b"From: <sip:fuzz@127.0.0.1>;tag=a1\r\nTo: <sip:127.0.0.1>\r\n"
    b"Call-ID: fuzz-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _mutants(seed: int, n: int) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    specials = [b"\x00", b"\r", b"\n", b"\r\n\r\n", b":", b";", b"<", b">", b'"', b"%",
                b"4294967296", b"-1", b"\xff\xfe", b" " * 50, b"SIP/2.0", b"Content-Length: 99999\r\n"]
    for _ in range(n):
        data = bytearray(VALID)
        for _ in range(rnd.randint(1, 6)):
            op = rnd.randrange(5)
            pos = rnd.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] ^= 1 << rnd.randrange(8)
            elif op == 1:
                del data[pos:pos + rnd.randint(1, 40)]
            elif op == 2:
                data[pos:pos] = rnd.choice(specials)
            elif op == 3:
                data[pos:pos] = data[rnd.randrange(len(data) + 1):][: rnd.randint(1, 80)]
            else:
                data = data[:pos]
        out.append(bytes(data))
    out += [os.urandom(rnd.randint(1, 1400)) for _ in range(n // 10)]
    return out


def _options_rtt(addr: tuple[str, int], timeout: float = 2.0) -> float:
    """Send OPTIONS over UDP; return the round trip in seconds (raises on no answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        branch = f"z9hG4bK-ping-{time.monotonic_ns()}"
        msg = VALID.replace(b"127.0.0.1:9;branch=z9hG4bK-fuzz-1", f"127.0.0.1:{port};branch={branch}".encode())
        msg = msg.replace(b"fuzz-1@", f"ping-{time.monotonic_ns()}@".encode())
        t0 = time.monotonic()
        s.sendto(msg, addr)
        while True:
            data, _ = s.recvfrom(65535)
            if branch.encode() in data:
                assert data.startswith(b"SIP/2.0 200"), data[:200]
                return time.monotonic() - t0


def _fd_count(pbx: PbxProcess) -> int:
    assert pbx.proc is not None
    return len(os.listdir(f"/proc/{pbx.proc.pid}/fd"))


def test_malformed_flood_over_udp_tcp_tls_ws(tmp_path: Path) -> None:
    with running_pbx(tmp_path, transports=("udp", "tcp", "tls", "ws"),
                     config_extra="idle_timeout = 2.0\n") as pbx:
        udp = pbx.addr("udp")
        _options_rtt(udp)
        baseline = _fd_count(pbx)
        mutants = _mutants(1234, 3000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i, m in enumerate(mutants):
                s.sendto(m[:65000], udp)
                if i % 200 == 0:
                    time.sleep(0.01)  # stay a fuzzer, not a flood: this test is about content
        # Stream fragments: every mutant split at a random point, over a few connections; then
        # half-open connections and one oversized message.
        rnd = random.Random(99)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        for transport in ("tcp", "tls"):
            host, port = pbx.addr(transport)
            for chunk_start in range(0, 600, 60):
                raw = socket.create_connection((host, port), timeout=5)
                conn = ctx.wrap_socket(raw) if transport == "tls" else raw
                try:
                    for m in mutants[chunk_start:chunk_start + 60]:
                        cut = rnd.randrange(len(m) + 1)
                        conn.sendall(m[:cut])
                        conn.sendall(m[cut:])
                except OSError:
                    pass  # the server may close a connection after a framing error: that is fine
                finally:
                    conn.close()
            big = socket.create_connection((host, port), timeout=5)
            big = ctx.wrap_socket(big) if transport == "tls" else big
            try:
                big.sendall(VALID.replace(b"Content-Length: 0", b"Content-Length: 10000000"))
                big.sendall(b"x" * 200_000)
            except OSError:
                pass
            finally:
                big.close()
        ws_host, ws_port = pbx.addr("ws")
        for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01garbage",
                        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                        b"Sec-WebSocket-Protocol: sip\r\n\r\n\x81\xff" + b"\x00" * 20):
            with socket.create_connection((ws_host, ws_port), timeout=5) as c:
                try:
                    c.sendall(payload)
                    c.settimeout(1)
                    c.recv(4096)
                except OSError:
                    pass
        # Still answering, quickly; and every connection we opened is gone again.
        for _ in range(5):
            _options_rtt(udp)  # raises when no 200 arrives within its 2 s socket timeout
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _fd_count(pbx) > baseline:
            time.sleep(0.2)
        assert _fd_count(pbx) <= baseline, (baseline, _fd_count(pbx))
        assert pbx.alive()
