"""Browser-phone scenarios: the PBX in-process, JsSIP (the /phone page) in headless Debian
chromium driven by Playwright, SIPp phones. Run as a script by tests/interop/test_browser_phones
inside a network namespace of its own that has only ``lo`` (so every ICE candidate chromium
gathers, and every packet, is loopback): ``python -m tests.interop.browser_phones SCENARIO DIR``
writes its findings to ``DIR/result.json``, which the test asserts on.

Chromium: ``executable_path`` is Debian's ``/usr/bin/chromium`` (never a downloaded browser),
fake media UI/devices, autoplay without a gesture, loopback allowed in peer connections. The
page's microphone is a WebAudio oscillator (``?tone=HZ``); what each page hears is read from a
WebAudio analyser on the remote stream (dominant frequency and level).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.interop.harness import free_port
from tests.interop.inprocess import serving
from tests.interop.test_calls_sipp import USERS, RtpPeer, SippUas, register_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
]
CONFIG = ('[media]\nport_min = 46000\nport_max = 46499\n[calls]\nbusy_tone = 1.0\n'
          '[webrtc]\nice_addresses = ["127.0.0.1"]\nport_min = 46500\nport_max = 46999\n')


async def _wait(page: Any, condition: str, timeout: float = 15.0) -> None:
    await page.wait_for_function(condition, timeout=timeout * 1000)


async def _listen(page: Any, seconds: float = 2.0) -> list[dict[str, float]]:
    """A few readings of the page's analyser over ``seconds``."""
    out = []
    for _ in range(int(seconds / 0.25)):
        out.append(await page.evaluate("window.phone.analyse()"))
        await asyncio.sleep(0.25)
    return out


async def _phone_page(browser: Any, base: str, user: str, password: str, tone: int,
                      extra: str = "") -> Any:
    context = await browser.new_context(ignore_https_errors=True)  # WSS: self-signed
    page = await context.new_page()
    page.on("console", lambda msg: print(f"[{user}] {msg.text}", file=sys.stderr))
    await page.goto(f"{base}/phone?user={user}&password={password}&tone={tone}"
                    f"&autoregister=1{extra}")
    await _wait(page, "window.phone && window.phone.state.registered")
    return page


async def browsers(server: Any, files: Any, browser: Any, base: str, tmp: Path,
                   transport: str = "ws") -> dict[str, Any]:
    """Two browsers register over ``transport``; A (600 Hz) calls B (1000 Hz), B answers;
    both listen; A sends DTMF by INFO, holds and resumes; A hangs up. A second call B rejects
    with 486."""
    host, port = files.addr(transport)
    ws = f"&ws={transport}://{host}:{port}/"
    a = await _phone_page(browser, base, "100", USERS[0][1], 600, ws)
    b = await _phone_page(browser, base, "101", USERS[1][1], 1000, "&autoanswer=1" + ws)
    await a.evaluate("window.phone.call('101')")
    await _wait(a, "window.phone.state.events.includes('confirmed')")
    await _wait(b, "window.phone.state.incoming === 1")
    await asyncio.sleep(1.0)
    heard_a, heard_b = await asyncio.gather(_listen(a), _listen(b))
    sdp_offer = await a.evaluate(
        "window.phone.state.session.connection.localDescription.sdp")
    await a.evaluate("window.phone.dtmf('5')")
    await _wait(b, "window.phone.state.dtmf.length === 1")
    dtmf = await b.evaluate("window.phone.state.dtmf")
    # A holds (re-INVITE a=sendonly): B hears music on hold instead of A's tone; then resumes
    await a.evaluate("window.phone.hold(true)")
    await _wait(a, "window.phone.state.events.includes('hold:local')")
    await asyncio.sleep(1.0)
    held_b = await _listen(b, 1.5)
    await a.evaluate("window.phone.hold(false)")
    await _wait(a, "window.phone.state.events.includes('unhold:local')")
    await asyncio.sleep(1.0)
    resumed_b = await _listen(b, 1.5)
    await a.evaluate("window.phone.hangup()")
    await _wait(a, "window.phone.state.ended === 1")
    await _wait(b, "window.phone.state.ended === 1")
    calls_left = len(server.b2bua.calls)
    # a second call, which B rejects: A is told busy
    await b.evaluate("window.phone.state.rejectNext = true")
    await a.evaluate("window.phone.call('101')")
    await _wait(a, "window.phone.state.failed.length === 1", timeout=20)
    failed = await a.evaluate("window.phone.state.failed[0]")
    return {"heard_a": heard_a, "heard_b": heard_b, "offer": sdp_offer, "dtmf": dtmf,
            "held_b": held_b, "resumed_b": resumed_b, "calls_left": calls_left,
            "second_call": failed}


