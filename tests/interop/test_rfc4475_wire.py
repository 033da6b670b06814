"""RFC 4475 / RFC 5118 cases the running server must answer as the RFCs ask (issue 12 §4), sent
over UDP and TCP: our own messages in ``tests/sipcore/torture/rfc4475`` (written from the RFCs'
descriptions; the parser-level checks are in tests/sipcore/test_torture_rfc4475.py).

The corpus' Vias name the RFCs' made-up hosts without a port, so a compliant server answers a
UDP copy at port 5060 of the source address (RFC 3261 §18.2.2). The test rewrites the top Via's
sent-by to the sending socket, once with ``rport`` (RFC 3581, what phones send) and once without
(the answer goes to ``received`` and the sent-by port), the transport name as the corpus has it.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipcore.digest import DigestClient
from sipcore.message import Request, Response, parse_message
from sipcore.uri import SipURI
from tests.interop.harness import PbxProcess, free_port, running_pbx
from tests.interop.test_calls_sipp import USERS, pbx_with, register_port

pytestmark = pytest.mark.interop

CORPUS = Path(__file__).parent.parent / "sipcore" / "torture" / "rfc4475"

#: case -> the statuses the RFC allows here (and the words the reason phrase must hold)
EXPECTED: dict[str, tuple[set[int], tuple[str, ...]]] = {
    # §3.1.1.2: valid; an unknown method gets 405 (with Allow) or 501
    "intmeth": ({405, 501}, ()),
    # §3.1.2.9-§3.1.2.13: invalid, but a liberal element may accept them: we do (not 400)
    "lwsstart": ({407}, ()),
    "trws": ({200}, ()),
    "escruri": ({407}, ()),
    "baddate": ({407}, ()),
    "regbadct": ({401}, ()),
    # §3.3.1: 400 naming the missing header fields
    "insuf": ({400}, ("To", "From", "Call-ID")),
    # §3.3.3: a well-formed request: accepted (OPTIONS answered) or 416
    "novelsc": ({200, 416}, ()),
    # §3.3.13, §3.3.14: valid REGISTERs: challenged like any other
    "cparam02": ({401}, ()),
    "regescrt": ({401}, ()),
    # RFC 5118 §4.10: tolerated
    "ipv6_three_colons": ({200}, ()),
}

_TOP_VIA = re.compile(rb"^((?:Via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*\w+)[ \t]+"
                      rb"(\[[^\]]*\]|[^;:\r\n]+)(?::\d+)?", re.M | re.I)
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*", re.M | re.I)


def addressed(data: bytes, port: int, *, rport: bool, tag: str) -> bytes:
    """``data`` with the top Via's sent-by port set to ``port`` (host ``127.0.0.1`` with
    ``rport``, the corpus' own host without), a Call-ID and branch unique to ``tag``."""
    def via(m: re.Match[bytes]) -> bytes:
        host = b"127.0.0.1" if rport else m.group(2)
        return m.group(1) + b" " + host + b":" + str(port).encode()

    out, n = _TOP_VIA.subn(via, data, count=1)
    assert n == 1
    out = out.replace(b";branch=z9hG4bK", f";branch=z9hG4bK{tag}-".encode(), 1)
    if rport:
        out = out.replace(b";branch=", b";rport;branch=", 1)
    return _CALL_ID.sub(lambda m: m.group(0) + tag.encode() + b"-", out, count=1)


def answer_udp(addr: tuple[str, int], data: bytes, rport: bool, tag: str) -> Response | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        s.sendto(addressed(data, s.getsockname()[1], rport=rport, tag=tag), addr)
        try:
            msg = parse_message(s.recv(65535))
        except TimeoutError:
            return None
    assert isinstance(msg, Response)
    return msg


def answer_tcp(addr: tuple[str, int], data: bytes, rport: bool, tag: str) -> Response | None:
    with socket.create_connection(addr, timeout=2.0) as s:
        s.sendall(addressed(data, s.getsockname()[1], rport=rport, tag=tag))
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65535)
                if not chunk:
                    return None
                buf += chunk
        except TimeoutError:
            return None
    msg = parse_message(buf)
    assert isinstance(msg, Response)
    return msg


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with running_pbx(tmp_path_factory.mktemp("rfc4475"), transports=("udp", "tcp"),
                     users=USERS) as pbx:
        yield pbx


