"""Payload-type registry, codec objects (a 1 kHz tone through each codec), PLC, comfort noise."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from media.codecs import (
    ComfortNoise,
    OpusCodec,
    PayloadFormat,
    PayloadTypeRegistry,
    UnsupportedCodec,
    create_codec,
)


def goertzel_power(x: npt.NDArray[np.int16], freq: float, rate: int) -> float:
    """Normalised power of ``x`` at ``freq`` (≈ amplitude²/4 for a pure tone)."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for v in x.astype(np.float64):
        s1, s2 = v + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (len(x) ** 2)


def dominant_is(x: npt.NDArray[np.int16], freq: float, rate: int) -> bool:
    """The tone at ``freq`` holds most of the energy and beats its neighbours by 20 dB."""
    p = goertzel_power(x, freq, rate)
    total = float(np.mean(x.astype(np.float64) ** 2)) / 2
    others = [goertzel_power(x, f, rate) for f in (500.0, 700.0, 1400.0, 2000.0)]
    return p > 0.5 * total and all(p > 100 * o for o in others)


def tone(rate: int, seconds: float, freq: float = 1000.0, amp: float = 8000.0) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds))
    return (amp * np.sin(2 * np.pi * freq * t / rate)).astype(np.int16)


SDP = [
    (0, "PCMU", 8000, 1, ""),
    (8, "PCMA", 8000, 1, ""),
    (9, "G722", 8000, 1, ""),
    (111, "opus", 48000, 2, "minptime=10;useinbandfec=1"),
    (101, "telephone-event", 8000, 1, "0-16"),
    (110, "telephone-event", 48000, 1, "0-16"),
    (13, "CN", 8000, 1, ""),
]


def test_registry_from_sdp() -> None:
    reg = PayloadTypeRegistry(SDP)
    assert reg[9].clock_rate == 8000 and reg[9].sample_rate == 16000
    assert reg[111].sample_rate == 48000 and reg[111].channels == 2
    assert reg[111].fmtp_params() == {"minptime": "10", "useinbandfec": "1"}
    te = reg.telephone_event(48000)
    assert te is not None and te.payload_type == 110
    te8 = reg.telephone_event(8000)
    assert te8 is not None and te8.payload_type == 101
    assert not reg[101].is_audio_codec and reg[0].is_audio_codec
    cn = reg.comfort_noise()
    assert cn is not None and cn.payload_type == 13
    assert reg.find("OPUS") == reg[111]
    assert 96 not in reg and reg.get(96) is None


def test_registry_rejects_bad_entries() -> None:
    reg = PayloadTypeRegistry(static=False)
    assert 0 not in reg
    with pytest.raises(ValueError):
        reg.add(72, "PCMU", 8000)  # collides with RTCP SR under rtcp-mux
    with pytest.raises(ValueError):
        reg.add(128, "PCMU", 8000)
    with pytest.raises(ValueError):
        reg.add(100, "X", 0)
    with pytest.raises(UnsupportedCodec):
        PayloadTypeRegistry().create_codec(13)
    with pytest.raises(UnsupportedCodec):
        create_codec(PayloadFormat(97, "iLBC", 8000))


@pytest.mark.parametrize("pt", [0, 8, 9, 111])
def test_tone_through_codec(pt: int) -> None:
    codec = PayloadTypeRegistry(SDP).create_codec(pt)
    rate = codec.sample_rate
    n = rate // 50
    x = tone(rate, 0.6)
    frames = []
    for i in range(len(x) // n):
        payload = codec.encode(x[i * n : (i + 1) * n])
        assert payload
        out = codec.decode(payload)
        assert out.dtype == np.int16 and len(out) == n
        frames.append(out)
    y = np.concatenate(frames)[n * 10 :]  # skip codec start-up (Opus look-ahead)
    assert dominant_is(y, 1000.0, rate)
    assert not dominant_is(y, 1400.0, rate)
    assert codec.timestamp_increment == (160 if pt in (0, 8, 9) else 960)


@pytest.mark.parametrize("pt", [0, 8, 9, 111])
def test_concealment(pt: int) -> None:
    codec = PayloadTypeRegistry(SDP).create_codec(pt)
    rate = codec.sample_rate
    n = rate // 50
    x = tone(rate, 0.4)
    for i in range(len(x) // n):
        codec.decode(codec.encode(x[i * n : (i + 1) * n]))
    first = codec.conceal()
    assert len(first) == n and first.dtype == np.int16
    assert dominant_is(first, 1000.0, rate)  # the lost frame sounds like its neighbours
    for _ in range(20):
        last = codec.conceal()
    # A long outage fades out rather than buzzing forever.
    assert float(np.abs(last.astype(np.int32)).max()) < 0.2 * float(np.abs(first.astype(np.int32)).max())


def test_opus_uses_codec_plc_when_available() -> None:
    codec = PayloadTypeRegistry(SDP).create_codec(111)
    assert isinstance(codec, OpusCodec)
    if not codec.has_codec_plc:
        pytest.skip("libopus not loadable: repeat-and-fade in use")
    x = tone(48000, 0.2)
    for i in range(10):
        codec.decode(codec.encode(x[i * 960 : (i + 1) * 960]))
    out = codec.conceal()
    assert len(out) == 960 and np.abs(out).max() > 100


def test_comfort_noise_level_round_trip() -> None:
    cn = ComfortNoise(8000, seed=1)
    loud = ComfortNoise(8000, seed=2)
    quiet_frame = (np.random.default_rng(0).standard_normal(160) * 100).astype(np.int16)
    payload = cn.encode(quiet_frame)
    assert len(payload) == 1 and 45 <= payload[0] <= 52  # 100/32767 ≈ −50 dBov
    noise = cn.decode(payload)
    assert len(noise) == 160
    assert abs(ComfortNoise.level_of(noise) - payload[0]) <= 2
    assert not np.any(loud.decode(b"\x7f"))  # −127 dBov is silence
    with pytest.raises(ValueError):
        cn.decode(b"")