async def browsers_wss(server: Any, files: Any, browser: Any, base: str,
                       tmp: Path) -> dict[str, Any]:
    """:func:`browsers` over WSS (the PBX's self-signed certificate accepted)."""
    return await browsers(server, files, browser, base, tmp, transport="wss")


async def browser_to_phone(server: Any, files: Any, browser: Any, base: str,
                           tmp: Path) -> dict[str, Any]:
    """A browser (600 Hz) calls a SIPp phone whose RTP is a Python peer sending 1000 Hz."""
    port, rtp = free_port(), RtpPeer(send_hz=1000, paced_from_latch=True)
    await asyncio.to_thread(register_port, files, "101", USERS[1][1], port)
    uas = SippUas(tmp, "call_uas_answer.xml", port, keys={"rtp_port": str(rtp.port)},
                  pause_ms=300)
    try:
        a = await _phone_page(browser, base, "100", USERS[0][1], 600)
        await a.evaluate("window.phone.call('101')")
        await _wait(a, "window.phone.state.events.includes('confirmed')")
        start = time.monotonic()
        await asyncio.sleep(1.0)
        heard_a = await _listen(a)
        from tests.media.test_aio import dominant, hears

        pcm = rtp.pcm(since=start + 0.5)
        phone = {"hears_600": bool(hears(pcm, 8000, 600)),
                 "dominant": dominant(pcm, 8000, [600, 1000, 1400]), "samples": len(pcm)}
        await a.evaluate("window.phone.hangup()")
        await _wait(a, "window.phone.state.ended === 1")
        rc, out = await asyncio.to_thread(uas.result, 20)
    finally:
        uas.stop()
        rtp.close()
    return {"heard_a": heard_a, "phone": phone, "sipp_rc": rc, "sipp": out[-1500:]}


async def _wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _phone_hears(rtp: RtpPeer, since: float, until: float) -> dict[str, Any]:
    from tests.media.test_aio import dominant, hears

    pcm = rtp.pcm(since=since, until=until)
    return {"hears_600": bool(hears(pcm, 8000, 600)),
            "dominant": dominant(pcm, 8000, [600, 1000, 1400]), "samples": len(pcm)}


async def browser_dtmf_hold(server: Any, files: Any, browser: Any, base: str,
                            tmp: Path) -> dict[str, Any]:
    """A browser (600 Hz) calls a SIPp phone (RFC 4733, a Python RTP peer at 1000 Hz): it sends
    '1' by SIP INFO, then '2' as RFC 4733 events in its audio (JsSIP ``RFC2833``), and what
    reaches the phone's RTP is recorded; then it holds and resumes, the phone's audio (Goertzel)
    is read in each phase."""
    port, rtp = free_port(), RtpPeer(send_hz=1000, paced_from_latch=True)
    await asyncio.to_thread(register_port, files, "101", USERS[1][1], port)
    uas = SippUas(tmp, "call_uas_answer.xml", port, keys={"rtp_port": str(rtp.port)},
                  pause_ms=300)
    try:
        a = await _phone_page(browser, base, "100", USERS[0][1], 600)
        await a.evaluate("window.phone.call('101')")
        await _wait(a, "window.phone.state.events.includes('confirmed')")
        answer = await a.evaluate(
            "window.phone.state.session.connection.remoteDescription.sdp")
        can_insert = await a.evaluate(
            "window.phone.state.session.connection.getSenders()[0].dtmf.canInsertDTMF")
        await asyncio.sleep(1.0)
        start = time.monotonic()
        await asyncio.sleep(1.5)
        talking = _phone_hears(rtp, start, time.monotonic())
        await a.evaluate("window.phone.dtmf('1')")
        info_ok = await _wait_until(lambda: any(e[0] == 1 for e in rtp.events), 5)
        await a.evaluate("window.phone.dtmf('2', true)")
        rfc4733_ok = await _wait_until(lambda: any(e[0] == 2 for e in rtp.events), 5)
        await asyncio.sleep(0.5)
        events = sorted({e[0] for e in rtp.events})
        await a.evaluate("window.phone.hold(true)")
        await _wait(a, "window.phone.state.events.includes('hold:local')")
        start = time.monotonic()
        await asyncio.sleep(2.0)
        held = _phone_hears(rtp, start + 0.5, time.monotonic())
        await a.evaluate("window.phone.hold(false)")
        await _wait(a, "window.phone.state.events.includes('unhold:local')")
        start = time.monotonic()
        await asyncio.sleep(2.0)
        resumed = _phone_hears(rtp, start + 0.5, time.monotonic())
        await a.evaluate("window.phone.hangup()")
        await _wait(a, "window.phone.state.ended === 1")
        rc, out = await asyncio.to_thread(uas.result, 20)
    finally:
        uas.stop()
        rtp.close()
    return {"answer": answer, "can_insert": can_insert, "talking": talking, "info_ok": info_ok,
            "rfc4733_ok": rfc4733_ok, "events": events, "held": held, "resumed": resumed,
            "sipp_rc": rc, "sipp": out[-1500:]}


