"""The feature-code table and the digits-only form over real SIP, with SIPp phones and a SIPp
carrier:

* a code changed with ``asyncpbx codes set`` (another process, while the server runs) is
  dialled from a phone a moment later — no restart — and the old code gets the error tone;
* ``78878`` from a device flagged mobile switches do-not-disturb on (a call to that user then
  gets 486); ``78843`` from a desk phone is an ordinary number (it reaches extension 78843);
* ``78878`` from the carrier with the user's own mobile number as caller switches their DND on;
  ``*78`` from the carrier is refused with 404.

Which tone the PBX played is told apart by frequency (Goertzel-like DFT bins): the German
confirmation tone is 425 Hz, the error tone the special information tone (950/1400/1800 Hz).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pbx.callcontrol import Prompt
from tests.interop.harness import (
    ROOT,
    PbxProcess,
    free_port,
    read_log,
    running_pbx,
    sipp,
    users_csv,
)
from tests.interop.test_calls_sipp import (
    USERS,
    RtpPeer,
    SippUas,
    events,
    final_statuses,
    register_port,
)
from tests.interop.test_carrier_calls import CARRIER_HOST, DID_100, DID_101
from tests.interop.test_features_sipp import best_match, expected_audio

pytestmark = pytest.mark.interop

CONFIG = "[media]\nport_min = 42000\nport_max = 42999\n[calls]\nring_timeout = 3.0\n"
MOBILE_DEVICE = ("101m", "pw-101m-secret")
MOBILE_101 = "+4917011111"
EXT_78843 = ("78843", "pw-78843-secret")


def store_setup(carrier_port: int) -> object:
    def setup(store: object) -> None:
        # the carrier is trusted: only then may its caller number speak for a user's mobile
        store.add_trunk("carrier", kind="ip", host=CARRIER_HOST,  # type: ignore[attr-defined]
                        port=carrier_port, username="4930111", password="s3cret",
                        realm="carrier.test", trusted=True)
        store.add_number(DID_100, user="100")  # type: ignore[attr-defined]
        store.add_number(DID_101, user="101")  # type: ignore[attr-defined]
        store.add_device("101", *MOBILE_DEVICE, kind="mobile")  # type: ignore[attr-defined]
        store.update_user("101", mobile_number=MOBILE_101)  # type: ignore[attr-defined]
        store.add_user(EXT_78843[0], EXT_78843[1], "asyncpbx-test",  # type: ignore[attr-defined]
                       "Seven Eight")

    return setup


@contextlib.contextmanager
def pbx_for_codes(tmp: Path) -> Iterator[PbxProcess]:
    setup = store_setup(free_port(CARRIER_HOST))
    with running_pbx(tmp, transports=("udp",), users=USERS, config_extra=CONFIG,
                     store_setup=setup) as pbx:  # type: ignore[arg-type]
        yield pbx


def dial(pbx: PbxProcess, tmp: Path, account: tuple[str, str], dst: str,
         scenario: str = "call_uac.xml", *, rtp_port: int | None = None) -> tuple[int, int, str]:
    """The SIP account ``account`` (username, password) dials ``dst`` from a SIPp phone."""
    inf = users_csv(tmp / f"phone-{time.monotonic_ns()}.csv", [account])
    host, port = pbx.addr("udp")
    res = sipp(scenario, (host, port), tmp, inf=inf, timeout=30,
               extra=["-auth_uri", f"{dst}@{host}:{port}", "-key", "dst", dst,
                      "-key", "rtp_port", str(rtp_port or free_port()), "-d", "500",
                      "-key", "extra_header", "X-Test: codes",
                      "-trace_msg", "-message_file", str(tmp / f"dial-{dst}.log")])
    return res.successful, res.failed, res.output


def tone_of(pcm: np.ndarray) -> str:
    """``"confirmation"`` or ``"error"``: which announcement the PBX answered with (matched
    against the generated prompts), or, without a prompt set, which tone (425 Hz against
    950/1400/1800 Hz, by spectral energy)."""
    assert len(pcm) >= 4000, f"only {len(pcm)} samples of audio"
    scores = {name: best_match(pcm, expected_audio(Prompt(name)))[0]
              for name in ("activated", "deactivated", "confirm", "error")}
    best = max(scores, key=lambda name: scores[name])
    if scores[best] > 0.9:
        return "error" if best == "error" else "confirmation"
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)

    def energy(hz: float) -> float:
        return float(spectrum[(freqs > hz - 15) & (freqs < hz + 15)].sum())

    confirmation = energy(425.0)
    error = energy(950.0) + energy(1400.0) + energy(1800.0)
    assert max(confirmation, error) > 0, "silence"
    return "confirmation" if confirmation > error else "error"


def dial_code(pbx: PbxProcess, tmp: Path, account: tuple[str, str], code: str) -> str:
    """Dial a feature code; returns which tone the PBX answered with."""
    peer = RtpPeer()
    try:
        ok, failed, out = dial(pbx, tmp, account, code, "feature_code_uac.xml",
                               rtp_port=peer.port)
    finally:
        peer.close()
    assert (ok, failed) == (1, 0), out + read_log(pbx.log_path)[-3000:]
    return tone_of(peer.pcm())


def call_101_status(pbx: PbxProcess, tmp: Path) -> int:
    """100 calls 101 (no device of 101 answers): the final status 100's phone gets."""
    ok, failed, out = dial(pbx, tmp, USERS[0], "101", "call_uac_fail.xml")
    assert (ok, failed) == (1, 0), out
    return final_statuses(read_log(tmp / "dial-101.log"))[-1]


