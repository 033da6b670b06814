"""Small SIP-over-UDP helpers for the security suite: a client bound to one loopback address
(127.0.0.2, 127.0.0.3, … play the attackers and the legitimate users, SECURITY.md) that sends
hand-written requests and reads the answer, timing it."""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass

import pytest

from sipcore.digest import DigestClient
from sipcore.message import Request, Response, parse_message

REALM = "asyncpbx-test"


def loopback_alias_works(*hosts: str) -> bool:
    """Whether every one of ``hosts`` (127.0.0.x) can be bound on this machine."""
    for host in hosts:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, 0))
            except OSError:
                return False
    return True


def need_aliases(*hosts: str) -> None:
    if not loopback_alias_works(*hosts):
        pytest.skip(f"loopback addresses {hosts} cannot be bound on this machine")


@dataclass
class Answer:
    response: Response
    seconds: float


class SipClient:
    """A UDP socket on ``host`` that talks to ``server``."""

    def __init__(self, host: str, server: tuple[str, int], timeout: float = 1.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(timeout)
        self.host, self.port = self.sock.getsockname()
        self.server = server
        self.digest = DigestClient()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, user: str, cseq: int, *, call_id: str | None = None,
                contact_port: int | None = None, expires: int | None = 300,
                ruri: str | None = None, extra: str = "") -> Request:
        """A request from ``user`` (REGISTER: to itself; INVITE/OPTIONS: to ``user`` too)."""
        server = self.server[0]
        contact = ""
        if method == "REGISTER" and contact_port is not None:
            contact = f"Contact: <sip:{user}@{self.host}:{contact_port}>\r\n"
        if method == "REGISTER" and expires is not None:
            contact += f"Expires: {expires}\r\n"
        uri = ruri or (f"sip:{server}" if method == "REGISTER" else f"sip:{user}@{server}")
        text = (f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.host}:{self.port};rport;branch=z9hG4bK{os.urandom(6).hex()}\r\n"
                f"From: <sip:{user}@{server}>;tag=t{os.urandom(3).hex()}\r\n"
                f"To: <sip:{user}@{server}>\r\n"
                f"Call-ID: {call_id or os.urandom(8).hex()}\r\nCSeq: {cseq} {method}\r\n"
                f"{contact}Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n")
        message = parse_message(text.encode())
        assert isinstance(message, Request)
        return message

    def authorize(self, request: Request, challenge: Response, user: str, password: str
                  ) -> Request:
        return self.digest.authorize(request, challenge, user, password, realm=REALM)

    def send_raw(self, data: bytes) -> Answer | None:
        """Send ``data``; the first answer to it (same Call-ID and CSeq; 100 Trying skipped)
        and its time, None when nothing came within the timeout."""
        call_id = re.search(rb"^Call-ID *: *(\S+)", data, re.M | re.I)
        cseq = re.search(rb"^CSeq *: *(\d+)", data, re.M | re.I)
        key = ((call_id.group(1).decode(), int(cseq.group(1)))
               if call_id is not None and cseq is not None else None)
        start = time.perf_counter()
        self.sock.sendto(data, self.server)
        while True:
            try:
                raw = self.sock.recv(65535)
            except TimeoutError:
                return None
            message = parse_message(raw)
            if not isinstance(message, Response) or message.status == 100:
                continue
            if key is not None and (message.call_id, message.cseq.seq) != key:
                continue  # a late answer (a retransmission) to something sent before
            return Answer(message, time.perf_counter() - start)

    def send(self, request: Request) -> Answer | None:
        return self.send_raw(request.serialize())

    def register(self, user: str, password: str, cseq: int, *, call_id: str,
                 contact_port: int | None = None, expires: int | None = 300
                 ) -> tuple[Request, Response]:
        """An authenticated REGISTER (challenge, then credentials); the request sent with
        credentials and its final answer."""
        first = self.send(self.request("REGISTER", user, cseq, call_id=call_id,
                                       contact_port=contact_port, expires=expires))
        assert first is not None and first.response.status == 401, first
        authed = self.authorize(self.request("REGISTER", user, cseq + 1, call_id=call_id,
                                             contact_port=contact_port, expires=expires),
                                first.response, user, password)
        answer = self.send(authed)
        assert answer is not None, "no answer to an authenticated REGISTER"
        return authed, answer.response


def shape(response: Response) -> tuple[object, ...]:
    """What a scanner could compare between two answers: status line, header names in order,
    and the WWW-Authenticate parameter names in order (nonces, tags and branches differ
    between any two answers and are left out)."""
    names = tuple(name.lower() for name, _ in response.headers)
    params: tuple[str, ...] = ()
    auth = response.headers.get("WWW-Authenticate")
    if auth:
        params = tuple(p.split("=", 1)[0].strip().lower()
                       for p in auth.split(" ", 1)[1].split(","))
    return (response.status, response.reason, names, params)