def _ufrag(sdp: str) -> str:
    found = [line.split(":", 1)[1] for line in sdp.splitlines()
             if line.startswith("a=ice-ufrag:")]
    return found[0] if found else ""


async def browser_renegotiates(server: Any, files: Any, browser: Any, base: str,
                               tmp: Path) -> dict[str, Any]:
    """A browser (600 Hz) calls a SIPp phone (1000 Hz); it re-offers without changes (JsSIP
    ``renegotiate``), then restarts ICE (``iceRestart``: new ufrag/pwd and candidates); after
    each, both sides are heard again and the candidate pair in use is read (getStats)."""
    port, rtp = free_port(), RtpPeer(send_hz=1000, paced_from_latch=True)
    await asyncio.to_thread(register_port, files, "101", USERS[1][1], port)
    uas = SippUas(tmp, "call_uas_answer.xml", port, keys={"rtp_port": str(rtp.port)},
                  pause_ms=300)
    out: dict[str, Any] = {}
    try:
        a = await _phone_page(browser, base, "100", USERS[0][1], 600)
        await a.evaluate("window.phone.call('101')")
        await _wait(a, "window.phone.state.events.includes('confirmed')")
        await asyncio.sleep(1.0)
        for step, restart in (("before", None), ("same", False), ("restart", True)):
            if restart is not None:
                done = len([e for e in await a.evaluate("window.phone.state.events")
                            if e == "renegotiated"])
                out[f"{step}_sent"] = await a.evaluate(
                    f"window.phone.renegotiate({'true' if restart else 'false'})")
                await _wait(a, "window.phone.state.events.filter(e => e === 'renegotiated')"
                            f".length === {done + 1} || window.phone.state.ended > 0")
                await asyncio.sleep(1.5)  # a restart's checks and nomination
            start = time.monotonic()
            heard = await _listen(a, 1.5)
            out[step] = {
                "heard_a": heard, "phone": _phone_hears(rtp, start, time.monotonic()),
                "pair": await a.evaluate("window.phone.selectedPair()"),
                "ended": await a.evaluate("window.phone.state.ended"),
                "local_ufrag": _ufrag(await a.evaluate(
                    "window.phone.state.session.connection.localDescription.sdp")),
                "remote_ufrag": _ufrag(await a.evaluate(
                    "window.phone.state.session.connection.remoteDescription.sdp")),
                "calls": len(server.b2bua.calls)}
        await a.evaluate("window.phone.hangup()")
        await _wait(a, "window.phone.state.ended === 1")
        out["sipp_rc"], sipp = await asyncio.to_thread(uas.result, 20)
        out["sipp"] = sipp[-1500:]
    finally:
        uas.stop()
        rtp.close()
    return out


