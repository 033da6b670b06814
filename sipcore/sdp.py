"""SDP (RFC 8866) model, parser, serializer, and RFC 3264 offer/answer helpers.

The model is a plain tree of dataclasses: :class:`SessionDescription` holds the session-level
fields and a list of :class:`MediaDescription`. Attributes (``a=``) are kept in order as
``(name, value)`` pairs (``value`` is ``None`` for property attributes such as ``a=rtcp-mux``),
so everything we do not interpret (``a=crypto``, ``a=ice-ufrag``, ``a=ssrc`` ...) survives a
parse/serialize round trip. Typed views are derived on demand: :attr:`MediaDescription.rtpmaps`,
:attr:`MediaDescription.fmtp`, :attr:`MediaDescription.ptime`, :attr:`MediaDescription.direction`.

:func:`parse_sdp` raises :class:`~sipcore.errors.ParseError` (status hint 400) on anything that
is not a well-formed session description: out-of-range ports or payload types
(``m=audio 1 RTP/AVP 4294967296``), NUL or other control bytes, missing mandatory lines, absurd
sizes. Unknown line types are ignored, as RFC 8866 §5 allows.

Offer/answer (RFC 3264): :func:`create_offer` builds an offer from our codec list,
:func:`answer` answers an offer (our codec preference intersected with the offer, m-line order
mirrored, rejected streams with port 0, direction mirrored, telephone-event kept when offered),
:func:`hold` / :func:`resume` / :func:`with_direction` produce re-offers that change the
direction (RFC 3264 §8.4), :func:`negotiated_codecs` reads what an answer settled on.

SDES (RFC 4568): :func:`parse_crypto` reads one ``a=crypto`` value into a :class:`SdesCrypto`
(tag, crypto-suite, one or more ``inline:`` key parameters with their lifetime and MKI, session
parameters) and ``str()`` writes it back; :meth:`MediaDescription.crypto` parses every line of a
stream.  A malformed line raises :class:`~sipcore.errors.SdesError`, a ``ParseError`` with status
hint 488 (Not Acceptable Here), so the caller can skip the line or turn it into the 488 of an
offer that has no usable line.  Which suites we accept and which keys we use is policy, not here.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from sipcore.errors import ParseError, SdesError

__all__ = [
    "G722",
    "OPUS",
    "PCMA",
    "PCMU",
    "SDES_KEY_LENGTHS",
    "TELEPHONE_EVENT",
    "Codec",
    "Connection",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SdesCrypto",
    "SdesKey",
    "SessionDescription",
    "Timing",
    "answer",
    "create_offer",
    "hold",
    "negotiated_codecs",
    "parse_crypto",
    "parse_sdp",
    "resume",
    "with_direction",
]

#: Largest session description we accept (bytes).
MAX_SDP_SIZE = 65536
#: Most m-lines / attributes per description we accept.
MAX_MEDIA = 64
MAX_ATTRIBUTES = 1024

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: How an answer mirrors the offered direction (RFC 3264 §6.1).
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
           "inactive": "inactive"}
_RTP_PROTOS = {"RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVP",
               "UDP/TLS/RTP/SAVPF"}

# -- model --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (f"{self.username} {self.session_id} {self.session_version} {self.nettype} "
                f"{self.addrtype} {self.address}")


@dataclass(slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (TTL/count suffixes kept in address)."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class Timing:
    """``t=<start> <stop>`` plus its ``r=`` repeat lines (kept as text)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]``."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        ch = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{ch}"


# Static payload types of RFC 3551 that need no rtpmap (audio ones we may meet).
_STATIC: dict[int, RtpMap] = {
    0: RtpMap(0, "PCMU", 8000),
    3: RtpMap(3, "GSM", 8000),
    4: RtpMap(4, "G723", 8000),
    8: RtpMap(8, "PCMA", 8000),
    9: RtpMap(9, "G722", 8000),
    13: RtpMap(13, "CN", 8000),
    18: RtpMap(18, "G729", 8000),
}


