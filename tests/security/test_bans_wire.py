"""Per-source bans on the running server (issue 12 §1, SECURITY.md): a password guesser on
127.0.0.2 is banned after 5 failures — its datagrams dropped unanswered, its connections
refused, one ``security.ban`` line logged — a stranger flooding from 127.0.0.3 is banned after
16 requests in 2 s, and the user on 127.0.0.1 who authenticated keeps being served."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipcore.digest import DigestClient
from sipcore.message import Request, Response, parse_message
from tests.interop.harness import PbxProcess, read_log, running_pbx

pytestmark = pytest.mark.interop

USERS = [("100", "pw-100-secret"), ("101", "pw-101-secret")]
REALM = "asyncpbx-test"


def _loopback_alias_works(host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, 0))
        except OSError:
            return False
    return True


def udp(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(1.0)
    return s


def register(sock: socket.socket, server: tuple[str, int], ext: str, cseq: int,
             challenge: Response | None = None, password: str = "") -> Response | None:
    host, port = sock.getsockname()
    text = (f"REGISTER sip:{server[0]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK{os.urandom(6).hex()}\r\n"
            f"From: <sip:{ext}@{server[0]}>;tag=t{cseq}\r\nTo: <sip:{ext}@{server[0]}>\r\n"
            f"Call-ID: ban-{host}-{ext}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{ext}@{host}:{port}>\r\nExpires: 300\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n")
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    if challenge is not None:
        request = DigestClient().authorize(request, challenge, ext, password, realm=REALM)
    sock.sendto(request.serialize(), server)
    try:
        answer = parse_message(sock.recv(65535))
    except TimeoutError:
        return None
    assert isinstance(answer, Response)
    return answer


def options(sock: socket.socket, server: tuple[str, int]) -> int | None:
    host, port = sock.getsockname()
    sock.sendto((f"OPTIONS sip:{server[0]} SIP/2.0\r\n"
                 f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK{os.urandom(6).hex()}\r\n"
                 f"From: <sip:probe@{host}>;tag=p1\r\nTo: <sip:{server[0]}>\r\n"
                 f"Call-ID: opt-{os.urandom(4).hex()}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                 "Content-Length: 0\r\n\r\n").encode(), server)
    try:
        answer = parse_message(sock.recv(65535))
    except TimeoutError:
        return None
    assert isinstance(answer, Response)
    return answer.status


def cli(pbx: PbxProcess, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pbx", "bans", *args, "--data-dir",
                           str(pbx.data_dir)], capture_output=True, text=True, timeout=30,
                          check=True)
    return done.stdout


def ban_lines(pbx: PbxProcess) -> list[dict[str, object]]:
    out = []
    for line in read_log(pbx.log_path).splitlines():
        if '"security.ban"' in line:
            out.append(json.loads(line))
    return out


def test_guesser_banned_after_five_failures_while_the_office_keeps_working(
        tmp_path: Path) -> None:
    if not (_loopback_alias_works("127.0.0.2") and _loopback_alias_works("127.0.0.3")):
        pytest.skip("no 127.0.0.2/127.0.0.3 on this machine")
    # (the server listens on 127.0.0.1; the other loopback addresses reach it and are answered)
    with running_pbx(tmp_path, transports=("udp", "tcp"), users=USERS,
                     config_extra="[security]\nban_time = 300\n") as server:
        target = server.addr("udp")
        with udp("127.0.0.1") as office, udp("127.0.0.2") as guesser:
            first = register(office, target, "100", 1)
            assert first is not None and first.status == 401
            ok = register(office, target, "100", 2, first, USERS[0][1])
            assert ok is not None and ok.status == 200
            answers = []
            for i in range(5):  # the real password is not among them
                challenge = register(guesser, target, "101", 10 + 2 * i)
                assert challenge is not None and challenge.status == 401, i
                wrong = register(guesser, target, "101", 11 + 2 * i, challenge, f"guess-{i}")
                answers.append(wrong.status if wrong is not None else None)
            assert answers == [401] * 5
            # banned: nothing is answered any more, not even OPTIONS; TCP is refused
            assert register(guesser, target, "101", 30) is None
            assert options(guesser, target) is None
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.2", 0))
                s.settimeout(2)
                s.connect(server.addr("tcp"))
                s.sendall(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
                try:
                    assert s.recv(100) == b""  # closed at once
                except ConnectionResetError:
                    pass
            # the office (authenticated) is served: many requests, no limit
            assert all(options(office, target) == 200 for _ in range(40))
        with udp("127.0.0.3") as stranger:
            statuses = [options(stranger, target) for _ in range(20)]
            assert statuses[:16] == [200] * 16 and statuses[16:] == [None] * 4, statuses
            # visible and liftable from the command line
            time.sleep(1.5)  # the server writes the bans in force once a second
            listed = cli(server, "list")
            assert "127.0.0.2  auth failures (5)" in listed, listed
            assert "127.0.0.3  request flood (17)" in listed, listed
            assert "lifted the ban of 127.0.0.3" in cli(server, "lift", "127.0.0.3")
            assert "was not banned" in cli(server, "lift", "192.0.2.1")
            assert options(stranger, target) == 200  # counted from zero again
            time.sleep(1.5)
            listed = cli(server, "list")
            assert "127.0.0.3" not in listed and "127.0.0.2" in listed, listed
    bans = ban_lines(server)
    assert [(b["src"], b["reason"], b["count"], b["seconds"]) for b in bans] == [
        ("127.0.0.2", "auth failures", 5, 300), ("127.0.0.3", "request flood", 17, 300)]
    lifted = [json.loads(line) for line in read_log(server.log_path).splitlines()
              if '"security.ban.lifted"' in line]
    assert [(x["src"], x["was_banned"]) for x in lifted] == [("127.0.0.3", True),
                                                              ("192.0.2.1", False)]
    assert all(b["level"] == "warning" for b in bans)
