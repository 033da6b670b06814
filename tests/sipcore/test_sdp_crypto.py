"""SDES ``a=crypto`` (RFC 4568 §9.1) in sipcore.sdp: good lines, round trips, malformed lines
(SdesError, hint 488), and the parse-or-SdesError invariant."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.errors import ParseError, SdesError
from sipcore.sdp import SDES_KEY_LENGTHS, SdesCrypto, SdesKey, parse_crypto, parse_sdp

KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"  # RFC 4568 §8.1 example, 30 bytes
KEY_BYTES = base64.b64decode(KEY)
KEY46 = base64.b64encode(bytes(range(46))).decode("ascii")  # AES-256: 64 chars with "=="


def test_rfc4568_example() -> None:
    c = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4")
    assert c == SdesCrypto(1, "AES_CM_128_HMAC_SHA1_80", (SdesKey(KEY_BYTES, 1 << 20, (1, 4)),))
    assert c.key.key_salt == KEY_BYTES
    assert str(c) == f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4"


def test_plain_key_and_whitespace() -> None:
    c = parse_crypto(f"  7\tAES_CM_128_HMAC_SHA1_32  inline:{KEY}  ")
    assert (c.tag, c.suite, c.key.lifetime, c.key.mki, c.session_params) == (
        7, "AES_CM_128_HMAC_SHA1_32", None, None, ())
    assert str(c) == f"7 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"


def test_decimal_lifetime_and_mki_only() -> None:
    assert parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1000").key.lifetime == 1000
    c = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|255:1")
    assert (c.key.lifetime, c.key.mki) == (None, (255, 1))
    # a power of two is written back as 2^n (same value)
    assert str(parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1024")).endswith("|2^10")


def test_several_keys_with_mki() -> None:
    line = (f"2 F8_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4;"
            f"inline:{KEY}|2^20|2:4 FEC_ORDER=FEC_SRTP")
    c = parse_crypto(line)
    assert [k.mki for k in c.keys] == [(1, 4), (2, 4)]
    assert c.session_params == ("FEC_ORDER=FEC_SRTP",)
    assert str(c) == line
    assert parse_crypto(str(c)) == c


def test_session_params() -> None:
    c = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} KDR=24 WSH=128 "
                     "UNENCRYPTED_SRTCP UNAUTHENTICATED_SRTP X-VENDOR=1")
    assert c.session_params == ("KDR=24", "WSH=128", "UNENCRYPTED_SRTCP",
                                "UNAUTHENTICATED_SRTP", "X-VENDOR=1")


def test_unknown_suite_any_key_length_and_unpadded_base64() -> None:
    c = parse_crypto("3 FUTURE_SUITE inline:AAAA")
    assert c.suite == "FUTURE_SUITE" and c.key.key_salt == b"\0\0\0"
    unpadded = KEY46.rstrip("=")
    assert len(parse_crypto(f"1 AES_256_CM_HMAC_SHA1_80 inline:{unpadded}").key.key_salt) == 46
    assert str(parse_crypto(f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY46}")).endswith(KEY46)


@pytest.mark.parametrize("suite, length", sorted(SDES_KEY_LENGTHS.items()))
def test_known_suites_need_their_key_length(suite: str, length: int) -> None:
    good = base64.b64encode(bytes(length)).decode("ascii")
    assert len(parse_crypto(f"1 {suite} inline:{good}").key.key_salt) == length
    short = base64.b64encode(bytes(length - 1)).decode("ascii")
    with pytest.raises(SdesError):
        parse_crypto(f"1 {suite} inline:{short}")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1",
        "1 AES_CM_128_HMAC_SHA1_80",
        f"x AES_CM_128_HMAC_SHA1_80 inline:{KEY}",  # tag not digits
        f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY}",  # tag 10 digits
        f"1 AES-CM inline:{KEY}",  # suite charset
        f"1 AES_CM_128_HMAC_SHA1_80 {KEY}",  # no key method
        f"1 AES_CM_128_HMAC_SHA1_80 uri:{KEY}",  # not inline
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",  # not base64
        "1 AES_CM_128_HMAC_SHA1_80 inline:",  # empty key
        "1 AES_CM_128_HMAC_SHA1_80 inline:A",  # impossible base64 length
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY[:-4]}",  # 27 bytes
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^49",  # lifetime > 2^48
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^99",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|0",  # lifetime 0
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^x",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:0",  # MKI length 0
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:129",  # MKI length > 128
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|256:1",  # MKI value too big for 1 byte
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:4|2^20",  # MKI before lifetime
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|2^20",  # two lifetimes
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:4|2:4",  # two MKIs
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|a|b|c",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY};inline:{KEY}",  # several keys, no MKI
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:4;inline:{KEY}|2:2",  # MKI lengths differ
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} KDR=25",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} KDR",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} WSH=63",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTP=1",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} caf\u00e9",  # not VCHAR
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|" + "9" * 30,  # absurd lifetime text
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 5000,  # absurd size
    ],
)
def test_malformed_lines_raise_sdes_error_488(value: str) -> None:
    with pytest.raises(SdesError) as info:
        parse_crypto(value)
    assert isinstance(info.value, ParseError)
    assert info.value.status_hint == 488


_PIECES = [*"0123456789 \t:;|^=_+/AB", KEY, " AES_CM_128_HMAC_SHA1_80 ", "FUTURE ", "inline:",
           "|2^20", "|1:4", " KDR=1", " WSH=64"]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_parses_or_raises_sdes_error(value: str) -> None:
    try:
        c = parse_crypto(value)
    except SdesError:
        return
    assert parse_crypto(str(c)) == c  # whatever parses round-trips


@settings(max_examples=150)
@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_sdes_error(value: str) -> None:
    try:
        parse_crypto(value)
    except SdesError:
        pass


def _sdp(*crypto: str) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             "m=audio 4000 RTP/SAVP 0", *(f"a=crypto:{c}" for c in crypto)]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_media_description_crypto() -> None:
    m = parse_sdp(_sdp(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}",
                       f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}|2^31")).media[0]
    assert [(c.tag, c.suite, c.key.lifetime) for c in m.crypto()] == [
        (1, "AES_CM_128_HMAC_SHA1_80", None), (2, "AES_CM_128_HMAC_SHA1_32", 1 << 31)]
    # the SDP parser keeps a bad line verbatim; crypto() reports it
    bad = parse_sdp(_sdp("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!")).media[0]
    assert bad.get_attributes("crypto") == ["1 AES_CM_128_HMAC_SHA1_80 inline:!!!!"]
    with pytest.raises(SdesError):
        bad.crypto()
