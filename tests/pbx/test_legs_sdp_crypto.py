"""pbx.legs.sdp.offered_crypto: an unparseable ``a=crypto`` line (media.srtp raises its own
``MediaParseError``, not sipcore's) is skipped, the parseable ones are the offer."""

from __future__ import annotations

import base64

from pbx.legs.sdp import offered_crypto
from sipcore.sdp import parse_sdp

KEY = base64.b64encode(bytes(range(30))).decode("ascii")


def _offer(proto: str, *crypto: str) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio 4000 {proto} 0", *(f"a=crypto:{c}" for c in crypto)]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_malformed_crypto_lines_are_skipped() -> None:
    sdp = parse_sdp(_offer("RTP/SAVP", "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
                           f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"))
    found = offered_crypto(sdp)
    assert found is not None
    assert [(a.tag, a.suite) for a in found] == [(2, "AES_CM_128_HMAC_SHA1_32")]


def test_plain_rtp_offers_no_crypto() -> None:
    assert offered_crypto(parse_sdp(_offer("RTP/AVP"))) is None
