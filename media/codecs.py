"""Payload-type registry (RFC 3551 static types + SDP rtpmap/fmtp) and codec objects.

Theory of operation
-------------------
A :class:`PayloadTypeRegistry` maps payload types to :class:`PayloadFormat` (encoding name, RTP
clock rate, channels, fmtp). It starts with the static types we use (RFC 3551 §6: 0 PCMU, 8 PCMA,
9 G722, 13 CN) and is extended or overridden by the SDP ``a=rtpmap``/``a=fmtp`` entries the
signalling layer hands over as plain tuples ``(pt, encoding_name, clock_rate, channels, fmtp)``.

:func:`create_codec` builds a codec object for a format: ``encode(frame) -> bytes`` and
``decode(payload) -> frame`` on 20 ms mono int16 frames (media.port) at the codec's
``sample_rate``, which is not always the RTP clock rate: G.722 is sampled at 16 kHz but its RTP
clock runs at 8 kHz (RFC 3551 §4.5.2, a historic erratum kept for compatibility), and Opus always
signals 48000/2 (RFC 7587) even for mono. ``timestamp_increment`` is what one frame adds to the
RTP timestamp.

Packet-loss concealment: ``conceal()`` returns the frame to play for a lost packet. G.711 and
G.722 repeat the last decoded frame with a fade (silence after 100 ms); Opus uses the codec's own
PLC through libopus when it is loadable (ctypes), else the same fade. Comfort noise (RFC 3389):
:class:`ComfortNoise` turns a CN payload's level into a noise generator and a frame into a level.

G.711 uses the media kernels' ``media.g711`` (Cython table kernel, or its reference under
``ASYNCPBX_NO_EXTENSIONS=1``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np

from media import g711
from media.port import Frame, samples_per_frame
from media.rtp import Buffer

__all__ = [
    "STATIC_PAYLOAD_TYPES",
    "Codec",
    "ComfortNoise",
    "G711Codec",
    "G722Codec",
    "OpusCodec",
    "PayloadFormat",
    "PayloadTypeRegistry",
    "UnsupportedCodec",
    "create_codec",
    "make_codec",
    "payload_format",
]


class UnsupportedCodec(ValueError):
    """No codec implementation for a payload format."""


@dataclass(frozen=True, slots=True)
class PayloadFormat:
    """One negotiated payload format (an SDP rtpmap line plus its fmtp)."""

    payload_type: int
    encoding_name: str
    clock_rate: int
    channels: int = 1
    fmtp: str = ""

    @property
    def name(self) -> str:
        """Upper-case encoding name (SDP names are case-insensitive)."""
        return self.encoding_name.upper()

    @property
    def sample_rate(self) -> int:
        """PCM sample rate of the decoded audio (differs from ``clock_rate`` for G.722)."""
        if self.name == "G722":
            return 16000
        return self.clock_rate

    @property
    def is_audio_codec(self) -> bool:
        """False for telephone-event, CN and RED, which carry no primary audio."""
        return self.name not in ("TELEPHONE-EVENT", "CN", "RED")

    def fmtp_params(self) -> dict[str, str]:
        """The fmtp string as a dict (``"minptime=10;useinbandfec=1"`` → two keys)."""
        params: dict[str, str] = {}
        for part in self.fmtp.split(";"):
            part = part.strip()
            if not part:
                continue
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip()
        return params


#: RFC 3551 static payload types we support.
STATIC_PAYLOAD_TYPES: Final[dict[int, PayloadFormat]] = {
    0: PayloadFormat(0, "PCMU", 8000),
    8: PayloadFormat(8, "PCMA", 8000),
    9: PayloadFormat(9, "G722", 8000),
    13: PayloadFormat(13, "CN", 8000),
}


class PayloadTypeRegistry:
    """Payload types of one RTP session: static defaults plus SDP rtpmap/fmtp entries."""

    def __init__(
        self, entries: Iterable[tuple[int, str, int, int, str]] = (), *, static: bool = True
    ) -> None:
        self._by_pt: dict[int, PayloadFormat] = dict(STATIC_PAYLOAD_TYPES) if static else {}
        for entry in entries:
            self.add(*entry)

    def add(
        self, payload_type: int, encoding_name: str, clock_rate: int, channels: int = 1,
        fmtp: str = "",
    ) -> PayloadFormat:
        """Register (or override) one payload type; raises ``ValueError`` on bad values."""
        # RFC 5761 §4: 64–95 would collide with RTCP under rtcp-mux.
        if not 0 <= payload_type <= 127 or 64 <= payload_type <= 95:
            raise ValueError(f"payload type {payload_type} not usable")
        if clock_rate <= 0 or channels <= 0:
            raise ValueError("clock rate and channels must be positive")
        fmt = PayloadFormat(payload_type, encoding_name, clock_rate, channels, fmtp)
        self._by_pt[payload_type] = fmt
        return fmt

    def get(self, payload_type: int) -> PayloadFormat | None:
        """The format of ``payload_type`` or ``None``."""
        return self._by_pt.get(payload_type)

    def __getitem__(self, payload_type: int) -> PayloadFormat:
        return self._by_pt[payload_type]

    def __contains__(self, payload_type: object) -> bool:
        return payload_type in self._by_pt

    def __iter__(self) -> Any:
        return iter(sorted(self._by_pt.values(), key=lambda f: f.payload_type))

    def find(self, encoding_name: str, clock_rate: int | None = None) -> PayloadFormat | None:
        """The lowest payload type with this encoding name (and clock rate, if given)."""
        name = encoding_name.upper()
        for fmt in self:
            if fmt.name == name and (clock_rate is None or fmt.clock_rate == clock_rate):
                assert isinstance(fmt, PayloadFormat)
                return fmt
        return None

    def telephone_event(self, clock_rate: int) -> PayloadFormat | None:
        """The RFC 4733 telephone-event format at ``clock_rate``, if negotiated."""
        return self.find("telephone-event", clock_rate)

    def comfort_noise(self, clock_rate: int = 8000) -> PayloadFormat | None:
        """The RFC 3389 CN format at ``clock_rate``, if present."""
        return self.find("CN", clock_rate)

    def create_codec(self, payload_type: int) -> Codec:
        """A fresh codec object for ``payload_type``; raises ``UnsupportedCodec``."""
        fmt = self._by_pt.get(payload_type)
        if fmt is None:
            raise UnsupportedCodec(f"payload type {payload_type} not negotiated")
        return create_codec(fmt)


class Codec(Protocol):
    """What every codec object offers."""

    format: PayloadFormat
    sample_rate: int
    timestamp_increment: int

    def encode(self, frame: Frame) -> bytes:
        """Encode one 20 ms frame at ``sample_rate``."""
        ...

    def decode(self, payload: Buffer) -> Frame:
        """Decode one packet's payload to a frame at ``sample_rate``."""
        ...

    def conceal(self) -> Frame:
        """A frame to play in place of a lost packet (packet-loss concealment)."""
        ...


