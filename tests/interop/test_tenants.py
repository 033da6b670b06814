"""Calls inside a second tenant: its users register with the tenant's SIP domain and digest
realm (their AOR is ``ext@tenant-domain``) and call each other through the server; the callee's
phone must be addressed by that AOR, not by ``ext@<the server's domain>``."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pbx.store import Store
from sipcore.digest import DigestClient
from sipcore.message import Request, Response, parse_message
from tests.interop.harness import PbxProcess, free_port, running_pbx, sipp, users_csv
from tests.interop.test_calls_sipp import USERS, SippUas, events

pytestmark = pytest.mark.interop

DOMAIN_B = "tenant-b.test"
REALM_B = "realm-b"
# the same extensions as two users of the default tenant (USERS): only the domain tells them apart
USERS_B = [("101", "pw-b101-secret"), ("102", "pw-b102-secret")]


def tenant_b(store: Store) -> None:
    store.add_tenant("tenantb", DOMAIN_B, realm=REALM_B, company="Tenant B")
    for ext, password in USERS_B:
        store.add_user(ext, password, name=f"B {ext}", tenant="tenantb")


def register_in_tenant(pbx: PbxProcess, ext: str, password: str, port: int) -> Response:
    """REGISTER ``sip:ext@DOMAIN_B`` from 127.0.0.1:port, answering the challenge of REALM_B;
    returns the final response."""
    server = pbx.addr("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.settimeout(5)
        call_id = os.urandom(6).hex()

        def request(cseq: int) -> Request:
            text = (
                f"REGISTER sip:{DOMAIN_B} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{os.urandom(5).hex()};rport\r\n"
                f"From: <sip:{ext}@{DOMAIN_B}>;tag={os.urandom(4).hex()}\r\n"
                f"To: <sip:{ext}@{DOMAIN_B}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{ext}@127.0.0.1:{port}>\r\nExpires: 600\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n")
            msg = parse_message(text.encode())
            assert isinstance(msg, Request)
            return msg

        s.sendto(request(1).serialize(), server)
        challenge = parse_message(s.recv(65535))
        assert isinstance(challenge, Response) and challenge.status == 401
        assert f'realm="{REALM_B}"' in str(challenge.headers.get("WWW-Authenticate"))
        authed = DigestClient().authorize(request(2), challenge, ext, password, realm=REALM_B)
        s.sendto(authed.serialize(), server)
        final = parse_message(s.recv(65535))
        assert isinstance(final, Response)
        return final


def test_tenant_user_calls_another_user_of_the_same_tenant(tmp_path: Path) -> None:
    config = "[media]\nport_min = 48000\nport_max = 48999\n"
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=config,
                     store_setup=tenant_b) as pbx:
        port = free_port()
        ok = register_in_tenant(pbx, "102", USERS_B[1][1], port)
        assert ok.status == 200, ok
        uas = SippUas(tmp_path, "call_uas_answer.xml", port, keys={"rtp_port": str(free_port())},
                      name="b102")
        try:
            inf = users_csv(tmp_path / "b101.csv", [USERS_B[0]])
            res = sipp("tenant_call_uac.xml", pbx.addr("udp"), tmp_path, inf=inf, timeout=30,
                       extra=["-auth_uri", f"102@{DOMAIN_B}", "-key", "dst", "102",
                              "-key", "domain", DOMAIN_B, "-key", "rtp_port", str(free_port()),
                              "-d", "1000"])
            rc, uas_out = uas.result()
        finally:
            uas.stop()
        assert (res.successful, res.failed) == (1, 0), res.output
        assert rc == 0, uas_out
        invite = uas.log().split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip()
               for line in invite.splitlines()[1:] if ":" in line}
    # the callee is addressed by its AOR in its tenant, and so is the caller, with its own
    # name (not the one of 101 in the default tenant)
    assert headers["to"] == f"<sip:102@{DOMAIN_B}>", invite
    assert headers["from"].startswith(f'"B 101" <sip:101@{DOMAIN_B}>;tag='), invite
    assert events(pbx, "call.answered"), "no call.answered"
    # the call is in the history of the tenant's own 101 and 102 (names from that tenant),
    # and in nobody's of the default tenant, whose users have the same extensions
    store = Store(tmp_path / "data")
    try:
        b101, b102 = store.user("101", tenant="tenantb"), store.user("102", tenant="tenantb")
        a101, a102 = store.user("101"), store.user("102")
        hb101, hb102 = store.history(b101.id), store.history(b102.id)
        other = store.history(a101.id) + store.history(a102.id)
    finally:
        store.close()
    assert [(e.direction, e.other_name, e.other_number) for e in hb101] == [
        ("out", "B 102", "102")], hb101
    assert [(e.direction, e.other_name, e.other_number) for e in hb102] == [
        ("in", "B 101", "101")], hb102
    assert all(e.answered_at is not None and e.ended_at is not None for e in hb101 + hb102)
    assert other == [], other