@dataclass(slots=True)
class MediaDescription:
    """One ``m=`` section with its ``i=``, ``c=``, ``b=``, ``k=`` and ``a=`` lines."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    info: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    # -- attributes --------------------------------------------------------------------------

    def get_attribute(self, name: str) -> str | None:
        """Value of the first ``a=name[:value]`` (``""`` for a property attribute), or None."""
        for n, v in self.attributes:
            if n == name:
                return "" if v is None else v
        return None

    def get_attributes(self, name: str) -> list[str]:
        """Values of every ``a=name`` (``""`` for property attributes)."""
        return ["" if v is None else v for n, v in self.attributes if n == name]

    def has_attribute(self, name: str) -> bool:
        """True when ``a=name`` is present."""
        return any(n == name for n, _ in self.attributes)

    def remove_attribute(self, name: str) -> None:
        """Drop every ``a=name``."""
        self.attributes = [(n, v) for n, v in self.attributes if n != name]

    @property
    def payload_types(self) -> list[int]:
        """The formats as RTP payload types (RTP profiles only; others give [])."""
        if self.proto not in _RTP_PROTOS:
            return []
        return [int(f) for f in self.formats if f.isascii() and f.isdigit() and len(f) <= 3]

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """Payload type -> RtpMap for every format, static types filled in (RFC 3551)."""
        out: dict[int, RtpMap] = {}
        for value in self.get_attributes("rtpmap"):
            rm = _parse_rtpmap(value)
            out.setdefault(rm.payload_type, rm)
        for pt in self.payload_types:
            if pt not in out and pt in _STATIC:
                out[pt] = _STATIC[pt]
        return out

    @property
    def fmtp(self) -> dict[int, str]:
        """Payload type -> format parameters (``a=fmtp``)."""
        out: dict[int, str] = {}
        for value in self.get_attributes("fmtp"):
            pt, _, params = value.partition(" ")
            if pt.isascii() and pt.isdigit() and len(pt) <= 3:
                out.setdefault(int(pt), params.strip())
        return out

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds, or None."""
        value = self.get_attribute("ptime")
        if value is None:
            return None
        try:
            return int(float(value))
        except ValueError:
            return None

    @property
    def direction(self) -> str:
        """The media-level direction attribute (``sendrecv`` when none is given here)."""
        for n, _ in self.attributes:
            if n in DIRECTIONS:
                return n
        return "sendrecv"

    @direction.setter
    def direction(self, value: str) -> None:
        if value not in DIRECTIONS:
            raise ValueError(f"not an SDP direction: {value!r}")
        attrs = [(n, v) for n, v in self.attributes if n not in DIRECTIONS]
        attrs.append((value, None))
        self.attributes = attrs

    def crypto(self) -> list[SdesCrypto]:
        """Every ``a=crypto`` line of this stream, parsed (RFC 4568 §9.1), in order.

        Raises :class:`~sipcore.errors.SdesError` (hint 488) on the first malformed line; use
        :func:`parse_crypto` on :meth:`get_attributes` ``("crypto")`` to skip bad lines instead.
        """
        return [parse_crypto(value) for value in self.get_attributes("crypto")]

    @property
    def rtcp_mux(self) -> bool:
        """True when ``a=rtcp-mux`` is present (RFC 5761)."""
        return self.has_attribute("rtcp-mux")

    @property
    def connection(self) -> Connection | None:
        """The first media-level ``c=`` line."""
        return self.connections[0] if self.connections else None

    def copy(self) -> MediaDescription:
        """A deep-enough copy (lists copied)."""
        return replace(
            self,
            formats=list(self.formats),
            connections=[replace(c) for c in self.connections],
            bandwidths=list(self.bandwidths),
            attributes=list(self.attributes),
        )


