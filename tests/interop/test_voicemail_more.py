"""Voicemail over real SIP and RTP, the rest of issue 15: ``*55`` + extension moves a connected
caller straight into a colleague's box, and the voice portal (``*62``) is reached from outside
on a DID set up for it.

``*55``: 100 (a SIPp UAC whose RTP is :class:`Phone`, sending 1300 Hz) calls 101 (a SIPp UAS
that answers and types ``*55102#`` as SIP INFO); 102 is not even registered, so only a direct
deposit (not ringing 102) can take the call. 100 hears 102's greeting (a 700 Hz test greeting)
and the beep, talks on and hangs up; 102's box holds the message with the tone, 101's dialog
was ended by the PBX (its scenario waits for the BYE).

Voice portal from outside: a SIPp carrier on 127.0.0.2 (an IP trunk, as in
tests/interop/test_carrier_calls.py) calls a DID the administrator set up with ``asyncpbx
number add NUMBER --voice-portal``; its RTP and RFC 4733 digits are a :class:`Phone` on the
carrier's address. With 101's mailbox number and PIN the caller hears the count of messages and,
on ``1``, 101's message (1300 Hz); with a wrong PIN three times the PBX hangs up (security
events logged).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from pbx.callcontrol import Prompt
from pbx.store import Store
from pbx.store.voicemail import VoicemailMessage
from pbx.voicemail import Boxes
from tests.interop.harness import free_port, read_log, sipp
from tests.interop.inprocess import serving
from tests.interop.test_calls_sipp import USERS, RtpPeer, SippUas, register_port
from tests.interop.test_carrier_calls import CARRIER_HOST
from tests.interop.test_features_sipp import assert_announced, dial
from tests.interop.test_voicemail_sipp import (
    CALLER_HZ,
    CONFIG,
    GREETING_HZ,
    Phone,
    runs,
    until,
    wav_tone,
    write_tone,
)

pytestmark = pytest.mark.interop


async def test_star55_moves_the_caller_into_a_colleagues_box(tmp_path: Path) -> None:
    write_tone(Boxes(tmp_path / "data").greeting("default", "102"), GREETING_HZ, 1.0)
    async with serving(tmp_path, USERS, CONFIG) as (server, files):
        port = free_port()
        await asyncio.to_thread(register_port, files, "101", USERS[1][1], port)
        uas = await asyncio.to_thread(
            SippUas, tmp_path, "call_uas_incall_vm_transfer.xml", port,
            keys={"rtp_port": str(free_port()), "d1": "1", "d2": "0", "d3": "2"},
            name="phone101", timeout=30)
        phone = Phone(send_hz=CALLER_HZ)
        try:
            # 101 answers after 0.3 s and has typed *55102# ~2.6 s later; the caller talks on
            ok, failed, out = await asyncio.to_thread(
                dial, files, tmp_path, 0, "101", rtp_port=phone.port, pause_ms=8000)
            rc, uas_out = await asyncio.to_thread(uas.result, 20)
        finally:
            phone.close()
            uas.stop()
        assert (ok, failed) == (1, 0), out + read_log(tmp_path / "dial-101.log")[-2000:]
        assert rc == 0, uas_out + uas.log()[-2000:]  # 101 got the PBX's BYE: it dropped out
        order = [label for label, n in runs(phone.heard()) if n >= 5]
        # ringback only while 101 rang (0.3 s), never again: 102 was not rung
        assert order in (["ringback", "greeting", "beep"], ["greeting", "beep"]), \
            runs(phone.heard())
        box = server.store.user("102")
        (message,) = server.store.voicemails(box.id)
        assert message.caller == "100"
        seconds, share = wav_tone(message.audio_path)
        # 8 s talk - ~2.6 s before the code - 1 s greeting - 0.5 s beep
        assert 2.5 < seconds < 5.0 and share > 0.9, (seconds, share)
        assert server.store.voicemails(server.store.user("101").id) == []


PORTAL_DID = "+49301112299"


class CarrierPhone(Phone):
    """:class:`Phone` on the carrier's address (the PBX expects the trunk's media from it)."""

    def __init__(self) -> None:
        self.queue = deque()
        self.audio = deque()
        RtpPeer.__init__(self, None, CARRIER_HOST)


def carrier_with_portal(carrier_port: int) -> Any:
    """Store rows: the carrier's IP trunk, 101's PIN and a message in 101's box."""

    def setup(store: Store) -> None:
        store.add_trunk("carrier", kind="ip", host=CARRIER_HOST, port=carrier_port,
                        username="4930111", password="s3cret", realm="carrier.test")
        store.update_user("101", voicemail_pin="4321")

    return setup


