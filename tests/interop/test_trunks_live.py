"""Trunks of the running server (``asyncpbx serve`` in a subprocess) against plain Python UDP
sockets: the carrier's registrar on 127.0.0.2, a forger on 127.0.0.3.

* A challenge from anybody but the trunk is never answered: the forger copies Via/From/To/
  Call-ID/CSeq of our REGISTER into a 401; nobody receives credentials, the log has
  ``security.trunk.foreign_challenge src=127.0.0.3``; the carrier's own 401 is answered, to it.
* ``asyncpbx trunk add/remove`` (a separate CLI process writing the store) take effect in the
  running server: a REGISTER arrives, then a REGISTER with Expires: 0; ``/health`` lists the
  trunks with their state.
* A trunk whose host is a DNS name (``localhost``: the only name /etc/hosts gives us without a
  network, so that carrier runs on 127.0.0.1 with a port of its own) is resolved by the
  server: the REGISTER goes to the address, the carrier's 401 is answered, forged ones (from
  127.0.0.3, and from 127.0.0.1 on another port) are not; a name that does not resolve is
  "failed" in ``/health`` with a clear error.
* An inbound call from a SIPp carrier on 127.0.0.2 to a DID is challenged (407: the source is
  no trunk, so it must be a device) until ``asyncpbx trunk add … --kind ip`` runs against the
  live server; then the same INVITE reaches the registered owner, who answers.

Every socket read is bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest

from pbx.store import Store
from sipcore.digest import DigestServer, make_credentials
from sipcore.message import Request, make_response, new_tag, parse_message
from tests.interop.harness import ROOT, PbxProcess, free_port, read_log, running_pbx, sipp

pytestmark = pytest.mark.interop

CARRIER_HOST = "127.0.0.2"
FORGER_HOST = "127.0.0.3"
REALM = "carrier.test"
USERNAME = "4930111"
PASSWORD = "s3cret"
USERS = (("100", "pw-100"),)


@contextmanager
def udp_socket(host: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        yield sock
    finally:
        sock.close()


def receive(sock: socket.socket, timeout: float,
            want: Callable[[Request], bool] = lambda r: True) -> tuple[Request, tuple[str, int]]:
    """The first request ``want`` accepts within ``timeout`` seconds (others are skipped)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, addr = sock.recvfrom(65536)
        except TimeoutError:
            break
        message = parse_message(data)
        if isinstance(message, Request) and want(message):
            return message, addr
    raise AssertionError(f"nothing wanted arrived at {sock.getsockname()} in {timeout} s")


def everything(sock: socket.socket, seconds: float) -> list[bytes]:
    """All datagrams arriving within ``seconds``."""
    out: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append(sock.recvfrom(65536)[0])
        except TimeoutError:
            break
    return out


def ok(request: Request, expires: int) -> bytes:
    response = make_response(request, 200, to_tag=new_tag())
    response.headers.add("Contact", f"{request.headers.get('Contact')};expires={expires}")
    return response.serialize()


def answer_unregister(sock: socket.socket) -> threading.Thread:
    """Answer the REGISTER with Expires: 0 the server sends when it stops (in a thread)."""

    def run() -> None:
        with contextlib.suppress(AssertionError, OSError):
            request, addr = receive(sock, 20, lambda r: r.headers.get("Expires") == "0")
            sock.sendto(ok(request, 0), addr)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def health(pbx: PbxProcess) -> dict[str, object]:
    host, port = pbx.addr("http")
    with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=5) as resp:
        body: dict[str, object] = json.loads(resp.read())
    return body


def trunks_of(pbx: PbxProcess) -> dict[str, dict[str, object]]:
    entries = health(pbx)["trunks"]
    assert isinstance(entries, list)
    return {str(e["name"]): e for e in entries}