# --- G.711 ---------------------------------------------------------------------------------


def _ulaw_encode(frame: Frame) -> bytes:
    return g711.ulaw_encode(frame)


def _alaw_encode(frame: Frame) -> bytes:
    return g711.alaw_encode(frame)


_ulaw_decode = g711.ulaw_decode
_alaw_decode = g711.alaw_decode


class _FadeConcealment:
    """Repeat the last frame with a falling gain; silence after ``_FADE_FRAMES`` frames."""

    _FADE_FRAMES = 5
    sample_rate: int
    _last: Frame | None
    _lost_run: int

    def _remember(self, frame: Frame) -> Frame:
        self._last = frame
        self._lost_run = 0
        return frame

    def conceal(self) -> Frame:
        """The last frame again, fading out over 100 ms (G.711 Appendix I in spirit)."""
        n = samples_per_frame(self.sample_rate)
        last = self._last
        self._lost_run += 1
        if last is None or self._lost_run > self._FADE_FRAMES:
            return np.zeros(n, np.int16)
        start = 1.0 - (self._lost_run - 1) / self._FADE_FRAMES
        stop = 1.0 - self._lost_run / self._FADE_FRAMES
        gain = np.linspace(start, stop, len(last), endpoint=False)
        return (last.astype(np.float32) * gain).astype(np.int16)


class G711Codec(_FadeConcealment):
    """PCMU (µ-law) or PCMA (A-law), 8 kHz, one octet per sample (ITU-T G.711)."""

    def __init__(self, fmt: PayloadFormat) -> None:
        if fmt.name not in ("PCMU", "PCMA"):
            raise UnsupportedCodec(fmt.encoding_name)
        self.format = fmt
        self.sample_rate = 8000
        self.timestamp_increment = 160
        mu = fmt.name == "PCMU"
        self._enc = _ulaw_encode if mu else _alaw_encode
        self._dec = _ulaw_decode if mu else _alaw_decode
        self._last = None
        self._lost_run = 0

    def encode(self, frame: Frame) -> bytes:
        """Encode a frame of int16 samples to G.711 octets."""
        return self._enc(frame)

    def decode(self, payload: Buffer) -> Frame:
        """Decode G.711 octets to int16 samples."""
        return self._remember(self._dec(payload))


# --- PyAV codecs -----------------------------------------------------------------------------


