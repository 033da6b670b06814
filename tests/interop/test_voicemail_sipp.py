"""Voicemail over real SIP and RTP (issue 15): SIPp phones switch forwarding to the box with
their codes (``*41`` + ``*6101``, ``*40``), a SIPp caller reaches the box of a user who does not
answer and of one who is busy, hears the greeting and the beep and leaves a tone; the owner
dials ``*86``, hears the message and deletes it; ``*62`` works with the right PIN and ends the
call after three wrong ones (a security event).

The test greeting is a 700 Hz tone put where a greeting recorded from the menu goes
(``<data>/voicemail/<tenant>/<extension>/greeting.wav``). What the caller heard is told apart
by Goertzel power per 20 ms packet (greeting 700 Hz, beep 1000 Hz); what was recorded is read
from the message's WAV file. Digits are RFC 4733 telephone-events sent by :class:`Phone` (or
in-band tones from a phone without telephone-event). Also: the box as the last step of the
chain (``voicemail.enabled`` set with the CLI) with the default greeting naming the number, and
a greeting recorded from the menu.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import wave
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media.dtmf import tone_ratio
from pbx.callcontrol import Prompt
from pbx.store.voicemail import VoicemailMessage
from pbx.voicemail import Boxes
from tests.interop.harness import free_port, read_log
from tests.interop.inprocess import serving
from tests.interop.test_calls_sipp import (
    USERS,
    RtpPeer,
    SippUas,
    register_port,
    ulaw_decode,
    ulaw_encode,
)
from tests.interop.test_features_sipp import assert_announced, dial, dial_code

pytestmark = pytest.mark.interop

CONFIG = "[media]\nport_min = 45000\nport_max = 45999\n[calls]\nring_timeout = 3.0\n"
GREETING_HZ, BEEP_HZ, CALLER_HZ, RINGBACK_HZ = 700.0, 1000.0, 1300.0, 425.0
_DIGITS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}
_ROWS, _COLS = (697.0, 770.0, 852.0, 941.0), (1209.0, 1336.0, 1477.0)
_INBAND = {key: (_ROWS[r], _COLS[c]) for r, row in enumerate(("123", "456", "789", "*0#"))
           for c, key in enumerate(row)}


class Phone(RtpPeer):
    """An RTP peer that sends a tone while ``send_hz`` is set and RFC 4733 digits on
    :meth:`press` (the digits go out instead of audio, 20 ms apart)."""

    def __init__(self, send_hz: float | None = None) -> None:
        #: (event code, packet number 1-6) of the digits to send; None: a 20 ms pause
        self.queue: deque[tuple[int, int] | None] = deque()
        #: PCM frames to send before anything else (in-band DTMF)
        self.audio: deque[np.ndarray] = deque()
        super().__init__(send_hz)

    def press_inband(self, digits: str) -> None:
        """Queue ``digits`` as in-band DTMF: 100 ms of the digit's two tones, 100 ms silence."""
        for d in digits:
            low, high = _INBAND[d]
            n = np.arange(800)
            pcm = (6000 * np.sin(2 * np.pi * low * n / 8000)
                   + 6000 * np.sin(2 * np.pi * high * n / 8000)).astype(np.int16)
            self.audio.extend(pcm[i:i + 160] for i in range(0, 800, 160))
            self.audio.extend(np.zeros(160, np.int16) for _ in range(5))

    def press(self, digits: str) -> None:
        """Queue ``digits`` as telephone-events (payload type 101): 3 updates, 3 ends each."""
        for d in digits:
            self.queue.extend((_DIGITS[d], i) for i in range(1, 7))
            self.queue.extend([None] * 3)  # a pause between digits

    def _run(self) -> None:  # the parent's loop, with the event queue
        seq, ts, ssrc = 1, 0, 0x4321
        next_send = time.monotonic()
        event_ts = 0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                data, addr = self.sock.recvfrom(2048)
                if self.remote is None:
                    self.remote = addr
                if len(data) > 12 and data[1] & 0x7F == 0:
                    self.received.append((time.monotonic(), data[12:]))
            if self.remote is None or time.monotonic() < next_send:
                continue
            next_send += 0.02
            if self.audio:
                pkt = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc)
                self.sock.sendto(pkt + ulaw_encode(self.audio.popleft()), self.remote)
                seq, ts = seq + 1, ts + 160
                continue
            if self.queue:
                item = self.queue.popleft()
                if item is not None:
                    code, i = item
                    if i == 1:
                        event_ts = ts
                    end = 0x80 if i > 3 else 0
                    body = bytes([code, end | 10]) + struct.pack("!H", 160 * min(i, 3))
                    pkt = struct.pack("!BBHII", 0x80, 101 | (0x80 if i == 1 else 0), seq,
                                      event_ts, ssrc)
                    self.sock.sendto(pkt + body, self.remote)
                    seq += 1
                ts += 160
                continue
            if self.send_hz is not None:
                n = np.arange(ts, ts + 160)
                pcm = (8000 * np.sin(2 * np.pi * self.send_hz * n / 8000)).astype(np.int16)
                pkt = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + ulaw_encode(pcm)
                self.sock.sendto(pkt, self.remote)
                seq += 1
            ts += 160

    def heard(self) -> list[str]:
        """Per 20 ms packet received: which of greeting / beep / caller tone dominates
        ('' for silence or speech)."""
        names = {GREETING_HZ: "greeting", BEEP_HZ: "beep", CALLER_HZ: "caller",
                 RINGBACK_HZ: "ringback"}
        out = []
        for _, payload in list(self.received):
            frame = ulaw_decode(payload)
            ratios = {hz: tone_ratio(frame, hz, 8000) for hz in names}
            best = max(ratios, key=lambda hz: ratios[hz])
            out.append(names[best] if ratios[best] > 0.6 else "")
        return out