@dataclass(slots=True)
class SessionDescription:
    """A whole session description (RFC 8866 §5)."""

    origin: Origin = field(default_factory=Origin)
    name: str = "-"
    version: int = 0
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=lambda: [Timing()])
    zone: str | None = None
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    def get_attribute(self, name: str) -> str | None:
        """Value of the first session-level ``a=name`` (``""`` for a property), or None."""
        for n, v in self.attributes:
            if n == name:
                return "" if v is None else v
        return None

    @property
    def direction(self) -> str:
        """The session-level direction (``sendrecv`` when none is given)."""
        for n, _ in self.attributes:
            if n in DIRECTIONS:
                return n
        return "sendrecv"

    def media_direction(self, index: int) -> str:
        """Effective direction of ``media[index]``: its own attribute, else the session's."""
        m = self.media[index]
        for n, _ in m.attributes:
            if n in DIRECTIONS:
                return n
        return self.direction

    def media_connection(self, index: int) -> Connection | None:
        """Effective connection of ``media[index]``: its own ``c=``, else the session's."""
        return self.media[index].connection or self.connection

    def copy(self) -> SessionDescription:
        """A copy that can be modified without touching this one."""
        return replace(
            self,
            origin=replace(self.origin),
            emails=list(self.emails),
            phones=list(self.phones),
            connection=None if self.connection is None else replace(self.connection),
            bandwidths=list(self.bandwidths),
            timings=[replace(t, repeats=list(t.repeats)) for t in self.timings],
            attributes=list(self.attributes),
            media=[m.copy() for m in self.media],
        )

    def serialize(self) -> bytes:
        """The wire form (CRLF line ends, UTF-8)."""
        return str(self).encode("utf-8", "surrogateescape")

    def __str__(self) -> str:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.name}"]
        if self.info is not None:
            lines.append(f"i={self.info}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        lines += [f"e={e}" for e in self.emails]
        lines += [f"p={p}" for p in self.phones]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"b={t}:{v}" for t, v in self.bandwidths]
        for t in self.timings or [Timing()]:
            lines.append(f"t={t.start} {t.stop}")
            lines += [f"r={r}" for r in t.repeats]
        if self.zone is not None:
            lines.append(f"z={self.zone}")
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines += [_attr_line(n, v) for n, v in self.attributes]
        for m in self.media:
            port = str(m.port) if m.port_count is None else f"{m.port}/{m.port_count}"
            lines.append(f"m={m.media} {port} {m.proto} {' '.join(m.formats)}")
            if m.info is not None:
                lines.append(f"i={m.info}")
            lines += [f"c={c}" for c in m.connections]
            lines += [f"b={t}:{v}" for t, v in m.bandwidths]
            if m.key is not None:
                lines.append(f"k={m.key}")
            lines += [_attr_line(n, v) for n, v in m.attributes]
        return "\r\n".join(lines) + "\r\n"


def _attr_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


# -- parsing -----------------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _uint(text: str, hi: int, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise ParseError(f"Bad SDP {what}")
    value = int(text)
    if value > hi:
        raise ParseError(f"Bad SDP {what}")
    return value


@functools.lru_cache(maxsize=512)
def _parse_rtpmap(value: str) -> RtpMap:
    # Memoised: the same few rtpmap lines ("0 PCMU/8000" ...) arrive in every offer, and an
    # m-line's rtpmaps are derived on demand several times per negotiation. RtpMap is frozen,
    # so sharing one is safe; a bad line raises every time (exceptions are not cached).
    pt, _, rest = value.partition(" ")
    parts = rest.strip().split("/")
    if not parts[0] or len(parts) not in (2, 3) or _TOKEN.fullmatch(parts[0]) is None:
        raise ParseError("Bad SDP rtpmap")
    channels = _uint(parts[2], 255, "rtpmap") if len(parts) == 3 else 1
    return RtpMap(_uint(pt, 127, "rtpmap"), parts[0], _uint(parts[1], 10**7, "rtpmap"),
                  channels or 1)


def _parse_connection(value: str) -> Connection:
    parts = value.split(" ")
    if len(parts) != 3 or not all(parts):
        raise ParseError("Bad SDP connection")
    return Connection(parts[2], parts[1], parts[0])


def _parse_bandwidth(value: str) -> tuple[str, int]:
    bwtype, colon, bw = value.partition(":")
    if not colon or _TOKEN.fullmatch(bwtype) is None:
        raise ParseError("Bad SDP bandwidth")
    return bwtype, _uint(bw, 2**32 - 1, "bandwidth")