def dnd_changes(pbx: PbxProcess) -> list[dict[str, object]]:
    """The server's ``settings.changed`` log lines for do-not-disturb."""
    return [e for e in events(pbx, "settings.changed") if e.get("feature") == "dnd"]


def wait_for_event(pbx: PbxProcess, name: str, timeout: float = 6.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(pbx, name)
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {name} in the server log:\n{read_log(pbx.log_path)[-3000:]}")


def test_a_code_changed_with_the_cli_is_dialled_without_a_restart(tmp_path: Path) -> None:
    with pbx_for_codes(tmp_path) as pbx:
        cli = subprocess.run(
            [sys.executable, "-m", "pbx", "codes", "set", "dnd.on", "*80", "--alternate", "#80",
             "--config", str(tmp_path / "asyncpbx.toml"), "--data-dir", str(pbx.data_dir)],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.strip() == "dnd.on: *80 (alternate #80), dialled 78880 from a mobile"
        changed = wait_for_event(pbx, "codes.changed")  # the server's once-a-second poll
        assert changed[0]["source"] == "store" and changed[0]["changed"] == ["dnd.on"]

        assert dial_code(pbx, tmp_path, USERS[1], "*78") == "error"  # no longer a code
        assert dnd_changes(pbx) == []
        assert dial_code(pbx, tmp_path, USERS[1], "#80") == "confirmation"
        assert call_101_status(pbx, tmp_path) == 486
        assert dial_code(pbx, tmp_path, USERS[1], "*79") == "confirmation"
        listed = subprocess.run(
            [sys.executable, "-m", "pbx", "codes", "list", "--config",
             str(tmp_path / "asyncpbx.toml"), "--data-dir", str(pbx.data_dir)],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert "*80\t#80\t78880\tdnd.on\t\tdo not disturb on\tchanged" in listed.stdout
    assert len(dnd_changes(pbx)) == 2  # on, off


def test_digits_only_from_a_mobile_device_and_an_ordinary_number_from_a_desk_phone(
        tmp_path: Path) -> None:
    with pbx_for_codes(tmp_path) as pbx:
        # the desk phone's 78843 is an extension: it rings 78843's phone, which answers
        port = free_port()
        register_port(pbx, *EXT_78843, port)
        uas = SippUas(tmp_path, "call_uas_answer.xml", port, keys={"rtp_port": str(free_port())},
                      name="phone78843")
        try:
            ok, failed, out = dial(pbx, tmp_path, USERS[0], "78843")
            rc, uas_out = uas.result()
        finally:
            uas.stop()
        assert (ok, failed) == (1, 0), out
        assert rc == 0, uas_out
        # the mobile device's 78878 is *78: do not disturb on, callers get busy
        assert dial_code(pbx, tmp_path, MOBILE_DEVICE, "78878") == "confirmation"
        assert call_101_status(pbx, tmp_path) == 486
        assert dial_code(pbx, tmp_path, MOBILE_DEVICE, "78879") == "confirmation"
        # the desk phone's 78878 is no code either: extension 78878 does not exist
        ok, failed, out = dial(pbx, tmp_path, USERS[1], "78878", "call_uac_fail.xml")
        assert (ok, failed) == (1, 0), out
        assert final_statuses(read_log(tmp_path / "dial-78878.log"))[-1] == 404
    assert len(dnd_changes(pbx)) == 2  # on, off
    codes = events(pbx, "feature.code")
    assert [(c["code"], c["user"]) for c in codes] == [("78878", "101"), ("78879", "101")]


def test_digits_only_from_the_carrier_with_the_users_mobile_number(tmp_path: Path) -> None:
    with pbx_for_codes(tmp_path) as pbx:
        res = sipp("carrier_call_inbound.xml", pbx.addr("udp"), tmp_path, local_ip=CARRIER_HOST,
                   timeout=15, extra=["-key", "dst", "*78", "-key", "caller", MOBILE_101,
                                      "-key", "rtp_port", str(free_port()), "-trace_msg",
                                      "-message_file", str(tmp_path / "star.log")])
        assert res.successful == 0
        assert final_statuses(read_log(tmp_path / "star.log"))[-1] == 404
        assert dnd_changes(pbx) == []

        peer = RtpPeer()
        try:
            res = sipp("carrier_feature_code.xml", pbx.addr("udp"), tmp_path,
                       local_ip=CARRIER_HOST, timeout=30,
                       extra=["-key", "dst", "78878", "-key", "caller", MOBILE_101,
                              "-key", "rtp_ip", "127.0.0.1", "-key", "rtp_port", str(peer.port),
                              "-trace_msg", "-message_file", str(tmp_path / "mobile.log")])
        finally:
            peer.close()
        assert (res.successful, res.failed) == (1, 0), res.output + read_log(pbx.log_path)[-3000:]
        assert tone_of(peer.pcm()) == "confirmation"
        assert call_101_status(pbx, tmp_path) == 486
    assert [c["source"] for c in dnd_changes(pbx)] == ["feature_code"]
    inbound = events(pbx, "call.inbound.mobile_code")
    assert len(inbound) == 1 and inbound[0]["user"] == "101"
    assert events(pbx, "call.inbound.feature_code_refused")[0]["called"] == "*78"