def test_corpus_matches_the_table() -> None:
    assert {p.stem for p in CORPUS.glob("*.sip")} == set(EXPECTED)


@pytest.mark.parametrize("rport", [True, False], ids=["rport", "sent-by"])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_every_case_is_answered_as_the_rfc_asks(server: PbxProcess, case: str, transport: str,
                                                 rport: bool) -> None:
    statuses, words = EXPECTED[case]
    data = (CORPUS / f"{case}.sip").read_bytes()
    ask = answer_udp if transport == "udp" else answer_tcp
    tag = f"{transport}{int(rport)}{time.monotonic_ns()}"
    resp = ask(server.addr(transport), data, rport, tag)
    assert resp is not None, f"{case} over {transport}: no answer"
    assert resp.status in statuses, (case, transport, resp.status, resp.reason)
    for word in words:
        assert word in resp.reason, resp.reason
    if resp.status == 405:
        assert resp.headers.get("Allow"), "405 without Allow"


# ----------------------------------------- §3.1.2.11: headers escaped into the Request-URI


SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

#: what an attacker escapes into the Request-URI, hoping a B2BUA applies it
SMUGGLED = ("Route=%3Csip:203.0.113.66;lr%3E&P-Asserted-Identity=%3Csip:boss@127.0.0.1%3E"
            "&Max-Forwards=1&Diversion=%3Csip:999@127.0.0.1%3E&X-Smuggled=yes")


def _recv(sock: socket.socket, want: str, cseq: int | None = None) -> Request | Response:
    """The next INVITE or final response on ``sock``; with ``cseq``, only a final response to
    that CSeq (a retransmitted 407 of the first INVITE, sent again before our ACK got through
    on a loaded machine, is not the answer to the second)."""
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        msg = parse_message(sock.recv(65535))
        if want == "INVITE" and isinstance(msg, Request) and msg.method == "INVITE":
            return msg
        if (want == "final" and isinstance(msg, Response) and msg.status >= 200
                and (cseq is None or msg.cseq.seq == cseq)):
            return msg
    raise AssertionError(f"no {want}")


