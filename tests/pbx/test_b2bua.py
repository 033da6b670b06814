"""The B2BUA's pure helpers: per-leg SDP answers (codecs, SDES-SRTP), session-timer
negotiation, SIP INFO digits, in-band detection decisions and the final-response mapping."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from media.dtmf import dtmf_tone
from media.srtp import generate_crypto
from pbx.callcontrol import (
    DtmfReceived,
    InbandDtmf,
    Leg,
    RingOutcome,
    needs_inband_detection,
    tell_outcome,
)
from pbx.legs.sdp import choose_sdes, leg_answer, offered_crypto
from pbx.legs.sip import dtmf_from_info
from sipcore.errors import ParseError, RemoteProtocolError
from sipcore.invite_session import SessionExpires, negotiate, parse_session_expires
from sipcore.sdp import parse_sdp

KEY = base64.b64encode(bytes(range(30))).decode()


def offer(proto: str = "RTP/AVP", formats: str = "0 8 101", extra: str = "") -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        f"m=audio 4000 {proto} {formats}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" + extra + "a=sendrecv\r\n"
    ).encode()


def answer_of(data: bytes, current: str = "PCMU", sdes: bool = False) -> str:
    sd = parse_sdp(data)
    keys = choose_sdes(offered_crypto(sd) or []) if sdes else None
    ans = leg_answer(sd, current=current, sdes=keys, address="198.51.100.7", port=30000,
                     session_id=5, session_version=1)
    return ans.serialize().decode()


# -------------------------------------------------------------------------------- SDP answers


def test_plain_offer_answered_plain_with_our_order_and_telephone_event() -> None:
    text = answer_of(offer())
    assert "m=audio 30000 RTP/AVP 0 8 101\r\n" in text
    assert "a=crypto" not in text


def test_current_codec_wins_on_a_reoffer() -> None:
    assert "m=audio 30000 RTP/AVP 8 0 101\r\n" in answer_of(offer(), current="PCMA")


def test_savp_offer_answered_savp_with_our_own_key() -> None:
    data = offer("RTP/SAVP", extra=f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n")
    text = answer_of(data, sdes=True)
    assert "m=audio 30000 RTP/SAVP 0 8 101\r\n" in text
    line = next(ln for ln in text.split("\r\n") if ln.startswith("a=crypto:"))
    tag, suite, inline = line[len("a=crypto:"):].split(" ")
    assert (tag, suite) == ("1", "AES_CM_128_HMAC_SHA1_80")
    assert inline != f"inline:{KEY}"  # our key, not an echo of theirs
    assert len(base64.b64decode(inline[len("inline:"):])) == 30


def test_savp_offer_on_a_plain_leg_is_refused() -> None:
    data = offer("RTP/SAVP", extra=f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n")
    with pytest.raises(ParseError) as exc:
        answer_of(data, sdes=False)
    assert exc.value.status_hint == 488


def test_offered_crypto_none_for_plain_and_lines_for_savp() -> None:
    assert offered_crypto(parse_sdp(offer())) is None
    data = offer("RTP/SAVP", extra=("a=crypto:1 F8_128_HMAC_SHA1_80 inline:" + KEY + "\r\n"
                                    f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}\r\n"
                                    "a=crypto:3 garbage\r\n"))
    found = offered_crypto(parse_sdp(data))
    assert found is not None
    assert [a.tag for a in found] == [1, 2]  # the malformed line is skipped


def test_choose_sdes_skips_unknown_suites_and_refuses_none() -> None:
    data = offer("RTP/SAVP", extra=("a=crypto:1 F8_128_HMAC_SHA1_80 inline:" + KEY + "\r\n"
                                    f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}\r\n"))
    found = offered_crypto(parse_sdp(data))
    assert found is not None
    remote, local = choose_sdes(found)
    assert (remote.tag, local.tag, local.suite) == (2, 2, "AES_CM_128_HMAC_SHA1_32")
    with pytest.raises(ParseError) as exc:
        choose_sdes(found[:1])
    assert exc.value.status_hint == 488


def test_choose_sdes_keeps_keys_when_the_reoffer_keeps_the_peers_key() -> None:
    theirs = generate_crypto(1)
    current = (theirs, generate_crypto(1))
    again = choose_sdes([generate_crypto(1), type(theirs)(3, theirs.suite, theirs.key)],
                        current)
    assert again[1].key == current[1].key and again[1].tag == 3
    fresh = choose_sdes([generate_crypto(1)], current)  # the peer re-keyed: so do we
    assert fresh[1].key != current[1].key


# ------------------------------------------------------------------------ session timers


# The legs negotiate through sipcore.invite_session (pbx/legs/timer.py, the tuple-shaped shim,
# is gone): the rules as CallSettings' defaults meet them.
@pytest.mark.parametrize(("header", "supported", "expected"), [
    ("1800", True, (1800, "uac")),
    ("1800", False, (1800, "uas")),
    ("1800;refresher=uac", False, (1800, "uas")),  # cannot refresh without timer support
    ("1800;refresher=uas", True, (1800, "uas")),
    ("7200;refresher=uac", True, (3600, "uac")),  # capped by ours
    ("30", True, (90, "uac")),  # raised to Min-SE
])
def test_negotiate_session_timer(header: str, supported: bool,
                                 expected: tuple[int, str]) -> None:
    se = parse_session_expires(header)
    assert se is not None
    granted = negotiate(se, supported, min_se=90, session_expires=3600)
    assert (granted.seconds, granted.refresher) == expected


def test_parse_se() -> None:
    assert parse_session_expires("1800;refresher=UAS") == SessionExpires(1800, "uas")
    with pytest.raises(RemoteProtocolError):
        parse_session_expires("abc")
    assert parse_session_expires(None) is None


# ------------------------------------------------------------------------------- DTMF


@pytest.mark.parametrize(("body", "digit"), [
    (b"Signal=5\r\nDuration=160\r\n", "5"),
    (b"signal= #\r\n", "#"),
    (b"Signal=10\r\n", "*"),
    (b"Signal=11\r\n", "#"),
    (b"Signal=X\r\n", None),
    (b"Duration=160\r\n", None),
])
def test_dtmf_from_info(body: bytes, digit: str | None) -> None:
    assert dtmf_from_info(body) == digit


class _Media:
    sample_rate = 8000

    def __init__(self, te: int | None) -> None:
        self.telephone_event_pt = te

    def get_frame(self) -> None:
        return None

    def put_frame(self, frame: object) -> None:
        pass


class _Call:
    def __init__(self) -> None:
        self.events: list[object] = []

    def post(self, event: object) -> None:
        self.events.append(event)


def _leg(te: int | None) -> Leg:
    leg = Leg(None)
    leg.media = _Media(te)  # type: ignore[assignment]
    return leg


def test_inband_detection_only_towards_an_rfc4733_leg() -> None:
    assert needs_inband_detection(_leg(None), _leg(101))
    assert not needs_inband_detection(_leg(101), _leg(101))
    assert not needs_inband_detection(_leg(None), _leg(None))  # tones pass in the audio
    plain = Leg(None)
    assert not needs_inband_detection(plain, _leg(101))  # no media yet


def test_inband_dtmf_posts_detected_digits() -> None:
    leg = Leg(None)
    call = _Call()
    leg.call = call  # type: ignore[assignment]
    port = InbandDtmf(leg, 8000)
    signal = np.concatenate([np.zeros(800, np.int16), dtmf_tone("4", 120),
                             np.zeros(1600, np.int16)])
    for i in range(0, signal.size - 159, 160):
        port.put_frame(signal[i:i + 160])
    assert call.events == [DtmfReceived(leg, "4", "inband")]


# --------------------------------------------------------------- final-response mapping


@pytest.mark.parametrize(("statuses", "timed_out", "expected"), [
    ([486], False, (RingOutcome.BUSY, 486)),
    ([480, 600], False, (RingOutcome.BUSY, 486)),
    ([], True, (RingOutcome.NO_ANSWER, 480)),
    ([603], False, (RingOutcome.REJECTED, 486)),
    ([404, 503], False, (RingOutcome.UNREACHABLE, 404)),
    ([408], False, (RingOutcome.UNREACHABLE, 480)),
    ([500, 503], False, (RingOutcome.UNREACHABLE, 500)),
])
def test_final_response_mapping(statuses: list[int], timed_out: bool,
                                expected: tuple[RingOutcome, int]) -> None:
    assert tell_outcome(statuses, timed_out) == expected
