"""WebRTC legs over loopback: two aiortc "browsers" (ICE, DTLS-SRTP, Opus) through the PBX.

Every ICE socket offers and uses 127.0.0.1 only; a spy on aioice's send paths proves that no
datagram went to any other address.
"""

from __future__ import annotations

import asyncio
import fractions
import ipaddress
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import aioice.ice
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

from media import webrtc
from media.aio import MediaEngine
from media.webrtc import WebRtcLeg, ice_host_addresses
from tests.media.test_aio import Peer, dominant, hears

RANGE = (31400, 31499)
LOOPBACK = ("127.0.0.1",)


class ToneTrack(MediaStreamTrack):  # type: ignore[misc]
    kind = "audio"

    def __init__(self, freq: float, rate: int = 48000) -> None:
        super().__init__()
        self.freq, self.rate = freq, rate
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        n = self.rate // 50
        if self._start is None:
            self._start = time.time()
        else:
            await asyncio.sleep(max(0.0, self._start + self._n / self.rate - time.time()))
        t = (np.arange(n) + self._n) / self.rate
        data = (8000 * np.sin(2 * math.pi * self.freq * t)).astype(np.int16)
        frame = AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(data.tobytes())
        frame.pts = self._n
        frame.sample_rate = self.rate
        frame.time_base = fractions.Fraction(1, self.rate)
        self._n += n
        return frame


