"""SDES a=crypto (RFC 4568) and SRTP calls through media.aio over loopback."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.aio import MediaEngine, make_codec
from media.errors import MediaParseError
from media.srtp import (
    CryptoAttribute,
    SrtpSession,
    answer_crypto,
    generate_crypto,
    parse_crypto,
)
from tests.media.test_aio import Peer, dominant, hears

RANGE = (31300, 31399)
KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"  # RFC 4568 §8.1 example (30 bytes)


def test_parse_rfc4568_example() -> None:
    attr = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4")
    assert attr.tag == 1 and attr.suite == "AES_CM_128_HMAC_SHA1_80"
    assert len(attr.key) == 30 and attr.lifetime == 1 << 20 and attr.mki == (1, 4)
    assert attr.to_sdp() == f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4"
    assert parse_crypto(attr.to_sdp()) == attr


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1",
        "x AES_CM_128_HMAC_SHA1_80 inline:" + KEY,
        "1 AES_CM_128_HMAC_SHA1_80 key:" + KEY,
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY[:-4],  # 27 bytes
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY + "|2^99",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY + "|1:0",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY + "|a|b|c",
        "1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + KEY,
    ],
)
def test_parse_rejects_malformed(value: str) -> None:
    with pytest.raises(MediaParseError) as info:
        parse_crypto(value)
    assert "a=crypto" in info.value.reason


@settings(max_examples=150)
@given(st.text(max_size=120))
def test_parse_only_raises_parse_error(value: str) -> None:
    try:
        attr = parse_crypto(value)
    except MediaParseError:
        return
    assert isinstance(attr, CryptoAttribute)


def test_answer_picks_first_supported() -> None:
    offer = [
        parse_crypto("1 AES_256_CM_HMAC_SHA1_80 inline:" + KEY + KEY),
        parse_crypto("2 AES_CM_128_HMAC_SHA1_32 inline:" + KEY),
        parse_crypto("3 AES_CM_128_HMAC_SHA1_80 inline:" + KEY),
    ]
    chosen = answer_crypto(offer)
    assert chosen is not None
    remote, local = chosen
    assert remote.tag == 2 and local.tag == 2 and local.suite == "AES_CM_128_HMAC_SHA1_32"
    assert local.key != remote.key and len(local.key) == 30
    assert answer_crypto(offer[:1]) is None


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"])
def test_protect_unprotect_tamper_replay(suite: str) -> None:
    a, b = generate_crypto(1, suite), generate_crypto(1, suite)
    alice, bob = SrtpSession(a, b), SrtpSession(b, a)
    pkt = struct.pack("!BBHII", 0x80, 0, 7, 160, 42) + b"\x55" * 160
    wire = alice.protect(pkt)
    assert wire != pkt and len(wire) == len(pkt) + (10 if suite.endswith("80") else 4)
    tampered = bytearray(alice.protect(pkt[:2] + b"\x00\x08" + pkt[4:]))
    tampered[30] ^= 1
    assert bob.unprotect(bytes(tampered)) is None
    assert bob.auth_failures == 1
    assert bob.unprotect(wire) == pkt
    assert bob.unprotect(wire) is None  # replay
    assert bob.replays == 1
    rtcp = struct.pack("!BBHI", 0x80, 201, 1, 42)
    assert bob.unprotect_rtcp(alice.protect_rtcp(rtcp)) == rtcp


@pytest.mark.parametrize("bridge", ["relay", "transcode"])
async def test_srtp_call_tone_crosses_and_tampered_dropped(bridge: str) -> None:
    # Keys as SDP offer/answer would set them: each side sends with its own key.
    ka_phone, ka_pbx = generate_crypto(), generate_crypto()
    kb_phone, kb_pbx = generate_crypto(), generate_crypto()
    phone_a, phone_b = SrtpSession(ka_phone, ka_pbx), SrtpSession(kb_phone, kb_pbx)
    async with MediaEngine("127.0.0.1", RANGE) as engine:
        pa, pb = Peer(), Peer()
        if bridge == "transcode":
            pb.pt = 8
            pb.codec = make_codec("PCMA")
        a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr,
                                  srtp=SrtpSession(ka_pbx, ka_phone))
        b = engine.create_session(payload_type=pb.pt, codec="PCMU" if pb.pt == 0 else "PCMA",
                                  remote=pb.addr, srtp=SrtpSession(kb_pbx, kb_phone))
        engine.bridge(a, b)
        sent: list[bytes] = []

        def wrap(pkt: bytes) -> bytes:
            out = phone_a.protect(pkt)
            sent.append(out)
            return out

        pa.start_tone(a.local_addr, 1000, wrap=wrap)
        pb.start_tone(b.local_addr, 600, wrap=phone_b.protect)
        await asyncio.sleep(0.6)
        # an attacker on the signalled address replays and tampers with captured packets
        for pkt in sent[:10]:
            pa.sock.sendto(pkt, a.local_addr)
            bad = bytearray(pkt)
            bad[-1] ^= 0xFF
            pa.sock.sendto(bytes(bad), a.local_addr)
        await asyncio.sleep(0.4)
        pa.close()
        pb.close()
        got_b = pb.audio(skip=0.2, unwrap=phone_b.unprotect)
        got_a = pa.audio(skip=0.2, unwrap=phone_a.unprotect)
        assert len(got_b) > 8000 * 0.5 and len(got_a) > 8000 * 0.5
        assert dominant(got_b, 8000, [600, 1000, 1400]) == 1000 and hears(got_b, 8000, 1000)
        assert dominant(got_a, 8000, [600, 1000, 1400]) == 600
        assert a.statistics()["srtp_auth"] >= 20
        assert a.srtp is not None
        assert a.srtp.replays + a.srtp.auth_failures >= 20  # type: ignore[attr-defined]
        # everything that reached phone B authenticated with B's key
        assert phone_b.auth_failures == 0


async def test_unauthenticated_sprayer_cannot_latch() -> None:
    """With SRTP, 4 in-sequence packets from a stranger without the key change nothing, even
    while the signalled source is silent: the auth check runs before the source rule."""
    k_phone, k_pbx = generate_crypto(), generate_crypto()
    wrong = SrtpSession(generate_crypto(), generate_crypto())
    async with MediaEngine("127.0.0.1", RANGE) as engine:
        a = engine.create_session(payload_type=0, codec="PCMU", remote=("127.0.0.1", 9),
                                  srtp=SrtpSession(k_pbx, k_phone))
        attacker = Peer(host="127.0.0.2")
        for _ in range(12):
            silence = np.zeros(160, dtype=np.int16)
            attacker.sock.sendto(wrong.protect(attacker.packet(silence)), a.local_addr)
        await asyncio.sleep(0.2)
        attacker.close()
        assert a.send_address == ("127.0.0.1", 9)
        st_ = a.statistics()
        assert st_["srtp_auth"] == 12 and st_["source"] == 0
