"""Calls between the PBX and a carrier: SIPp plays the carrier on another loopback address
(127.0.0.2), configured in the store as an IP trunk of the default tenant (challenging our
INVITEs with its own realm); phones are SIPp UASs registered from the port they then bind.

* an inbound call to a DID reaches the registered device of the DID's owner and is answered;
* a user dialling ``030 1234567`` reaches the carrier as ``sip:+49301234567@…`` with the user's
  DID in From, the carrier's 401 answered with the trunk's credentials;
* an international call by a user with national permission is refused with 403, and the
  carrier's address receives not a single datagram.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pbx.store import Store
from tests.interop.harness import (
    SCENARIOS,
    PbxProcess,
    free_port,
    need,
    read_log,
    running_pbx,
    sipp,
    users_csv,
)
from tests.interop.test_calls_baresip import wait_for
from tests.interop.test_calls_sipp import (
    USERS,
    SippUas,
    caller,
    final_statuses,
    messages,
    register_port,
)

pytestmark = pytest.mark.interop

CARRIER_HOST = "127.0.0.2"
DID_100 = "+49301112233"
DID_101 = "+49301112244"


def carrier_setup(carrier_port: int) -> Callable[[Store], None]:
    """Store rows: an IP trunk to the carrier (realm carrier.test) and the users' DIDs."""

    def setup(store: Store) -> None:
        store.add_trunk("carrier", kind="ip", host=CARRIER_HOST, port=carrier_port,
                        username="4930111", password="s3cret", realm="carrier.test")
        store.add_number(DID_100, user="100")
        store.add_number(DID_101, user="101")

    return setup


@contextmanager
def pbx_with_carrier(tmp: Path, carrier_port: int) -> Iterator[PbxProcess]:
    config = "[media]\nport_min = 45000\nport_max = 47999\n"
    with running_pbx(tmp, transports=("udp",), users=USERS, config_extra=config,
                     store_setup=carrier_setup(carrier_port)) as pbx:
        yield pbx


