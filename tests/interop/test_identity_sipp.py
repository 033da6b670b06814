"""Caller identity over real SIP: the features are switched by dialling their codes from a
registered SIPp phone, then real calls show what the far ends receive.

* CLIR: after ``*31`` a SIPp callee gets ``"Anonymous" <sip:anonymous@anonymous.invalid>`` with
  ``Privacy: id`` and no P-Asserted-Identity; so does an untrusted SIPp carrier, while a trusted
  one gets the real number in P-Asserted-Identity (with ``Privacy: id``); ``*65`` + number shows
  the number for one call, ``*67`` + number withholds it for one, ``#31`` (dialled ``%2331``, as
  phones send it) restores;
* a trusted carrier's anonymous caller reaches the phone as anonymous, the PBX's log keeps the
  number its P-Asserted-Identity asserts;
* the displayed number, set with ``asyncpbx settings set`` while the server runs, is the From
  user at the carrier (and its P-Asserted-Identity), a number the user does not own is refused;
* anonymous rejection: with ``*77`` on, an anonymous carrier caller (From anonymous, or a number
  with ``Privacy: id``) and an internal caller with CLIR get 433; ``*87`` lets them ring again.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pbx.store import Store
from tests.interop.harness import PbxProcess, free_port, read_log, running_pbx, sipp
from tests.interop.test_calls_baresip import wait_for
from tests.interop.test_calls_sipp import USERS, SippUas, events, final_statuses, register_port
from tests.interop.test_carrier_calls import (
    CARRIER_HOST,
    DID_100,
    DID_101,
    _finish,
    carrier_setup,
    carrier_uas,
)
from tests.interop.test_features_sipp import assert_confirmed, dial, dial_code, settings_changes

pytestmark = pytest.mark.interop

CONFIG = "[media]\nport_min = 43000\nport_max = 43999\n[calls]\nring_timeout = 3.0\n"
ROOT = Path(__file__).resolve().parents[2]
#: A second DID of user 100, for the displayed number.
DID_100B = "+49301112299"


def identity_setup(carrier_port: int, *, trusted: bool) -> Callable[[Store], None]:
    """The carrier trunk (trusted or not), the users' DIDs and 100's second DID."""
    base = carrier_setup(carrier_port)

    def setup(store: Store) -> None:
        base(store)
        store.add_number(DID_100B, user="100")
        if trusted:
            store.remove_trunk("carrier")
            store.add_trunk("carrier", kind="ip", host=CARRIER_HOST, port=carrier_port,
                            username="4930111", password="s3cret", realm="carrier.test",
                            trusted=True)

    return setup


@contextlib.contextmanager
def pbx_identity(tmp: Path, carrier_port: int, *, trusted: bool = False
                 ) -> Iterator[PbxProcess]:
    with running_pbx(tmp, transports=("udp",), users=USERS, config_extra=CONFIG,
                     store_setup=identity_setup(carrier_port, trusted=trusted)) as pbx:
        yield pbx


def call_phone(pbx: PbxProcess, tmp: Path, port: int, scenario: str, dst: str,
               caller: int = 0) -> str:
    """``USERS[caller]`` dials ``dst``; the SIPp phone on ``port`` answers playing
    ``scenario``. Returns the INVITE the phone received."""
    uas = SippUas(tmp, scenario, port, keys={"rtp_port": str(free_port())},
                  name=f"phone-{time.monotonic_ns()}")
    try:
        ok, failed, out = dial(pbx, tmp, caller, dst)
        rc, uas_out = uas.result()
    finally:
        uas.stop()
    assert (ok, failed) == (1, 0), out + uas_out
    assert rc == 0, uas_out  # a scenario's ereg checks failed otherwise
    return uas.log().split("INVITE sip:", 1)[1].split("\n\n", 1)[0]


def call_carrier(pbx: PbxProcess, tmp: Path, carrier_port: int, scenario: str,
                 dst: str = "0301234567") -> str:
    """User 100 dials ``dst``; the SIPp carrier answers playing ``scenario``. Returns the
    INVITE the carrier accepted (the one with the trunk's credentials)."""
    with carrier_uas(tmp, scenario, carrier_port, free_port()) as carrier:
        ok, failed, out = dial(pbx, tmp, 0, dst, pause_ms=1000)
        rc, carrier_out = _finish(carrier, tmp)
    assert (ok, failed) == (1, 0), out + carrier_out
    assert rc == 0, carrier_out
    invites = [m for m in read_log(tmp / "carrier-messages.log").split("\n\n")
               if m.lstrip().startswith("INVITE sip:")]
    return [m for m in invites if "Authorization: Digest" in m][-1]


def header_lines(message: str, name: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in message.splitlines()
            if line.lower().startswith(name.lower() + ":")]


def settings_cli(pbx: PbxProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``asyncpbx settings …`` on the running server's data directory."""
    return subprocess.run(
        [sys.executable, "-m", "pbx", "settings", *args, "--config",
         str(pbx.workdir / "asyncpbx.toml"), "--data-dir", str(pbx.data_dir)],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)


def test_clir_by_star31_toward_a_phone_and_an_untrusted_carrier(tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with pbx_identity(tmp_path, carrier_port) as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        assert_confirmed(dial_code(pbx, tmp_path, 0, "*31"))
        call_phone(pbx, tmp_path, port, "call_uas_anonymous.xml", "101")
        call_carrier(pbx, tmp_path, carrier_port, "carrier_call_anonymous.xml")
        # *65 + number: shown for this call although *31 is on (From = 100's DID, no PAI)
        shown = call_carrier(pbx, tmp_path, carrier_port, "carrier_call_outbound.xml",
                             "*650301234567")
        assert header_lines(shown, "Privacy") == [], shown

        assert_confirmed(dial_code(pbx, tmp_path, 0, "%2331"))  # #31, as a phone sends it
        invite = call_phone(pbx, tmp_path, port, "call_uas_answer.xml", "101")
        assert "<sip:100@" in header_lines(invite, "From")[0], invite
        assert header_lines(invite, "Privacy") == [], invite
        # *67 + number: withheld for this one call
        call_phone(pbx, tmp_path, port, "call_uas_anonymous.xml", "*67101")
    assert [c["changed"] for c in settings_changes(pbx, "clir")] == [["enabled"], ["enabled"]]
    # the PBX keeps who called: its log names user 100 for the withheld calls
    withheld = events(pbx, "call.identity_withheld")
    assert len(withheld) == 3 and {e["user"] for e in withheld} == {"100"}


def test_clir_and_the_displayed_number_toward_a_trusted_carrier(tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with pbx_identity(tmp_path, carrier_port, trusted=True) as pbx:
        assert_confirmed(dial_code(pbx, tmp_path, 0, "*31"))
        # anonymous From, Privacy: id — and the real number in P-Asserted-Identity
        call_carrier(pbx, tmp_path, carrier_port, "carrier_call_anonymous_trusted.xml")
        assert_confirmed(dial_code(pbx, tmp_path, 0, "%2331"))

        refused = settings_cli(pbx, "set", "100", "displayed_number", f"number={DID_101}")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"displayed_number.number: {DID_101} is not a number of user 100" \
            in refused.stderr
        reloads = len(events(pbx, "directory.reloaded"))
        done = settings_cli(pbx, "set", "100", "displayed_number", f"number={DID_100B}")
        assert done.returncode == 0, done.stdout + done.stderr
        assert wait_for(pbx, "directory.reloaded", count=reloads + 1)  # the server saw it
        invite = call_carrier(pbx, tmp_path, carrier_port, "carrier_call_answer.xml")
        assert f"<sip:{DID_100B}@" in header_lines(invite, "From")[0], invite
        assert header_lines(invite, "P-Asserted-Identity") == [f"<sip:{DID_100B}@{CARRIER_HOST}>"]
        assert header_lines(invite, "Privacy") == [], invite
        assert DID_100 not in invite

        # the trusted carrier's anonymous caller (its P-Asserted-Identity names them): the
        # phone sees anonymous, the PBX's history and log keep the asserted number
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        phone = SippUas(tmp_path, "call_uas_anonymous.xml", port,
                        keys={"rtp_port": str(free_port())}, name="phone101")
        try:
            ok, failed, out = carrier_calls_101(pbx, tmp_path, "carrier_call_inbound.xml",
                                                "anonymous", "X-Test: asserted")
            rc, phone_out = phone.result()
        finally:
            phone.stop()
        assert (ok, failed) == (1, 0), out
        assert rc == 0, phone_out
    outbound = events(pbx, "call.outbound")
    assert [e["number"] for e in outbound] == ["+49301234567"] * 2
    inbound = [e for e in events(pbx, "call.started") if e.get("callee") == DID_101]
    assert [(e["caller"], e["withheld"]) for e in inbound] == [("+4930666666", True)]


def carrier_calls_101(pbx: PbxProcess, tmp: Path, scenario: str, caller: str,
                      extra_header: str) -> tuple[int, int, str]:
    """The carrier calls 101's DID from ``caller``; SIPp's counts and output, then its
    message log."""
    log = tmp / f"carrier-in-{time.monotonic_ns()}.log"
    res = sipp(scenario, pbx.addr("udp"), tmp, local_ip=CARRIER_HOST, timeout=30,
               extra=["-key", "dst", DID_101, "-key", "caller", caller,
                      "-key", "extra_header", extra_header, "-key", "rtp_port",
                      str(free_port()), "-d", "1000", "-trace_msg", "-message_file", str(log)])
    return res.successful, res.failed, res.output + "\n--- messages ---\n" + read_log(log)


def test_anonymous_callers_get_433_after_star77_and_ring_after_star87(tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with pbx_identity(tmp_path, carrier_port) as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        assert_confirmed(dial_code(pbx, tmp_path, 1, "*77"))
        announced = 0
        for caller, extra in (("anonymous", "X-Test: anonymous From"),
                              ("+4917012345", "Privacy: id")):
            ok, failed, out = carrier_calls_101(pbx, tmp_path, "carrier_call_inbound_anonymous.xml",
                                                caller, extra)
            assert (ok, failed) == (1, 0), out  # the scenario insists on 433
            announced += "SIP/2.0 183 " in out  # the announcement, as early media
        # a user of the PBX with CLIR is anonymous too
        assert_confirmed(dial_code(pbx, tmp_path, 0, "*31"))
        ok, failed, out = dial(pbx, tmp_path, 0, "101", "call_uac_fail.xml")
        assert (ok, failed) == (1, 0), out
        assert final_statuses(read_log(tmp_path / "dial-101.log"))[-1] == 433

        assert_confirmed(dial_code(pbx, tmp_path, 1, "*87"))
        phone = SippUas(tmp_path, "call_uas_anonymous.xml", port,
                        keys={"rtp_port": str(free_port())}, name="phone101")
        try:
            ok, failed, out = carrier_calls_101(pbx, tmp_path, "carrier_call_inbound.xml",
                                                "anonymous", "X-Test: anonymous From")
            rc, phone_out = phone.result()
        finally:
            phone.stop()
        assert (ok, failed) == (1, 0), out
        assert rc == 0, phone_out  # rang, and the phone too sees an anonymous caller
    rejected = [e for e in events(pbx, "call.ended") if e.get("status") == 433]
    assert len(rejected) == 3, rejected
    # "anonymous calls are not accepted" before each 433 — or, where the prompt set lacks it
    # (no espeak-ng), the 433 alone and the gap logged
    missing = [e for e in events(pbx, "call.prompt_missing")
               if e.get("prompt") == "anonymous_rejected"]
    assert (announced, len(missing)) in ((2, 0), (0, 3)), (announced, missing)
    assert [c["changed"] for c in settings_changes(pbx, "anonymous_rejection")] == [
        ["enabled"], ["enabled"]]
