"""pbx.legs.sdp reads and writes ``a=crypto`` through sipcore.sdp (RFC 4568): malformed lines
are skipped, several-key lines parse but are not chosen, our answer's line parses back."""

from __future__ import annotations

import base64

import pytest

from media.srtp import CryptoAttribute, generate_crypto
from pbx.legs.sdp import choose_sdes, crypto_line, leg_answer, media_key, offered_crypto
from sipcore.errors import ParseError, SdesError
from sipcore.sdp import parse_crypto, parse_sdp

KEY = base64.b64encode(bytes(range(30))).decode("ascii")


def _offer(proto: str, *crypto: str) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio 4000 {proto} 0", *(f"a=crypto:{c}" for c in crypto)]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_malformed_lines_are_skipped() -> None:
    sdp = parse_sdp(_offer("RTP/SAVP", "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
                           f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^99",
                           f"3 AES_CM_128_HMAC_SHA1_32 inline:{KEY}|2^20"))
    found = offered_crypto(sdp)
    assert found == [CryptoAttribute(3, "AES_CM_128_HMAC_SHA1_32", bytes(range(30)), 1 << 20)]


def test_only_malformed_lines_is_488() -> None:
    found = offered_crypto(parse_sdp(_offer("RTP/SAVP", "1 AES_CM_128_HMAC_SHA1_80 inline:x")))
    assert found == []
    with pytest.raises(SdesError) as info:
        choose_sdes(found)
    assert isinstance(info.value, ParseError) and info.value.status_hint == 488


def test_several_keys_parse_but_are_not_chosen() -> None:
    multi = f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:1;inline:{KEY}|2:1"
    found = offered_crypto(parse_sdp(_offer("RTP/SAVP", multi, f"2 AES_CM_128_HMAC_SHA1_80 "
                                                               f"inline:{KEY} KDR=1",
                                            f"3 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")))
    assert found is not None and [a.tag for a in found] == [1, 2, 3]
    assert found[0].mki == (1, 1) and found[1].session_params == "KDR=1"
    remote, local = choose_sdes(found)  # MKI and session parameters are not taken
    assert (remote.tag, local.tag) == (3, 3)


def test_crypto_line_round_trips_through_sipcore() -> None:
    key = CryptoAttribute(5, "AES_CM_128_HMAC_SHA1_80", bytes(range(30)), 1 << 31, (7, 2),
                          "WSH=64")
    line = crypto_line(key)
    assert line == key.to_sdp()
    assert media_key(parse_crypto(line)) == key


def test_leg_answer_carries_our_key_in_a_parseable_line() -> None:
    offer = parse_sdp(_offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"))
    keys = choose_sdes(offered_crypto(offer) or [])
    ans = leg_answer(offer, current="PCMU", sdes=keys, address="192.0.2.1", port=4002,
                     session_id=1, session_version=1)
    (line,) = ans.media[0].crypto()
    assert media_key(line) == keys[1] and keys[1] != generate_crypto(1)
