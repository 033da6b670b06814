"""Resampler: streaming equals one-shot, a 1 kHz tone survives 8→48→8 and 16↔8 cleanly."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.resample import Resampler, resample


def tone(rate: int, seconds: float, freq: float = 1000.0) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds))
    return (10000 * np.sin(2 * np.pi * freq * t / rate)).astype(np.int16)


def sine_fit(x: npt.NDArray[np.int16], freq: float, rate: int) -> tuple[float, float]:
    """Amplitude of the best-fitting sine at ``freq`` and the SNR (dB) of the rest."""
    t = np.arange(len(x))
    basis = np.c_[np.sin(2 * np.pi * freq * t / rate), np.cos(2 * np.pi * freq * t / rate)]
    coef, *_ = np.linalg.lstsq(basis, x.astype(np.float64), rcond=None)
    fitted = basis @ coef
    residual = x - fitted
    return float(np.hypot(*coef)), float(10 * np.log10(np.sum(fitted**2) / np.sum(residual**2)))


def test_tone_survives_8_48_8_in_20ms_frames() -> None:
    up, down = Resampler(8000, 48000), Resampler(48000, 8000)
    x = tone(8000, 1.0)
    hi, lo = [], []
    for i in range(50):
        h = up.process(x[i * 160 : (i + 1) * 160])
        assert len(h) == 960
        hi.append(h)
        lo.append(down.process(h))
    y = np.concatenate(lo)[400:]
    amp, snr = sine_fit(y, 1000.0, 8000)
    assert amp == pytest.approx(10000, rel=0.05)
    assert snr > 50
    # And at 48 kHz, the tone is still at 1 kHz (not at an image frequency).
    amp48, snr48 = sine_fit(np.concatenate(hi)[2400:], 1000.0, 48000)
    assert amp48 == pytest.approx(10000, rel=0.05) and snr48 > 50


@pytest.mark.parametrize(("a", "b"), [(8000, 16000), (16000, 8000), (16000, 48000), (48000, 16000)])
def test_tone_other_ratios(a: int, b: int) -> None:
    y = resample(tone(a, 0.5), a, b)
    assert len(y) == b // 2
    amp, snr = sine_fit(y[b // 20 :], 1000.0, b)
    assert amp == pytest.approx(10000, rel=0.05) and snr > 50


def test_downsampling_removes_what_cannot_be_represented() -> None:
    # 6 kHz at 16 kHz must not alias to 2 kHz at 8 kHz.
    y = resample(tone(16000, 0.5, 6000.0), 16000, 8000)[200:]
    assert float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) < 100


@settings(max_examples=30)
@given(
    st.sampled_from([(8000, 48000), (48000, 8000), (16000, 8000), (8000, 16000), (44100, 8000)]),
    st.lists(st.integers(1, 500), min_size=1, max_size=8),
)
def test_streaming_equals_one_shot(rates: tuple[int, int], cuts: list[int]) -> None:
    a, b = rates
    x = np.random.default_rng(len(cuts)).integers(-20000, 20000, sum(cuts)).astype(np.int16)
    r = Resampler(a, b)
    pieces, pos = [], 0
    for n in cuts:
        pieces.append(r.process(x[pos : pos + n]))
        pos += n
    assert np.array_equal(np.concatenate(pieces), resample(x, a, b))


def test_same_rate_is_identity() -> None:
    x = tone(8000, 0.02)
    assert np.array_equal(Resampler(8000, 8000).process(x), x)