def _av_encoder(name: str, rate: int, **options: Any) -> Any:
    import av

    ctx: Any = av.CodecContext.create(name, "w")
    ctx.sample_rate = rate
    ctx.layout = "mono"
    ctx.format = "s16"
    for key, value in options.items():
        setattr(ctx, key, value)
    ctx.open()
    return ctx


def _av_decoder(name: str, rate: int) -> Any:
    import av

    ctx: Any = av.CodecContext.create(name, "r")
    ctx.sample_rate = rate
    ctx.layout = "mono"
    ctx.open()
    return ctx


def _av_encode(ctx: Any, frame: Frame, rate: int, pts: int) -> bytes:
    from av.audio.frame import AudioFrame

    af = AudioFrame.from_ndarray(
        np.ascontiguousarray(frame, np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    af.sample_rate = rate
    af.pts = pts
    return b"".join(bytes(p) for p in ctx.encode(af))


def _av_decode(ctx: Any, payload: Buffer, n: int) -> Frame:
    import av

    chunks = [_to_mono_s16(f) for f in ctx.decode(av.Packet(bytes(payload)))]
    out = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    if len(out) != n:  # keep the frame contract even if the codec buffers differently
        out = np.resize(out, n) if len(out) else np.zeros(n, np.int16)
    return out


def _to_mono_s16(frame: Any) -> Frame:
    data = frame.to_ndarray()
    name = frame.format.name
    if name.startswith("flt"):
        data = np.clip(data * 32768.0, -32768, 32767)
    if frame.format.is_planar:
        mono = data.mean(axis=0) if data.shape[0] > 1 else data[0]
    else:
        channels = len(frame.layout.channels)
        mono = data.reshape(-1, channels).mean(axis=1) if channels > 1 else data.reshape(-1)
    return np.asarray(mono).astype(np.int16)


class G722Codec(_FadeConcealment):
    """G.722 at 16 kHz sampling, RTP clock 8000 (RFC 3551 §4.5.2), 64 kbit/s via PyAV."""

    def __init__(self, fmt: PayloadFormat) -> None:
        self.format = fmt
        self.sample_rate = 16000
        self.timestamp_increment = 160  # 20 ms at the (historic) 8 kHz RTP clock
        self._encoder = _av_encoder("g722", 16000)
        self._decoder = _av_decoder("g722", 16000)
        self._pts = 0
        self._last = None
        self._lost_run = 0

    def encode(self, frame: Frame) -> bytes:
        """Encode 320 samples to 160 octets."""
        out = _av_encode(self._encoder, frame, 16000, self._pts)
        self._pts += len(frame)
        return out

    def decode(self, payload: Buffer) -> Frame:
        """Decode 160 octets to 320 samples."""
        return self._remember(_av_decode(self._decoder, payload, 320))


class _LibOpus:
    """Minimal ctypes binding to the system libopus decoder, for real Opus PLC/FEC."""

    def __init__(self, rate: int) -> None:
        path = ctypes.util.find_library("opus")
        if path is None:
            raise OSError("libopus not found")
        lib = ctypes.CDLL(path)
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
            ctypes.POINTER(ctypes.c_int16), ctypes.c_int, ctypes.c_int,
        ]
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        err = ctypes.c_int(0)
        state = lib.opus_decoder_create(rate, 1, ctypes.byref(err))
        if err.value != 0 or not state:
            raise OSError(f"opus_decoder_create failed ({err.value})")
        self._lib = lib
        self._state = state
        self._max = rate * 120 // 1000
        self._buf = (ctypes.c_int16 * self._max)()

    def decode(self, payload: bytes | None, n: int, fec: bool = False) -> Frame:
        data = payload if payload else None
        got = self._lib.opus_decode(
            self._state, data, len(payload) if payload else 0, self._buf,
            n if data is None or fec else self._max, 1 if fec else 0,
        )
        if got < 0:
            raise ValueError(f"opus_decode failed ({got})")
        return np.frombuffer(bytes(self._buf)[: 2 * got], np.int16).copy()

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state:
            self._lib.opus_decoder_destroy(state)


class OpusCodec(_FadeConcealment):
    """Opus (RFC 7587), mono 48 kHz frames; encoder via PyAV libopus, decoder with codec PLC."""

    def __init__(self, fmt: PayloadFormat, bit_rate: int = 32000) -> None:
        self.format = fmt
        self.sample_rate = 48000
        self.timestamp_increment = 960
        self._encoder = _av_encoder("libopus", 48000, bit_rate=bit_rate)
        self._pts = 0
        self._last = None
        self._lost_run = 0
        self._lib: _LibOpus | None
        try:
            self._lib = _LibOpus(48000)
            self._decoder: Any = None
        except (OSError, AttributeError):
            self._lib = None
            self._decoder = _av_decoder("libopus", 48000)

    @property
    def has_codec_plc(self) -> bool:
        """True when concealment uses Opus's own PLC rather than repeat-and-fade."""
        return self._lib is not None

    def encode(self, frame: Frame) -> bytes:
        """Encode 960 samples to one Opus packet."""
        out = _av_encode(self._encoder, frame, 48000, self._pts)
        self._pts += len(frame)
        return out

    def decode(self, payload: Buffer) -> Frame:
        """Decode one Opus packet (any mode, mono or stereo) to mono 48 kHz."""
        if self._lib is not None:
            out = self._lib.decode(bytes(payload), 960)
            if len(out) != 960:
                out = np.resize(out, 960) if len(out) else np.zeros(960, np.int16)
            return self._remember(out)
        return self._remember(_av_decode(self._decoder, payload, 960))

    def conceal(self) -> Frame:
        """Opus PLC (libopus decodes a missing packet) or repeat-and-fade."""
        if self._lib is None:
            return super().conceal()
        self._lost_run += 1
        return self._lib.decode(None, 960)


# --- comfort noise (RFC 3389) ---------------------------------------------------------------


class ComfortNoise:
    """RFC 3389 comfort noise: payload ↔ level (−dBov) and a white-noise generator.

    0 dBov is the level of a full-scale square wave (RMS 32767 here); the payload's first octet
    holds the level as 0…127 meaning 0…−127 dBov. Spectral coefficients, if any, are ignored:
    the generator is white.
    """

    def __init__(self, sample_rate: int = 8000, seed: int | None = None) -> None:
        self.sample_rate = sample_rate
        self.level = 127
        self._rng = np.random.default_rng(seed)

    @staticmethod
    def level_of(frame: Frame) -> int:
        """The −dBov level (0…127) of a frame."""
        if len(frame) == 0:
            return 127
        rms = float(np.sqrt(np.mean(np.square(frame.astype(np.float64)))))
        if rms <= 0:
            return 127
        return int(max(0, min(127, round(-20 * np.log10(rms / 32767.0)))))

    def encode(self, frame: Frame) -> bytes:
        """A CN payload describing ``frame``'s level (level octet only)."""
        return bytes((self.level_of(frame),))

    def decode(self, payload: Buffer) -> Frame:
        """Take the level from a CN payload and return one frame of noise at that level."""
        if len(payload) < 1:
            raise ValueError("empty comfort-noise payload")
        self.level = payload[0] & 0x7F
        return self.generate()

    def generate(self) -> Frame:
        """One frame of white noise at the current level."""
        n = samples_per_frame(self.sample_rate)
        if self.level >= 127:
            return np.zeros(n, np.int16)
        rms = 32767.0 * 10 ** (-self.level / 20.0)
        noise = self._rng.standard_normal(n) * rms
        return np.clip(noise, -32768, 32767).astype(np.int16)


def create_codec(fmt: PayloadFormat) -> Codec:
    """A codec object for ``fmt``; raises :class:`UnsupportedCodec` for anything else."""
    name = fmt.name
    if name in ("PCMU", "PCMA") and fmt.clock_rate == 8000:
        return G711Codec(fmt)
    if name == "G722" and fmt.clock_rate == 8000:
        return G722Codec(fmt)
    if name == "OPUS" and fmt.clock_rate == 48000:
        return OpusCodec(fmt)
    raise UnsupportedCodec(f"{fmt.encoding_name}/{fmt.clock_rate}")


# SDP encoding names map to their standard RTP clock rates.
_CLOCK_RATES = {"PCMU": (8000, 1), "PCMA": (8000, 1), "G722": (8000, 1), "OPUS": (48000, 2)}


def payload_format(name: str, payload_type: int | None = None) -> PayloadFormat:
    """The :class:`~media.codecs.PayloadFormat` for an SDP encoding name (PCMU, PCMA, G722, OPUS).

    ``payload_type`` defaults to the static number (0, 8, 9) or 111 for Opus.
    """
    key = name.upper()
    if key not in _CLOCK_RATES:
        raise UnsupportedCodec(name)
    rate, channels = _CLOCK_RATES[key]
    pt = payload_type if payload_type is not None else {"PCMU": 0, "PCMA": 8, "G722": 9}.get(
        key, 111
    )
    return PayloadFormat(pt, "opus" if key == "OPUS" else key, rate, channels)


def make_codec(codec: str | PayloadFormat, payload_type: int | None = None) -> Codec:
    """A fresh codec object (``media.codecs``) for an encoding name or a payload format."""
    fmt = codec if isinstance(codec, PayloadFormat) else payload_format(codec, payload_type)
    return create_codec(fmt)
