"""Toll fraud (SECURITY.md): a SIPp "carrier" on 127.0.0.2, configured as the PBX's IP trunk,
receives exactly 0 INVITEs from the attacks — unauthenticated INVITEs from 127.0.0.20 … (plain, with
a forged P-Asserted-Identity, with a preloaded Route to the carrier, each of those also with a
space before the colon, with duplicate From or To headers that two readers could take
differently, with headers escaped into the Request-URI) and the same tricks by an authenticated
user without the permission (user 105 on 127.0.0.7, internal calls only, dialling a national
number; user 100 on 127.0.0.9, national permission, dialling an international one). Every attack gets a
final error answer (never 1xx beyond 100, never 2xx). Then a legitimate national call by user
100 reaches the carrier and completes: the path to the carrier was open all along, and the
carrier's trace holds that call's INVITEs and no other."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from sipcore.message import Request, parse_message
from tests.interop.harness import free_port, read_log, running_pbx
from tests.interop.test_calls_sipp import USERS, caller
from tests.interop.test_carrier_calls import (
    CARRIER_HOST,
    INTERNAL_USER,
    _finish,
    carrier_uas,
    internal_user_setup,
)
from tests.security.test_enumeration import record
from tests.security.wire import SipClient, need_aliases

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

STRANGER = "127.0.0.2"  # + the variant's number: 127.0.0.20, 127.0.0.21, …
INSIDER = "127.0.0.7"
NATIONAL_USER = "127.0.0.9"
INTERNATIONAL = "00442012345678"
NATIONAL = "0309876543"  # the legitimate call dials 0301234567


def invite_text(client: SipClient, user: str, dst: str, cseq: int, call_id: str, tag: str,
                headers: str = "", ruri: str | None = None, auth: str = "") -> bytes:
    server = f"{client.server[0]}:{client.server[1]}"
    sdp = (f"v=0\r\no=- 1 1 IN IP4 {client.host}\r\ns=-\r\nc=IN IP4 {client.host}\r\nt=0 0\r\n"
           f"m=audio {free_port(client.host)} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    from_ = f"From: <sip:{user}@{client.server[0]}>;tag={tag}\r\n"
    if "From:" in headers or "From :" in headers:
        from_ = ""
    to = f"To: <sip:{dst}@{client.server[0]}>\r\n"
    if "To:" in headers or "To :" in headers:
        to = ""
    return (f"INVITE {ruri or f'sip:{dst}@{server}'} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {client.host}:{client.port};rport;branch=z9hG4bK{os.urandom(6).hex()}\r\n"
            f"{from_}{to}{headers}Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n"
            f"Contact: <sip:{user}@{client.host}:{client.port}>\r\nMax-Forwards: 70\r\n{auth}"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


def attempt(client: SipClient, user: str, dst: str, headers: str = "", *,
            password: str | None = None, ruri: str | None = None) -> list[int]:
    """One INVITE (answered by a challenge, then with credentials when ``password`` is given);
    every status received, 100 excluded."""
    call_id, tag = os.urandom(8).hex(), os.urandom(3).hex()
    statuses = []
    first = client.send_raw(invite_text(client, user, dst, 1, call_id, tag, headers, ruri))
    if first is None:
        return [0]
    statuses.append(first.response.status)
    client.sock.sendto(ack_for(first.response.status, client, call_id, 1), client.server)
    if password is None or first.response.status != 407:
        return statuses
    # credentials over the same Request-URI; Proxy-Authorization spliced into the raw text so
    # the smuggled headers reach the server exactly as written
    plain = parse_message(invite_text(client, user, dst, 2, call_id, tag, "", ruri))
    assert isinstance(plain, Request)
    authed = client.digest.authorize(plain, first.response, user, password,
                                     realm="asyncpbx-test")
    auth = f"Proxy-Authorization: {authed.headers.get('Proxy-Authorization')}\r\n"
    second = client.send_raw(invite_text(client, user, dst, 2, call_id, tag, headers, ruri, auth))
    statuses.append(second.response.status if second is not None else 0)
    if second is not None:
        client.sock.sendto(ack_for(second.response.status, client, call_id, 2), client.server)
    return statuses


def ack_for(status: int, client: SipClient, call_id: str, cseq: int) -> bytes:
    # a best-effort ACK so the server stops retransmitting its final answer (its To-tag is
    # not echoed: the server matches the ACK to the transaction by branch anyway only when the
    # branch matches; unmatched it is dropped, which is fine here)
    del status
    return (f"ACK sip:x@{client.server[0]} SIP/2.0\r\nVia: SIP/2.0/UDP {client.host}:{client.port}"
            f";branch=z9hG4bK{os.urandom(6).hex()}\r\nFrom: <sip:a@{client.host}>;tag=a\r\n"
            f"To: <sip:b@{client.server[0]}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} ACK\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def variants(carrier: str, host: str) -> dict[str, str]:
    """Header tricks (headers inserted before Call-ID)."""
    return {
        "plain": "",
        "forged PAI": f"P-Asserted-Identity: <sip:100@{host}>\r\n",
        "forged PAI, space before colon": f"P-Asserted-Identity : <sip:100@{host}>\r\n",
        "preloaded Route": f"Route: <sip:{carrier};lr>\r\n",
        "preloaded Route, space before colon": f"Route : <sip:{carrier};lr>\r\n",
        "duplicate From": (f"From: <sip:100@{host}>;tag=f1\r\n"
                           f"From: <sip:105@{host}>;tag=f2\r\n"),
        "duplicate To": (f"To: <sip:{NATIONAL}@{host}>\r\nTo: <sip:101@{host}>\r\n"),
        "duplicate From, space before colon": (f"From: <sip:105@{host}>;tag=f1\r\n"
                                               f"From : <sip:100@{host}>;tag=f2\r\n"),
        "trusted-looking headers": (f"P-Preferred-Identity: <sip:100@{host}>\r\n"
                                    "Remote-Party-ID: <sip:100@" + host + ">;privacy=off\r\n"
                                    "X-Trusted: yes\r\n"),
    }


def test_carrier_receives_no_fraudulent_invite(tmp_path: Path) -> None:
    need_aliases(CARRIER_HOST, f"{STRANGER}0", INSIDER, NATIONAL_USER)
    carrier_port = free_port(CARRIER_HOST)
    carrier_addr = f"{CARRIER_HOST}:{carrier_port}"
    config = "[media]\nport_min = 45000\nport_max = 45999\n"
    outcomes: dict[str, list[int]] = {}
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=config,
                     store_setup=internal_user_setup(carrier_port)) as pbx, \
            carrier_uas(tmp_path, "carrier_call_outbound.xml", carrier_port,
                        free_port()) as carrier:
        server = pbx.addr("udp")
        host = server[0]
        with SipClient(INSIDER, server, timeout=3.0) as insider, \
                SipClient(NATIONAL_USER, server, timeout=3.0) as national:
            for i, (name, headers) in enumerate(variants(carrier_addr, host).items()):
                # one stranger address per variant: together they would be more than 16
                # unauthenticated messages in 2 s from one source, banned before the last
                with SipClient(f"{STRANGER}{i}", server, timeout=3.0) as stranger:
                    outcomes[f"unauthenticated, {name}"] = attempt(
                        stranger, "100", INTERNATIONAL, headers)
                outcomes[f"unauthorised, {name}"] = attempt(
                    insider, INTERNAL_USER[0], NATIONAL, headers, password=INTERNAL_USER[1])
                outcomes[f"unauthorised (international by a national user), {name}"] = attempt(
                    national, USERS[0][0], INTERNATIONAL, headers, password=USERS[0][1])
            # headers escaped into the Request-URI (RFC 4475 §3.1.2.11)
            escaped = (f"sip:{NATIONAL}@{host}:{server[1]}?Route=%3Csip:{carrier_addr}%3Blr%3E"
                       f"&P-Asserted-Identity=%3Csip:100@{host}%3E")
            outcomes["unauthorised, headers escaped in the Request-URI"] = attempt(
                insider, INTERNAL_USER[0], NATIONAL, password=INTERNAL_USER[1], ruri=escaped)
        # the path to the carrier is open: user 100's national call goes through
        ok, failed, out = caller(pbx, tmp_path, dst="0301234567", pause_ms=500,
                                 rtp_port=free_port())
        rc, carrier_out = _finish(carrier, tmp_path)
        assert (ok, failed) == (1, 0), out + carrier_out
        assert rc == 0, carrier_out
        outbound = [e for e in pbx.log_events() if e.get("event") == "call.outbound"]
    for name, statuses in outcomes.items():
        # a challenge first for the insider, then a final refusal; never ringing, never 2xx
        assert statuses and all(s >= 400 for s in statuses), (name, statuses)
        if name.startswith("unauthorised"):
            assert statuses[-1] in (400, 403, 404, 484), (name, statuses)
        else:
            assert statuses[-1] in (400, 401, 407), (name, statuses)
    log = read_log(tmp_path / "carrier-messages.log")
    invites = re.findall(r"^INVITE (\S+) SIP/2.0", log, re.M)
    assert invites and all(uri.startswith("sip:+49301234567@") for uri in invites), invites
    assert INTERNATIONAL[2:] not in log and NATIONAL[1:] not in log
    assert [e["number"] for e in outbound] == ["+49301234567"], outbound
    fraudulent = len([u for u in invites if not u.startswith("sip:+49301234567@")])
    record("toll_fraud", {"variants": len(outcomes), "fraudulent_invites_at_carrier": fraudulent,
                          "legit_invites_at_carrier": len(invites), "outcomes": outcomes})
