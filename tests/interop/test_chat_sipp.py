"""Chat over real SIP (RFC 3428 MESSAGE), SIPp as the phones, the server a subprocess:

* a text/plain and a CPIM message from 100 reach both registered devices of 101, each copy
  with the message's id (CPIM: the client's own imdn.Message-ID); both are kept in the
  conversation's history, delivered;
* a message to 101 while it is offline gets 202, is kept, and arrives when 101 registers;
* a device that fails a delivery gets the message again with the same id (at least once; the
  client drops duplicates by the id);
* a message from the carrier (no user) gets 403 without a challenge; to nobody 404; a body
  above ``[chat] max_size`` 413; an unsupported content type 415 (with Accept);
* never across tenants: the same extension in another tenant, registered too, gets nothing.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from pbx.store import Store
from sipcore.digest import DigestClient
from sipcore.message import Request, Response, make_response, parse_message
from tests.interop.harness import PbxProcess, free_port, read_log, running_pbx, sipp, users_csv
from tests.interop.test_calls_sipp import (
    REALM,
    USERS,
    SippUas,
    final_statuses,
    register_port,
)
from tests.interop.test_carrier_calls import CARRIER_HOST, carrier_setup
from tests.interop.test_tenants import USERS_B, register_in_tenant, tenant_b

pytestmark = pytest.mark.interop

MAX_SIZE = 400
CONFIG = f"[media]\nport_min = 44000\nport_max = 44999\n[chat]\nmax_size = {MAX_SIZE}\n"


def send(pbx: PbxProcess, tmp: Path, user: int, dst: str, text: str, *,
         ctype: str = "text/plain", name: str) -> tuple[int, str]:
    """``USERS[user]`` sends ``text`` to ``dst``; returns (the final status, SIPp's trace)."""
    inf = users_csv(tmp / f"{name}.csv", [USERS[user]])
    host, port = pbx.addr("udp")
    log = tmp / f"{name}-messages.log"
    res = sipp("message_uac.xml", (host, port), tmp, inf=inf, timeout=20,
               extra=["-auth_uri", f"{dst}@{host}:{port}", "-key", "dst", dst,
                      "-key", "text", text, "-key", "ctype", ctype,
                      "-trace_msg", "-message_file", str(log)])
    trace = read_log(log)
    assert res.successful == 1, res.output + trace[-2000:]
    return _final(trace), trace


def _final(trace: str) -> int:
    return [int(s) for s in re.findall(r"^SIP/2\.0 ([2-6]\d\d) ", trace, re.M)][-1]


def received(log: str) -> list[dict[str, str]]:
    """The MESSAGE requests in a SIPp UAS trace: their id header, Call-ID, From and body."""
    out = []
    for chunk in log.replace("\r\n", "\n").split("MESSAGE sip:")[1:]:
        head, _, body = chunk.partition("\n\n")
        headers = {m.group(1).lower(): m.group(2).strip()
                   for m in re.finditer(r"^([A-Za-z-]+):(.*)$", head, re.M)}
        out.append({"id": headers.get("x-message-id", ""), "call_id": headers["call-id"],
                    "from": headers["from"], "body": body.split("\n---", 1)[0].strip()})
    return out


def come_online(pbx: PbxProcess, ext: str, password: str, *, wait: float = 5.0,
                expect: int = 1, statuses: tuple[int, ...] = ()) -> list[Request]:
    """A phone that registers from a fresh port and, on the same socket, answers the
    MESSAGEs that arrive within ``wait`` seconds (the ones it got, at most ``expect``): the
    n-th with ``statuses[n]``, 200 after those. Python rather than SIPp: a SIPp UAC takes no
    request of another Call-ID, and each delivery attempt is a new one."""
    server = pbx.addr("udp")
    port = free_port()
    got: list[Request] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
        s.settimeout(2.0)
        call_id = os.urandom(6).hex()

        def register(cseq: int) -> Request:
            msg = parse_message((
                f"REGISTER sip:{server[0]} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{os.urandom(5).hex()};rport\r\n"
                f"From: <sip:{ext}@{server[0]}>;tag={os.urandom(4).hex()}\r\n"
                f"To: <sip:{ext}@{server[0]}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{ext}@127.0.0.1:{port}>\r\nExpires: 600\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
            assert isinstance(msg, Request)
            return msg

        s.sendto(register(1).serialize(), server)
        challenge = parse_message(s.recv(65535))
        assert isinstance(challenge, Response) and challenge.status == 401
        s.sendto(DigestClient().authorize(register(2), challenge, ext, password,
                                          realm=REALM).serialize(), server)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and len(got) < expect:
            try:
                data, addr = s.recvfrom(65535)
            except TimeoutError:
                continue
            msg = parse_message(data)
            if isinstance(msg, Request) and msg.method == "MESSAGE":
                if not any(g.call_id == msg.call_id for g in got):  # not a retransmission
                    got.append(msg)
                n = next(i for i, g in enumerate(got) if g.call_id == msg.call_id)
                status = statuses[n] if n < len(statuses) else 200
                s.sendto(make_response(msg, status, to_tag=os.urandom(4).hex()).serialize(),
                         addr)
    return got


def device(tmp: Path, pbx: PbxProcess, ext: str, password: str, scenario: str, *,
           calls: int = 1, name: str) -> SippUas:
    port = free_port()
    register_port(pbx, ext, password, port)
    return SippUas(tmp, scenario, port, keys={"rtp_port": str(free_port())}, calls=calls,
                   name=name, timeout=20)


def finished(uas: SippUas) -> str:
    rc, out = uas.result(25.0)
    assert rc == 0, out
    return uas.log()


def conversation(pbx: PbxProcess, a: str, b: str) -> list[tuple[bytes, bool]]:
    store = Store(pbx.data_dir)
    try:
        return [(m.body, m.delivered_at is not None) for m in
                store.chat_conversation(store.user(a).id, store.user(b).id)]
    finally:
        store.close()


def test_messages_reach_every_device_of_the_recipient_with_their_id(tmp_path: Path) -> None:
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=CONFIG) as pbx:
        desk = device(tmp_path, pbx, "101", USERS[1][1], "message_uas.xml", calls=2,
                      name="desk")
        soft = device(tmp_path, pbx, "101", USERS[1][1], "message_uas.xml", calls=2,
                      name="soft")
        try:
            status, _ = send(pbx, tmp_path, 0, "101", "hello-chat", name="plain")
            assert status == 200
            inf = users_csv(tmp_path / "cpim.csv", [USERS[0]])
            host, port = pbx.addr("udp")
            res = sipp("message_uac_cpim.xml", (host, port), tmp_path, inf=inf, timeout=20,
                       extra=["-auth_uri", f"101@{host}:{port}", "-key", "dst", "101",
                              "-key", "msgid", "cpim-id-42"])
            assert res.successful == 1, res.output
            copies = [received(finished(desk)), received(finished(soft))]
        finally:
            desk.stop()
            soft.stop()
        for got in copies:
            assert len(got) == 2 and got[0]["body"] == "hello-chat"
            assert "<sip:100@" in got[0]["from"]
            assert "imdn.Message-ID: cpim-id-42" in got[1]["body"]
            assert got[1]["id"] == "cpim-id-42" and len(got[0]["id"]) == 32
        assert copies[0][0]["id"] == copies[1][0]["id"]  # one message, one id
    history = conversation(pbx, "100", "101")
    assert [delivered for _, delivered in history] == [True, True]
    assert history[0][0] == b"hello-chat"


def test_a_message_to_an_offline_user_arrives_when_they_register(tmp_path: Path) -> None:
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=CONFIG) as pbx:
        status, _ = send(pbx, tmp_path, 0, "101", "while-you-were-out", name="offline")
        assert status == 202  # kept: nobody to deliver it to yet
        assert conversation(pbx, "100", "101") == [(b"while-you-were-out", False)]
        started = time.monotonic()
        got = come_online(pbx, "101", USERS[1][1])
        assert time.monotonic() - started < 5.0
        assert [m.body for m in got] == [b"while-you-were-out"]
        assert got[0].headers.get("X-Message-ID")
        assert "<sip:100@" in str(got[0].headers.get("From"))
        time.sleep(0.5)  # the delivery is written behind the 200
        assert conversation(pbx, "100", "101") == [(b"while-you-were-out", True)]


def test_a_failed_delivery_is_sent_again_with_the_same_id(tmp_path: Path) -> None:
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=CONFIG) as pbx:
        status, _ = send(pbx, tmp_path, 0, "101", "try-again", name="retry")
        assert status == 202
        # the phone comes online and fails the first copy (480): a second one follows
        got = come_online(pbx, "101", USERS[1][1], wait=8.0, expect=2, statuses=(480,))
        assert [m.body for m in got] == [b"try-again", b"try-again"]
        ids = [m.headers.get("X-Message-ID") for m in got]
        assert ids[0] and ids[0] == ids[1] and got[0].call_id != got[1].call_id
        time.sleep(0.5)
        assert conversation(pbx, "100", "101") == [(b"try-again", True)]