def runs(labels: list[str]) -> list[tuple[str, int]]:
    """Consecutive runs of the same label (silence left out): [(label, packets)]."""
    out: list[tuple[str, int]] = []
    for label in labels:
        if not label:
            continue
        if out and out[-1][0] == label:
            out[-1] = (label, out[-1][1] + 1)
        else:
            out.append((label, 1))
    return out


def write_tone(path: Path, hz: float, seconds: float, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = np.arange(int(rate * seconds))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((9000 * np.sin(2 * np.pi * hz * n / rate)).astype("<i2").tobytes())


def wav_tone(path: str) -> tuple[float, float]:
    """(seconds, share of its 20 ms frames that hold the caller's tone) of a message file."""
    with wave.open(path, "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        rate = w.getframerate()
    frames = [pcm[i:i + 160] for i in range(0, len(pcm) - 159, 160)]
    toned = sum(1 for f in frames if tone_ratio(f, CALLER_HZ, rate) > 0.8)
    return len(pcm) / rate, toned / max(len(frames), 1)


@contextlib.asynccontextmanager
async def callee(tmp: Path, files: Any, scenario: str) -> AsyncIterator[SippUas]:
    """101 registered from a SIPp UAS playing ``scenario`` (rings / busy)."""
    port = free_port()
    await asyncio.to_thread(register_port, files, "101", USERS[1][1], port)
    uas = await asyncio.to_thread(SippUas, tmp, scenario, port,
                                  keys={"rtp_port": str(free_port())},
                                  name=f"phone101-{scenario}", timeout=30)
    try:
        yield uas
    finally:
        uas.stop()


def leave_message(files: Any, tmp: Path, talk_ms: int) -> Phone:
    """100 calls 101, talks (its tone) for ``talk_ms`` after the answer, hangs up."""
    phone = Phone(send_hz=CALLER_HZ)
    try:
        ok, failed, out = dial(files, tmp, 0, "101", rtp_port=phone.port, pause_ms=talk_ms)
    finally:
        phone.close()
    assert (ok, failed) == (1, 0), out + read_log(tmp / "dial-101.log")[-2000:]
    return phone


def changes(server: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    server.events.subscribe(lambda e: seen.append(dict(e.data)), "voicemail.changed")
    return seen


async def test_no_answer_and_busy_go_to_the_box_with_greeting_and_beep(tmp_path: Path) -> None:
    write_tone(Boxes(tmp_path / "data").greeting("default", "101"), GREETING_HZ, 1.0)
    async with serving(tmp_path, USERS, CONFIG) as (server, files):
        seen = changes(server)
        for code in ("*41", "*6101", "*40"):  # to the box on no answer (1 ring), on busy
            pcm = await asyncio.to_thread(dial_code, files, tmp_path, 1, code)
            assert_announced(pcm, Prompt("activated" if code != "*6101" else "confirm"))

        async with callee(tmp_path, files, "call_uas_ring.xml") as uas:
            heard = await asyncio.to_thread(leave_message, files, tmp_path, 4000)
            rc, out = await asyncio.to_thread(uas.result, 20)
            assert rc == 0, out
        order = [label for label, n in runs(heard.heard()) if n >= 5]
        assert order == ["ringback", "greeting", "beep"], runs(heard.heard())

        async with callee(tmp_path, files, "call_uas_busy.xml") as uas:
            heard = await asyncio.to_thread(leave_message, files, tmp_path, 3000)
            rc, out = await asyncio.to_thread(uas.result, 20)
            assert rc == 0, out
        order = [label for label, n in runs(heard.heard()) if n >= 5]
        assert order == ["greeting", "beep"], runs(heard.heard())  # busy: no ringing

        box = server.store.user("101")
        messages = server.store.voicemails(box.id)
        assert [m.caller for m in messages] == ["100", "100"]
        for message, talked in zip(messages, (4.0, 3.0), strict=True):
            seconds, share = wav_tone(message.audio_path)
            # the recording starts after the greeting (1 s) and the beep (0.5 s)
            assert abs(seconds - (talked - 1.5)) < 0.5, seconds
            assert abs(message.duration - seconds) < 0.05
            assert share > 0.9, share
        assert server.store.voicemail_counts(box.id) == (2, 0, 0, 0)
        assert [(c["user"], c["new"], c["old"]) for c in seen] == [("101", 1, 0), ("101", 2, 0)]


async def until(condition: Any, timeout: float, what: str) -> None:
    """Wait (polling) until ``condition()`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def menu_call(files: Any, tmp: Path, user: int, code: str, phone: Phone,
                    script: Any, scenario: str = "feature_code_uac.xml") -> None:
    """``USERS[user]`` dials ``code`` (the PBX hangs up at the end); ``script(phone)`` presses
    the keys meanwhile."""
    sipp = asyncio.create_task(asyncio.to_thread(
        dial, files, tmp, user, code, scenario, rtp_port=phone.port))
    try:
        await until(lambda: phone.remote is not None or sipp.done(), 10, "the PBX's audio")
        await script(phone)
        ok, failed, out = await asyncio.wait_for(sipp, 30)
    finally:
        phone.close()
        if not sipp.done():
            await asyncio.wait([sipp], timeout=30)
    assert (ok, failed) == (1, 0), out + read_log(tmp / f"dial-{code}.log")[-2000:]


async def test_star86_plays_the_message_and_deletes_it(tmp_path: Path) -> None:
    write_tone(Boxes(tmp_path / "data").greeting("default", "101"), GREETING_HZ, 1.0)
    async with serving(tmp_path, USERS, CONFIG) as (server, files):
        seen = changes(server)
        # 101 sends every call to the box (*21); 100 leaves a message (the caller's tone)
        pcm = await asyncio.to_thread(dial_code, files, tmp_path, 1, "*21")
        assert_announced(pcm, Prompt("activated"))
        await asyncio.to_thread(leave_message, files, tmp_path, 3500)
        box = server.store.user("101")
        (message,) = server.store.voicemails(box.id)

        async def listen_and_delete(phone: Phone) -> None:
            await asyncio.sleep(0.3)
            phone.press("1")  # listen (typed ahead: the summary and the menu are cut short)
            await until(lambda: phone.heard().count("caller") >= 25, 20, "the message")
            phone.press("7*")  # delete it, leave the box

        phone = Phone()
        await menu_call(files, tmp_path, 1, "*86", phone, listen_and_delete)
        # the 7 cut the message short (it is ~2 s: 100 packets) and deleted it
        assert 25 <= phone.heard().count("caller") < 90
        assert_announced(phone.pcm(), Prompt("vm_message_deleted"))
        assert_announced(phone.pcm(), Prompt("vm_goodbye"))  # the * left the box
        assert server.store.voicemails(box.id) == []
        assert not Path(message.audio_path).exists()
        assert [(c["new"], c["old"]) for c in seen] == [(1, 0), (0, 1), (0, 0)]
        # the header named the caller: "Nachricht von" 1 0 0 precedes the audio
        assert_announced(phone.pcm(), Prompt("vm_message_from", say="100"))


async def test_star62_with_the_pin_and_three_wrong_pins(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    def pin(store: Any) -> None:
        store.update_user("101", voicemail_pin="4321")

    async with serving(tmp_path, USERS, CONFIG, store_setup=pin) as (_, files):
        async def right_pin(phone: Phone) -> None:
            await asyncio.sleep(0.3)
            phone.press("101#4321#")
            await asyncio.sleep(len(expected_seconds("vm_no_messages")) + 1.5)
            phone.press("*")

        phone = Phone()
        await menu_call(files, tmp_path, 2, "*62", phone, right_pin)
        assert_announced(phone.pcm(), Prompt("vm_no_messages"))  # 101's (empty) box

        async def wrong_pins(phone: Phone) -> None:
            await asyncio.sleep(0.3)
            phone.press("101#0000#" * 3)

        phone = Phone()
        with capture_logs() as logs:
            await menu_call(files, tmp_path, 2, "*62", phone, wrong_pins)
        failed = [e for e in logs if e["event"] == "security.voicemail.pin_failed"]
        assert [e["attempt"] for e in failed] == [1, 2, 3]
        assert all(e["box"] == "101" for e in failed)
        assert any(e["event"] == "security.voicemail.locked_out" for e in logs)
        assert_announced(phone.pcm(), Prompt("vm_wrong_pin"))
        assert_announced(phone.pcm(), Prompt("vm_goodbye"))
        assert "vm_no_messages" not in str(logs)


def expected_seconds(name: str) -> range:
    """A range as long as prompt ``name`` is in seconds (for sleeping through it)."""
    from tests.interop.test_features_sipp import expected_audio

    return range(int(len(expected_audio(Prompt(name))) / 8000) + 1)


async def test_the_box_is_the_last_step_with_the_default_greeting(tmp_path: Path) -> None:
    from pbx.cli import main

    async with serving(tmp_path, USERS, CONFIG) as (server, files):
        # 101 has no phone registered and no forwarding: unreachable, so the box takes it
        rc = await asyncio.to_thread(main, ["settings", "set", "101", "voicemail",
                                            "enabled=true", "--data-dir", str(files.data_dir)])
        assert rc == 0
        server.directory.refresh_if_changed()  # the server polls; do not wait for it
        from tests.interop.test_features_sipp import expected_audio

        greeting = sum(len(expected_audio(p)) for p in (
            Prompt("vm_greeting_person_at", say="101"), Prompt("vm_greeting_unavailable"))) / 8000
        phone = await asyncio.to_thread(leave_message, files, tmp_path,
                                        int((greeting + 0.5 + 2.5) * 1000))
        # "Der Teilnehmer unter der Rufnummer eins null eins ist nicht erreichbar …", the beep
        assert_announced(phone.pcm(), Prompt("vm_greeting_person_at", say="101"))
        assert_announced(phone.pcm(), Prompt("vm_greeting_unavailable"))
        assert [label for label, n in runs(phone.heard()) if n >= 5][-1] == "beep"
        (message,) = server.store.voicemails(server.store.user("101").id)
        seconds, share = wav_tone(message.audio_path)
        assert 1.5 < seconds < 3.0 and share > 0.9, (seconds, share)


async def test_a_greeting_recorded_from_the_menu(tmp_path: Path) -> None:
    async with serving(tmp_path, USERS, CONFIG) as (_, files):
        greeting = Boxes(files.data_dir).greeting("default", "101")

        async def record_greeting(phone: Phone) -> None:
            await asyncio.sleep(0.3)
            phone.press("01")  # settings, record the greeting (typed ahead)
            await until(lambda: any(label == "beep" and n >= 10
                                    for label, n in runs(phone.heard())), 20, "the beep")
            phone.send_hz = GREETING_HZ
            await asyncio.sleep(1.5)
            phone.send_hz = None
            phone.press("#*")  # end the recording, leave the box

        phone = Phone()
        await menu_call(files, tmp_path, 1, "*86", phone, record_greeting)
        assert_announced(phone.pcm(), Prompt("vm_greeting_saved"))
        with wave.open(str(greeting), "rb") as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        frames = [pcm[i:i + 160] for i in range(0, len(pcm) - 159, 160)]
        toned = sum(1 for f in frames if tone_ratio(f, GREETING_HZ, 8000) > 0.8)
        # the 1.5 s the phone sent from 0.2 s into the 0.5 s beep, recorded after the beep
        assert 0.9 < toned * 0.02 <= 1.55, toned


async def test_the_menu_hears_inband_digits(tmp_path: Path) -> None:
    # a phone that negotiated no telephone-event: its "*" is a tone in the audio
    async with serving(tmp_path, USERS, CONFIG) as (_, files):
        async def leave(phone: Phone) -> None:
            await asyncio.sleep(0.5)
            phone.press_inband("*")

        phone = Phone()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await menu_call(files, tmp_path, 1, "*86", phone, leave,
                        scenario="feature_code_uac_no_te.xml")
        # without the digit the menu would repeat three times (far longer) before goodbye
        assert loop.time() - started < 10
        assert_announced(phone.pcm(), Prompt("vm_goodbye"))


async def test_the_menu_calls_the_sender_back(tmp_path: Path) -> None:
    async with serving(tmp_path, USERS, CONFIG) as (server, files):
        # a message from 102 in 101's box (as a deposit leaves it)
        user = server.store.user("101")
        path = Boxes(files.data_dir).message_path("default", "101", "m1")
        write_tone(path, CALLER_HZ, 1.5)
        server.store.begin_voicemail(VoicemailMessage(
            "m1", user.id, "default", "101", "102", "User 102", time.time(), 0.0, str(path),
            "de", "recording"))
        server.store.finish_voicemail("m1", 1.5)
        port = free_port()
        await asyncio.to_thread(register_port, files, "102", USERS[2][1], port)
        uas = await asyncio.to_thread(SippUas, tmp_path, "call_uas_bye.xml", port,
                                      keys={"rtp_port": str(free_port())}, name="phone102",
                                      pause_ms=1000, timeout=30)
        try:
            async def call_back(phone: Phone) -> None:
                await asyncio.sleep(0.3)
                phone.press("12")  # listen, call the sender back

            await menu_call(files, tmp_path, 1, "*86", Phone(), call_back)
            rc, out = await asyncio.to_thread(uas.result, 20)
        finally:
            uas.stop()
        assert rc == 0, out  # 102 was called, answered, talked and hung up
        invite = uas.log().split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
        assert "From:" in invite and "101" in invite.split("From:", 1)[1].split("\n", 1)[0]
