"""SDES-SRTP: ``a=crypto`` (RFC 4568) and libsrtp contexts (RFC 3711) through pylibsrtp.

Theory of operation
-------------------
With SDES each side puts its own master key in its SDP (``a=crypto:<tag> <suite> inline:<key||salt
base64>[|lifetime][|MKI:len]``) and encrypts what it sends with it; the answer picks one offered
tag and suite and carries the answerer's key. An :class:`SrtpSession` therefore holds two libsrtp
sessions: an outbound one with our key and an inbound one with the peer's.

Inbound packets are authenticated before anything else looks at them: a bad tag or a replayed
index (libsrtp's 128-packet replay window, RFC 3711 §3.3.2) makes :meth:`SrtpSession.unprotect`
return ``None`` and count the reason, so a sprayer without the key cannot influence any state
(source latching, jitter buffers, RTCP). No I/O here: this is a sans-IO core.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

import pylibsrtp

from media.errors import MediaParseError

__all__ = [
    "SUITES",
    "CryptoAttribute",
    "SrtpSession",
    "answer_crypto",
    "generate_crypto",
    "parse_crypto",
]

#: Supported crypto suites → libsrtp profile (RFC 4568 §6.2; 30-byte key||salt for both).
SUITES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
_KEY_SALT_LEN = 30
_CRYPTO_RE = re.compile(r"^(\d{1,9})[ \t]+([A-Za-z0-9_]+)[ \t]+(\S+)(?:[ \t]+(.*))?$")
_LIFETIME_RE = re.compile(r"^(?:2\^(\d{1,2})|(\d{1,20}))$")
_MKI_RE = re.compile(r"^(\d{1,10}):(\d{1,3})$")


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """One ``a=crypto`` line (RFC 4568 §9.1) with a single inline key."""

    tag: int
    suite: str
    key: bytes  # master key || master salt (30 bytes)
    lifetime: int | None = None  # in packets
    mki: tuple[int, int] | None = None  # (value, length in bytes)
    session_params: str = ""

    def to_sdp(self) -> str:
        """The attribute value (what follows ``a=crypto:``)."""
        key = base64.b64encode(self.key).decode("ascii")
        inline = f"inline:{key}"
        if self.lifetime is not None:
            exp = self.lifetime.bit_length() - 1
            inline += f"|2^{exp}" if self.lifetime == 1 << exp else f"|{self.lifetime}"
        if self.mki is not None:
            inline += f"|{self.mki[0]}:{self.mki[1]}"
        tail = f" {self.session_params}" if self.session_params else ""
        return f"{self.tag} {self.suite} {inline}{tail}"

    def __str__(self) -> str:
        return self.to_sdp()


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse an ``a=crypto`` value; :class:`~media.errors.MediaParseError` for anything malformed.

    Unknown suites parse (so an offer can be scanned) but :func:`answer_crypto` skips them.
    """
    m = _CRYPTO_RE.match(value.strip())
    if m is None:
        raise MediaParseError("malformed a=crypto")
    tag = int(m.group(1))
    suite = m.group(2)
    key_params = m.group(3)
    if not key_params.startswith("inline:"):
        raise MediaParseError("a=crypto key method is not inline")
    parts = key_params[len("inline:"):].split("|")
    if len(parts) > 3:
        raise MediaParseError("a=crypto key parameters malformed")
    try:
        key = base64.b64decode(parts[0], validate=True)
    except (binascii.Error, ValueError):
        raise MediaParseError("a=crypto key is not base64") from None
    if suite in SUITES and len(key) != _KEY_SALT_LEN:
        raise MediaParseError("a=crypto key||salt has the wrong length")
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    for extra in parts[1:]:
        mk = _MKI_RE.match(extra)
        lt = _LIFETIME_RE.match(extra)
        if mk is not None and mki is None:
            mki = (int(mk.group(1)), int(mk.group(2)))
            if not 1 <= mki[1] <= 128:
                raise MediaParseError("a=crypto MKI length out of range")
        elif lt is not None and lifetime is None and mki is None:
            lifetime = 1 << int(lt.group(1)) if lt.group(1) else int(lt.group(2))
            if not 0 < lifetime <= 1 << 48:
                raise MediaParseError("a=crypto lifetime out of range")
        else:
            raise MediaParseError("a=crypto key parameters malformed")
    return CryptoAttribute(tag, suite, key, lifetime, mki, (m.group(4) or "").strip())


def generate_crypto(tag: int = 1, suite: str = "AES_CM_128_HMAC_SHA1_80") -> CryptoAttribute:
    """A fresh random master key and salt for an offer or an answer."""
    if suite not in SUITES:
        raise ValueError(f"unsupported SRTP suite {suite!r}")
    return CryptoAttribute(tag, suite, os.urandom(_KEY_SALT_LEN))


def answer_crypto(offered: list[CryptoAttribute]) -> tuple[CryptoAttribute, CryptoAttribute] | None:
    """Pick the first offered line we support (no MKI, no session parameters).

    Returns ``(remote, local)``: the chosen offered attribute and our answer with the same tag and
    suite and a fresh key — or ``None`` (answer 488) when nothing is acceptable.
    """
    for attr in offered:
        if attr.suite in SUITES and attr.mki is None and not attr.session_params:
            return attr, generate_crypto(attr.tag, attr.suite)
    return None


class SrtpSession:
    """Protect with our key, unprotect with the peer's (one leg of an SDES-SRTP call)."""

    def __init__(self, local: CryptoAttribute, remote: CryptoAttribute) -> None:
        for attr in (local, remote):
            if attr.suite not in SUITES:
                raise ValueError(f"unsupported SRTP suite {attr.suite!r}")
        out_policy = pylibsrtp.Policy(
            key=local.key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=SUITES[local.suite],
        )
        in_policy = pylibsrtp.Policy(
            key=remote.key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=SUITES[remote.suite],
        )
        self._tx = pylibsrtp.Session(policy=out_policy)
        self._rx = pylibsrtp.Session(policy=in_policy)
        self.auth_failures = 0
        self.replays = 0

    def protect(self, packet: bytes) -> bytes:
        """Encrypt and authenticate one RTP packet."""
        out: bytes = self._tx.protect(packet)
        return out

    def protect_rtcp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate one (compound) RTCP packet."""
        out: bytes = self._tx.protect_rtcp(packet)
        return out

    def _count(self, exc: Exception) -> None:
        if "replay" in str(exc):
            self.replays += 1
        else:
            self.auth_failures += 1

    def unprotect(self, packet: bytes) -> bytes | None:
        """The plain RTP packet, or ``None`` (counted) when authentication or replay check fails."""
        try:
            out: bytes = self._rx.unprotect(packet)
        except pylibsrtp.Error as exc:
            self._count(exc)
            return None
        return out

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The plain RTCP packet, or ``None`` (counted) on failure."""
        try:
            out: bytes = self._rx.unprotect_rtcp(packet)
        except pylibsrtp.Error as exc:
            self._count(exc)
            return None
        return out