async def portal_call(files: Any, tmp: Path, script: Any) -> CarrierPhone:
    """The carrier calls the portal DID (the PBX hangs up at the end); ``script(phone)``
    presses the keys meanwhile."""
    phone = CarrierPhone()
    call = asyncio.create_task(asyncio.to_thread(
        sipp, "carrier_call_inbound_wait_bye.xml", files.addr("udp"), tmp,
        local_ip=CARRIER_HOST, timeout=40,
        extra=["-key", "dst", PORTAL_DID, "-key", "caller", "+4917012345",
               "-key", "rtp_port", str(phone.port)]))
    try:
        await until(lambda: phone.remote is not None or call.done(), 10, "the PBX's audio")
        await script(phone)
        res = await asyncio.wait_for(call, 40)
    finally:
        phone.close()
        if not call.done():
            await asyncio.wait([call], timeout=40)
    assert (res.successful, res.failed) == (1, 0), res.output
    return phone


async def test_voice_portal_on_a_did_from_the_trunk(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from pbx.cli import main

    carrier_port = free_port(CARRIER_HOST)
    async with serving(tmp_path, USERS, CONFIG,
                       store_setup=carrier_with_portal(carrier_port)) as (server, files):
        # the administrator's way: a company number for the voice portal
        rc = await asyncio.to_thread(main, ["number", "add", PORTAL_DID, "--voice-portal",
                                            "--data-dir", str(files.data_dir)])
        assert rc == 0
        server.directory.refresh_if_changed()  # the server polls; do not wait for it
        user = server.store.user("101")
        path = Boxes(files.data_dir).message_path("default", "101", "m1")
        write_tone(path, CALLER_HZ, 1.5)
        server.store.begin_voicemail(VoicemailMessage(
            "m1", user.id, "default", "101", "102", "User 102", time.time(), 0.0, str(path),
            "de", "recording"))
        server.store.finish_voicemail("m1", 1.5)

        async def right_pin(phone: CarrierPhone) -> None:
            await asyncio.sleep(0.3)
            phone.press("101#4321#1")  # mailbox, PIN, play (typed ahead)
            try:
                await until(lambda: phone.heard().count("caller") >= 40, 25, "the message")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: heard {runs(phone.heard())}") from None
            phone.press("**")  # back to the main menu, hang up

        phone = await portal_call(files, tmp_path, right_pin)
        assert_announced(phone.pcm(), Prompt("vm_message_from", say="102"))
        assert_announced(phone.pcm(), Prompt("vm_goodbye"))
        assert [m.state for m in server.store.voicemails(user.id)] == ["old"]  # heard

        async def wrong_pins(phone: CarrierPhone) -> None:
            await asyncio.sleep(0.3)
            phone.press("101#0000#" * 3)

        with capture_logs() as logs:
            phone = await portal_call(files, tmp_path, wrong_pins)
        failed = [e for e in logs if e["event"] == "security.voicemail.pin_failed"]
        assert [e["attempt"] for e in failed] == [1, 2, 3], failed
        assert any(e["event"] == "security.voicemail.locked_out" for e in logs)
        assert_announced(phone.pcm(), Prompt("vm_wrong_pin"))
        assert phone.heard().count("caller") == 0  # no message was played
