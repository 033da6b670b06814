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
from tests.interop.harness import SCENARIOS, PbxProcess, free_port, need, running_pbx, sipp
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
                            stdin=subprocess.DEVNULL, text=True)
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
    return proc.returncode, (out or "")[-3000:] + (errors.read_text()[-3000:]
                                                   if errors.exists() else "")


def test_inbound_did_call_reaches_the_owner_and_is_answered(tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with pbx_with_carrier(tmp_path, carrier_port) as pbx:
        phone_port = free_port()
        register_port(pbx, "101", USERS[1][1], phone_port)
        phone = SippUas(tmp_path, "call_uas_answer.xml", phone_port, keys={"rtp_port": "45998"},
                        name="phone101")
        try:
            res = sipp("carrier_call_inbound.xml", pbx.addr("udp"), tmp_path,
                       local_ip=CARRIER_HOST, timeout=40,
                       extra=["-key", "dst", DID_101, "-key", "caller", "+4917012345",
                              "-key", "rtp_port", "45996", "-d", "1000"])
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
                                      "-key", "rtp_port", "45994", "-trace_msg",
                                      "-message_file", str(tmp_path / "in404.log")])
        assert res.successful == 0
    assert final_statuses((tmp_path / "in404.log").read_text())[-1] == 404


def test_outbound_national_call_reaches_the_carrier_normalised_with_the_did(
        tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with pbx_with_carrier(tmp_path, carrier_port) as pbx, \
            carrier_uas(tmp_path, "carrier_call_outbound.xml", carrier_port, 45990) as carrier:
        ok, failed, out = caller(pbx, tmp_path, dst="0301234567", pause_ms=1000,
                                 rtp_port=45992)
        rc, carrier_out = _finish(carrier, tmp_path)
        assert (ok, failed) == (1, 0), out + carrier_out
        assert rc == 0, carrier_out
    log = (tmp_path / "carrier-messages.log").read_text()
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
