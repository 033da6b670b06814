"""SDP model/parser/serializer (RFC 8866) and offer/answer helpers (RFC 3264)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipcore.errors import ParseError
from sipcore.sdp import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    Timing,
    answer,
    create_offer,
    hold,
    negotiated_codecs,
    parse_sdp,
    resume,
    with_direction,
)

OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"b=AS:64\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 97 101\r\n"
    b"a=rtpmap:97 opus/48000/2\r\n"
    b"a=fmtp:97 useinbandfec=1\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=rtcp-mux\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
    b"a=sendonly\r\n"
    b"m=video 51372 RTP/AVP 31\r\n"
    b"a=rtpmap:31 H261/90000\r\n"
)


def test_parse_model() -> None:
    sd = parse_sdp(OFFER)
    assert sd.origin.username == "alice" and sd.origin.session_version == 2890844526
    assert sd.connection is not None and sd.connection.address == "192.0.2.10"
    assert sd.bandwidths == [("AS", 64)]
    audio, video = sd.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 49170, "RTP/AVP")
    assert audio.payload_types == [0, 8, 97, 101]
    assert audio.rtpmaps[0] == RtpMap(0, "PCMU", 8000)  # static, no rtpmap line needed
    assert audio.rtpmaps[97] == RtpMap(97, "opus", 48000, 2)
    assert audio.fmtp == {97: "useinbandfec=1", 101: "0-15"}
    assert audio.ptime == 20 and audio.rtcp_mux and audio.direction == "sendonly"
    assert (audio.get_attribute("crypto") or "").startswith("1 AES_CM_128_HMAC")
    assert video.direction == "sendrecv" and sd.media_connection(1) == sd.connection


def test_round_trip_exact() -> None:
    assert parse_sdp(OFFER).serialize() == OFFER
    assert parse_sdp(parse_sdp(OFFER).serialize()) == parse_sdp(OFFER)


def test_bare_lf_and_str_input() -> None:
    assert parse_sdp(OFFER.decode().replace("\r\n", "\n")) == parse_sdp(OFFER)


@pytest.mark.parametrize(
    "bad",
    [
        OFFER.replace(b"m=audio 49170 RTP/AVP 0 8 97 101", b"m=audio 1 RTP/AVP 4294967296"),
        OFFER.replace(b"m=audio 49170", b"m=audio 65536"),
        OFFER.replace(b"m=audio 49170", b"m=audio -1"),
        OFFER.replace(b"a=rtcp-mux", b"a=rtcp\x00mux"),
        OFFER.replace(b"a=rtpmap:97 opus/48000/2", b"a=rtpmap:300 opus/48000/2"),
        OFFER.replace(b"a=rtpmap:97 opus/48000/2", b"a=rtpmap:97 opus"),
        OFFER.replace(b"v=0", b"v=1"),
        OFFER.replace(b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n", b""),
        OFFER.replace(b"c=IN IP4 192.0.2.10\r\n", b""),
        OFFER.replace(b"b=AS:64", b"b=AS:x"),
        OFFER.replace(b"t=0 0", b"t=0"),
        OFFER.replace(b"m=video 51372 RTP/AVP 31", b"m=video"),
        OFFER + b"garbage\r\n",
        OFFER + b"a=\r\n",
        b"\xff\xfe",
        b"",
    ],
)
def test_garbage_is_parse_error(bad: bytes) -> None:
    with pytest.raises(ParseError):
        parse_sdp(bad)


def test_answer_prefers_our_order_and_mirrors() -> None:
    offer = parse_sdp(OFFER)
    ans = answer(offer, [G722, PCMA, PCMU, TELEPHONE_EVENT], address="198.51.100.1",
                 port=30000, session_id=7)
    audio, video = ans.media
    assert audio.port == 30000 and audio.formats == ["8", "0", "101"]  # no G722 offered
    assert audio.direction == "recvonly"  # offer was sendonly
    assert audio.fmtp == {101: "0-15"} and audio.rtcp_mux
    assert not audio.has_attribute("crypto")
    assert (video.port, video.formats) == (0, ["31"])  # rejected, order mirrored
    assert [r.encoding for r in negotiated_codecs(audio)] == ["PCMA", "PCMU", "telephone-event"]
    assert negotiated_codecs(video) == []
    again = parse_sdp(ans.serialize())
    assert again == ans


def test_answer_uses_offered_payload_type_for_dynamic_codecs() -> None:
    ans = answer(parse_sdp(OFFER), [OPUS, PCMU], address="::1", port=[4000], session_id=1,
                 direction="sendonly")
    audio = ans.media[0]
    assert audio.formats == ["97", "0"]
    assert audio.fmtp[97] == "useinbandfec=1"  # the offer's fmtp for that PT
    assert audio.direction == "inactive"  # they only send, we only send: nothing flows
    assert ans.connection is not None and ans.connection.addrtype == "IP6"


def test_answer_no_common_codec_is_488() -> None:
    with pytest.raises(ParseError) as exc:
        answer(parse_sdp(OFFER), [G722], address="192.0.2.1", port=4000, session_id=1)
    assert exc.value.status_hint == 488


def test_offer_hold_resume() -> None:
    offer = create_offer([PCMU, PCMA, TELEPHONE_EVENT], address="192.0.2.5", port=4000,
                         session_id=42)
    text = offer.serialize()
    assert b"m=audio 4000 RTP/AVP 0 8 101\r\n" in text and b"a=sendrecv\r\n" in text
    held = hold(offer)
    assert held.media[0].direction == "sendonly"
    assert held.origin.session_version == offer.origin.session_version + 1
    assert offer.media[0].direction == "sendrecv"  # original untouched
    assert resume(held).media[0].direction == "sendrecv"
    assert with_direction(offer, "inactive").media[0].direction == "inactive"
    # the remote side answering our hold
    their = answer(held, [PCMU, TELEPHONE_EVENT], address="192.0.2.9", port=5000, session_id=3)
    assert their.media[0].direction == "recvonly"


def _exercise(sd: SessionDescription) -> None:
    """Every derived view and the answer helper: values or ParseError, nothing else."""
    for i, m in enumerate(sd.media):
        assert isinstance(m.rtpmaps, dict) and isinstance(m.fmtp, dict)
        assert m.ptime is None or isinstance(m.ptime, int)
        assert sd.media_direction(i) in ("sendrecv", "sendonly", "recvonly", "inactive")
        negotiated_codecs(m)
    try:
        answer(sd, [OPUS, PCMU, TELEPHONE_EVENT], address="192.0.2.1", port=4000,
               session_id=1)
    except ParseError:
        pass
    hold(sd)


@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    try:
        sd = parse_sdp(data)
    except ParseError:
        return
    _exercise(sd)


@given(st.integers(0, len(OFFER) - 1), st.binary(min_size=1, max_size=8))
def test_mutants(pos: int, junk: bytes) -> None:
    try:
        sd = parse_sdp(OFFER[:pos] + junk + OFFER[pos + 1 :])
    except ParseError:
        return
    assert parse_sdp(sd.serialize()) == sd
    _exercise(sd)


def test_seeded_sdp_mutants() -> None:
    import random

    rng = random.Random(8866)
    seeds = [OFFER, WEBRTC_OFFER.encode()]
    ok = 0
    for i in range(5000):
        data = bytearray(seeds[i % 2])
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data) + 1)
            data[pos:pos] = rng.choice([b"\x00", b"\r\n", b" ", b":", b"/", b"4294967296",
                                        b"-1", b"\xb2", b"a=fmtp:\xc2\xb2 x\r\n", b"="])
        try:
            sd = parse_sdp(bytes(data))
        except ParseError:
            continue
        ok += 1
        _exercise(sd)
    assert ok > 100


_text = st.text(st.characters(min_codepoint=32, blacklist_characters="\x7f",
                              blacklist_categories=("Cs",)), max_size=12)
_tok = st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True)
_attrs = st.lists(st.tuples(_tok.filter(lambda t: t != "rtpmap"), st.one_of(st.none(), _text)),
                  max_size=5)


@st.composite
def descriptions(draw: st.DrawFn) -> SessionDescription:
    media = [
        MediaDescription(
            draw(st.sampled_from(["audio", "video", "application"])),
            draw(st.integers(0, 65535)),
            "RTP/AVP",
            [str(pt) for pt in draw(st.lists(st.integers(0, 127), min_size=1, max_size=5))],
            port_count=draw(st.one_of(st.none(), st.integers(1, 4))),
            info=draw(st.one_of(st.none(), _text)),
            bandwidths=draw(st.lists(st.tuples(st.sampled_from(["AS", "TIAS"]),
                                               st.integers(0, 2**32 - 1)), max_size=2)),
            attributes=draw(_attrs),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    return SessionDescription(
        origin=Origin(draw(_tok), draw(st.integers(0, 2**63)), draw(st.integers(0, 2**63)),
                      "IN", "IP4", "192.0.2.1"),
        name=draw(_text),
        info=draw(st.one_of(st.none(), _text)),
        connection=Connection("192.0.2.1"),
        timings=[Timing(draw(st.integers(0, 2**40)), 0)],
        attributes=draw(_attrs),
        media=media,
    )


@given(descriptions())
def test_generated_round_trip(sd: SessionDescription) -> None:
    again = parse_sdp(sd.serialize())
    assert again == sd
    assert again.serialize() == sd.serialize()


WEBRTC_OFFER = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic: WMS s1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 9 0 110 126\r\n"
    "c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=fingerprint:sha-256 AB:CD:EF\r\na=setup:actpass\r\n"
    "a=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n"
    "a=ssrc:1234 cname:xyz\r\n"
)


def test_webrtc_offer_and_dtmf_clock_follows_codec() -> None:
    offer = parse_sdp(WEBRTC_OFFER)
    assert parse_sdp(offer.serialize()) == offer
    assert offer.media[0].get_attribute("fingerprint") == "sha-256 AB:CD:EF"
    kw = {"address": "192.0.2.1", "port": 4000, "session_id": 1,
          "protos": ("UDP/TLS/RTP/SAVPF",)}
    opus = answer(offer, [OPUS, PCMU, TELEPHONE_EVENT], **kw)  # type: ignore[arg-type]
    assert opus.media[0].formats == ["111", "0", "110"]  # 48 kHz events with Opus
    g711 = answer(offer, [PCMU, TELEPHONE_EVENT], **kw)  # type: ignore[arg-type]
    assert g711.media[0].formats == ["0", "126"]  # 8 kHz events with PCMU
