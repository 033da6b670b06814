"""The B2BUA's RTP-profile retry pieces without a network: the SDES keys of a SAVP offer, the
offer itself, keying a leg from the answer, and the bounded memory of devices wanting SRTP.
(The whole retry over SIP: tests/interop/test_calls_media2.py.)"""

from __future__ import annotations

from typing import Any

import pytest

import pbx.b2bua as b2bua_mod
from media.srtp import SUITES, CryptoAttribute, SrtpSession, generate_crypto
from pbx.b2bua import B2bua
from pbx.callcontrol import Target
from pbx.legs import OutboundLeg
from pbx.legs.sdp import offer_keys, offered_crypto
from sipcore.errors import ParseError
from sipcore.sdp import SessionDescription, parse_sdp


def test_offer_keys_one_fresh_key_per_suite() -> None:
    a, b = offer_keys(), offer_keys()
    assert [k.tag for k in a] == list(range(1, len(SUITES) + 1))
    assert [k.suite for k in a] == list(SUITES)
    assert len({k.key for k in a + b}) == 2 * len(SUITES)
    assert all(len(k.key) == 30 for k in a)


class _Session:
    local_port = 30000

    def __init__(self) -> None:
        self.srtp: Any = None

    def set_srtp(self, srtp: Any) -> None:
        self.srtp = srtp


class _B2b:
    sdp_address = "198.51.100.7"


def _leg(crypto: list[CryptoAttribute] | None) -> Any:
    leg: Any = object.__new__(OutboundLeg)
    leg.b2bua = _B2b()
    leg.session = _Session()
    leg.session_id, leg.session_version = 7, 1
    leg.offer_crypto = crypto
    leg.sdes = None
    return leg


def _answer(proto: str, crypto: str = "") -> SessionDescription:
    return parse_sdp((
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        f"m=audio 4000 {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto}a=sendrecv\r\n").encode())


def test_savp_offer_carries_every_key_and_plain_offer_none() -> None:
    keys = offer_keys()
    leg = _leg(keys)
    text = OutboundLeg._offer(leg, "PCMA", keys).serialize().decode()
    assert "m=audio 30000 RTP/SAVP 8 " in text
    parsed = offered_crypto(parse_sdp(text.encode()))
    assert parsed is not None and [(c.tag, c.suite, c.key) for c in parsed] == [
        (k.tag, k.suite, k.key) for k in keys]
    plain = OutboundLeg._offer(_leg(None), None, None).serialize().decode()
    assert "RTP/AVP" in plain and "a=crypto" not in plain


def test_answer_keys_pick_our_tag_and_the_peers_key() -> None:
    keys = offer_keys()
    leg = _leg(keys)
    theirs = generate_crypto(2, keys[1].suite)
    OutboundLeg._use_answer_keys(leg, _answer("RTP/SAVP", f"a=crypto:{theirs.to_sdp()}\r\n"))
    assert isinstance(leg.session.srtp, SrtpSession)
    remote, local = leg.sdes
    assert (remote.key, local.key) == (theirs.key, keys[1].key)


@pytest.mark.parametrize("line", [
    "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40 + "\r\n",  # a tag we never offered
    "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:" + "A" * 40 + "\r\n",  # tag 1 with suite of 2
    "",  # SAVP without any key
])
def test_answer_naming_none_of_our_keys_is_refused(line: str) -> None:
    leg = _leg(offer_keys())
    with pytest.raises(ParseError) as exc:
        OutboundLeg._use_answer_keys(leg, _answer("RTP/SAVP", line))
    assert exc.value.status_hint == 488
    assert leg.session.srtp is None


def test_plain_answer_to_savp_offer_leaves_the_leg_plain() -> None:
    leg = _leg(offer_keys())
    leg.session.srtp = object()
    OutboundLeg._use_answer_keys(leg, _answer("RTP/AVP"))
    assert leg.session.srtp is None and leg.sdes is None


def test_devices_wanting_srtp_are_learnt_forgotten_and_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(b2bua_mod, "SRTP_DEVICES_MAX", 3)
    b2b: Any = object.__new__(B2bua)
    b2b.srtp_devices = {}
    targets = [Target("device", user="101", contact=f"sip:101@192.0.2.{i}") for i in range(5)]
    for t in targets:
        B2bua.learn_srtp(b2b, t, True)
    assert [B2bua.wants_srtp(b2b, t) for t in targets] == [False, False, True, True, True]
    B2bua.learn_srtp(b2b, targets[3], False)
    assert not B2bua.wants_srtp(b2b, targets[3])
    assert B2bua.wants_srtp(b2b, targets[4])
