"""The incoming-call features over real SIP: each switched by its code from a registered SIPp
phone, then shown by a real call — who receives the INVITE, which status the caller gets, what
the caller (or the mobile) hears. Busy and no-answer forwarding, call waiting off and on, a
callee's reject giving busy with the busy tone, parallel ringing on the mobile over a SIPp
carrier with the call-waiting tone injected into the mobile's call, a forwarding loop, and
DND over forwarding immediate."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from media.dtmf import tone_ratio
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
from tests.interop.inprocess import serving
from tests.interop.test_calls_sipp import USERS, RtpPeer, SippUas, final_statuses, register_port
from tests.interop.test_carrier_calls import CARRIER_HOST, carrier_setup
from tests.interop.test_features_sipp import assert_confirmed, dial_code

pytestmark = pytest.mark.interop

CONFIG = ("[media]\nport_min = 48000\nport_max = 48999\n"
          "[calls]\nring_timeout = 3.0\nbusy_tone = 2.0\n")
MOBILE_101 = "+491701234567"


@contextlib.contextmanager
def pbx_for(tmp: Path, setup: Callable[[Store], None] | None = None) -> Iterator[PbxProcess]:
    with running_pbx(tmp, transports=("udp",), users=USERS, config_extra=CONFIG,
                     store_setup=setup) as pbx:
        yield pbx


def place(pbx: PbxProcess, tmp: Path, user: int, dst: str, scenario: str, *, name: str,
          rtp_port: int | None = None, pause_ms: int = 500) -> tuple[int, int, str, str]:
    """User ``USERS[user]`` calls ``dst`` from a SIPp phone; returns (ok, failed, output, the
    phone's message log)."""
    inf = users_csv(tmp / f"{name}.csv", [USERS[user]])
    host, port = pbx.addr("udp")
    log = tmp / f"{name}-messages.log"
    res = sipp(scenario, (host, port), tmp, inf=inf, timeout=40,
               extra=["-auth_uri", f"{dst}@{host}:{port}", "-key", "dst", dst,
                      "-key", "rtp_port", str(rtp_port or free_port()), "-d", str(pause_ms),
                      "-key", "extra_header", "X-Test: incoming",
                      "-trace_msg", "-message_file", str(log)])
    return res.successful, res.failed, res.output, read_log(log)


def phone(tmp: Path, pbx: PbxProcess, user: int, scenario: str, *, calls: int = 1,
          pause_ms: int = 500, name: str = "") -> SippUas:
    """A SIPp phone registered as ``USERS[user]``, answering with ``scenario``."""
    port = free_port()
    ext, password = USERS[user]
    register_port(pbx, ext, password, port)
    return SippUas(tmp, scenario, port, keys={"rtp_port": str(free_port())}, calls=calls,
                   pause_ms=pause_ms, name=name or f"phone{ext}")


def finished(uas: SippUas) -> str:
    rc, out = uas.result()
    assert rc == 0, out
    return uas.log()


def events_count(pbx: PbxProcess, name: str) -> int:
    return sum(1 for e in pbx.log_events() if e.get("event") == name)


def busy_tone_heard(pcm: np.ndarray) -> bool:
    """The German busy tone: 425 Hz, 480 ms on and 480 ms off."""
    if len(pcm) < 8000:
        return False
    windows = [pcm[i:i + 1920] for i in range(0, len(pcm) - 1920, 1920)]  # 240 ms
    on = [w for w in windows if np.sqrt(np.mean(w.astype(np.float64) ** 2)) > 300]
    off = [w for w in windows if np.sqrt(np.mean(w.astype(np.float64) ** 2)) < 50]
    return (len(on) >= 3 and len(off) >= 3
            and all(tone_ratio(w, 425.0, 8000) > 0.8 for w in on))


# -- busy ----------------------------------------------------------------------------------------

def test_busy_forwarding_by_star90_and_star91(tmp_path: Path) -> None:
    with pbx_for(tmp_path) as pbx:
        assert_confirmed(dial_code(pbx, tmp_path, 1, "*90102"))
        desk = phone(tmp_path, pbx, 1, "call_uas_busy.xml", calls=2)
        colleague = phone(tmp_path, pbx, 2, "call_uas_answer.xml")
        ok, failed, out, _ = place(pbx, tmp_path, 0, "101", "call_uac.xml", name="first")
        assert (ok, failed) == (1, 0), out
        invite = finished(colleague).split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
        assert "reason=user-busy" in invite, invite

        assert_confirmed(dial_code(pbx, tmp_path, 1, "*91"))
        peer = RtpPeer()
        try:
            ok, failed, out, log = place(pbx, tmp_path, 0, "101", "call_uac_fail.xml",
                                         name="second", rtp_port=peer.port)
        finally:
            peer.close()
        assert (ok, failed) == (1, 0), out
        assert final_statuses(log)[-1] == 486
        assert busy_tone_heard(peer.pcm()), "no busy tone before the 486"
        finished(desk)


def test_a_callee_who_rejects_gives_the_caller_busy_with_the_busy_tone(tmp_path: Path) -> None:
    with pbx_for(tmp_path) as pbx:
        desk = phone(tmp_path, pbx, 1, "call_uas_decline.xml")
        peer = RtpPeer()
        try:
            ok, failed, out, log = place(pbx, tmp_path, 0, "101", "call_uac_fail.xml",
                                         name="caller", rtp_port=peer.port)
        finally:
            peer.close()
        assert (ok, failed) == (1, 0), out
        assert "603" not in "".join(str(s) for s in final_statuses(log))
        assert final_statuses(log)[-1] == 486
        assert busy_tone_heard(peer.pcm()), "no busy tone after the reject"
        assert "SIP/2.0 603" in finished(desk)


# -- no answer -----------------------------------------------------------------------------------

def test_no_answer_forwarding_after_the_rings_set_by_star610(tmp_path: Path) -> None:
    with pbx_for(tmp_path) as pbx:
        assert_confirmed(dial_code(pbx, tmp_path, 1, "*92102"))
        assert_confirmed(dial_code(pbx, tmp_path, 1, "*6101"))  # one ring: 5 s
        desk = phone(tmp_path, pbx, 1, "call_uas_ring.xml")
        colleague = phone(tmp_path, pbx, 2, "call_uas_answer.xml")
        started = time.monotonic()
        ok, failed, out, _ = place(pbx, tmp_path, 0, "101", "call_uac.xml", name="caller")
        assert (ok, failed) == (1, 0), out
        desk_log = finished(desk)
        assert "CANCEL sip:" in desk_log
        invite = finished(colleague).split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
        assert "reason=no-answer" in invite, invite
        # the caller's call took one ring (5 s) plus the talk, not the 3 s ring timeout
        assert time.monotonic() - started > 5.0

        assert_confirmed(dial_code(pbx, tmp_path, 1, "*93"))
        desk = phone(tmp_path, pbx, 1, "call_uas_ring.xml")
        ok, failed, out, log = place(pbx, tmp_path, 0, "101", "call_uac_fail.xml",
                                     name="after")
        assert (ok, failed) == (1, 0), out
        assert final_statuses(log)[-1] == 480
        finished(desk)


# -- call waiting --------------------------------------------------------------------------------

def test_call_waiting_off_gives_busy_and_on_offers_the_second_call(tmp_path: Path) -> None:
    with pbx_for(tmp_path) as pbx, ThreadPoolExecutor(2) as pool:
        assert_confirmed(dial_code(pbx, tmp_path, 1, "#43"))
        desk = phone(tmp_path, pbx, 1, "call_uas_answer.xml", calls=1)
        first: Future[tuple[int, int, str, str]] = pool.submit(
            place, pbx, tmp_path, 0, "101", "call_uac.xml", name="first", pause_ms=5000)
        time.sleep(2.0)  # 100 and 101 are talking
        ok, failed, out, log = place(pbx, tmp_path, 2, "101", "call_uac_fail.xml",
                                     name="waiting-off")
        assert (ok, failed) == (1, 0), out
        assert final_statuses(log)[-1] == 486
        assert first.result()[:2] == (1, 0)
        finished(desk)

        assert_confirmed(dial_code(pbx, tmp_path, 1, "*43"))
        desk = phone(tmp_path, pbx, 1, "call_uas_answer.xml", calls=2)
        first = pool.submit(place, pbx, tmp_path, 0, "101", "call_uac.xml", name="first-on",
                            pause_ms=5000)
        time.sleep(2.0)
        ok, failed, out, _ = place(pbx, tmp_path, 2, "101", "call_uac.xml", name="waiting-on")
        assert (ok, failed) == (1, 0), out  # the busy user's phone took the second call
        assert first.result()[:2] == (1, 0)
        assert finished(desk).count("INVITE sip:") == 2


# -- the mobile ----------------------------------------------------------------------------------

def mobile_setup(carrier_port: int) -> Callable[[Store], None]:
    base = carrier_setup(carrier_port)

    def setup(store: Store) -> None:
        base(store)
        store.update_user("101", mobile_number=MOBILE_101)

    return setup


@contextlib.contextmanager
def mobile(tmp: Path, port: int, rtp_port: int, answer_ms: int) -> Iterator[
        subprocess.Popen[str]]:
    """The carrier's side of 101's mobile: challenges, rings, answers after ``answer_ms``."""
    args = [need("sipp"), "-sf", str(SCENARIOS / "carrier_call_mobile.xml"), "-i", CARRIER_HOST,
            "-p", str(port), "-t", "u1", "-m", "1", "-nostdin", "-timeout", "40s",
            "-timeout_error", "-d", str(answer_ms), "-key", "rtp_port", str(rtp_port),
            "-trace_msg", "-message_file", str(tmp / "mobile-messages.log"),
            "-trace_err", "-error_file", str(tmp / "mobile-errors.log")]
    proc = subprocess.Popen(args, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace")
    time.sleep(0.3)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_parallel_ringing_on_the_mobile_with_the_call_waiting_tone_in_its_call(
        tmp_path: Path) -> None:
    carrier_port = free_port(CARRIER_HOST)
    with pbx_for(tmp_path, mobile_setup(carrier_port)) as pbx, ThreadPoolExecutor(2) as pool:
        assert_confirmed(dial_code(pbx, tmp_path, 1, "*12"))
        desk = phone(tmp_path, pbx, 1, "call_uas_ring.xml", calls=2)
        ear = RtpPeer(host=CARRIER_HOST)  # the carrier's SDP names its own address
        try:
            with mobile(tmp_path, carrier_port, ear.port, answer_ms=1000) as carrier:
                first = pool.submit(place, pbx, tmp_path, 0, "101", "call_uac.xml",
                                    name="first", pause_ms=9000)
                time.sleep(3.0)  # the mobile answered; the desk phone was cancelled
                waiting = time.monotonic()
                ok, failed, out, _ = place(pbx, tmp_path, 2, "101", "call_uac_cancel.xml",
                                             name="second", pause_ms=1500)
                assert (ok, failed) == (1, 0), out
                assert first.result()[:2] == (1, 0)
                out, _ = carrier.communicate(timeout=30)
                assert carrier.returncode == 0, out + read_log(tmp_path / "mobile-errors.log")
        finally:
            ear.close()
        desk_log = finished(desk)

        # *13: the mobile rings no more (the carrier would refuse an unexpected INVITE)
        assert_confirmed(dial_code(pbx, tmp_path, 1, "*13"))
        desk = phone(tmp_path, pbx, 1, "call_uas_answer.xml", name="desk-after")
        ok, failed, out, _ = place(pbx, tmp_path, 0, "101", "call_uac.xml", name="after")
        assert (ok, failed) == (1, 0), out
        finished(desk)
        # the mobile was routed for the two calls before *13 (the second left it out: it was
        # in the first), and not after
        assert events_count(pbx, "call.outbound") == 2
    cancels = desk_log.split("CANCEL sip:")
    assert len(cancels) == 3, desk_log  # both calls rang the desk phone, both were cancelled
    assert 'text="Call completed elsewhere"' in cancels[1].split("\n\n", 1)[0], cancels[1]
    # the mobile heard the call-waiting tone (425 Hz bursts) while the second call rang
    tone = ear.pcm(since=waiting, until=waiting + 2.5)
    windows = [tone[i:i + 800] for i in range(0, len(tone) - 800, 800)]  # 100 ms
    loud = [w for w in windows if np.sqrt(np.mean(w.astype(np.float64) ** 2)) > 300]
    assert loud and all(tone_ratio(w, 425.0, 8000) > 0.7 for w in loud), len(loud)


# -- loops and precedence ------------------------------------------------------------------------

def test_a_forwarding_loop_ends_with_an_error_within_seconds(tmp_path: Path) -> None:
    with pbx_for(tmp_path) as pbx:
        assert_confirmed(dial_code(pbx, tmp_path, 1, "*72102"))
        assert_confirmed(dial_code(pbx, tmp_path, 2, "*72101"))
        started = time.monotonic()
        ok, failed, out, log = place(pbx, tmp_path, 0, "101", "call_uac_fail.xml", name="loop")
        assert time.monotonic() - started < 5.0
        assert (ok, failed) == (1, 0), out
        assert final_statuses(log)[-1] == 482


def test_do_not_disturb_wins_over_forwarding_immediate(tmp_path: Path) -> None:
    with pbx_for(tmp_path) as pbx:
        assert_confirmed(dial_code(pbx, tmp_path, 1, "*72102"))
        assert_confirmed(dial_code(pbx, tmp_path, 1, "*78"))
        colleague = phone(tmp_path, pbx, 2, "call_uas_answer.xml", name="colleague")
        ok, failed, out, log = place(pbx, tmp_path, 0, "101", "call_uac_fail.xml", name="dnd")
        assert (ok, failed) == (1, 0), out
        assert final_statuses(log)[-1] == 486
        colleague.stop()
        assert "INVITE sip:" not in colleague.log()


# -- remote office -------------------------------------------------------------------------------

REMOTE_OFFICE_101 = "+4940999888"


async def test_remote_office_rings_only_the_remote_office_number(tmp_path: Path) -> None:
    """Remote office has no feature code: the user switches it in the portal, which goes
    through the settings service as this test does (the server runs in this process)."""
    carrier_port = free_port(CARRIER_HOST)
    base = carrier_setup(carrier_port)

    def setup(store: Store) -> None:
        base(store)
        store.update_user("101", remote_office_number=REMOTE_OFFICE_101)

    async with serving(tmp_path, USERS, CONFIG, store_setup=setup) as (server, files):
        user = server.directory.user(server.domain, "101")
        assert user is not None
        server.settings.update(user.id, "remote_office", {"enabled": True}, source="api")
        desk = await asyncio.to_thread(phone, tmp_path, files, 1, "call_uas_ring.xml")
        try:
            with mobile(tmp_path, carrier_port, free_port(CARRIER_HOST), answer_ms=500) as office:
                ok, failed, out, _ = await asyncio.to_thread(
                    place, files, tmp_path, 0, "101", "call_uac.xml", name="caller")
                assert (ok, failed) == (1, 0), out
                carrier_out, _ = await asyncio.to_thread(office.communicate, None, 30)
                assert office.returncode == 0, carrier_out
        finally:
            desk.stop()
        assert "INVITE sip:" not in desk.log()  # the desk phone never rang
        invite = read_log(tmp_path / "mobile-messages.log").split("INVITE sip:", 1)[1]
        assert invite.startswith(REMOTE_OFFICE_101 + "@"), invite[:200]

        # forwarding immediate wins over remote office
        await asyncio.to_thread(lambda: assert_confirmed(dial_code(files, tmp_path, 1,
                                                                   "*72102")))
        colleague = await asyncio.to_thread(phone, tmp_path, files, 2, "call_uas_answer.xml")
        try:
            ok, failed, out, _ = await asyncio.to_thread(
                place, files, tmp_path, 0, "101", "call_uac.xml", name="forwarded")
            assert (ok, failed) == (1, 0), out
            rc, colleague_out = await asyncio.to_thread(colleague.result)
            assert rc == 0, colleague_out
        finally:
            colleague.stop()
        assert "reason=unconditional" in colleague.log()