def register_contact(pbx: PbxProcess, ext: str, password: str, port: int, contact: str) -> None:
    """REGISTER ``contact`` for ``ext`` from ``127.0.0.1:port`` (digest on the 401)."""
    server = pbx.addr("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.settimeout(5)

        def request(cseq: int) -> Request:
            msg = parse_message((
                f"REGISTER sip:{server[0]} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{os.urandom(5).hex()}\r\n"
                f"From: <sip:{ext}@{server[0]}>;tag=r1\r\nTo: <sip:{ext}@{server[0]}>\r\n"
                f"Call-ID: reg-{port}\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\n"
                "Expires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
            assert isinstance(msg, Request)
            return msg

        s.sendto(request(1).serialize(), server)
        challenge = parse_message(s.recv(65535))
        assert isinstance(challenge, Response) and challenge.status == 401
        authed = DigestClient().authorize(request(2), challenge, ext, password,
                                          realm="asyncpbx-test")
        s.sendto(authed.serialize(), server)
        ok = parse_message(s.recv(65535))
        assert isinstance(ok, Response) and ok.status == 200, ok


def invite_sent_on(pbx: PbxProcess, callee_port: int, ruri_headers: str) -> Request:
    """100 calls 101 (registered at ``callee_port``) with ``ruri_headers`` escaped into the
    Request-URI; returns the INVITE the B2BUA sends 101 (which answers 486; all ACKed)."""
    host, port = pbx.addr("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        callee.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        callee.bind(("127.0.0.1", callee_port))
        callee.settimeout(8)
        caller.bind(("127.0.0.1", 0))
        caller.settimeout(8)
        lp = caller.getsockname()[1]
        call_id = f"escruri-{os.urandom(4).hex()}"
        body = SDP % free_port()
        query = f"?{ruri_headers}" if ruri_headers else ""

        def invite(cseq: int) -> Request:
            text = (f"INVITE sip:101@{host}:{port}{query} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{lp};rport;branch=z9hG4bK{os.urandom(5).hex()}\r\n"
                    f"From: <sip:100@{host}>;tag=esc1\r\nTo: <sip:101@{host}>\r\n"
                    f"Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n"
                    f"Contact: <sip:100@127.0.0.1:{lp}>\r\nMax-Forwards: 70\r\n"
                    f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n")
            msg = parse_message(text.encode() + body)
            assert isinstance(msg, Request)
            return msg

        def ack(resp: Response, req: Request) -> None:
            caller.sendto((f"ACK {req.uri} SIP/2.0\r\nVia: {req.headers.get('Via')}\r\n"
                           f"From: {req.headers.get('From')}\r\nTo: {resp.headers.get('To')}\r\n"
                           f"Call-ID: {call_id}\r\nCSeq: {req.cseq.seq} ACK\r\n"
                           "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                          (host, port))

        first = invite(1)
        if ruri_headers:  # parsed: the URI carries them, the request does not
            assert isinstance(first.uri, SipURI) and first.uri.headers
            assert "Route" not in first.headers and first.max_forwards == 70
        caller.sendto(first.serialize(), (host, port))
        challenge = _recv(caller, "final", cseq=1)
        assert isinstance(challenge, Response) and challenge.status == 407
        ack(challenge, first)
        second = DigestClient().authorize(invite(2), challenge, "100", USERS[0][1],
                                          realm="asyncpbx-test")
        caller.sendto(second.serialize(), (host, port))
        sent_on = _recv(callee, "INVITE")
        assert isinstance(sent_on, Request)
        callee.sendto((f"SIP/2.0 486 Busy Here\r\nVia: {sent_on.headers.get('Via')}\r\n"
                       f"From: {sent_on.headers.get('From')}\r\n"
                       f"To: {sent_on.headers.get('To')};tag=callee1\r\n"
                       f"Call-ID: {sent_on.call_id}\r\nCSeq: {sent_on.cseq.seq} INVITE\r\n"
                       "Content-Length: 0\r\n\r\n").encode(), (host, port))
        final = _recv(caller, "final", cseq=2)
        assert isinstance(final, Response)
        assert final.status == 486, final.status
        ack(final, second)
        return sent_on


def assert_nothing_smuggled(sent_on: Request, callee_port: int) -> None:
    """The B2BUA's INVITE goes to the registered contact with no URI headers and carries
    none of :data:`SMUGGLED`'s headers."""
    assert str(sent_on.uri) == f"sip:101@127.0.0.1:{callee_port}", sent_on.uri
    for name in ("Route", "P-Asserted-Identity", "Diversion", "X-Smuggled"):
        assert name not in sent_on.headers, (name, sent_on.serialize()[:1500])
    text = sent_on.serialize().decode("utf-8", "replace")
    assert "boss" not in text and "203.0.113.66" not in text and "Smuggled" not in text
    assert sent_on.max_forwards is not None and sent_on.max_forwards > 1


def test_headers_escaped_into_the_request_uri_are_never_applied(tmp_path: Path) -> None:
    with pbx_with(tmp_path) as pbx:
        callee_port = free_port()
        register_port(pbx, "101", USERS[1][1], callee_port)
        assert_nothing_smuggled(invite_sent_on(pbx, callee_port, SMUGGLED), callee_port)


def test_headers_escaped_into_a_registered_contact_are_never_applied(tmp_path: Path) -> None:
    # RFC 4475 §3.3.14's REGISTER, then a call to that contact: the B2BUA's INVITE must not
    # carry (nor put into its Request-URI) what the phone escaped into its Contact
    with pbx_with(tmp_path) as pbx:
        callee_port = free_port()
        register_contact(pbx, "101", USERS[1][1], callee_port,
                         f"<sip:101@127.0.0.1:{callee_port}?{SMUGGLED}>")
        assert_nothing_smuggled(invite_sent_on(pbx, callee_port, ""), callee_port)
