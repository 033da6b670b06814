"""Features switched from a phone by their codes and proven by calls, all over real SIP: SIPp
phones dial ``*78``/``*79`` (do not disturb), ``*72``+number/``*73`` (forwarding immediate, to an
extension and to an outside number over a SIPp carrier), ``*94``+number/``*95`` (forwarding
when unreachable) and ``*21*``/``*63*`` (what forwarding is set to). A code is answered with
its announcement — "activated", "deactivated", "forwarding is on to 1 0 2" — and hung up by the
PBX once it has played; the RTP a Python peer receives is matched against the generated prompt
(normalised cross-correlation), so a tone or a cut-off announcement fails."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pbx.callcontrol import Prompt
from pbx.prompts import PromptStore
from tests.interop.harness import (
    PROMPT_CACHE,
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
from tests.interop.test_carrier_calls import (
    CARRIER_HOST,
    _finish,
    carrier_setup,
    carrier_uas,
)

pytestmark = pytest.mark.interop

CONFIG = "[media]\nport_min = 41000\nport_max = 41999\n[calls]\nring_timeout = 3.0\n"


@contextlib.contextmanager
def pbx_for_features(tmp: Path, carrier_port: int | None = None) -> Iterator[PbxProcess]:
    setup = carrier_setup(carrier_port) if carrier_port is not None else None
    with running_pbx(tmp, transports=("udp",), users=USERS, config_extra=CONFIG,
                     store_setup=setup) as pbx:
        yield pbx


def dial(pbx: PbxProcess, tmp: Path, user: int, dst: str, scenario: str = "call_uac.xml", *,
         rtp_port: int | None = None, pause_ms: int = 500) -> tuple[int, int, str]:
    """User ``USERS[user]`` dials ``dst`` from a SIPp phone playing ``scenario``."""
    inf = users_csv(tmp / f"phone-{time.monotonic_ns()}.csv", [USERS[user]])
    host, port = pbx.addr("udp")
    res = sipp(scenario, (host, port), tmp, inf=inf, timeout=30,
               extra=["-auth_uri", f"{dst}@{host}:{port}", "-key", "dst", dst,
                      "-key", "rtp_port", str(rtp_port or free_port()), "-d", str(pause_ms),
                      "-key", "extra_header", "X-Test: features",
                      "-trace_msg", "-message_file", str(tmp / f"dial-{dst}.log")])
    return res.successful, res.failed, res.output


def dial_code(pbx: PbxProcess, tmp: Path, user: int, code: str) -> np.ndarray:
    """Dial a feature code; returns the audio the PBX played before its BYE (PCM)."""
    peer = RtpPeer()
    try:
        ok, failed, out = dial(pbx, tmp, user, code, "feature_code_uac.xml", rtp_port=peer.port)
    finally:
        peer.close()
    assert (ok, failed) == (1, 0), out + read_log(pbx.log_path)[-3000:]
    return peer.pcm()


@functools.cache
def prompt_set() -> PromptStore:
    """The prompt set the test servers play (their shared cache; no tenant recordings)."""
    return PromptStore.load(PROMPT_CACHE / "no-data", cache=PROMPT_CACHE)


def expected_audio(prompt: Prompt, language: str = "de") -> np.ndarray:
    """What the PBX plays for ``prompt`` to a PCMU leg, sample for sample (before G.711)."""
    port = prompt_set().port(prompt, language, 8000)
    frames = []
    while (frame := port.get_frame()) is not None:
        frames.append(frame)
    return np.concatenate(frames)


def best_match(received: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    """The highest normalised cross-correlation of ``expected`` inside ``received`` over
    the offsets where it lies wholly inside, and that offset."""
    r = received.astype(np.float64)
    e = expected.astype(np.float64)
    if len(r) < len(e):
        return 0.0, -1
    n = 1 << int(np.ceil(np.log2(len(r) + len(e))))
    corr = np.fft.irfft(np.fft.rfft(r, n) * np.conj(np.fft.rfft(e, n)), n)[:len(r) - len(e) + 1]
    energy = np.concatenate([[0.0], np.cumsum(r * r)])
    window = energy[len(e):] - energy[:len(r) - len(e) + 1]
    score = corr / (np.sqrt(np.maximum(window, 1e-9)) * np.linalg.norm(e))
    best = int(np.argmax(score))
    return float(score[best]), best


def assert_announced(pcm: np.ndarray, prompt: Prompt, language: str = "de") -> None:
    """``pcm`` holds the whole announcement of ``prompt`` (the confirmation tone, another
    prompt or an announcement cut short do not match)."""
    expected = expected_audio(prompt, language)
    score, at = best_match(pcm, expected)
    assert score > 0.9, (f"{prompt} not heard: best correlation {score:.2f} "
                         f"({len(pcm)} samples received, {len(expected)} expected)")
    assert at >= 0 and at + len(expected) <= len(pcm)


def assert_confirmed(pcm: np.ndarray) -> None:
    """One of the confirmations a code that changed something announces ("activated",
    "deactivated", "confirm"), whole."""
    scores = {name: best_match(pcm, expected_audio(Prompt(name)))[0]
              for name in ("activated", "deactivated", "confirm")}
    assert max(scores.values()) > 0.9, f"no confirmation heard ({len(pcm)} samples): {scores}"


def settings_changes(pbx: PbxProcess, feature: str) -> list[dict[str, object]]:
    return [e for e in events(pbx, "settings.changed") if e.get("feature") == feature]


def answered_by_102(pbx: PbxProcess, tmp: Path) -> str:
    """100 calls 101; a SIPp phone registered as 102 answers. Returns the INVITE 102 got."""
    port = free_port()
    register_port(pbx, "102", USERS[2][1], port)
    uas = SippUas(tmp, "call_uas_answer.xml", port, keys={"rtp_port": str(free_port())},
                  name="phone102")
    try:
        ok, failed, out = dial(pbx, tmp, 0, "101")
        rc, uas_out = uas.result()
    finally:
        uas.stop()
    assert (ok, failed) == (1, 0), out
    assert rc == 0, uas_out
    return uas.log().split("INVITE sip:", 1)[1].split("\n\n", 1)[0]


def test_do_not_disturb_by_star78_and_star79(tmp_path: Path) -> None:
    with pbx_for_features(tmp_path) as pbx:
        port = free_port()
        register_port(pbx, "101", USERS[1][1], port)
        assert_announced(dial_code(pbx, tmp_path, 1, "*78"), Prompt("activated"))
        ok, failed, out = dial(pbx, tmp_path, 0, "101", "call_uac_fail.xml")
        assert (ok, failed) == (1, 0), out
        assert final_statuses(read_log(tmp_path / "dial-101.log"))[-1] == 486

        assert_announced(dial_code(pbx, tmp_path, 1, "*79"), Prompt("deactivated"))
        uas = SippUas(tmp_path, "call_uas_answer.xml", port, keys={"rtp_port": str(free_port())})
        try:
            ok, failed, out = dial(pbx, tmp_path, 0, "101")
            rc, uas_out = uas.result()
        finally:
            uas.stop()
        assert (ok, failed) == (1, 0), out
        assert rc == 0, uas_out
    changes = settings_changes(pbx, "dnd")
    assert [c["changed"] for c in changes] == [["enabled"], ["enabled"]]
    assert all(c["source"] == "feature_code" for c in changes)


def test_forwarding_immediate_to_an_extension(tmp_path: Path) -> None:
    with pbx_for_features(tmp_path) as pbx:
        assert_announced(dial_code(pbx, tmp_path, 1, "*72102"), Prompt("activated"))
        invite = answered_by_102(pbx, tmp_path)
        assert "Diversion: <sip:101@" in invite and "reason=unconditional" in invite, invite
        assert "History-Info:" in invite, invite

        # off: 101 has no device now
        assert_announced(dial_code(pbx, tmp_path, 1, "*73"), Prompt("deactivated"))
        ok, failed, out = dial(pbx, tmp_path, 0, "101", "call_uac_fail.xml")
        assert (ok, failed) == (1, 0), out
    redirected = events(pbx, "call.redirected")
    assert len(redirected) == 1 and redirected[0]["to"] == "102"


def test_forwarding_immediate_to_an_outside_number_goes_out_on_the_forwarders_behalf(
        tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with pbx_for_features(tmp_path, carrier_port) as pbx:
        assert_announced(dial_code(pbx, tmp_path, 1, "*720301234567"), Prompt("activated"))
        with carrier_uas(tmp_path, "carrier_call_forwarded.xml", carrier_port,
                         free_port()) as carrier:
            ok, failed, out = dial(pbx, tmp_path, 0, "101", pause_ms=1000)
            rc, carrier_out = _finish(carrier, tmp_path)
        assert (ok, failed) == (1, 0), out + carrier_out
        assert rc == 0, carrier_out
    outbound = events(pbx, "call.outbound")
    assert outbound and outbound[0]["number"] == "+49301234567"
    assert outbound[0]["caller_did"] == "+49301112244"  # 101's DID: 101 forwarded it


def test_forwarding_when_unreachable_by_star94_and_star95(tmp_path: Path) -> None:
    with pbx_for_features(tmp_path) as pbx:
        assert_announced(dial_code(pbx, tmp_path, 1, "*94102"), Prompt("activated"))
        invite = answered_by_102(pbx, tmp_path)  # 101 has no registered device
        assert "reason=unavailable" in invite, invite

        assert_announced(dial_code(pbx, tmp_path, 1, "*95"), Prompt("deactivated"))
        ok, failed, out = dial(pbx, tmp_path, 0, "101", "call_uac_fail.xml")
        assert (ok, failed) == (1, 0), out
        assert final_statuses(read_log(tmp_path / "dial-101.log"))[-1] == 480


def test_a_forward_target_the_user_may_not_call_gets_the_error_announcement(
        tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with pbx_for_features(tmp_path, carrier_port) as pbx:
        pcm = dial_code(pbx, tmp_path, 1, "*7200442012345678")  # international: not allowed
        assert_announced(pcm, Prompt("error"))
    assert settings_changes(pbx, "forward_immediate") == []


def test_star21star_and_star63star_announce_what_forwarding_is_set_to(tmp_path: Path) -> None:
    with pbx_for_features(tmp_path) as pbx:
        assert_announced(dial_code(pbx, tmp_path, 1, "*21*"), Prompt("forward_off"))
        assert_announced(dial_code(pbx, tmp_path, 1, "*72102"), Prompt("activated"))
        on = dial_code(pbx, tmp_path, 1, "*21*")
        # "forwarding is on to", then one, zero, two: the whole sequence, digits included
        assert_announced(on, Prompt("forward_on_to", say="102"))
        score, _ = best_match(on, expected_audio(Prompt("forward_on_to", say="103")))
        assert score < 0.9, "another number would have matched as well"
        # the unreachable kind is asked separately and is still off
        assert_announced(dial_code(pbx, tmp_path, 1, "*63*"), Prompt("forward_off"))
    changes = settings_changes(pbx, "forward_immediate")
    assert len(changes) == 1  # asking changed nothing
