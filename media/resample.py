"""Streaming sample-rate conversion between 8, 16 and 48 kHz (any rational ratio), numpy.

Theory of operation
-------------------
A polyphase windowed-sinc resampler. Converting ``in_rate`` to ``out_rate`` is upsampling by
``L = out/g`` and downsampling by ``M = in/g`` (``g`` = gcd). Conceptually the input is zero-
stuffed to ``L * in_rate``, low-pass filtered at the lower of the two Nyquist frequencies, and
every ``M``-th sample kept. The polyphase form computes only the kept samples: output ``n`` sits
at input position ``n*M/L``; its integer part picks the newest input sample and its fractional
part ``(n*M) mod L`` picks one of ``L`` sub-filters ("phases") of ``taps`` coefficients each.

The prototype filter is a sinc with cutoff at 0.9 × the lower Nyquist frequency under a Kaiser
window (β = 8.6, about 90 dB stop-band attenuation), ``L * taps`` coefficients long and scaled
by ``L`` to keep the gain at 1 after zero stuffing.

Streaming: the resampler keeps the last ``taps - 1`` input samples and the output position, so
a signal cut into 20 ms frames comes out identical to the same signal resampled in one piece —
no clicks at frame borders. The price is a fixed group delay of about ``taps / 2`` input
samples.
"""

from __future__ import annotations

from math import gcd

import numpy as np
import numpy.typing as npt

from media.port import Frame

__all__ = ["RateAdapter", "Resampler", "resample"]


class Resampler:
    """Stateful resampler for one stream of int16 frames."""

    def __init__(self, in_rate: int, out_rate: int, taps: int = 32) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.in_rate = in_rate
        self.out_rate = out_rate
        g = gcd(in_rate, out_rate)
        self.up = out_rate // g
        self.down = in_rate // g
        self.taps = taps
        self._bank = self._design(self.up, self.down, taps)
        self._history = np.zeros(taps - 1, np.float64)
        # Position (in units of 1/up input samples) of the next output sample, relative to the
        # first sample of the next input block.
        self._pos = 0
        self._index_cache: dict[int, tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], int]] = {}

    @staticmethod
    def _design(up: int, down: int, taps: int) -> npt.NDArray[np.float64]:
        """Filter bank ``[phase, k]``: coefficient applied to input ``x[i - k]``."""
        n = up * taps
        cutoff = 0.9 * 0.5 / max(up, down)  # in cycles per sample at the upsampled rate
        t = np.arange(n) - (n - 1) / 2.0
        h = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n, 8.6)
        h *= up / h.sum()
        # Output at position p (phase = p mod up) uses h[phase + k*up] on x[floor(p/up) - k].
        bank: npt.NDArray[np.float64] = np.ascontiguousarray(h.reshape(taps, up).T)
        return bank

    def _indices(self, count: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], int]:
        """Output positions for a block of ``count`` inputs (cached: frames repeat in size)."""
        key = count * 1_000_003 + self._pos
        cached = self._index_cache.get(key)
        if cached is not None:
            return cached
        end = count * self.up
        positions = np.arange(self._pos, end, self.down)
        base = positions // self.up + (self.taps - 1)  # index into history + block
        phases = positions % self.up
        next_pos = (int(positions[-1]) + self.down - end) if len(positions) else self._pos - end
        result = (base.astype(np.intp), phases.astype(np.intp), next_pos)
        if len(self._index_cache) < 64:
            self._index_cache[key] = result
        return result

    def process(self, frame: Frame) -> Frame:
        """Resample one block; returns ``len(frame) * out/in`` samples (on average)."""
        if self.up == self.down:
            same: Frame = np.array(frame, dtype=np.int16)
            return same
        x = np.concatenate((self._history, np.asarray(frame, np.float64)))
        base, phases, next_pos = self._indices(len(frame))
        self._pos = next_pos
        self._history = x[len(x) - (self.taps - 1) :]
        if len(base) == 0:
            return np.zeros(0, np.int16)
        window = x[base[:, None] - np.arange(self.taps)[None, :]]
        y: npt.NDArray[np.float64] = np.einsum("ij,ij->i", window, self._bank[phases])
        out: Frame = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
        return out

    def reset(self) -> None:
        """Forget the stream (start of an unrelated signal)."""
        self._history[:] = 0
        self._pos = 0


def resample(samples: Frame, in_rate: int, out_rate: int) -> Frame:
    """One-shot resampling of a whole signal (same filter as :class:`Resampler`)."""
    return Resampler(in_rate, out_rate).process(samples)


class RateAdapter:
    """A stateful :class:`Resampler` between two ports' rates that is a no-op when they agree."""

    __slots__ = ("_r",)

    def __init__(self, src: int, dst: int) -> None:
        self._r = Resampler(src, dst) if src != dst else None

    def __call__(self, frame: Frame) -> Frame:
        if self._r is None:
            return frame
        return self._r.process(frame)
