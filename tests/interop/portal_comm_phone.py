"""The portal's softphone against a baresip phone, run as a script inside a network namespace
with only ``lo`` by tests/interop/test_portal_comm_browser.py (``python -m
tests.interop.portal_comm_phone DIR`` writes ``DIR/result.json``): the PBX in-process (SIP over
UDP and WS, the portal on HTTP), 100 signs in to the portal in headless Debian chromium, opens
``/portal/phone?tone=600`` (the page's microphone is a 600 Hz oscillator, a test hook) — the
page registers by itself with the browser device's HA1 — and calls 101, a baresip phone
(auto-answer, a 1209 Hz file as its microphone, sndfile recording what it hears)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from tests.interop.inprocess import serving
from tests.interop.portal_harness import axe_check, browser, login, screenshot
from tests.interop.test_calls_sipp import USERS

CONFIG = ('[media]\nport_min = 47500\nport_max = 47999\n[calls]\nbusy_tone = 1.0\n'
          '[webrtc]\nice_addresses = ["127.0.0.1"]\nport_min = 48000\nport_max = 48499\n')
PORTAL_PASSWORD = "portal-100-pw"


async def _wait_until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def until(page: Any, expression: str, timeout: float = 15.0) -> Any:
    """Poll ``expression`` in the page until it is truthy (its value); TimeoutError after
    ``timeout`` s. (Playwright's wait_for_function compiles its predicate in the page, which
    the portal's CSP forbids: no 'unsafe-eval'; evaluate goes through DevTools.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {expression}")
        await asyncio.sleep(0.1)


async def _listen(page: Any, seconds: float) -> list[dict[str, float]]:
    out = []
    for _ in range(int(seconds / 0.25)):
        out.append(await page.evaluate("window.softphone.analyse()"))
        await asyncio.sleep(0.25)
    return out


async def scenario(server: Any, files: Any, base: str, tmp: Path) -> dict[str, Any]:
    from tests.interop.harness import need
    from tests.interop.test_calls_baresip import baresip_dir, best_ratio, recording, stop, tone_file

    user = server.store.user("100")
    server.store.set_portal_password(user.id, PasswordHasher().hash(PORTAL_PASSWORD),
                                     now=time.time())
    host, port = files.addr("udp")
    d101 = baresip_dir(tmp, "101", USERS[1][1], (host, port), tone_file(1209.0), "PCMU")
    with (d101 / "config").open("a") as config:  # the namespace has no default route
        config.write("net_interface 127.0.0.1\n")
    out: dict[str, Any] = {}
    log = (d101 / "out.log").open("w")
    phone = subprocess.Popen([need("baresip"), "-f", str(d101)], stdin=subprocess.PIPE,
                             stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        async with browser() as b:
            page = await login(b, base, "100", PORTAL_PASSWORD)
            await page.goto(f"{base}/portal/phone?tone=600")
            await until(page, "window.softphone.registered || window.softphone.registrationFailed", 15)
            out["registered"] = await page.evaluate("window.softphone.registered")
            out["registration_failed"] = await page.evaluate(
                "window.softphone.registrationFailed")
            out["created_device"] = await page.evaluate("window.softphone.account.created")
            out["axe_idle"] = await axe_check(page)
            aor = server.b2bua.aor("101")
            out["phone_registered"] = await _wait_until(
                lambda: bool(server.registrar.bindings(aor, time.time())), 10)
            await page.fill("#dial-target", "101")
            await page.click("#btn-call")
            await until(page, "window.softphone.events.includes('confirmed') || window.softphone.failed.length", 15)
            out["events"] = await page.evaluate("window.softphone.events")
            await asyncio.sleep(1.0)
            out["heard"] = await _listen(page, 2.0)
            out["status_connected"] = await page.text_content("#phone-status")
            # a chat message to 100 during the call: delivered to the page (SIP MESSAGE)
            sender, me = server.store.user("101"), server.store.user("100")
            stored, online = await server.b2bua.chat.send(sender, me, b"Kurze Frage?")
            out["chat_online"] = online
            await until(page, "window.softphone.messages.length", 10)
            out["chat_shown"] = await page.text_content("#phone-chat-list")
            out["chat_delivered"] = await _wait_until(lambda: any(
                m.delivered_at is not None for m in server.store.chat_conversation(
                    me.id, sender.id) if m.id == stored.id), 10)
            # and one from the page to the party (the form beside the call, the API)
            await until(page, "!document.getElementById('phone-chat-form').hidden", 10)
            await page.fill("#phone-chat-text", "Bin gleich da")
            await page.click("#phone-chat-send")
            await until(page, "document.getElementById('phone-chat-list').children.length > 1",
                        10)
            out["chat_sent"] = [m.body.decode() for m in server.store.chat_conversation(
                me.id, sender.id) if m.sender_id == me.id]
            await page.click("#key-5")  # DTMF by INFO
            await asyncio.sleep(1.5)
            out["quality"] = await page.evaluate("window.softphone.quality()")
            out["quality_shown"] = await page.text_content("#q-received")
            await page.click("#btn-mute")
            out["muted_pressed"] = await page.get_attribute("#btn-mute", "aria-pressed")
            await page.click("#btn-mute")
            await page.click("#btn-hold")  # re-INVITE sendonly; the button says Resume
            await until(page, "window.softphone.events.includes('hold:local')", 10)
            out["hold"] = [await page.get_attribute("#btn-hold", "aria-pressed"),
                           await page.text_content("#btn-hold"),
                           await page.text_content("#phone-status")]
            await page.click("#btn-hold")
            await until(page, "window.softphone.events.includes('unhold:local')", 10)
            out["axe"] = await axe_check(page)
            await screenshot(page, "portal-phone-en")
            await page.click("#btn-hangup")
            await until(page, "window.softphone.ended >= 1", 10)
            out["ended"] = await _wait_until(lambda: not server.b2bua.calls, 10)
            out["status_after"] = await page.text_content("#phone-status")
            for name, phase in (("conference", _conference), ("transfer", _transfer),
                                ("attended", _attended), ("ring_together", _ring_together)):
                try:  # each phase's findings, or what went wrong (the next ones still run)
                    out[name] = await phase(server, files, page, tmp)
                except Exception as exc:
                    out[name] = {"error": repr(exc), "events": await page.evaluate(
                        "window.softphone.events")}
                    await _hang_up_all(server)
                    await page.evaluate("window.softphone.hangup()")
    finally:
        stop(phone)
        log.close()
    first = sorted(d101.glob("dump-*-dec.wav"))[:1]  # the first call's (later ones follow)
    pcm, rate = recording(d101) if not first else _wav(first[0])
    out["phone_600"] = best_ratio(pcm, 600, rate)
    out["phone_1209"] = best_ratio(pcm, 1209, rate)
    phone_log = (d101 / "out.log").read_text(errors="replace")
    out["phone_dtmf"] = "received event: '5'" in phone_log  # the page's key 5 (INFO → RFC 4733)
    out["phone_log"] = phone_log[-2000:]
    out["axe"] = out["axe"] + out.pop("axe_idle")
    return out


def _wav(path: Path) -> tuple[Any, int]:
    import wave

    import numpy as np

    with wave.open(str(path)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return (pcm.reshape(-1, channels)[:, 0] if channels > 1 else pcm), rate


def _hears(rtp: Any, since: float) -> dict[str, Any]:
    from tests.media.test_aio import dominant, hears

    pcm = rtp.pcm(since=since)
    return {f"hears_{f}": bool(hears(pcm, 8000, f)) for f in (600, 1000, 1209)} | {
        "dominant": dominant(pcm, 8000, [600, 1000, 1209]), "samples": len(pcm)}


async def _hang_up_all(server: Any) -> bool:
    for call in list(server.b2bua.calls.values()):
        call.hangup()
    return await _wait_until(lambda: not server.b2bua.calls, 10)


async def _sipp_102(files: Any, tmp: Path, name: str) -> tuple[Any, Any]:
    from tests.interop.harness import free_port
    from tests.interop.test_calls_sipp import RtpPeer, SippUas, register_port

    port, rtp = free_port(), RtpPeer(send_hz=1000, paced_from_latch=True)
    await asyncio.to_thread(register_port, files, "102", USERS[2][1], port)
    uas = SippUas(tmp, "call_uas_answer.xml", port, keys={"rtp_port": str(rtp.port)},
                  pause_ms=300, name=name)
    return uas, rtp


async def _conference(server: Any, files: Any, page: Any, tmp: Path) -> dict[str, Any]:
    """The page calls the baresip phone again, then adds 102 (a SIPp phone, 1000 Hz) with
    "Add to conference" (the API's conference operation): 102 hears the page and 101."""
    uas, rtp = await _sipp_102(files, tmp, "conf")
    out: dict[str, Any] = {}
    try:
        confirmed = await page.evaluate("window.softphone.events.length")
        await page.fill("#dial-target", "101")
        await page.click("#btn-call")
        await until(page, f"window.softphone.events.slice({confirmed})"
                          ".includes('confirmed')", 15)
        await page.fill("#transfer-target", "102")
        await page.click("#btn-conference")
        out["joined"] = await _wait_until(lambda: rtp.remote is not None, 15)
        start = time.monotonic()
        await asyncio.sleep(3.0)
        out["phone_102"] = _hears(rtp, start + 0.5)
        out["events"] = await page.evaluate("window.softphone.events")
        out["status"] = await page.text_content("#phone-status")
        await page.click("#btn-hangup")
        out["ended"] = await _hang_up_all(server)
        out["sipp_rc"], sipp = await asyncio.to_thread(uas.result, 20)
        out["sipp"] = sipp[-1500:]
    finally:
        uas.stop()
        rtp.close()
    return out


async def _transfer(server: Any, files: Any, page: Any, tmp: Path) -> dict[str, Any]:
    """The page calls 102 (SIPp, 1000 Hz) and transfers it blind (REFER) to 101 (baresip,
    1209 Hz): the page drops out, 102 hears 101."""
    uas, rtp = await _sipp_102(files, tmp, "xfer")
    out: dict[str, Any] = {}
    try:
        ended = await page.evaluate("window.softphone.ended")
        confirmed = await page.evaluate("window.softphone.events.length")
        await page.fill("#dial-target", "102")
        await page.click("#btn-call")
        await until(page, f"window.softphone.events.slice({confirmed})"
                          ".includes('confirmed')", 15)
        await asyncio.sleep(1.0)
        out["before"] = _hears(rtp, time.monotonic() - 0.8)
        await page.fill("#transfer-target", "101")
        await page.click("#btn-transfer")
        await until(page, f"window.softphone.ended > {ended}", 15)
        start = time.monotonic()
        await asyncio.sleep(3.0)
        out["after"] = _hears(rtp, start + 1.0)
        out["events"] = await page.evaluate("window.softphone.events")
        out["ended"] = await _hang_up_all(server)
        out["sipp_rc"], sipp = await asyncio.to_thread(uas.result, 20)
        out["sipp"] = sipp[-1500:]
    finally:
        uas.stop()
        rtp.close()
    return out


async def _attended(server: Any, files: Any, page: Any, tmp: Path) -> dict[str, Any]:
    """The page calls 102 (SIPp, 1000 Hz), consults 101 (baresip, 1209 Hz: "Consult first"
    holds 102), then completes the transfer (REFER with Replaces): 102 hears 101."""
    uas, rtp = await _sipp_102(files, tmp, "att")
    out: dict[str, Any] = {}
    try:
        ended = await page.evaluate("window.softphone.ended")
        confirmed = await page.evaluate("window.softphone.events.length")
        await page.fill("#dial-target", "102")
        await page.click("#btn-call")
        await until(page, f"window.softphone.events.slice({confirmed})"
                          ".includes('confirmed')", 15)
        await page.fill("#transfer-target", "101")
        await page.click("#btn-consult")
        await until(page, f"window.softphone.events.slice({confirmed})"
                          ".includes('consult-confirmed')", 15)
        out["held"] = await page.evaluate("window.softphone.held")
        out["status_consult"] = await page.text_content("#phone-status")
        await asyncio.sleep(0.5)
        await page.click("#btn-complete")
        await until(page, f"window.softphone.ended > {ended}", 15)
        start = time.monotonic()
        await asyncio.sleep(3.0)
        out["after"] = _hears(rtp, start + 1.0)
        out["events"] = (await page.evaluate("window.softphone.events"))[confirmed:]
        out["calls"] = len(server.b2bua.calls)
        out["ended"] = await _hang_up_all(server)
        out["sipp_rc"], sipp = await asyncio.to_thread(uas.result, 20)
        out["sipp"] = sipp[-1500:]
    finally:
        uas.stop()
        rtp.close()
    return out


def _caller_102(files: Any, tmp: Path, rtp_port: int) -> tuple[int, int, str]:
    """102 (SIPp, RTP on ``rtp_port``) calls 100 and hangs up after 4 s of talk."""
    from tests.interop.harness import sipp, users_csv

    host, port = files.addr("udp")
    res = sipp("call_uac.xml", (host, port), tmp, inf=users_csv(tmp / "c102.csv", [USERS[2]]),
               timeout=40, extra=["-auth_uri", f"100@{host}:{port}", "-key", "dst", "100",
                                  "-key", "rtp_port", str(rtp_port), "-d", "4000",
                                  "-trace_msg", "-message_file", str(tmp / "c102-msgs.log")])
    return res.successful, res.failed, res.output


async def _ring_together(server: Any, files: Any, page: Any, tmp: Path) -> dict[str, Any]:
    """100 has a SIPp desk phone besides the page; 102 calls 100: both ring, the page is
    answered with its Answer button, the desk phone gets CANCEL; the page hears 102."""
    from tests.interop.harness import free_port
    from tests.interop.test_calls_sipp import RtpPeer, SippUas, register_port

    port = free_port()
    await asyncio.to_thread(register_port, files, "100", USERS[0][1], port)
    desk = SippUas(tmp, "call_uas_ring.xml", port, keys={}, name="desk")
    rtp = RtpPeer(send_hz=1000, paced_from_latch=True)
    out: dict[str, Any] = {}
    try:
        incoming = await page.evaluate("window.softphone.incoming")
        ended = await page.evaluate("window.softphone.ended")
        result = asyncio.ensure_future(asyncio.to_thread(_caller_102, files, tmp, rtp.port))
        await until(page, f"window.softphone.incoming > {incoming}", 15)
        out["status_ringing"] = await page.text_content("#phone-status")
        out["answer_enabled"] = not await page.is_disabled("#btn-answer")
        await asyncio.sleep(0.5)
        await page.click("#btn-answer")
        await until(page, "window.softphone.session && window.softphone.session.isEstablished()",
                    10)
        await asyncio.sleep(1.0)
        out["heard"] = await _listen(page, 1.5)
        out["desk_rc"], out["desk"] = await asyncio.to_thread(desk.result, 20)
        out["desk_cancelled"] = "CANCEL sip:" in desk.log()
        ok, failed, caller_out = await result
        out["caller"] = [ok, failed]
        out["caller_out"] = caller_out[-1500:]
        await until(page, f"window.softphone.ended > {ended}", 10)
        from tests.media.test_aio import hears

        out["caller_hears_600"] = bool(hears(rtp.pcm(), 8000, 600))
    finally:
        desk.stop()
        rtp.close()
    return out


async def main(tmp: Path) -> dict[str, Any]:
    async with serving(tmp, USERS, CONFIG, transports=("udp", "ws")) as (server, files):
        assert server.http is not None
        base = f"http://127.0.0.1:{server.http.port}"
        return await asyncio.wait_for(scenario(server, files, base, tmp), 100)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    result = asyncio.run(main(out))
    (out / "result.json").write_text(json.dumps(result))
