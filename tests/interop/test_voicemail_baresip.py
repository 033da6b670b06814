"""The box with a real softphone (issue 15): baresip 101 sends every call to the box with
``*21``; baresip 100 calls and talks its tone into the box; 101's lamp — a message-summary
subscription of 101's (``MwiPhone``, on its own address) — goes on (NOTIFY ``Messages-Waiting:
yes``, ``1/0``); 101 dials ``*86`` from baresip, keys ``1`` and hears the message (baresip's
recording of the call holds 100's tone), keys ``7`` (delete); the lamp goes off (``no``,
``0/0``) and the box is empty.

(The lamp is not baresip's own ``mwi`` module: baresip 1.0 sometimes starts two subscriptions at
once on registering and then re-subscribes in a tight loop, never answering our 407 — about
5,000 SUBSCRIBEs a second — which is its bug, not the box's.)"""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from pbx.voicemail import Boxes
from tests.interop.harness import need, read_log, running_pbx
from tests.interop.mwi_phone import MwiPhone
from tests.interop.test_calls_baresip import baresip_dir, best_ratio, stop, tone_file, wait_for
from tests.interop.test_calls_sipp import USERS
from tests.interop.test_voicemail_sipp import GREETING_HZ, write_tone

pytestmark = pytest.mark.interop

TONE_100, TONE_101 = 1300.0, 500.0  # no DTMF row or column (the box hears in-band digits)
CONFIG = "[media]\nport_min = 47200\nport_max = 47999\n"


def phone(binary: str, tmp: Path, index: int, server: tuple[str, int], tone: float
          ) -> tuple[subprocess.Popen[str], Path]:
    ext, password = USERS[index]
    d = baresip_dir(tmp, ext, password, server, tone_file(tone), "PCMU")
    with (d / "config").open("a") as config:
        config.write("module stdio.so\n")  # commands on stdin
    proc = subprocess.Popen([binary, "-f", str(d)], stdin=subprocess.PIPE,
                            stdout=(d / "out.log").open("w"), stderr=subprocess.STDOUT,
                            text=True)
    return proc, d


def send(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(text)
    proc.stdin.flush()


class Lamp(threading.Thread):
    """101's message lamp: a message-summary subscription (through the challenge) whose
    NOTIFYs are kept as (Messages-Waiting, "new/old")."""

    def __init__(self, server: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.seen: list[tuple[str, str]] = []
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._watch())
        except BaseException as exc:  # reported by the test
            self.error = exc

    async def _watch(self) -> None:
        phone = MwiPhone("101", USERS[1][1], self.server)
        try:
            assert (await phone.subscribe()).status == 200
            while not self.done.is_set():
                try:
                    notified = await phone.next_notify(timeout=0.5)
                except (TimeoutError, AssertionError):
                    continue
                summary = notified.summary
                if summary is not None:
                    voice = summary.voice
                    self.seen.append(("yes" if summary.waiting else "no",
                                      f"{voice.new}/{voice.old}"))
        finally:
            phone.close()


def until(what: str, check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def last_recording(d: Path) -> tuple[np.ndarray, int]:
    """What the phone heard in its latest call (sndfile's decoded dump, newest by time)."""
    files = sorted(d.glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)
    assert files, read_log(d / "out.log")[-2000:]
    with wave.open(str(files[-1])) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


def test_baresip_lamp_on_then_star86_plays_and_deletes_and_the_lamp_goes_off(
        tmp_path: Path) -> None:
    binary = need("baresip")
    data = tmp_path / "pbx" / "data"
    write_tone(Boxes(data).greeting("default", "101"), GREETING_HZ, 1.0)
    procs: list[subprocess.Popen[str]] = []
    with running_pbx(tmp_path / "pbx", transports=("udp",), users=USERS,
                     config_extra=CONFIG) as pbx:
        server = pbx.addr("udp")
        target = f"{server[0]}:{server[1]}"
        try:
            lamp = Lamp(server)
            lamp.start()
            until("101's first NOTIFY", lambda: lamp.seen == [("no", "0/0")] or lamp.error)
            p101, d101 = phone(binary, tmp_path, 1, server, TONE_101)
            procs.append(p101)
            assert wait_for(pbx, "sip.register.added"), read_log(pbx.log_path)[-3000:]
            # 101 sends every call to the box, as a user does: *21 from the phone
            send(p101, f"/dial sip:*21@{target}\n")
            assert wait_for(pbx, "feature.code"), read_log(pbx.log_path)[-3000:]
            assert wait_for(pbx, "call.ended"), read_log(pbx.log_path)[-3000:]
            # 100 calls 101 and talks into the box (greeting 1 s, beep, then 4 s of its tone)
            p100, d100 = phone(binary, tmp_path, 0, server, TONE_100)
            procs.append(p100)
            assert wait_for(pbx, "sip.register.added", count=2)
            send(p100, f"/dial sip:101@{target}\n")
            assert wait_for(pbx, "call.started", count=2), read_log(pbx.log_path)[-3000:]
            time.sleep(6.0)
            stop(p100)
            assert wait_for(pbx, "voicemail.deposited"), (read_log(pbx.log_path)[-3000:]
                                                         + read_log(d100 / "out.log")[-2000:])
            until("the lamp on", lambda: ("yes", "1/0") in lamp.seen)
            # 101 listens (1), hears the message, deletes it (7)
            send(p101, f"/dial sip:*86@{target}\n")
            assert wait_for(pbx, "call.started", count=3), read_log(pbx.log_path)[-3000:]
            time.sleep(2.0)
            send(p101, "1")
            time.sleep(7.0)  # the header (caller, time), then ~4 s of message
            send(p101, "7")
            until("the lamp off", lambda: lamp.seen[-1] == ("no", "0/0"))
            send(p101, "*")
            time.sleep(1.5)
            send(p101, "/hangup\n")
            time.sleep(1.0)
            box = [line for line in subprocess.run(
                [".venv/bin/python", "-m", "pbx", "voicemail", "list", "101",
                 "--data-dir", str(data), "--config", str(tmp_path / "pbx" / "asyncpbx.toml")],
                capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
                if re.match(r"^[0-9a-f]{6,}", line)]
        finally:
            lamp.done.set()
            for proc in procs:
                stop(proc)
            lamp.join(5)
    assert lamp.error is None, lamp.error
    assert box == [], box
    # on with the deposit; heard (new → old) as it plays; off when deleted
    assert lamp.seen == [("no", "0/0"), ("yes", "1/0"), ("no", "0/1"), ("no", "0/0")], lamp.seen
    heard, rate = last_recording(d101)
    assert best_ratio(heard, TONE_100, rate) > 0.6  # the message: 100's voice