class Browser:
    """An aiortc peer sending a tone and keeping what it hears (mono, 48 kHz)."""

    def __init__(self, freq: float) -> None:
        self.pc = RTCPeerConnection()
        self.pc.addTrack(ToneTrack(freq))
        self.heard: list[np.ndarray[Any, Any]] = []
        self._task: asyncio.Task[None] | None = None

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._task = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame: Any = await track.recv()
            except Exception:
                return
            data = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1)
            self.heard.append(data.astype(np.int16))

    async def offer(self) -> str:
        with ice_host_addresses(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        with ice_host_addresses(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def audio(self, skip: float = 1.0) -> np.ndarray[Any, Any]:
        if not self.heard:
            return np.zeros(0, np.int16)
        data = np.concatenate(self.heard)
        return data[int(skip * 48000):]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pc.close()


@pytest.fixture
def sent_to() -> Iterator[list[tuple[str, int]]]:
    """Every destination aioice sends to (data and STUN), recorded for the whole test."""
    seen: list[tuple[str, int]] = []
    proto = aioice.ice.StunProtocol
    orig_data, orig_stun = proto.send_data, proto.send_stun

    async def send_data(self: Any, data: bytes, addr: tuple[str, int]) -> None:
        seen.append((addr[0], addr[1]))
        await orig_data(self, data, addr)

    def send_stun(self: Any, message: Any, addr: tuple[str, int]) -> None:
        seen.append((addr[0], addr[1]))
        orig_stun(self, message, addr)

    proto.send_data = send_data  # type: ignore[method-assign]
    proto.send_stun = send_stun  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        proto.send_data = orig_data  # type: ignore[method-assign]
        proto.send_stun = orig_stun  # type: ignore[method-assign]


def _candidates(sdp: str) -> list[str]:
    return re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ", sdp)


def _all_loopback(addrs: list[tuple[str, int]]) -> bool:
    return all(ipaddress.ip_address(a).is_loopback for a, _ in addrs)


async def _wait_connected(*legs: WebRtcLeg, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while any(leg.connection_state != "connected" for leg in legs):
        assert asyncio.get_running_loop().time() < deadline, [leg.connection_state for leg in legs]
        await asyncio.sleep(0.05)


async def test_two_browsers_through_the_pbx(sent_to: list[tuple[str, int]]) -> None:
    alice, bob = Browser(1000), Browser(600)
    async with MediaEngine("127.0.0.1", RANGE) as engine:
        leg_a = WebRtcLeg(host_addresses=LOOPBACK)
        leg_b = WebRtcLeg(host_addresses=LOOPBACK)
        offer_a = await alice.offer()
        answer_a = await leg_a.accept_offer(offer_a)
        await alice.accept(answer_a)
        offer_b = await leg_b.create_offer()
        answer_b = await bob.answer(offer_b)
        await leg_b.set_answer(answer_b)
        for sdp in (offer_a, answer_a, offer_b, answer_b):
            cands = _candidates(sdp)
            assert cands and set(cands) == {"127.0.0.1"}, sdp
        await _wait_connected(leg_a, leg_b)
        bridge = engine.bridge(leg_a, leg_b)
        # a DTLS ClientHello from a third address is dropped before DTLS sees it
        intruder = Peer(host="127.0.0.2")
        ice_ports = {c.port for c in leg_a._connections()[0].local_candidates}
        assert ice_ports
        for port in ice_ports:
            intruder.sock.sendto(b"\x16\xfe\xfd" + bytes(60), ("127.0.0.1", port))
        await asyncio.sleep(3.0)
        intruder.close()
        bridge.close()
        heard_b, heard_a = bob.audio(), alice.audio()
        stats = dict(leg_a.counters)
        state = leg_a.connection_state
        await leg_a.close()
        await leg_b.close()
    await alice.close()
    await bob.close()
    assert len(heard_b) > 48000 and len(heard_a) > 48000
    assert dominant(heard_b, 48000, [600, 1000, 1400]) == 1000 and hears(heard_b, 48000, 1000)
    assert dominant(heard_a, 48000, [600, 1000, 1400]) == 600 and hears(heard_a, 48000, 600)
    assert stats["dropped_source"] >= 1 and state == "connected"
    assert sent_to and _all_loopback(sent_to), sorted(set(sent_to))


async def test_browser_to_rtp_phone(sent_to: list[tuple[str, int]]) -> None:
    browser = Browser(1000)
    async with MediaEngine("127.0.0.1", RANGE) as engine:
        phone = Peer()
        leg = engine.create_session(payload_type=0, codec="PCMU", remote=phone.addr)
        web = WebRtcLeg(host_addresses=LOOPBACK)
        answer = await web.accept_offer(await browser.offer())
        await browser.accept(answer)
        await _wait_connected(web)
        engine.bridge(leg, web)
        phone.start_tone(leg.local_addr, 600)
        await asyncio.sleep(3.0)
        phone.close()
        await web.close()
    heard_phone = phone.audio(skip=1.0)
    heard_browser = browser.audio()
    await browser.close()
    assert len(heard_phone) > 8000 and len(heard_browser) > 48000
    assert dominant(heard_phone, 8000, [600, 1000, 1400]) == 1000
    assert hears(heard_phone, 8000, 1000)
    assert dominant(heard_browser, 48000, [600, 1000, 1400]) == 600
    assert sent_to and _all_loopback(sent_to), sorted(set(sent_to))


def test_host_address_patch_is_contained() -> None:
    # outside the context manager: aioice's own answer (all non-loopback interfaces)
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == (
        webrtc._original_get_host_addresses(use_ipv4=True, use_ipv6=False)
    )
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    with ice_host_addresses(["127.0.0.1", "::1"]):
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]


async def test_ice_port_range_and_servers_reach_the_peer_connection() -> None:
    # the range is 3 ports wide: two legs take two of them, a third leg the last
    low = 46900
    ice = webrtc.IceSettings(LOOPBACK, port_range=(low, low + 2))
    legs = [WebRtcLeg(ice=ice) for _ in range(3)]
    try:
        ports = []
        for leg in legs:
            sdp = await leg.create_offer()
            assert _candidates(sdp) == ["127.0.0.1"]
            ports += [int(p) for p in re.findall(r"a=candidate:\S+ 1 udp \d+ \S+ (\d+) typ", sdp)]
        assert sorted(ports) == [low, low + 1, low + 2]
    finally:
        for leg in legs:
            await leg.close()
    # outside a range the OS picks the port (the wrapper runs aioice's own gathering)
    plain = WebRtcLeg(ice=webrtc.IceSettings(LOOPBACK))
    try:
        sdp = await plain.create_offer()
        assert _candidates(sdp) == ["127.0.0.1"]
    finally:
        await plain.close()
    conf = webrtc.IceSettings(LOOPBACK, stun_servers=("stun:127.0.0.1:3478",),
                              turn_servers=("turn:127.0.0.1:3478",), turn_username="u",
                              turn_password="p").configuration()
    servers = conf.iceServers or []
    assert [s.urls for s in servers] == ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478"]
    assert servers[1].username == "u" and servers[1].credential == "p"


async def test_offers_telephone_event_and_reports_each_key_press_once() -> None:
    """Our SDP carries telephone-event at 48 and 8 kHz (the browser's RFC 4733 DTMF); the events
    of one key press (repeated packets, one timestamp) are reported once, a new timestamp is a
    new press, a malformed payload is counted."""
    from media.dtmf import TelephoneEvent, encode_event

    leg = WebRtcLeg(host_addresses=LOOPBACK)
    try:
        offer = await leg.create_offer()
        assert re.search(r"a=rtpmap:110 telephone-event/48000\r\n", offer), offer
        assert re.search(r"a=rtpmap:126 telephone-event/8000\r\n", offer), offer
        got: list[str] = []
        leg.on_dtmf = got.append
        for duration, end in ((480, False), (960, False), (1440, True), (1440, True)):
            leg._on_event(encode_event(TelephoneEvent(5, end, 10, duration)), 1000, False)
        leg._on_event(encode_event(TelephoneEvent(11, True, 10, 480)), 9000, True)
        leg._on_event(b"\x01", 12000, True)
        assert got == ["5", "#"]
        assert leg.counters["dtmf_rx"] == 2 and leg.counters["dtmf_malformed"] == 1
    finally:
        await leg.close()


@pytest.mark.parametrize("amplitude", [0, 1, 100, 3000, 32767])
def test_audio_level_is_aiortcs_formula(amplitude: int) -> None:
    """The numpy audio level replacing aiortc's loop gives the same -dBov."""
    from aiortc import rtp

    assert rtp.compute_audio_level_dbov is webrtc.audio_level_dbov
    n = np.arange(960)
    pcm = (amplitude * np.sin(2 * math.pi * 440 * n / 48000)).astype(np.int16)
    frame = AudioFrame(format="s16", layout="mono", samples=960)
    frame.planes[0].update(pcm.tobytes())
    assert webrtc.audio_level_dbov(frame) == webrtc.aiortc_audio_level_dbov(frame)