async def _browser_and_baresip(server: Any, files: Any, browser: Any, base: str, tmp: Path,
                               browser_calls: bool) -> dict[str, Any]:
    """A browser (100, 600 Hz) and a baresip phone (101, PCMU, a 1209 Hz file as its
    microphone, auto-answer, sndfile records what it hears): one calls the other, both listen;
    the caller hangs up."""
    import subprocess

    from tests.interop.harness import need
    from tests.interop.test_calls_baresip import (
        baresip_dir,
        best_ratio,
        recording,
        stop,
        tone_file,
    )

    host, port = files.addr("udp")
    d101 = baresip_dir(tmp, "101", USERS[1][1], (host, port), tone_file(1209.0), "PCMU")
    with (d101 / "config").open("a") as config:  # the namespace has no default route
        config.write("net_interface 127.0.0.1\n")
    a = await _phone_page(browser, base, "100", USERS[0][1], 600,
                          "" if browser_calls else "&autoanswer=1")
    args = [need("baresip"), "-f", str(d101)]
    if not browser_calls:
        args += ["-e", f"/dial sip:100@{host}:{port}"]
    aor = server.b2bua.aor("101")
    log = (d101 / "out.log").open("w")
    phone = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                             text=True)
    try:
        registered = await _wait_until(
            lambda: bool(server.registrar.bindings(aor, time.time())), 10)
        if browser_calls:
            await a.evaluate("window.phone.call('101')")
        else:
            await _wait(a, "window.phone.state.incoming === 1")
        await _wait(a, "window.phone.state.events.includes('confirmed')")
        await asyncio.sleep(1.0)
        heard_a = await _listen(a, 2.0)
        if browser_calls:
            await a.evaluate("window.phone.hangup()")
        else:
            stop(phone)  # baresip hangs up (BYE)
        await _wait(a, "window.phone.state.ended === 1")
        ended = await _wait_until(lambda: not server.b2bua.calls, 10)
    finally:
        stop(phone)
        log.close()
    pcm, rate = recording(d101)
    return {"registered": registered, "heard_a": heard_a, "ended": ended,
            "phone_600": best_ratio(pcm, 600, rate), "phone_1209": best_ratio(pcm, 1209, rate),
            "phone_log": (d101 / "out.log").read_text(errors="replace")[-2000:]}


async def browser_calls_baresip(server: Any, files: Any, browser: Any, base: str,
                                tmp: Path) -> dict[str, Any]:
    """:func:`_browser_and_baresip`, the browser calling."""
    return await _browser_and_baresip(server, files, browser, base, tmp, browser_calls=True)


async def baresip_calls_browser(server: Any, files: Any, browser: Any, base: str,
                                tmp: Path) -> dict[str, Any]:
    """:func:`_browser_and_baresip`, the phone calling (and hanging up)."""
    return await _browser_and_baresip(server, files, browser, base, tmp, browser_calls=False)


async def gruu_tabs(server: Any, files: Any, browser: Any, base: str,
                    tmp: Path) -> dict[str, Any]:
    """Two tabs of 101 register (JsSIP asks for Outbound and GRUU); A calls the public GRUU of
    the second tab: only that tab rings; then A calls 101 itself: both ring."""
    a = await _phone_page(browser, base, "100", USERS[0][1], 600)
    tabs = [await _phone_page(browser, base, "101", USERS[1][1], 1000) for _ in range(2)]
    gruus = [await t.evaluate("window.phone.gruu()") for t in tabs]
    aor = server.b2bua.aor("101")
    bindings = [(b.instance, b.reg_id) for b in server.registrar.bindings(aor, time.time())]
    out: dict[str, Any] = {"gruus": gruus, "bindings": bindings}
    for step, target in (("gruu", gruus[1]), ("aor", "101")):
        before = [await t.evaluate("window.phone.state.incoming") for t in tabs]
        await a.evaluate(f"window.phone.call({json.dumps(target)})")
        await _wait(a, "window.phone.state.events.includes('ringing')")
        await asyncio.sleep(1.5)  # time for any other tab to ring too
        after = [await t.evaluate("window.phone.state.incoming") for t in tabs]
        out[step] = [x - y for x, y in zip(after, before, strict=True)]
        await a.evaluate("window.phone.hangup()")  # CANCEL
        await _wait(a, "window.phone.state.failed.length === "
                    f"{1 if step == 'gruu' else 2}")
        await a.evaluate("window.phone.state.events = []")
    return out


