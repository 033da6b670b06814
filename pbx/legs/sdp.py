"""SDP policy of our SIP legs: the codecs we offer and answer, and SDES (RFC 4568) key choice.

The ``a=crypto`` lines are read and written by :mod:`sipcore.sdp` (:func:`~sipcore.sdp.
parse_crypto`, :class:`~sipcore.sdp.SdesCrypto`); the keys the media layer runs SRTP with are
:class:`media.srtp.CryptoAttribute` (one key each). This module converts between the two, the
only place that sees both.
"""
from __future__ import annotations

from dataclasses import replace

from media.srtp import (
    SUITES,
    CryptoAttribute,
    answer_crypto,
    generate_crypto,
)
from sipcore.errors import SdesError
from sipcore.message import Request, Response
from sipcore.sdp import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    MediaDescription,
    SdesCrypto,
    SdesKey,
    SessionDescription,
    answer,
    parse_crypto,
)

#: Voice codecs in our order of preference; telephone-event at 8 kHz and at Opus's 48 kHz.
VOICE_CODECS: tuple[Codec, ...] = (PCMU, PCMA, G722, OPUS)
TELEPHONE_EVENT_48K = Codec("telephone-event", 48000, payload_type=102, fmtp="0-16")
ALL_CODECS: tuple[Codec, ...] = (*VOICE_CODECS, TELEPHONE_EVENT, TELEPHONE_EVENT_48K)


def is_sdp(message: Request | Response) -> bool:
    return bool(message.body) and (message.content_type or "") == "application/sdp"


#: Secure RTP profiles (RFC 3711/4585); SDES keys (RFC 4568) ride in their ``a=crypto`` lines.
SAVP_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
PLAIN_PROTOS = ("RTP/AVP", "RTP/AVPF")


#: Final responses to an INVITE that reject its offer's media: Unsupported Media Type, Not
#: Acceptable Here, Not Acceptable (RFC 3261 §21.4.13, §21.4.26, §21.6.4).
MEDIA_REJECTED = (415, 488, 606)
#: How many devices :meth:`B2bua.learn_srtp` remembers as wanting SRTP (oldest forgotten first).
SRTP_DEVICES_MAX = 10_000


def offer_keys() -> list[CryptoAttribute]:
    """Fresh SDES keys for an RTP/SAVP offer: one ``a=crypto`` line per suite we support,
    tags 1, 2, … in our order of preference (RFC 4568 §6.1)."""
    return [generate_crypto(tag, suite) for tag, suite in enumerate(SUITES, start=1)]


def first_audio(sdp: SessionDescription) -> MediaDescription | None:
    """The first active (port != 0) audio stream of ``sdp``."""
    return next((m for m in sdp.media if m.media == "audio" and m.port != 0), None)


def media_key(crypto: SdesCrypto) -> CryptoAttribute:
    """An ``a=crypto`` line as the media layer's key: its first key parameter. A line with
    several keys carries MKIs (RFC 4568 §6.1), which :func:`answer_crypto` does not take."""
    key = crypto.key
    return CryptoAttribute(crypto.tag, crypto.suite, key.key_salt, key.lifetime, key.mki,
                           " ".join(crypto.session_params))


def crypto_line(key: CryptoAttribute) -> str:
    """The ``a=crypto`` value of one of our keys (written by :mod:`sipcore.sdp`)."""
    params = tuple(key.session_params.split()) if key.session_params else ()
    return str(SdesCrypto(key.tag, key.suite, (SdesKey(key.key, key.lifetime, key.mki),), params))


def offered_crypto(sdp: SessionDescription) -> list[CryptoAttribute] | None:
    """The parseable ``a=crypto`` lines of the first audio stream when it is RTP/SAVP(F);
    None when the stream is plain RTP (or there is none). A malformed line
    (:class:`~sipcore.errors.SdesError`) is skipped: another line may still be usable, and
    :func:`choose_sdes` answers 488 when none is."""
    m = first_audio(sdp)
    if m is None or m.proto not in SAVP_PROTOS:
        return None
    found: list[CryptoAttribute] = []
    for value in m.get_attributes("crypto"):
        try:
            found.append(media_key(parse_crypto(value)))
        except SdesError:
            continue
    return found


def choose_sdes(offered: list[CryptoAttribute],
                current: tuple[CryptoAttribute, CryptoAttribute] | None = None
                ) -> tuple[CryptoAttribute, CryptoAttribute]:
    """``(remote, local)`` keys for an SDES offer: the current pair again when the offer still
    carries the peer's current key (a re-INVITE that changes nothing else), else the first
    acceptable line with a fresh key of ours. SdesError (a ParseError, 488) when nothing is
    acceptable."""
    if current is not None:
        for attr in offered:
            if attr.key == current[0].key and attr.suite == current[0].suite and \
                    attr.mki is None and not attr.session_params:
                return attr, replace(current[1], tag=attr.tag)
    chosen = answer_crypto(offered)
    if chosen is None:
        raise SdesError("No acceptable SRTP crypto suite")
    return chosen


def leg_answer(offer: SessionDescription, *, current: str,
               sdes: tuple[CryptoAttribute, CryptoAttribute] | None, address: str, port: int,
               session_id: int, session_version: int) -> SessionDescription:
    """One leg's SDP answer (RFC 3264): our codecs with ``current`` (the leg's codec) first so a
    re-offer keeps it; RTP/SAVP(F) with our ``a=crypto`` when ``sdes`` is set, plain RTP/AVP(F)
    otherwise. ParseError(488) when nothing is acceptable."""
    codecs = sorted(ALL_CODECS, key=lambda c: c.name.upper() != current.upper())
    ans = answer(offer, codecs, address=address, port=port, session_id=session_id,
                 session_version=session_version, rtcp_mux=False, username="asyncpbx",
                 protos=SAVP_PROTOS if sdes is not None else PLAIN_PROTOS)
    if sdes is not None:
        for m in ans.media:
            if m.port != 0:  # before the direction attribute, which answer() puts last
                m.attributes.insert(len(m.attributes) - 1, ("crypto", crypto_line(sdes[1])))
    return ans

