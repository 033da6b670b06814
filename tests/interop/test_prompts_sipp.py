"""Announcements as early media over real SIP: a feature rejects a call with a prompt, the SIPp
caller gets 183 with our SDP, hears the whole announcement (the received PCMU matches the
generated prompt, in the callee's language) and then the final status; a tenant's recording
replaces the generated prompt for that tenant and language only."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from pbx.callcontrol import BaseFeature, CallContext, Decision, Prompt, Reject
from tests.interop.harness import PbxProcess, read_log
from tests.interop.inprocess import serving
from tests.interop.test_calls_sipp import USERS, RtpPeer, final_statuses
from tests.interop.test_features_sipp import assert_announced, dial

pytestmark = pytest.mark.interop

CONFIG = "[media]\nport_min = 41000\nport_max = 41999\n"


class Unavailable(BaseFeature):
    """Every call to a user is refused with "the number you dialled is not available"."""

    name = "unavailable_probe"
    priority = 10

    async def on_terminate(self, ctx: CallContext) -> Decision:
        return Reject(480, "Temporarily Unavailable", prompt=Prompt("not_available"))


def refused_call(files: PbxProcess, tmp: Path, dst: str) -> tuple[np.ndarray, str]:
    """User 100 calls ``dst`` and is refused: the audio it received and its message log."""
    peer = RtpPeer()
    try:
        ok, failed, out = dial(files, tmp, 0, dst, "call_uac_fail.xml", rtp_port=peer.port)
    finally:
        peer.close()
    assert (ok, failed) == (1, 0), out
    return peer.pcm(), read_log(tmp / f"dial-{dst}.log")


def write_tone(path: Path, hz: float, seconds: float, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = np.arange(int(rate * seconds))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((9000 * np.sin(2 * np.pi * hz * n / rate)).astype("<i2").tobytes())


async def test_a_rejection_announces_its_prompt_as_early_media(tmp_path: Path) -> None:
    # the default tenant recorded its own English "not available" (a 700 Hz tone here)
    write_tone(tmp_path / "data" / "prompts" / "tenants" / "default" / "en" /
               "not_available.wav", 700.0, 1.0)
    async with serving(tmp_path, USERS, CONFIG) as (server, files):
        server.features.register(Unavailable())

        german, log = await asyncio.to_thread(refused_call, files, tmp_path, "101")
        assert "SIP/2.0 183 " in log and final_statuses(log)[-1] == 480, log[-2000:]
        early = log.split("SIP/2.0 183 ", 1)[1].split("\n\n", 1)
        assert "application/sdp" in early[0]
        assert_announced(german, Prompt("not_available"), "de")  # 101's language

        server.store.update_user("102", language="en")
        server.directory.refresh_if_changed()
        english, log = await asyncio.to_thread(refused_call, files, tmp_path, "102")
        assert final_statuses(log)[-1] == 480
        spectrum = np.abs(np.fft.rfft(english.astype(np.float64)))
        assert abs(np.argmax(spectrum) * 8000 / len(english) - 700) < 10  # the recording
        assert 0.9 < len(english) / 8000 < 1.3  # all of it, and nothing more