def _parse_media(value: str) -> MediaDescription:
    parts = value.split(" ")
    if len(parts) < 4 or not all(parts):
        raise ParseError("Bad SDP media")
    media, port_text, proto = parts[0], parts[1], parts[2]
    if _TOKEN.fullmatch(media) is None or re.fullmatch(r"[A-Za-z0-9/\-_.]+", proto) is None:
        raise ParseError("Bad SDP media")
    port_s, slash, count_s = port_text.partition("/")
    port = _uint(port_s, 65535, "port")
    count = _uint(count_s, 65535, "port") if slash else None
    if count == 0:
        raise ParseError("Bad SDP port")
    formats = parts[3:]
    if proto in _RTP_PROTOS:
        for f in formats:
            _uint(f, 127, "payload type")
    else:
        for f in formats:
            if _CONTROL.search(f):
                raise ParseError("Bad SDP media")
    return MediaDescription(media, port, proto, formats, count)


def _parse_attribute(value: str) -> tuple[str, str | None]:
    name, colon, v = value.partition(":")
    if _TOKEN.fullmatch(name) is None:
        raise ParseError("Bad SDP attribute")
    if not colon:
        return name, None
    if name == "rtpmap":
        _parse_rtpmap(v)
    return name, v


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse a session description; raises ParseError on anything malformed.

    Accepts CRLF or bare-LF line ends. ``v=``, ``o=``, ``s=`` and at least one ``t=`` are
    required (a missing ``s=``/``t=`` is tolerated, as many phones omit them), and every RTP
    media section needs a connection address, given per media or for the session.
    """
    if len(data) > MAX_SDP_SIZE:
        raise ParseError("SDP too large")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("Bad SDP encoding") from None
    else:
        text = data
    if "\x00" in text:
        raise ParseError("NUL in SDP")
    text = text.replace("\r\n", "\n")
    if _CONTROL.search(text):  # control characters other than the line ends (TAB is allowed)
        raise ParseError("Bad SDP line")
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise ParseError("Bad SDP version")
    sd = SessionDescription(timings=[])
    have_origin = False
    cur: MediaDescription | None = None
    n_attr = 0
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=":
            raise ParseError("Bad SDP line")
        kind, value = line[0], line[2:]
        if kind == "a":
            n_attr += 1
            if n_attr > MAX_ATTRIBUTES:
                raise ParseError("Too many SDP attributes")
            attr = _parse_attribute(value)
            (sd.attributes if cur is None else cur.attributes).append(attr)
        elif kind == "m":
            if len(sd.media) >= MAX_MEDIA:
                raise ParseError("Too many SDP media")
            cur = _parse_media(value)
            sd.media.append(cur)
        elif kind == "c":
            conn = _parse_connection(value)
            if cur is None:
                if sd.connection is not None:
                    raise ParseError("Bad SDP connection")
                sd.connection = conn
            else:
                cur.connections.append(conn)
        elif kind == "b":
            (sd.bandwidths if cur is None else cur.bandwidths).append(_parse_bandwidth(value))
        elif kind == "i":
            if cur is None:
                sd.info = value
            else:
                cur.info = value
        elif kind == "k":
            if cur is None:
                sd.key = value
            else:
                cur.key = value
        elif cur is not None and kind in "ovsuepztr":
            raise ParseError("Bad SDP line order")
        elif kind == "o":
            parts = value.split(" ")
            if have_origin or len(parts) != 6 or not all(parts):
                raise ParseError("Bad SDP origin")
            sd.origin = Origin(parts[0], _uint(parts[1], 10**20, "origin"),
                               _uint(parts[2], 10**20, "origin"), parts[3], parts[4], parts[5])
            have_origin = True
        elif kind == "s":
            sd.name = value
        elif kind == "u":
            sd.uri = value
        elif kind == "e":
            sd.emails.append(value)
        elif kind == "p":
            sd.phones.append(value)
        elif kind == "t":
            parts = value.split(" ")
            if len(parts) != 2:
                raise ParseError("Bad SDP timing")
            sd.timings.append(Timing(_uint(parts[0], 2**64, "timing"),
                                     _uint(parts[1], 2**64, "timing")))
        elif kind == "r":
            if not sd.timings or not value:
                raise ParseError("Bad SDP repeat")
            sd.timings[-1].repeats.append(value)
        elif kind == "z":
            sd.zone = value
        elif kind == "v":
            raise ParseError("Bad SDP version")
        # other letters: ignored (RFC 8866 §5)
    if not have_origin:
        raise ParseError("Missing SDP origin")
    if not sd.timings:
        sd.timings.append(Timing())
    for m in sd.media:
        if m.proto in _RTP_PROTOS and m.port and not m.connections and sd.connection is None:
            raise ParseError("Missing SDP connection")
    return sd


# -- offer/answer (RFC 3264) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """A codec we can use: encoding name, RTP clock rate, channels, the payload type we put in
    offers (static ones for PCMU/PCMA/G722, a dynamic one otherwise) and our ``fmtp``."""

    name: str
    clock_rate: int
    channels: int = 1
    payload_type: int = 96
    fmtp: str | None = None

    def matches(self, rm: RtpMap) -> bool:
        """True when an offered rtpmap is this codec (name case-insensitive, RFC 4855 §3)."""
        return (
            rm.encoding.lower() == self.name.lower()
            and rm.clock_rate == self.clock_rate
            and (rm.channels or 1) == self.channels
        )

    def rtpmap(self, payload_type: int | None = None) -> RtpMap:
        """This codec as an rtpmap with ``payload_type`` (default: ours)."""
        pt = self.payload_type if payload_type is None else payload_type
        return RtpMap(pt, self.name, self.clock_rate, self.channels)


PCMU = Codec("PCMU", 8000, payload_type=0)
PCMA = Codec("PCMA", 8000, payload_type=8)
#: G.722 is signalled with an 8000 Hz RTP clock although it samples at 16 kHz (RFC 3551 §4.5.2)
G722 = Codec("G722", 8000, payload_type=9)
OPUS = Codec("opus", 48000, 2, payload_type=111, fmtp="minptime=10;useinbandfec=1")
TELEPHONE_EVENT = Codec("telephone-event", 8000, payload_type=101, fmtp="0-16")


@functools.lru_cache(maxsize=256)
def _codec_attrs(rm: RtpMap, fmtp: str | None) -> tuple[tuple[str, str | None], ...]:
    # memoised: every offer and answer lists the same few codecs (RtpMap is frozen)
    if fmtp:
        return (("rtpmap", str(rm)), ("fmtp", f"{rm.payload_type} {fmtp}"))
    return (("rtpmap", str(rm)),)


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def create_offer(
    codecs: Sequence[Codec],
    *,
    address: str,
    port: int,
    session_id: int,
    session_version: int = 0,
    username: str = "-",
    session_name: str = "-",
    direction: str = "sendrecv",
    ptime: int | None = 20,
    rtcp_mux: bool = False,
    proto: str = "RTP/AVP",
    extra_attributes: Sequence[tuple[str, str | None]] = (),
) -> SessionDescription:
    """One-audio-stream offer listing ``codecs`` in our order of preference."""
    attrs: list[tuple[str, str | None]] = []
    for c in codecs:
        attrs += _codec_attrs(c.rtpmap(), c.fmtp)
    if ptime:
        attrs.append(("ptime", str(ptime)))
    if rtcp_mux:
        attrs.append(("rtcp-mux", None))
    attrs += list(extra_attributes)
    attrs.append((direction, None))
    media = MediaDescription("audio", port, proto, [str(c.payload_type) for c in codecs],
                             attributes=attrs)
    return SessionDescription(
        origin=Origin(username, session_id, session_version, "IN", _addrtype(address), address),
        name=session_name,
        connection=Connection(address, _addrtype(address)),
        media=[media],
    )


def _pick(offered: MediaDescription, codecs: Sequence[Codec]) -> list[tuple[RtpMap, Codec]]:
    """Our codecs in our order of preference that the offer has, with the offer's PTs."""
    maps = offered.rtpmaps
    offered_maps = [rm for pt in offered.payload_types if (rm := maps.get(pt)) is not None]
    chosen: list[tuple[RtpMap, Codec]] = []
    for codec in codecs:
        for rm in offered_maps:
            if codec.matches(rm):
                chosen.append((rm, codec))
                break
    return chosen