def cli(pbx: PbxProcess, *args: str) -> str:
    """``asyncpbx ARGS`` as its own process on the server's data directory."""
    done = subprocess.run(
        [sys.executable, "-m", "pbx", *args, "--config", str(pbx.workdir / "asyncpbx.toml"),
         "--data-dir", str(pbx.data_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def security_lines(pbx: PbxProcess) -> list[dict[str, object]]:
    return [e for e in pbx.log_events() if e.get("event") == "security.trunk.foreign_challenge"]


def test_foreign_challenge_is_ignored_and_logged_the_trunks_own_is_answered(
        tmp_path: Path) -> None:
    carrier_auth = DigestServer(REALM, b"c" * 32, algorithms=("MD5",))
    creds = {USERNAME: make_credentials(USERNAME, REALM, PASSWORD, ("MD5",))}
    with udp_socket(CARRIER_HOST) as carrier, udp_socket(FORGER_HOST) as forger:
        carrier_port = carrier.getsockname()[1]

        def setup(store: object) -> None:
            assert isinstance(store, Store)
            store.add_trunk("carrier", kind="register", host=CARRIER_HOST, port=carrier_port,
                            username=USERNAME, password=PASSWORD, realm=REALM,
                            register_expiry=600)

        with running_pbx(tmp_path, transports=("udp",), users=USERS, store_setup=setup) as pbx:
            first, pbx_addr = receive(carrier, 15)
            assert first.method == "REGISTER" and "Authorization" not in first.headers
            assert pbx_addr == pbx.addr("udp")
            assert trunks_of(pbx)["carrier"]["state"] == "registering"

            # the forger has seen our REGISTER: a 401 with its Via/From/To/Call-ID/CSeq
            forged = make_response(first, 401, to_tag=new_tag())
            forged.headers.add("WWW-Authenticate",
                               f'Digest realm="{REALM}", nonce="f0rged", algorithm=MD5, qop="auth"')
            forger.sendto(forged.serialize(), pbx_addr)
            # for a bounded time: retransmissions of the first REGISTER at most, no credentials
            seen = everything(carrier, 2.5)
            for data in seen:
                message = parse_message(data)
                assert isinstance(message, Request), data[:200]
                assert "Authorization" not in message.headers, data[:400]
                assert message.headers.get("Call-ID") == first.call_id
            assert everything(forger, 0.2) == []  # not even an ACK
            lines = security_lines(pbx)
            assert len(lines) == 1, lines
            assert lines[0]["src"] == FORGER_HOST and lines[0]["status"] == 401, lines
            assert str(lines[0]["trunk"]).endswith("/carrier"), lines
            assert trunks_of(pbx)["carrier"]["state"] == "registering"

            # the carrier's own challenge to the same transaction: answered, to the carrier
            challenge = carrier_auth.challenge(first, CARRIER_HOST, time.time())
            carrier.sendto(challenge.serialize(), pbx_addr)
            second, _ = receive(carrier, 10, lambda r: "Authorization" in r.headers)
            assert second.call_id == first.call_id and second.cseq.seq == first.cseq.seq + 1
            assert f'realm="{REALM}"' in (second.headers.get("Authorization") or "")
            assert carrier_auth.verify(second, CARRIER_HOST, creds.get, time.time()).ok
            carrier.sendto(ok(second, 600), pbx_addr)
            deadline = time.monotonic() + 10
            while trunks_of(pbx)["carrier"]["state"] != "registered":
                assert time.monotonic() < deadline, trunks_of(pbx)
                time.sleep(0.1)
            assert everything(forger, 0.2) == []
            assert len(security_lines(pbx)) == 1
            entry = trunks_of(pbx)["carrier"]
            assert entry["foreign_challenges"] == 1 and entry["refused_challenges"] == 0
            answer_unregister(carrier)  # the server stops: quick when answered


def test_trunks_added_and_removed_by_the_cli_take_effect_while_running(tmp_path: Path) -> None:
    with udp_socket(CARRIER_HOST) as carrier, \
            running_pbx(tmp_path, transports=("udp",), users=USERS) as pbx:
        carrier_port = carrier.getsockname()[1]
        assert health(pbx)["trunks"] == []

        cli(pbx, "trunk", "add", "carrier", "--kind", "register", "--host", CARRIER_HOST,
            "--port", str(carrier_port), "--username", USERNAME, "--password", PASSWORD,
            "--realm", REALM, "--register-expiry", "600")
        cli(pbx, "trunk", "add", "sbc", "--kind", "ip", "--host", "127.0.0.4")
        register, pbx_addr = receive(carrier, 15)
        assert register.method == "REGISTER" and register.headers.get("Expires") == "600"
        assert pbx_addr == pbx.addr("udp")
        carrier.sendto(ok(register, 600), pbx_addr)
        deadline = time.monotonic() + 10
        # the server reads each CLI change on its next store poll (once a second): the
        # carrier can register before the second trunk is read
        while (trunks_of(pbx).get("carrier", {}).get("state") != "registered"
               or "sbc" not in trunks_of(pbx)):
            assert time.monotonic() < deadline, health(pbx)
            time.sleep(0.1)
        trunks = trunks_of(pbx)
        assert trunks["carrier"]["kind"] == "register" and trunks["carrier"]["tenant"] == "default"
        assert 500 <= int(str(trunks["carrier"]["next_refresh"])) <= 510  # 85 % of 600 s
        assert trunks["sbc"]["kind"] == "ip" and trunks["sbc"]["state"] == "ip"
        assert PASSWORD not in json.dumps(health(pbx))

        cli(pbx, "trunk", "remove", "carrier")
        # (a retransmission of the first REGISTER, sent before our 200 arrived, may still wait
        # in the socket: the same CSeq)
        unregister, _ = receive(carrier, 15, lambda r: r.cseq.seq != register.cseq.seq)
        assert unregister.method == "REGISTER" and unregister.headers.get("Expires") == "0"
        assert unregister.call_id == register.call_id  # the same registration, ended
        carrier.sendto(ok(unregister, 0), pbx_addr)
        cli(pbx, "trunk", "remove", "sbc")
        deadline = time.monotonic() + 10
        while health(pbx)["trunks"] != []:
            assert time.monotonic() < deadline, health(pbx)
            time.sleep(0.1)
        reconciled = [e for e in pbx.log_events() if e.get("event") == "trunk.reconciled"]
        removed = [[str(k).rsplit("/", 1)[-1] for k in cast("list[object]", e["removed"])]
                   for e in reconciled]
        assert ["carrier"] in removed, reconciled
        # nothing more is sent to the removed trunk (a stopped registration has no timer)
        assert everything(carrier, 1.5) == []


def test_foreign_challenge_to_an_outbound_invite_is_ignored_the_trunks_own_is_answered(
        tmp_path: Path) -> None:
    from tests.interop.test_calls_sipp import USERS as CALL_USERS
    from tests.interop.test_calls_sipp import caller

    carrier_auth = DigestServer(REALM, b"c" * 32, algorithms=("MD5",), proxy=True)
    creds = {USERNAME: make_credentials(USERNAME, REALM, PASSWORD, ("MD5",))}
    with udp_socket(CARRIER_HOST) as carrier, udp_socket(FORGER_HOST) as forger:
        carrier_port = carrier.getsockname()[1]

        def setup(store: object) -> None:
            assert isinstance(store, Store)
            store.add_trunk("carrier", kind="ip", host=CARRIER_HOST, port=carrier_port,
                            username=USERNAME, password=PASSWORD, realm=REALM)
            store.add_number("+49301112233", user=CALL_USERS[0][0])

        config = "[media]\nport_min = 46000\nport_max = 46899\n"
        with running_pbx(tmp_path, transports=("udp",), users=CALL_USERS, config_extra=config,
                         store_setup=setup) as pbx:
            outcome: list[tuple[int, int, str]] = []
            call = threading.Thread(target=lambda: outcome.append(caller(
                pbx, tmp_path, "call_uac_fail.xml", dst="0301234567", rtp_port=free_port(),
                extra=["-key", "extra_header", "Subject: outbound"])))
            call.start()
            try:
                invite, pbx_addr = receive(carrier, 20, lambda r: r.method == "INVITE")
                assert invite.uri.user == "+49301234567"  # type: ignore[union-attr]
                forged = make_response(invite, 407, to_tag=new_tag())
                forged.headers.add("Proxy-Authenticate", f'Digest realm="{REALM}", '
                                   'nonce="f0rged", algorithm=MD5, qop="auth"')
                forger.sendto(forged.serialize(), pbx_addr)
                for data in everything(carrier, 2.5):  # INVITE retransmissions at most
                    message = parse_message(data)
                    assert isinstance(message, Request) and message.method == "INVITE", data[:300]
                    assert "Proxy-Authorization" not in message.headers, data[:600]
                assert everything(forger, 0.2) == []  # no ACK, no credentials
                lines = security_lines(pbx)
                assert len(lines) == 1 and lines[0]["src"] == FORGER_HOST, lines
                assert lines[0]["status"] == 407 and str(lines[0]["trunk"]).endswith("/carrier")

                carrier.sendto(carrier_auth.challenge(invite, CARRIER_HOST, time.time())
                               .serialize(), pbx_addr)
                again, _ = receive(carrier, 10, lambda r: r.method == "INVITE"
                                   and "Proxy-Authorization" in r.headers)
                assert again.call_id == invite.call_id
                assert carrier_auth.verify(again, CARRIER_HOST, creds.get, time.time()).ok
                carrier.sendto(make_response(again, 486, to_tag=new_tag()).serialize(),
                               pbx_addr)
            finally:
                call.join(60)
            assert outcome and outcome[0][:2] == (1, 0), outcome
            assert everything(forger, 0.2) == []
            assert len(security_lines(pbx)) == 1


def _wait_state(pbx: PbxProcess, name: str, state: str, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while (entry := trunks_of(pbx).get(name, {})).get("state") != state:
        assert time.monotonic() < deadline, health(pbx)
        time.sleep(0.1)
    return entry


def test_trunk_named_by_dns_is_resolved_its_challenge_answered_forged_ones_not(
        tmp_path: Path) -> None:
    carrier_auth = DigestServer(REALM, b"c" * 32, algorithms=("MD5",))
    creds = {USERNAME: make_credentials(USERNAME, REALM, PASSWORD, ("MD5",))}
    with udp_socket("127.0.0.1") as carrier, udp_socket(FORGER_HOST) as forger, \
            udp_socket("127.0.0.1") as neighbour:
        carrier_port = carrier.getsockname()[1]

        def setup(store: object) -> None:
            assert isinstance(store, Store)
            store.add_trunk("carrier", kind="register", host="localhost", port=carrier_port,
                            username=USERNAME, password=PASSWORD, realm=REALM,
                            register_expiry=600)
            store.add_trunk("nowhere", kind="register", host="sbc.nowhere.invalid",
                            username=USERNAME, password=PASSWORD, realm=REALM)

        with running_pbx(tmp_path, transports=("udp",), users=USERS, store_setup=setup) as pbx:
            first, pbx_addr = receive(carrier, 15)
            assert first.method == "REGISTER" and "Authorization" not in first.headers
            assert str(first.uri) == f"sip:localhost:{carrier_port}"  # the name stays in URIs
            assert trunks_of(pbx)["carrier"]["state"] == "registering"

            # forgeries of a challenge to our REGISTER: another address, and our carrier's
            # address with another port — neither is where the REGISTER went
            for sock in (forger, neighbour):
                forged = make_response(first, 401, to_tag=new_tag())
                forged.headers.add("WWW-Authenticate", f'Digest realm="{REALM}", '
                                   'nonce="f0rged", algorithm=MD5, qop="auth"')
                sock.sendto(forged.serialize(), pbx_addr)
            for data in everything(carrier, 2.5):  # retransmissions of the first REGISTER
                message = parse_message(data)
                assert isinstance(message, Request), data[:200]
                assert "Authorization" not in message.headers, data[:400]
            assert everything(forger, 0.2) == [] and everything(neighbour, 0.2) == []
            lines = security_lines(pbx)
            assert len(lines) == 1 and lines[0]["src"] == FORGER_HOST, lines  # one per transaction
            assert trunks_of(pbx)["carrier"]["foreign_challenges"] == 2

            # the carrier's own challenge: answered, to the carrier
            carrier.sendto(carrier_auth.challenge(first, "127.0.0.1", time.time()).serialize(),
                           pbx_addr)
            second, _ = receive(carrier, 10, lambda r: "Authorization" in r.headers)
            assert second.call_id == first.call_id and second.cseq.seq == first.cseq.seq + 1
            assert carrier_auth.verify(second, "127.0.0.1", creds.get, time.time()).ok
            carrier.sendto(ok(second, 600), pbx_addr)
            entry = _wait_state(pbx, "carrier", "registered")
            assert entry["refused_challenges"] == 0
            assert everything(forger, 0.2) == [] and everything(neighbour, 0.2) == []

            # a name that does not resolve: failed, with the reason, nothing crashed
            nowhere = _wait_state(pbx, "nowhere", "failed")
            assert str(nowhere["last_error"]).startswith("cannot resolve sbc.nowhere.invalid")
            answer_unregister(carrier)
        failed = [e for e in pbx.log_events() if e.get("event") == "trunk.dns.failed"]
        assert len(failed) == 1 and str(failed[0]["trunk"]).endswith("/nowhere"), failed


def test_inbound_call_through_an_ip_trunk_added_by_the_cli_while_running(
        tmp_path: Path) -> None:
    from tests.interop.test_calls_sipp import USERS as CALL_USERS
    from tests.interop.test_calls_sipp import SippUas, final_statuses, register_port

    did = "+49301112244"

    def setup(store: object) -> None:
        assert isinstance(store, Store)
        store.add_number(did, user=CALL_USERS[1][0])

    def carrier_call(log: str, rtp_port: int, timeout: float) -> int:
        """The carrier's INVITE to the DID from 127.0.0.2 (SIPp); the number of calls that
        succeeded."""
        res = sipp("carrier_call_inbound.xml", pbx.addr("udp"), tmp_path,
                   local_ip=CARRIER_HOST, timeout=timeout,
                   extra=["-key", "dst", did, "-key", "caller", "+4917012345",
                          "-key", "rtp_port", str(rtp_port or free_port()), "-d", "1000",
                          "-trace_msg", "-message_file", str(tmp_path / log)])
        assert res.failed + res.successful == 1, res.output
        return res.successful

    config = "[media]\nport_min = 46000\nport_max = 46899\n"
    with running_pbx(tmp_path, transports=("udp",), users=CALL_USERS, config_extra=config,
                     store_setup=setup) as pbx:
        phone_port = free_port()
        register_port(pbx, CALL_USERS[1][0], CALL_USERS[1][1], phone_port)

        # no trunk at 127.0.0.2 yet: a stranger must authenticate as a device — 407, no call
        assert carrier_call("before.log", free_port(), 15) == 0
        refused = final_statuses(read_log(tmp_path / "before.log"))
        assert refused and set(refused) == {407}, refused  # (retransmitted: SIPp sends no ACK)
        assert not [e for e in pbx.log_events() if e.get("event") == "call.started"]

        cli(pbx, "trunk", "add", "sbc", "--kind", "ip", "--host", CARRIER_HOST)
        _wait_state(pbx, "sbc", "ip")
        phone = SippUas(tmp_path, "call_uas_answer.xml", phone_port,
                        keys={"rtp_port": str(free_port())}, name="phone101")
        try:
            assert carrier_call("after.log", free_port(), 40) == 1, read_log(tmp_path / "after.log")
            rc, phone_out = phone.result()
        finally:
            phone.stop()
        assert rc == 0, phone_out
        assert final_statuses(read_log(tmp_path / "after.log")) == []
        invite = phone.log().split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
        assert "+4917012345" in invite.split("From:", 1)[1].splitlines()[0]
    started = [e for e in pbx.log_events() if e.get("event") == "call.started"]
    assert len(started) == 1 and started[0]["callee"] == did, started
    assert str(started[0]["src"]).startswith(f"{CARRIER_HOST}:")
