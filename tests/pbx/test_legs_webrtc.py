"""pbx.legs.webrtc: what makes an INVITE a browser's, and the direction of a re-answer."""

from __future__ import annotations

from pbx.legs.webrtc import _with_direction, is_webrtc_offer
from sipcore.message import Request, parse_message

SDP = ("v=0\r\no=- 42 7 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 {proto} 111 0\r\n"
       "c=IN IP4 127.0.0.1\r\na=sendrecv\r\na=ice-ufrag:abcd\r\na=rtpmap:111 opus/48000/2\r\n")


def _invite(body: str, content_type: str = "application/sdp") -> Request:
    text = ("INVITE sip:101@example.com SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\n"
            "From: <sip:100@example.com>;tag=1\r\nTo: <sip:101@example.com>\r\nCall-ID: c\r\n"
            f"CSeq: 1 INVITE\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}")
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def test_a_dtls_srtp_offer_is_a_browsers() -> None:
    assert is_webrtc_offer(_invite(SDP.format(proto="UDP/TLS/RTP/SAVPF")))
    assert not is_webrtc_offer(_invite(SDP.format(proto="RTP/AVP")))
    assert not is_webrtc_offer(_invite(SDP.format(proto="RTP/SAVP")))
    assert not is_webrtc_offer(_invite(""))  # no offer: a plain leg makes one
    assert not is_webrtc_offer(_invite("garbage", "application/sdp"))


def test_direction_of_a_re_answer_and_its_version() -> None:
    sdp = SDP.format(proto="UDP/TLS/RTP/SAVPF")
    held = _with_direction(sdp, "recvonly")
    assert "a=recvonly\r\n" in held and "a=sendrecv" not in held
    assert "o=- 42 8 IN IP4" in held  # changed: a new version (RFC 3264 §8)
    assert _with_direction(sdp, "sendrecv") == sdp  # unchanged: the very same SDP
    assert "o=- 42 9 IN IP4" in _with_direction(held, "sendrecv")
