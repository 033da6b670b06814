"""Browser phones through the PBX, with a browser-like peer in Python (tests/interop/webrtc_peer:
SIP over WebSocket + aiortc, ICE on 127.0.0.1 only) and SIPp (with a Python RTP peer) or
baresip phones on UDP: the browser's Opus leg is bridged to the phone's G.711 leg (48 ↔ 8 kHz)
and each side hears the other's tone (Goertzel), whoever calls; hold/resume by the browser's
re-INVITE; its INFO digits reach an RFC 4733 phone; two tabs of a user, or a tab and a desk
phone, ring together; closing a tab removes its registration, and mid-call ends the call.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.harness import PbxProcess, free_port, need, read_log, running_pbx
from tests.interop.test_calls_baresip import (
    baresip_dir,
    best_ratio,
    recording,
    stop,
    tone_file,
    wait_for,
)
from tests.interop.test_calls_sipp import (
    USERS,
    RtpPeer,
    SippUas,
    caller,
    events,
    final_statuses,
    messages,
    register_port,
)
from tests.interop.webrtc_peer import WsPhone
from tests.media.test_aio import dominant, hears

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

CONFIG = ('[media]\nport_min = 46000\nport_max = 46499\n'
          '[webrtc]\nice_addresses = ["127.0.0.1"]\nport_min = 46500\nport_max = 46999\n')
TONES = [600.0, 1000.0, 1400.0]


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[PbxProcess]:
    with running_pbx(tmp_path, transports=("udp", "ws"), users=USERS,
                     config_extra=CONFIG) as p:
        yield p


def ws_url(pbx: PbxProcess) -> str:
    host, port = pbx.addr("ws")
    return f"ws://{host}:{port}/"


async def _browser_calls_phone(pbx: PbxProcess, tmp: Path) -> None:
    port, rtp = free_port(), RtpPeer(send_hz=1000, paced_from_latch=True)
    register_port(pbx, "101", USERS[1][1], port)
    uas = SippUas(tmp, "call_uas_answer.xml", port, keys={"rtp_port": str(rtp.port)},
                  pause_ms=300)
    phone = WsPhone(ws_url(pbx), "100", USERS[0][1], tone_hz=600)
    try:
        await phone.connect()
        assert await phone.register() == 200
        resp = await phone.call("101")
        assert resp.status == 200, resp
        assert "UDP/TLS/RTP/SAVPF" in resp.body.decode()
        await asyncio.sleep(1.0)
        spray(resp.body.decode())  # a third party's DTLS hello and RTP: dropped, call stays up
        start = time.monotonic()
        await asyncio.sleep(3.0)
        heard_phone = rtp.pcm(since=start + 1.0)
        heard_browser = phone.heard(skip_s=1.0)
        assert await phone.bye() == 200
        rc, out = await asyncio.to_thread(uas.result, 20)
        assert rc == 0, out
    finally:
        uas.stop()
        rtp.close()
        await phone.close()
    # the browser leg's quality is logged at its end (loopback: nothing lost, a good MOS)
    deadline = time.monotonic() + 5
    while not (quality := events(pbx, "call.webrtc_quality")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert quality and float(quality[-1]["rx_packets"]) > 100, quality  # type: ignore[arg-type]
    assert quality[-1]["lost"] == 0 and float(quality[-1]["mos"]) > 4.0, quality  # type: ignore[arg-type]
    ended = events(pbx, "call.ended")
    assert quality[-1]["call_id"] and quality[-1]["call_id"] in {e["call_id"] for e in ended}
    # G.711 phone hears the browser's 600 Hz (Opus 48 kHz → 8 kHz), the browser the phone's 1 kHz
    assert hears(heard_phone, 8000, 600) and dominant(heard_phone, 8000, TONES) == 600
    assert hears(heard_browser, 48000, 1000), len(heard_browser)
    assert dominant(heard_browser, 48000, TONES) == 1000


def spray(answer: str) -> None:
    """From a socket of its own, send a DTLS ClientHello-like datagram and RTP to every ICE
    candidate of ``answer`` (SECURITY.md: a browser leg takes DTLS/RTP only from its
    ICE-nominated address)."""
    targets = re.findall(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", answer)
    assert targets and all(host == "127.0.0.1" for host, _ in targets), targets
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for host, port in targets:
            for _ in range(10):
                s.sendto(b"\x16\xfe\xfd" + bytes(60), (host, int(port)))  # DTLS handshake
                s.sendto(b"\x80\x6f" + bytes(170), (host, int(port)))  # RTP, Opus PT


def test_browser_calls_a_sip_phone(pbx: PbxProcess, tmp_path: Path) -> None:
    asyncio.run(_browser_calls_phone(pbx, tmp_path))


async def _phone_calls_browser(pbx: PbxProcess, tmp: Path) -> None:
    phone = WsPhone(ws_url(pbx), "101", USERS[1][1], tone_hz=600)
    rtp = RtpPeer(send_hz=1000, paced_from_latch=True)
    try:
        await phone.connect()
        assert await phone.register() == 200
        result = asyncio.ensure_future(asyncio.to_thread(
            caller, pbx, tmp, dst="101", pause_ms=4000, rtp_port=rtp.port))
        invite = await phone.answer()
        assert "UDP/TLS/RTP/SAVPF" in invite.body.decode()
        assert "a=fingerprint:" in invite.body.decode()
        start = time.monotonic()
        ok, failed, out = await result  # SIPp hangs up after 4 s
        assert (ok, failed) == (1, 0), out
        await asyncio.wait_for(phone.ended.wait(), 10)
        heard_phone = rtp.pcm(since=start + 1.0, until=start + 3.5)
        heard_browser = phone.heard(skip_s=1.0)
    finally:
        rtp.close()
        await phone.close()
    assert hears(heard_phone, 8000, 600) and dominant(heard_phone, 8000, TONES) == 600
    assert hears(heard_browser, 48000, 1000) and dominant(heard_browser, 48000, TONES) == 1000


def test_sip_phone_calls_a_browser(pbx: PbxProcess, tmp_path: Path) -> None:
    asyncio.run(_phone_calls_browser(pbx, tmp_path))


async def _two_tabs_ring(pbx: PbxProcess, tmp: Path) -> None:
    tabs = [WsPhone(ws_url(pbx), "101", USERS[1][1], tone_hz=600) for _ in range(2)]
    rtp = RtpPeer(send_hz=1000, paced_from_latch=True)
    try:
        for tab in tabs:
            await tab.connect()
            assert await tab.register() == 200
        result = asyncio.ensure_future(asyncio.to_thread(
            caller, pbx, tmp, dst="101", pause_ms=2500, rtp_port=rtp.port))
        # both tabs ring with a WebRTC offer of their own; the first answers
        invites = [await asyncio.wait_for(tab.invites.get(), 20) for tab in tabs]
        assert all("UDP/TLS/RTP/SAVPF" in i.body.decode() for i in invites)
        assert invites[0].call_id != invites[1].call_id
        await tabs[1].ring(invites[1])
        tabs[0].invites.put_nowait(invites[0])
        await tabs[0].answer()
        deadline = asyncio.get_running_loop().time() + 10
        while not any(r.method == "CANCEL" and r.call_id == invites[1].call_id
                      for r in tabs[1].requests):
            assert asyncio.get_running_loop().time() < deadline, tabs[1].requests
            await asyncio.sleep(0.05)
        ok, failed, out = await result
        assert (ok, failed) == (1, 0), out
        await asyncio.wait_for(tabs[0].ended.wait(), 10)
        assert hears(tabs[0].heard(skip_s=1.0), 48000, 1000)
    finally:
        rtp.close()
        for tab in tabs:
            await tab.close()


def test_two_tabs_of_a_user_both_ring(pbx: PbxProcess, tmp_path: Path) -> None:
    asyncio.run(_two_tabs_ring(pbx, tmp_path))


async def _closing_the_tab_unregisters(pbx: PbxProcess, tmp: Path) -> None:
    tab = WsPhone(ws_url(pbx), "101", USERS[1][1], tone_hz=600)
    await tab.connect()
    assert await tab.register() == 200
    closed = time.monotonic()
    await tab.close()
    # the binding went with its WebSocket: a call to 101 now finds nobody (480) at once
    deadline = closed + 1.0
    while not [e for e in events(pbx, "sip.register.removed") if e.get("reason") == "flow_closed"]:
        assert time.monotonic() < deadline, "binding still there a second after the tab closed"
        await asyncio.sleep(0.05)
    ok, failed, out = await asyncio.to_thread(caller, pbx, tmp, "call_uac_fail.xml", dst="101",
                                              extra=["-key", "extra_header", "Subject: gone"])
    assert (ok, failed) == (1, 0), out
    assert final_statuses(messages(tmp))[-1] == 480


def test_closing_the_tab_removes_its_registration(pbx: PbxProcess, tmp_path: Path) -> None:
    asyncio.run(_closing_the_tab_unregisters(pbx, tmp_path))


async def _browser_holds(pbx: PbxProcess, tmp: Path) -> None:
    port, rtp = free_port(), RtpPeer(send_hz=1000, paced_from_latch=True)
    register_port(pbx, "101", USERS[1][1], port)
    uas = SippUas(tmp, "call_uas_answer.xml", port, keys={"rtp_port": str(rtp.port)},
                  pause_ms=300)
    phone = WsPhone(ws_url(pbx), "100", USERS[0][1], tone_hz=600)
    try:
        await phone.connect()
        assert await phone.register() == 200
        assert (await phone.call("101")).status == 200
        await asyncio.sleep(2.0)
        held = await phone.reinvite("sendonly")
        assert held.status == 200 and "a=recvonly" in held.body.decode(), held
        t_hold = time.monotonic()
        await asyncio.sleep(2.0)
        resumed = await phone.reinvite("sendrecv")
        assert resumed.status == 200 and "a=sendrecv" in resumed.body.decode(), resumed
        t_resume = time.monotonic()
        await asyncio.sleep(2.0)
        assert await phone.bye() == 200
        rc, out = await asyncio.to_thread(uas.result, 20)
        assert rc == 0, out
    finally:
        uas.stop()
        rtp.close()
        await phone.close()
    before = rtp.pcm(since=t_hold - 1.5, until=t_hold)
    during = rtp.pcm(since=t_hold + 0.5, until=t_resume)
    after = rtp.pcm(since=t_resume + 0.7)
    assert hears(before, 8000, 600)
    assert len(during) > 4000 and not hears(during, 8000, 600)  # music on hold instead
    assert hears(after, 8000, 600)


def test_browser_holds_and_resumes_by_reinvite(pbx: PbxProcess, tmp_path: Path) -> None:
    asyncio.run(_browser_holds(pbx, tmp_path))


async def _tab_closed_mid_call(pbx: PbxProcess, tmp: Path) -> None:
    port, rtp = free_port(), RtpPeer(send_hz=1000, paced_from_latch=True)
    register_port(pbx, "101", USERS[1][1], port)
    uas = SippUas(tmp, "call_uas_answer.xml", port, keys={"rtp_port": str(rtp.port)},
                  pause_ms=300)
    phone = WsPhone(ws_url(pbx), "100", USERS[0][1], tone_hz=600)
    try:
        await phone.connect()
        assert await phone.register() == 200
        assert (await phone.call("101")).status == 200
        await asyncio.sleep(1.0)
        closed = time.monotonic()
        await phone.close()  # no BYE: the tab is gone
        rc, out = await asyncio.to_thread(uas.result, 20)  # the phone gets our BYE
        took = time.monotonic() - closed
    finally:
        uas.stop()
        rtp.close()
    assert rc == 0, out
    assert took < 3.0, took
    ended = events(pbx, "call.ended")
    assert ended and ended[-1].get("cause") == "websocket closed", ended


def test_closing_the_tab_mid_call_ends_the_call(pbx: PbxProcess, tmp_path: Path) -> None:
    asyncio.run(_tab_closed_mid_call(pbx, tmp_path))


async def _browser_and_phone_ring(pbx: PbxProcess, tmp: Path) -> None:
    port = free_port()
    register_port(pbx, "101", USERS[1][1], port)
    desk = SippUas(tmp, "call_uas_ring.xml", port, keys={}, name="desk")
    tab = WsPhone(ws_url(pbx), "101", USERS[1][1], tone_hz=600)
    rtp = RtpPeer(send_hz=1000, paced_from_latch=True)
    try:
        await tab.connect()
        assert await tab.register() == 200
        result = asyncio.ensure_future(asyncio.to_thread(
            caller, pbx, tmp, dst="101", pause_ms=2000, rtp_port=rtp.port))
        await asyncio.sleep(1.0)  # both ring
        await tab.answer()
        rc, out = await asyncio.to_thread(desk.result, 20)  # the desk phone got CANCEL
        assert rc == 0, out
        ok, failed, out = await result
        assert (ok, failed) == (1, 0), out
        await asyncio.wait_for(tab.ended.wait(), 10)
        assert hears(tab.heard(skip_s=0.5), 48000, 1000)
    finally:
        desk.stop()
        rtp.close()
        await tab.close()
    assert "CANCEL sip:" in desk.log()


def test_browser_and_sip_phone_of_a_user_ring_together(pbx: PbxProcess,
                                                       tmp_path: Path) -> None:
    asyncio.run(_browser_and_phone_ring(pbx, tmp_path))


async def _browser_dtmf(pbx: PbxProcess, tmp: Path) -> None:
    port, rtp = free_port(), RtpPeer(send_hz=1000, paced_from_latch=True)
    register_port(pbx, "101", USERS[1][1], port)
    uas = SippUas(tmp, "call_uas_answer.xml", port, keys={"rtp_port": str(rtp.port)},
                  pause_ms=300)
    phone = WsPhone(ws_url(pbx), "100", USERS[0][1], tone_hz=600)
    try:
        await phone.connect()
        assert await phone.register() == 200
        assert (await phone.call("101")).status == 200
        await asyncio.sleep(1.0)
        assert await phone.info_dtmf("5") == 200
        await asyncio.sleep(1.0)
        assert await phone.bye() == 200
        rc, out = await asyncio.to_thread(uas.result, 20)
        assert rc == 0, out
    finally:
        uas.stop()
        rtp.close()
        await phone.close()
    # the phone negotiated telephone-event: the browser's INFO digit reaches it as RFC 4733
    assert rtp.events and {e[0] for e in rtp.events} == {5}, rtp.events


def test_browser_dtmf_by_info_reaches_a_phone_as_rfc4733(pbx: PbxProcess,
                                                          tmp_path: Path) -> None:
    asyncio.run(_browser_dtmf(pbx, tmp_path))


async def _browser_and_baresip(pbx: PbxProcess, tmp: Path, browser_calls: bool) -> None:
    binary = need("baresip")
    server = pbx.addr("udp")
    d101 = baresip_dir(tmp, "101", USERS[1][1], server, tone_file(1209.0), "PCMU")
    args = [binary, "-f", str(d101)]
    tab = WsPhone(ws_url(pbx), "100", USERS[0][1], tone_hz=600)
    await tab.connect()
    assert await tab.register() == 200
    if not browser_calls:
        args += ["-e", f"/dial sip:100@{server[0]}:{server[1]}"]
    phone = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=(d101 / "out.log").open("w"),
                             stderr=subprocess.STDOUT, text=True)
    try:
        assert await asyncio.to_thread(wait_for, pbx, "sip.register.added", 2), \
            read_log(d101 / "out.log")[-2000:]
        if browser_calls:
            resp = await tab.call("101")
            assert resp.status == 200, resp
        else:
            await tab.answer()
        await asyncio.sleep(3.0)
        heard_tab = tab.heard(skip_s=1.0)
        if browser_calls:
            assert await tab.bye() == 200
        else:
            stop(phone)  # baresip hangs up (BYE)
            await asyncio.wait_for(tab.ended.wait(), 10)
        assert await asyncio.to_thread(wait_for, pbx, "call.ended", 1, 10)
    finally:
        stop(phone)
        await tab.close()
    heard_phone, rate = recording(d101)
    assert best_ratio(heard_phone, 600, rate) > 0.6  # the browser's tone, Opus → PCMU
    assert hears(heard_tab, 48000, 1209) and dominant(heard_tab, 48000, [600, 1209]) == 1209


@pytest.mark.parametrize("browser_calls", [True, False], ids=["browser-calls", "phone-calls"])
def test_browser_and_a_baresip_phone(pbx: PbxProcess, tmp_path: Path,
                                     browser_calls: bool) -> None:
    asyncio.run(_browser_and_baresip(pbx, tmp_path, browser_calls))