async def tab_close(server: Any, files: Any, browser: Any, base: str,
                    tmp: Path) -> dict[str, Any]:
    """A registered tab is closed: how long until its binding is gone."""
    a = await _phone_page(browser, base, "100", USERS[0][1], 600)
    aor = server.b2bua.aor("100")
    before = len(server.registrar.bindings(aor, time.time()))
    closed = time.monotonic()
    await a.context.close()
    while server.registrar.bindings(aor, time.time()) and time.monotonic() < closed + 5:
        await asyncio.sleep(0.02)
    return {"before": before, "after": len(server.registrar.bindings(aor, time.time())),
            "took": time.monotonic() - closed}


async def ring_together(server: Any, files: Any, browser: Any, base: str,
                        tmp: Path) -> dict[str, Any]:
    """101 has a browser and a SIPp desk phone; a SIPp caller rings both; the browser
    answers (after 1 s), the desk phone gets CANCEL; the browser hears the caller's tone."""
    from tests.interop.test_calls_sipp import caller

    port = free_port()
    await asyncio.to_thread(register_port, files, "101", USERS[1][1], port)
    desk = SippUas(tmp, "call_uas_ring.xml", port, keys={}, name="desk")
    rtp = RtpPeer(send_hz=1000, paced_from_latch=True)
    try:
        b = await _phone_page(browser, base, "101", USERS[1][1], 600)
        result = asyncio.ensure_future(asyncio.to_thread(
            caller, files, tmp, dst="101", pause_ms=4000, rtp_port=rtp.port))
        await _wait(b, "window.phone.state.incoming === 1")
        await asyncio.sleep(1.0)
        await b.evaluate("window.phone.answer()")
        await _wait(b, "window.phone.state.events.includes('confirmed')")
        await asyncio.sleep(1.0)
        heard_b = await _listen(b, 1.5)
        desk_rc, desk_out = await asyncio.to_thread(desk.result, 20)
        ok, failed, out = await result
        await _wait(b, "window.phone.state.ended === 1")
        from tests.media.test_aio import hears

        pcm = rtp.pcm()
        return {"heard_b": heard_b, "desk_rc": desk_rc, "desk": desk_out[-1500:],
                "desk_cancelled": "CANCEL sip:" in desk.log(), "caller": [ok, failed],
                "caller_out": out[-1500:], "caller_hears_600": bool(hears(pcm, 8000, 600))}
    finally:
        desk.stop()
        rtp.close()


async def voicemail_key(server: Any, files: Any, browser: Any, base: str,
                        tmp: Path) -> dict[str, Any]:
    """On the page's keypad: short presses type a number; holding 1 calls the box (*86): the
    PBX's voicemail menu answers and the page hears it."""
    started: list[str] = []
    server.events.subscribe(lambda e: started.append(str(e.data.get("callee"))),
                            "call.started")
    a = await _phone_page(browser, base, "100", USERS[0][1], 600)
    for key in ("1", "0", "1"):
        await a.click(f"#key-{key}")
    typed = await a.evaluate("document.getElementById('target').value")
    await a.fill("#target", "")
    await a.click("#key-1", delay=1200)  # held: the voicemail box
    await _wait(a, "window.phone.state.events.includes('confirmed')")
    heard = await _listen(a, 2.0)
    await a.evaluate("window.phone.hangup()")
    await _wait(a, "window.phone.state.ended === 1")
    return {"typed": typed, "started": started, "heard": heard,
            "events": await a.evaluate("window.phone.state.events"),
            "target_after": await a.evaluate("document.getElementById('target').value")}


SCENARIOS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "voicemail_key": voicemail_key, "browser_dtmf_hold": browser_dtmf_hold,
    "browser_calls_baresip": browser_calls_baresip,
    "browser_renegotiates": browser_renegotiates, "gruu_tabs": gruu_tabs,
    "baresip_calls_browser": baresip_calls_browser,
    "tab_close": tab_close, "ring_together": ring_together, "browsers": browsers, "browsers_wss": browsers_wss, "browser_to_phone": browser_to_phone}


async def main(name: str, tmp: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    async with serving(tmp, USERS, CONFIG, transports=("udp", "ws", "wss")) as (server, files):
        assert server.http is not None
        base = f"http://127.0.0.1:{server.http.port}"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            try:
                return await asyncio.wait_for(SCENARIOS[name](server, files, browser, base,
                                                              tmp), 90)
            finally:
                await browser.close()


if __name__ == "__main__":
    out = Path(sys.argv[2])
    result = asyncio.run(main(sys.argv[1], out))
    (out / "result.json").write_text(json.dumps(result))