@contextmanager
def carrier_uas(tmp: Path, scenario: str, port: int, rtp_port: int
                ) -> Iterator[subprocess.Popen[str]]:
    """SIPp as the carrier's UAS on 127.0.0.2:port for one call (message trace kept)."""
    args = [need("sipp"), "-sf", str(SCENARIOS / scenario), "-i", CARRIER_HOST, "-p", str(port),
            "-t", "u1", "-m", "1", "-nostdin", "-timeout", "40s", "-timeout_error",
            "-key", "rtp_port", str(rtp_port),
            "-trace_msg", "-message_file", str(tmp / "carrier-messages.log"),
            "-trace_err", "-error_file", str(tmp / "carrier-errors.log")]
    proc = subprocess.Popen(args, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace")
    time.sleep(0.3)  # let it bind
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _finish(proc: subprocess.Popen[str], tmp: Path) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    errors = tmp / "carrier-errors.log"
    return proc.returncode, (out or "")[-3000:] + read_log(errors)[-3000:]


def test_inbound_did_call_reaches_the_owner_and_is_answered(tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with pbx_with_carrier(tmp_path, carrier_port) as pbx:
        phone_port = free_port()
        register_port(pbx, "101", USERS[1][1], phone_port)
        phone = SippUas(tmp_path, "call_uas_answer.xml", phone_port, keys={"rtp_port": str(free_port())},
                        name="phone101")
        try:
            res = sipp("carrier_call_inbound.xml", pbx.addr("udp"), tmp_path,
                       local_ip=CARRIER_HOST, timeout=40,
                       extra=["-key", "dst", DID_101, "-key", "caller", "+4917012345",
                              "-key", "rtp_port", str(free_port()), "-d", "1000"])
            rc, phone_out = phone.result()
        finally:
            phone.stop()
        assert (res.successful, res.failed) == (1, 0), res.output
        assert rc == 0, phone_out
        log = phone.log()
        invite = log.split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
        # the phone sees the caller's number; the untrusted trunk's PAI did not get through
        assert "+4917012345" in invite.split("From:", 1)[1].splitlines()[0]
        assert "+4930666666" not in invite
    started = [e for e in pbx.log_events() if e.get("event") == "call.started"]
    assert started and started[0]["caller"] == "+4917012345" and started[0]["callee"] == DID_101


def test_unknown_did_from_the_carrier_gets_404(tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with pbx_with_carrier(tmp_path, carrier_port) as pbx:
        res = sipp("carrier_call_inbound.xml", pbx.addr("udp"), tmp_path, local_ip=CARRIER_HOST,
                   timeout=15, extra=["-key", "dst", "+49309999999", "-key", "caller", "+4917",
                                      "-key", "rtp_port", str(free_port()), "-trace_msg",
                                      "-message_file", str(tmp_path / "in404.log")])
        assert res.successful == 0
    assert final_statuses(read_log(tmp_path / "in404.log"))[-1] == 404


def test_outbound_national_call_reaches_the_carrier_normalised_with_the_did(
        tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with pbx_with_carrier(tmp_path, carrier_port) as pbx, \
            carrier_uas(tmp_path, "carrier_call_outbound.xml", carrier_port, 45990) as carrier:
        ok, failed, out = caller(pbx, tmp_path, dst="0301234567", pause_ms=1000,
                                 rtp_port=free_port())
        rc, carrier_out = _finish(carrier, tmp_path)
        assert (ok, failed) == (1, 0), out + carrier_out
        assert rc == 0, carrier_out
    log = read_log(tmp_path / "carrier-messages.log")
    assert "INVITE sip:+49301234567@" in log
    assert "Authorization: Digest" in log and 'realm="carrier.test"' in log
    outbound = [e for e in pbx.log_events() if e.get("event") == "call.outbound"]
    assert outbound and outbound[0]["number"] == "+49301234567"
    assert outbound[0]["caller_did"] == DID_100


def test_international_call_without_permission_is_refused_and_never_reaches_the_carrier(
        tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as carrier:
        carrier.bind((CARRIER_HOST, 0))
        carrier.settimeout(0.5)
        carrier_port = carrier.getsockname()[1]
        with pbx_with_carrier(tmp_path, carrier_port) as pbx:
            ok, failed, out = caller(pbx, tmp_path, "carrier_call_refused.xml", dst="00442012345678",
                                     extra=["-key", "extra_header", "Subject: abroad"])
            assert (ok, failed) == (1, 0), out
            seen = []
            try:
                while True:
                    seen.append(carrier.recvfrom(65535))
            except TimeoutError:
                pass
        assert seen == []
    assert final_statuses(messages(tmp_path))[-1] == 403
    refused = [e for e in pbx.log_events() if e.get("event") == "call.refused"]
    assert refused and refused[0]["status"] == 403
    assert not [e for e in pbx.log_events() if e.get("event") == "call.outbound"]


INTERNAL_USER = ("105", "pw-105-secret")


def internal_user_setup(carrier_port: int) -> Callable[[Store], None]:
    """The carrier trunk and DIDs, plus user 105 with internal permission only (no DID)."""
    base = carrier_setup(carrier_port)

    def setup(store: Store) -> None:
        base(store)
        store.add_user(INTERNAL_USER[0], INTERNAL_USER[1], name="Internal only",
                       permission="internal")

    return setup


def call_as(pbx: PbxProcess, tmp: Path, user: tuple[str, str], dst: str, scenario: str,
            *, log: str, extra: tuple[str, ...] = ()) -> tuple[int, int, str]:
    """One SIPp call from ``user`` to ``dst`` (message trace in ``tmp/log``)."""
    inf = users_csv(tmp / f"{user[0]}-{time.monotonic_ns()}.csv", [user])
    host, port = pbx.addr("udp")
    res = sipp(scenario, pbx.addr("udp"), tmp, inf=inf, timeout=30,
               extra=["-auth_uri", f"{dst}@{host}:{port}", "-key", "dst", dst,
                      "-key", "rtp_port", str(free_port()), "-d", "1000", "-trace_msg",
                      "-message_file", str(tmp / log), *extra])
    return res.successful, res.failed, res.output


def test_emergency_call_by_a_user_without_national_permission_reaches_the_carrier(
        tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    config = "[media]\nport_min = 45000\nport_max = 47999\n"
    with running_pbx(tmp_path, transports=("udp",), users=USERS, config_extra=config,
                     store_setup=internal_user_setup(carrier_port)) as pbx:
        # the same user may not call a national number (the permission is really missing) ...
        ok, failed, out = call_as(pbx, tmp_path, INTERNAL_USER, "0301234567",
                                  "carrier_call_refused.xml", log="national.log",
                                  extra=("-key", "extra_header", "Subject: national"))
        assert (ok, failed) == (1, 0), out
        assert final_statuses(read_log(tmp_path / "national.log"))[-1] == 403
        # ... but 112 goes out through the trunk, as dialled, answered by the carrier
        with carrier_uas(tmp_path, "carrier_call_emergency.xml", carrier_port, free_port()) as carrier:
            ok, failed, out = call_as(pbx, tmp_path, INTERNAL_USER, "112", "call_uac.xml",
                                      log="emergency.log")
            rc, carrier_out = _finish(carrier, tmp_path)
        assert (ok, failed) == (1, 0), out + carrier_out
        assert rc == 0, carrier_out
    log = read_log(tmp_path / "carrier-messages.log")
    assert "INVITE sip:112@" in log
    assert "Authorization: Digest" in log and 'realm="carrier.test"' in log
    outbound = [e for e in pbx.log_events() if e.get("event") == "call.outbound"]
    assert [e["number"] for e in outbound] == ["112"], outbound


def test_registration_trunk_registers_when_the_server_starts(tmp_path: Path) -> None:
    # SIPp as the carrier's registrar: 401 (realm carrier.test), then 200 with a 4 s expiry;
    # it then expects the refresh and, when the server stops, the de-registration
    carrier_port = free_port(CARRIER_HOST)

    def setup(store: Store) -> None:
        store.add_trunk("carrier", kind="register", host=CARRIER_HOST, port=carrier_port,
                        username="4930111", password="s3cret", realm="carrier.test",
                        register_expiry=600)

    with carrier_uas(tmp_path, "carrier_register.xml", carrier_port, free_port()) as carrier:
        with running_pbx(tmp_path, transports=("udp",), users=USERS,
                         store_setup=setup) as pbx:
            assert wait_for(pbx, "trunk.register.registered"), read_log(pbx.log_path)[-3000:]
            # the 4 s the carrier granted run out: the server refreshes (a second 200)
            assert wait_for(pbx, "trunk.register.registered", count=2, timeout=15), \
                read_log(pbx.log_path)[-3000:]
        rc, carrier_out = _finish(carrier, tmp_path)
    assert rc == 0, carrier_out  # the scenario saw register, refresh and de-register
    registered = [e for e in pbx.log_events() if e.get("event") == "trunk.register.registered"]
    # the trunk is named <tenant id>/<name>
    assert str(registered[0]["trunk"]).endswith("/carrier"), registered
    assert registered[0]["host"] == CARRIER_HOST, registered
    log = read_log(tmp_path / "carrier-messages.log")
    requests = [m for m in log.split("-----------------------------------------------")
                if "\nREGISTER sip:" in m]
    assert ["Authorization: Digest" in r for r in requests[:2]] == [False, True], requests[:2]
    assert any("Expires: 0" in r for r in requests), requests[-1:]