def answer(
    offer: SessionDescription,
    supported_codecs: Sequence[Codec],
    *,
    address: str,
    port: int | Sequence[int],
    session_id: int,
    session_version: int = 0,
    username: str = "-",
    session_name: str = "-",
    direction: str = "sendrecv",
    protos: Sequence[str] = ("RTP/AVP", "RTP/AVPF"),
    rtcp_mux: bool = True,
    ptime: int | None = None,
    max_audio_streams: int = 1,
) -> SessionDescription:
    """Answer ``offer`` (RFC 3264 §6).

    * one m-line per offered m-line, in the same order; streams we cannot take (not audio,
      a transport profile outside ``protos``, no codec in common, more than
      ``max_audio_streams``) are rejected with port 0 and the offered formats;
    * accepted audio streams list ``supported_codecs`` in *our* order of preference, limited to
      those offered, with the offer's payload type numbers (§6.1); telephone-event (when in
      ``supported_codecs`` and offered at a matching clock rate) is kept after the voice codec;
    * the direction is the offer's mirrored (sendonly→recvonly, recvonly→sendonly, inactive
      stays) and further limited by our own ``direction`` wish;
    * ``rtcp-mux`` is echoed when offered and ``rtcp_mux`` is true (RFC 5761 §5.1.1).

    ``port`` is one port (used for the first accepted stream, +2 for each further one) or one
    per accepted stream. Raises ParseError (hint 488) when no stream can be accepted.
    """
    ports = [port] if isinstance(port, int) else list(port)
    voice = [c for c in supported_codecs if c.name.lower() != "telephone-event"]
    events = [c for c in supported_codecs if c.name.lower() == "telephone-event"]
    out = SessionDescription(
        origin=Origin(username, session_id, session_version, "IN", _addrtype(address), address),
        name=session_name,
        connection=Connection(address, _addrtype(address)),
        timings=[Timing(t.start, t.stop) for t in offer.timings] or [Timing()],
    )
    accepted = 0
    for index, m in enumerate(offer.media):
        rejected = MediaDescription(m.media, 0, m.proto, list(m.formats))
        chosen = _pick(m, voice) if m.media == "audio" and m.proto in protos else []
        if not chosen or m.port == 0 or accepted >= max_audio_streams:
            out.media.append(rejected)
            continue
        # telephone-event must run at the clock of the voice codec (RFC 4733 §2.1): take the
        # offered one with that rate, whatever rate our own Codec entry names
        clock = chosen[0][0].clock_rate
        maps = m.rtpmaps
        dtmf = [
            (maps[pt], events[0]) for pt in m.payload_types
            if events and pt in maps and maps[pt].encoding.lower() == "telephone-event"
            and maps[pt].clock_rate == clock
        ]
        ours = chosen + dtmf[:1]
        fmtps = m.fmtp
        attrs: list[tuple[str, str | None]] = []
        for rm, codec in ours:
            attrs += _codec_attrs(rm, fmtps.get(rm.payload_type) or codec.fmtp)
        if ptime:
            attrs.append(("ptime", str(ptime)))
        elif m.ptime:
            attrs.append(("ptime", str(m.ptime)))
        if rtcp_mux and m.rtcp_mux:
            attrs.append(("rtcp-mux", None))
        wanted = _MIRROR[offer.media_direction(index)]
        attrs.append((_combine(wanted, direction), None))
        media_port = (ports[accepted] if accepted < len(ports)
                      else ports[-1] + 2 * (accepted - len(ports) + 1))
        out.media.append(
            MediaDescription("audio", media_port, m.proto, [str(rm.payload_type) for rm, _ in ours],
                             attributes=attrs)
        )
        accepted += 1
    if not accepted:
        raise ParseError("No acceptable media", 488)
    return out


