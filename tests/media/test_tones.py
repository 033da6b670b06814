"""Tones: plans per country, sample-accurate cadence, phase continuity, frequencies (Goertzel)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from media.dtmf import goertzel, tone_ratio
from media.port import MediaPort
from media.tones import (
    TONE_PLANS,
    Segment,
    Tone,
    ToneGenerator,
    ToneName,
    dbm0_to_amplitude,
    tone_plan,
)


def _play(gen: ToneGenerator, frames: int) -> np.ndarray:
    out = []
    for _ in range(frames):
        f = gen.get_frame()
        assert f is not None
        out.append(f)
    return np.concatenate(out)


def test_every_country_has_every_tone() -> None:
    assert {"DE", "US", "UK"} <= set(TONE_PLANS)
    for plan in TONE_PLANS.values():
        assert set(plan) == set(ToneName)
    assert tone_plan("gb") is TONE_PLANS["UK"]
    with pytest.raises(ValueError):
        tone_plan("XX")


def test_german_cadences() -> None:
    de = tone_plan("DE")
    assert de[ToneName.DIAL].segments == (Segment(1000, (425.0,)),)
    assert [(s.duration_ms, s.frequencies) for s in de[ToneName.RINGBACK].segments] == [
        (1000, (425.0,)), (4000, ())]
    assert [s.duration_ms for s in de[ToneName.BUSY].segments] == [480, 480]
    assert [s.duration_ms for s in de[ToneName.CONGESTION].segments] == [240, 240]
    assert [s.duration_ms for s in de[ToneName.CALL_WAITING].segments] == [200, 200, 200, 5000]


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_busy_cadence_is_sample_accurate(rate: int) -> None:
    gen = ToneGenerator(tone_plan("DE")[ToneName.BUSY], sample_rate=rate, level_dbm0=0.0)
    x = _play(gen, 50 * 3).astype(np.float64)  # 3 s: a bit more than 3 cycles of 960 ms
    n = np.arange(x.size)
    per = rate * 480 // 1000
    burst = (n % (2 * per)) < per
    ideal = np.rint(dbm0_to_amplitude(0.0) * np.sin(2 * np.pi * 425 * n / rate))
    assert not x[~burst].any()
    np.testing.assert_allclose(x[burst], ideal[burst], atol=1.0)


def test_ringback_on_off_and_frequency() -> None:
    gen = ToneGenerator(tone_plan("DE")[ToneName.RINGBACK])
    x = _play(gen, 250)  # one 5 s cycle
    assert tone_ratio(x[:8000], 425, 8000) > 0.99
    assert goertzel(x[:8000], 425, 8000) == pytest.approx(dbm0_to_amplitude(-13.0), rel=0.01)
    assert not x[8000:40000].any()
    again = _play(gen, 50)
    assert tone_ratio(again, 425, 8000) > 0.99


def test_dual_frequency_us_dial_tone() -> None:
    x = _play(ToneGenerator(tone_plan("US")[ToneName.DIAL]), 10)
    a350, a440 = goertzel(x, 350, 8000), goertzel(x, 440, 8000)
    assert a350 == pytest.approx(a440, rel=0.02) and a350 > 1000
    assert tone_ratio(x, 350, 8000) + tone_ratio(x, 440, 8000) > 0.98


def test_phase_continuity_across_frames_and_pauses() -> None:
    tone = Tone((Segment(30, (425.0,)), Segment(10)))
    gen = ToneGenerator(tone, level_dbm0=0.0)
    x = _play(gen, 20).astype(np.float64)
    amp = dbm0_to_amplitude(0.0)
    n = np.arange(x.size)
    ideal = np.rint(amp * np.sin(2 * np.pi * 425 * n / 8000))
    in_burst = (n % 320) < 240
    # every sample of every burst is the free-running oscillator: no phase resets at frame
    # boundaries (every 160) or after pauses (every 320)
    np.testing.assert_allclose(x[in_burst], ideal[in_burst], atol=1.0)
    assert not x[~in_burst].any()


def test_odd_rate_cadence_does_not_drift() -> None:
    rate = 11025  # a 10 ms cycle is 110.25 samples
    gen = ToneGenerator(Tone((Segment(7, (1000.0,)), Segment(3))), sample_rate=rate)
    x = gen.read(rate * 10)
    n = np.arange(x.size)
    burst = (n * 1000) % (10 * rate) < 7 * rate  # sample time modulo the cycle
    assert not x[~burst].any()
    last_start = math.ceil(999 * 10 * rate / 1000)  # cycle 999 starts 9.99 s in, not 999×110
    assert x[last_start + 1] != 0 and x[last_start - 1] == 0


def test_one_shot_tones_end_with_none() -> None:
    gen = ToneGenerator(tone_plan("DE")[ToneName.BEEP])
    frames = []
    while (f := gen.get_frame()) is not None:
        frames.append(f)
    assert len(frames) == 25 and gen.finished
    x = np.concatenate(frames)
    assert tone_ratio(x, 1000, 8000) > 0.99
    gen.reset()
    assert gen.get_frame() is not None


def test_error_tone_is_three_rising_frequencies() -> None:
    x = _play(ToneGenerator(tone_plan("DE")[ToneName.ERROR]), 100)
    parts = [x[i * 2640 : i * 2640 + 2640] for i in range(3)]
    for part, f in zip(parts, (950, 1400, 1800), strict=True):
        assert tone_ratio(part, f, 8000) > 0.95


def test_generator_is_a_media_port() -> None:
    gen = ToneGenerator(tone_plan("UK")[ToneName.BUSY], sample_rate=16000)
    assert isinstance(gen, MediaPort)
    frame = gen.get_frame()
    assert frame is not None and frame.dtype == np.int16 and frame.shape == (320,)
    gen.put_frame(frame)  # ignored
    with pytest.raises(ValueError):
        ToneGenerator(Tone(()))