def test_refusals_non_user_nobody_oversize_and_content_type(tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=CONFIG,
                     store_setup=carrier_setup(carrier_port)) as pbx:
        log = tmp_path / "carrier-messages.log"
        res = sipp("message_uac_noauth.xml", pbx.addr("udp"), tmp_path, local_ip=CARRIER_HOST,
                   timeout=15, extra=["-key", "dst", "100", "-trace_msg", "-message_file",
                                      str(log)])
        assert res.successful == 1, res.output
        assert final_statuses(read_log(log)) == [403]  # no challenge: it is no user's
        assert send(pbx, tmp_path, 0, "199", "anyone?", name="nobody")[0] == 404
        assert send(pbx, tmp_path, 0, "101", "x" * (MAX_SIZE + 1), name="big")[0] == 413
        status, trace = send(pbx, tmp_path, 0, "101", "{}", ctype="application/json",
                             name="json")
        accept = trace.split("Accept:", 1)[1].split("\n", 1)[0]
        assert status == 415 and "text/plain" in accept and "message/cpim" in accept
        # a type the SIP stack takes (presence) but chat does not: our own 415, after the
        # challenge, naming what chat takes
        status, trace = send(pbx, tmp_path, 0, "101", "<presence/>",
                             ctype="application/pidf+xml", name="pidf")
        assert status == 415 and "Accept: text/plain, message/cpim" in trace
        assert "407 Proxy Authentication Required" in trace
    assert conversation(pbx, "100", "101") == []