def _combine(offered_mirror: str, ours: str) -> str:
    """Intersect two directions (what the offer permits and what we want)."""
    send = offered_mirror in ("sendrecv", "sendonly") and ours in ("sendrecv", "sendonly")
    recv = offered_mirror in ("sendrecv", "recvonly") and ours in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly",
            (False, False): "inactive"}[(send, recv)]


def with_direction(sdp: SessionDescription, direction: str) -> SessionDescription:
    """A re-offer of ``sdp`` with every active stream set to ``direction`` and the origin
    version incremented (RFC 3264 §8: a changed description needs a new version)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"not an SDP direction: {direction!r}")
    new = sdp.copy()
    new.attributes = [(n, v) for n, v in new.attributes if n not in DIRECTIONS]
    for m in new.media:
        if m.port != 0:
            m.direction = direction
    new.origin.session_version += 1
    return new


def hold(sdp: SessionDescription) -> SessionDescription:
    """Put streams on hold (RFC 3264 §8.4): sendrecv→sendonly, recvonly→inactive."""
    new = sdp.copy()
    for i, m in enumerate(new.media):
        if m.port != 0:
            m.direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(
                sdp.media_direction(i), sdp.media_direction(i)
            )
    new.attributes = [(n, v) for n, v in new.attributes if n not in DIRECTIONS]
    new.origin.session_version += 1
    return new


def resume(sdp: SessionDescription) -> SessionDescription:
    """Take streams off hold: sendonly→sendrecv, inactive→recvonly."""
    new = sdp.copy()
    for i, m in enumerate(new.media):
        if m.port != 0:
            m.direction = {"sendonly": "sendrecv", "inactive": "recvonly"}.get(
                sdp.media_direction(i), sdp.media_direction(i)
            )
    new.attributes = [(n, v) for n, v in new.attributes if n not in DIRECTIONS]
    new.origin.session_version += 1
    return new


def negotiated_codecs(media: MediaDescription) -> list[RtpMap]:
    """The rtpmaps of an m-line in its order (first = the one to send), [] when rejected."""
    if media.port == 0:
        return []
    maps = media.rtpmaps
    return [maps[pt] for pt in media.payload_types if pt in maps]


# -- SDES a=crypto (RFC 4568) ------------------------------------------------------------------

#: Length of the master key || master salt of the crypto-suites we know (RFC 4568 §6.2,
#: RFC 6188 §7.1, RFC 7714 §12). Lines with an unknown suite parse with any key length.
SDES_KEY_LENGTHS: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "F8_128_HMAC_SHA1_80": 30,
    "AES_192_CM_HMAC_SHA1_80": 38,
    "AES_192_CM_HMAC_SHA1_32": 38,
    "AES_256_CM_HMAC_SHA1_80": 46,
    "AES_256_CM_HMAC_SHA1_32": 46,
    "AEAD_AES_128_GCM": 28,
    "AEAD_AES_256_GCM": 44,
}
#: RFC 4568 §6.1: an SRTP master key lives for at most 2^48 packets.
SDES_MAX_LIFETIME = 1 << 48

_WSP = re.compile(r"[ \t]+")
_SUITE = re.compile(r"[A-Za-z0-9_]+")
_DIGITS = re.compile(r"[0-9]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_VCHAR = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class SdesKey:
    """One key-param of an ``a=crypto`` line: ``inline:<key||salt>[|<lifetime>][|<MKI>:<len>]``
    (RFC 4568 §6.1). ``lifetime`` is in packets; ``mki`` is (value, length in bytes)."""

    key_salt: bytes
    lifetime: int | None = None
    mki: tuple[int, int] | None = None

    def __str__(self) -> str:
        text = "inline:" + base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            exp = self.lifetime.bit_length() - 1
            text += f"|2^{exp}" if self.lifetime == 1 << exp else f"|{self.lifetime}"
        if self.mki is not None:
            text += f"|{self.mki[0]}:{self.mki[1]}"
        return text


@dataclass(frozen=True, slots=True)
class SdesCrypto:
    """One ``a=crypto`` attribute (RFC 4568 §9.1): tag, crypto-suite, key parameters (one, or
    several each with an MKI) and session parameters (``KDR=``, ``UNENCRYPTED_SRTP``,
    ``WSH=`` …, kept verbatim in order). ``str()`` is the attribute value (after
    ``a=crypto:``)."""

    tag: int
    suite: str
    keys: tuple[SdesKey, ...]
    session_params: tuple[str, ...] = ()

    @property
    def key(self) -> SdesKey:
        """The first (usually the only) key parameter."""
        return self.keys[0]

    def __str__(self) -> str:
        parts = [str(self.tag), self.suite, ";".join(str(k) for k in self.keys),
                 *self.session_params]
        return " ".join(parts)


def _parse_sdes_key(text: str, suite: str) -> SdesKey:
    method, colon, info = text.partition(":")
    if not colon:
        raise SdesError("a=crypto key parameter has no key method")
    if method.lower() != "inline":
        # §9.1 allows other key methods; none is defined, so none is usable
        raise SdesError(f"a=crypto key method {method[:20]!r} is not inline")
    fields = info.split("|")
    if len(fields) > 3:
        raise SdesError("a=crypto key parameters malformed")
    encoded = fields[0]
    if _BASE64.fullmatch(encoded) is None:
        raise SdesError("a=crypto key is not base64")
    # some peers drop the base64 padding (46-byte AES-256 keys): tolerate it
    encoded += "=" * (-len(encoded) % 4)
    try:
        key_salt = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SdesError("a=crypto key is not base64") from None
    expected = SDES_KEY_LENGTHS.get(suite)
    if not key_salt or (expected is not None and len(key_salt) != expected):
        raise SdesError("a=crypto key||salt has the wrong length for its suite")
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    for extra in fields[1:]:
        value, colon, length = extra.partition(":")
        if colon:  # MKI, always last (§9.1: key-salt ["|" lifetime] ["|" mki])
            if mki is not None or _DIGITS.fullmatch(value) is None or len(value) > 40 \
                    or _DIGITS.fullmatch(length) is None or len(length) > 3:
                raise SdesError("a=crypto MKI malformed")
            mki = (int(value), int(length))
            if not 1 <= mki[1] <= 128:
                raise SdesError("a=crypto MKI length out of range")
            if mki[0] >= 1 << (8 * mki[1]):
                raise SdesError("a=crypto MKI value does not fit its length")
        else:
            if lifetime is not None or mki is not None:
                raise SdesError("a=crypto key parameters malformed")
            power = value.startswith("2^")
            digits = value[2:] if power else value
            if _DIGITS.fullmatch(digits) is None or len(digits) > 20:
                raise SdesError("a=crypto lifetime malformed")
            number = int(digits)
            lifetime = (1 << number if number <= 48 else 0) if power else number
            if not 0 < lifetime <= SDES_MAX_LIFETIME:
                raise SdesError("a=crypto lifetime out of range")
    return SdesKey(key_salt, lifetime, mki)


def _check_session_param(param: str) -> None:
    """The session parameters of RFC 4568 §6.3 whose values we can check; others are kept."""
    name, eq, value = param.partition("=")
    upper = name.upper()
    if upper in ("KDR", "WSH"):
        if not eq or _DIGITS.fullmatch(value) is None or len(value) > 10:
            raise SdesError(f"a=crypto {upper} malformed")
        if upper == "KDR" and int(value) > 24:
            raise SdesError("a=crypto KDR out of range")
        if upper == "WSH" and int(value) < 64:
            raise SdesError("a=crypto WSH below 64")
    elif upper in ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP") and eq:
        raise SdesError(f"a=crypto {upper} takes no value")


def parse_crypto(value: str) -> SdesCrypto:
    """Parse the value of one ``a=crypto`` attribute (RFC 4568 §9.1)::

        <tag> 1*WSP <crypto-suite> 1*WSP <key-params> *(1*WSP <session-param>)

    Unknown crypto-suites parse (so an offer can be scanned; choosing one is policy), with any
    key length; the suites of :data:`SDES_KEY_LENGTHS` must carry exactly their key||salt.
    Several key parameters (``;``-separated) must each have an MKI of one length (§6.1).
    Raises :class:`~sipcore.errors.SdesError` (hint 488) on anything malformed.
    """
    if len(value) > 4096:
        raise SdesError("a=crypto too long")
    fields = _WSP.split(value.strip(" \t"))
    if len(fields) < 3:
        raise SdesError("malformed a=crypto")
    tag_text, suite, key_params = fields[0], fields[1], fields[2]
    if _DIGITS.fullmatch(tag_text) is None or len(tag_text) > 9:
        raise SdesError("a=crypto tag malformed")
    if _SUITE.fullmatch(suite) is None:
        raise SdesError("a=crypto suite malformed")
    keys = tuple(_parse_sdes_key(part, suite) for part in key_params.split(";"))
    if len(keys) > 1:
        lengths = {k.mki[1] if k.mki is not None else None for k in keys}
        if None in lengths or len(lengths) != 1:
            raise SdesError("a=crypto keys need MKIs of one length")
    params = tuple(fields[3:])
    for param in params:
        if _VCHAR.fullmatch(param) is None:
            raise SdesError("a=crypto session parameter malformed")
        _check_session_param(param)
    return SdesCrypto(int(tag_text), suite, keys, params)
