"""Adaptive jitter buffer for one RTP stream, pulled once per 20 ms media tick, sans-IO.

The public module. The buffer itself is written once, in :mod:`media._jitter_py` (read its
docstring for the theory of operation): plain Python that is both the readable reference and,
compiled by Cython in pure-Python mode with the C types of ``media/_jitter.pxd``, the extension
``media._jitter`` (``setup.py``). This module picks one through :func:`media._accel.load`: the
extension, or the interpreted source when ``ASYNCPBX_NO_EXTENSIONS=1``; a missing extension is
an error (DESIGN.md principle 6). ``tests/media/test_jitter_differential.py`` runs both on
Hypothesis traces and requires identical outputs.

API: ``JitterBuffer(clock_rate=8000, ptime=0.020, min_delay=0.020, max_delay=0.200,
capacity=None, cn_payload_type=13)`` with ``put(packet, arrival)``, ``skip(packet)``,
``get(now) -> JitterOutput``, ``statistics()``, ``stats`` (:class:`JitterStatistics`),
``target_delay``, ``ssrc`` and ``len()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from media._accel import load

__all__ = ["MAX_DROPOUT", "JitterBuffer", "JitterOutput", "JitterStatistics"]

_kernel = load("media._jitter", "media._jitter_py")

if TYPE_CHECKING:
    from media._jitter_py import MAX_DROPOUT, JitterBuffer, JitterOutput, JitterStatistics
else:
    MAX_DROPOUT = _kernel.MAX_DROPOUT
    JitterBuffer = _kernel.JitterBuffer
    JitterOutput = _kernel.JitterOutput
    JitterStatistics = _kernel.JitterStatistics
