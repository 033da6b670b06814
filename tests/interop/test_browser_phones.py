"""Real browsers as phones: JsSIP (the PBX's /phone page) in headless Debian chromium, driven by
Playwright (tests/interop/browser_phones.py, run in a network namespace with only ``lo``, so
every ICE candidate and every packet is loopback). Two browsers register over WS and over WSS,
A calls B, B answers, each hears the other's tone (WebAudio analyser), A's DTMF by INFO reaches
B, A's hold (re-INVITE) gives B music on hold instead of A's tone and unhold brings it back,
A's BYE ends both, and a second call that B rejects gives A 486; a browser calls a SIPp
phone and both hear each other; its DTMF by INFO and as RFC 4733 events (JsSIP ``RFC2833``)
reaches that phone's RTP, and its hold/unhold silences and restores its tone there (Goertzel);
a browser calls a baresip phone and the reverse, both hearing each other; the call and its
audio survive the browser's re-offer without changes and its ICE restart (new credentials and
candidates, the media moves to the new pair); a browser and a SIP phone of one user ring together, the
browser answers, the phone gets CANCEL; closing a tab removes its registration within a second.

One browser test at a time, each bounded (the machine's 2 cores are shared).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pbx.phone import WEB_DIR
from tests.interop.browser_phones import CHROMIUM
from tests.interop.harness import need

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]


def _isolated_loopback() -> bool:
    """A network namespace of our own can be made (root, util-linux unshare)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "--", "ip", "link", "set", "lo", "up"],
                           capture_output=True, timeout=10)
    return probe.returncode == 0