def test_messages_never_cross_tenants(tmp_path: Path) -> None:
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=CONFIG,
                     store_setup=tenant_b) as pbx:
        other_port = free_port()
        assert register_in_tenant(pbx, "101", USERS_B[0][1], other_port).status == 200
        other = SippUas(tmp_path, "message_uas.xml", other_port, keys={}, name="b101",
                        timeout=20)
        ours = device(tmp_path, pbx, "101", USERS[1][1], "message_uas.xml", name="a101")
        try:
            assert send(pbx, tmp_path, 0, "101", "same-tenant-only", name="tenant")[0] == 200
            got = received(finished(ours))
            time.sleep(1.0)
        finally:
            other.stop()
            ours.stop()
        assert [m["body"] for m in got] == ["same-tenant-only"]
        assert "MESSAGE sip:" not in other.log()  # tenant B's 101 got nothing


def test_a_message_during_a_call_goes_on_in_the_other_partys_dialog(tmp_path: Path) -> None:
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=CONFIG) as pbx:
        callee = device(tmp_path, pbx, "101", USERS[1][1], "call_uas_message.xml",
                        name="callee")
        inf = users_csv(tmp_path / "caller.csv", [USERS[0]])
        host, port = pbx.addr("udp")
        log = tmp_path / "caller-messages.log"
        try:
            res = sipp("call_uac_message.xml", (host, port), tmp_path, inf=inf, timeout=20,
                       extra=["-auth_uri", f"101@{host}:{port}", "-key", "dst", "101",
                              "-key", "rtp_port", str(free_port()), "-key", "text",
                              "in-call-note", "-d", "500", "-trace_msg",
                              "-message_file", str(log)])
            assert res.successful == 1, res.output + read_log(log)[-2000:]
            got = received(finished(callee))
        finally:
            callee.stop()
        assert [m["body"] for m in got] == ["in-call-note"] and got[0]["id"]
        assert "<sip:100@" in got[0]["from"]
        invite_call_id = callee.log().split("Call-ID:", 1)[1].split("\n", 1)[0].strip()
        assert got[0]["call_id"] == invite_call_id  # inside the callee's dialog
    assert conversation(pbx, "100", "101") == [(b"in-call-note", True)]


def test_a_sender_over_the_message_limit_gets_503_and_nothing_is_kept(tmp_path: Path) -> None:
    # [chat] burst 3, then one message per 20 s: the 4th and 5th are refused with 503 and
    # Retry-After, neither kept nor delivered, and the episode is logged once
    config = CONFIG + "burst = 3\nrate = 0.05\n"
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=config) as pbx:
        statuses, traces = [], []
        for n in range(5):
            status, trace = send(pbx, tmp_path, 0, "101", f"m{n}", name=f"flood{n}")
            statuses.append(status)
            traces.append(trace)
        assert statuses == [202, 202, 202, 503, 503], statuses
        retry = re.search(r"^Retry-After: *(\d+)", traces[3], re.M)
        assert retry is not None and 1 <= int(retry.group(1)) <= 20
        assert [body for body, _ in conversation(pbx, "100", "101")] == [b"m0", b"m1", b"m2"]
        assert read_log(pbx.log_path).count("chat.rate_limited") == 1