def run_scenario(name: str, tmp: Path) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed: run ./test.sh (it apt-installs chromium)")
    if not (WEB_DIR / "dist" / "jssip.min.js").is_file():
        pytest.fail("JsSIP is not built: run scripts/install-test-peers.sh (npm ci in web/)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed: run ./test.sh (pip install -e .[test])")
    need("sipp")
    if not _isolated_loopback():
        pytest.fail("these tests need a network namespace of their own (root and util-linux "
                    "unshare) so that chromium gathers and sends to loopback only")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCPBX_")}
    if os.environ.get("ASYNCPBX_NO_EXTENSIONS"):
        env["ASYNCPBX_NO_EXTENSIONS"] = os.environ["ASYNCPBX_NO_EXTENSIONS"]
    command = (f"ip link set lo up && exec {sys.executable} -m tests.interop.browser_phones "
               f"{name} {tmp}")
    proc = subprocess.run(["unshare", "--net", "--", "sh", "-c", command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=150)
    result = tmp / "result.json"
    assert proc.returncode == 0 and result.is_file(), (proc.stdout[-3000:], proc.stderr[-3000:])
    return dict(json.loads(result.read_text()))


def tone_heard(readings: list[dict[str, float]], freq: float) -> bool:
    """Most analyser readings put the peak within 20 Hz of ``freq``, well above silence."""
    good = [r for r in readings if abs(r["freq"] - freq) < 20 and r["level"] > -60]
    return len(good) >= 0.75 * len(readings)


@pytest.mark.parametrize("scenario", ["browsers", "browsers_wss"])
def test_two_browsers_call_each_other(tmp_path: Path, scenario: str) -> None:
    found = run_scenario(scenario, tmp_path)
    assert tone_heard(found["heard_a"], 1000), found["heard_a"]  # A hears B's tone
    assert tone_heard(found["heard_b"], 600), found["heard_b"]  # and B hears A's
    offer = found["offer"]
    assert "UDP/TLS/RTP/SAVPF" in offer and "a=fingerprint:" in offer
    candidates = re.findall(r"a=candidate:\S+ \d+ \w+ \d+ (\S+) ", offer)
    assert candidates and set(candidates) == {"127.0.0.1"}, candidates
    assert found["calls_left"] == 0  # A's BYE ended the call on both sides
    assert found["dtmf"] == ["5"]  # A's DTMF by INFO reached B
    held = found["held_b"][1:]  # A on hold: B hears music on hold, not A's tone
    assert not tone_heard(held, 600) and all(r["level"] > -60 for r in held), held
    assert tone_heard(found["resumed_b"], 600), found["resumed_b"]  # A resumed
    assert found["second_call"]["status"] == 486  # B rejected the second call: A hears busy


def test_browser_calls_a_sip_phone(tmp_path: Path) -> None:
    found = run_scenario("browser_to_phone", tmp_path)
    assert tone_heard(found["heard_a"], 1000), found["heard_a"]
    assert found["phone"]["hears_600"] and found["phone"]["dominant"] == 600, found["phone"]
    assert found["sipp_rc"] == 0, found["sipp"]


def test_browser_dtmf_and_hold_reach_a_sip_phone(tmp_path: Path) -> None:
    found = run_scenario("browser_dtmf_hold", tmp_path)
    assert re.search(r"a=rtpmap:\d+ telephone-event/48000", found["answer"]), found["answer"]
    assert found["can_insert"], found  # the PBX's answer lets the browser send RFC 4733
    assert found["talking"]["hears_600"] and found["talking"]["dominant"] == 600, found
    assert found["info_ok"], found["events"]  # '1' by INFO: the phone gets it as RFC 4733
    assert found["rfc4733_ok"], found["events"]  # '2' as RFC 4733 from the browser: the same
    assert found["events"] == [1, 2], found["events"]
    assert not found["held"]["hears_600"] and found["held"]["samples"] > 0, found["held"]
    assert found["resumed"]["hears_600"] and found["resumed"]["dominant"] == 600, found
    assert found["sipp_rc"] == 0, found["sipp"]


@pytest.mark.parametrize("scenario", ["browser_calls_baresip", "baresip_calls_browser"])
def test_a_browser_and_a_baresip_phone_hear_each_other(tmp_path: Path, scenario: str) -> None:
    need("baresip")
    found = run_scenario(scenario, tmp_path)
    assert found["registered"], found["phone_log"]
    assert tone_heard(found["heard_a"], 1209), found["heard_a"]  # the phone's tone, PCMU → Opus
    assert found["phone_600"] > 0.6, found  # the browser's tone, Opus → PCMU
    assert found["ended"], found["phone_log"]  # the hang-up ended the call on both sides


def test_the_call_survives_a_re_offer_and_an_ice_restart(tmp_path: Path) -> None:
    found = run_scenario("browser_renegotiates", tmp_path)
    assert found["same_sent"] and found["restart_sent"], found
    for step in ("before", "same", "restart"):
        seen = found[step]
        assert seen["ended"] == 0 and seen["calls"] == 1, (step, seen)  # the call goes on
        assert tone_heard(seen["heard_a"], 1000), (step, seen["heard_a"])  # A hears the phone
        assert seen["phone"]["hears_600"] and seen["phone"]["dominant"] == 600, (step, seen)
    before, same, restart = found["before"], found["same"], found["restart"]
    # a re-offer without changes: the same ICE session
    assert (same["local_ufrag"], same["remote_ufrag"], same["pair"]["local"]) == (
        before["local_ufrag"], before["remote_ufrag"], before["pair"]["local"]), found
    # the ICE restart: new credentials on both sides, the media on the browser's new candidate
    assert restart["local_ufrag"] != before["local_ufrag"], found
    assert restart["remote_ufrag"] != before["remote_ufrag"], found  # our answer's new ufrag
    assert restart["pair"]["local"] != before["pair"]["local"], found
    assert restart["pair"]["state"] == "succeeded", found
    assert found["sipp_rc"] == 0, found["sipp"]


def test_a_call_to_a_tabs_gruu_rings_that_tab_only(tmp_path: Path) -> None:
    found = run_scenario("gruu_tabs", tmp_path)
    first, second = found["gruus"]
    assert first and second and first != second, found  # each tab got its public GRUU
    assert all(g.startswith("sip:101@") and ";gr=urn:uuid:" in g for g in found["gruus"]), found
    assert all(inst and reg_id == 1 for inst, reg_id in found["bindings"]), found  # Outbound
    assert found["gruu"] == [0, 1], found  # the second tab's GRUU rang that tab only
    assert found["aor"] == [1, 1], found  # the AOR rings both


def test_closing_the_tab_removes_its_registration_within_a_second(tmp_path: Path) -> None:
    found = run_scenario("tab_close", tmp_path)
    assert (found["before"], found["after"]) == (1, 0), found
    assert found["took"] < 1.0, found


def test_a_browser_and_a_sip_phone_of_one_user_ring_together(tmp_path: Path) -> None:
    found = run_scenario("ring_together", tmp_path)
    assert found["desk_cancelled"] and found["desk_rc"] == 0, found["desk"]  # CANCEL to the desk
    assert found["caller"] == [1, 0], found["caller_out"]
    assert tone_heard(found["heard_b"], 1000), found["heard_b"]  # the browser hears the caller
    assert found["caller_hears_600"]  # and the caller the browser


def test_holding_1_on_the_keypad_calls_the_voicemail_box(tmp_path: Path) -> None:
    found = run_scenario("voicemail_key", tmp_path)
    assert found["typed"] == "101", found  # short presses type
    assert found["started"] == ["*86"], found  # holding 1 dialled the box, nothing else
    assert "voicemail" in found["events"] and "confirmed" in found["events"], found["events"]
    assert found["target_after"] == "", found  # the held 1 was not typed as well
    assert any(r["level"] > -60 for r in found["heard"]), found["heard"]  # the menu speaks
