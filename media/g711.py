"""G.711 µ-law (PCMU) and A-law (PCMA) companding, ITU-T G.711 (DESIGN.md principle 6).

This module is both the public API and the readable reference. The reference is the classic
segment/quantisation algorithm of ITU-T G.711 as in Sun's ``g711.c`` (which CPython's ``audioop``
also uses), one sample at a time. The compiled kernel ``media._g711`` does the same with lookup
tables (a 65,536-entry encode table per law indexed by the 16-bit sample, a 256-entry decode table);
the tests prove both equal on every input.

Kernel interface (identical in ``media._g711`` and here): ``lin2ulaw_into(pcm, out)``,
``ulaw2lin_into(payload, out)``, ``lin2alaw_into(pcm, out)``, ``alaw2lin_into(payload, out)``:
``pcm`` is a C-contiguous ``int16`` buffer, ``payload``/``out`` bytes-like ``uint8`` buffers of the
same sample count. Like the kernel, the reference accepts any C-contiguous buffer (a bytes object
of raw native-endian PCM works as well as an ``int16`` array). The public functions below pick the implementation once at import time via
``media._accel.load`` (``ASYNCPBX_NO_EXTENSIONS=1`` selects the reference).

Public API::

    ulaw_encode(pcm) -> bytes            alaw_encode(pcm) -> bytes
    ulaw_decode(payload) -> int16 array  alaw_decode(payload) -> int16 array
    ulaw_encode_into(pcm, out)           alaw_encode_into(pcm, out)
    ulaw_decode_into(payload, out)       alaw_decode_into(payload, out)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from media._accel import load

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_decode",
    "alaw_decode_into",
    "alaw_encode",
    "alaw_encode_into",
    "alaw_to_linear",
    "decode_table",
    "linear_to_alaw",
    "linear_to_ulaw",
    "ulaw_decode",
    "ulaw_decode_into",
    "ulaw_encode",
    "ulaw_encode_into",
    "ulaw_to_linear",
]

#: The code a silent (all-zero) frame encodes to.
ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5

_BIAS = 0x84  # µ-law bias (132) added to the magnitude so every segment starts on a power of two
_ULAW_CLIP = 8159  # largest 14-bit magnitude µ-law can represent
_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    """Index of the first segment whose end is >= value (8 when beyond the last)."""
    for seg, end in enumerate(ends):
        if value <= end:
            return seg
    return 8


def linear_to_ulaw(sample: int) -> int:
    """Encode one signed 16-bit sample to a µ-law code (G.711 §2, Table 2a).

    µ-law works on 14-bit magnitudes: the two low bits are dropped first (an arithmetic shift,
    so -1..-4 become -1, which is why tiny negative values do not encode like zero).
    """
    pcm = sample >> 2
    if pcm < 0:
        pcm = -pcm
        mask = 0x7F  # sign bit 0 for negative, and all bits inverted on the wire
    else:
        mask = 0xFF
    pcm = min(pcm, _ULAW_CLIP) + (_BIAS >> 2)
    seg = _segment(pcm, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    code = (seg << 4) | ((pcm >> (seg + 1)) & 0x0F)
    return code ^ mask


def ulaw_to_linear(code: int) -> int:
    """Decode one µ-law code to a signed 16-bit sample."""
    u = ~code & 0xFF
    magnitude = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return _BIAS - magnitude if u & 0x80 else magnitude - _BIAS


def linear_to_alaw(sample: int) -> int:
    """Encode one signed 16-bit sample to an A-law code (G.711 §3, Table 1a).

    A-law works on 13-bit values; even bits are inverted on the wire (the 0x55 mask).
    """
    pcm = sample >> 3
    if pcm >= 0:
        mask = 0xD5  # sign bit 1 for positive
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = _segment(pcm, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    code = seg << 4
    code |= (pcm >> 1 if seg < 2 else pcm >> seg) & 0x0F
    return code ^ mask


def alaw_to_linear(code: int) -> int:
    """Decode one A-law code to a signed 16-bit sample."""
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


# --- reference kernels: the same interface as media._g711 -----------------------------------


def _samples(buffer: Any) -> memoryview:
    """A C-contiguous buffer viewed as native int16 samples (any buffer type, like the kernel)."""
    raw = memoryview(buffer).cast("B")
    if len(raw) % 2:
        raise ValueError("PCM buffer has an odd number of bytes")
    return raw.cast("h")


def lin2ulaw_into(pcm: Any, out: Any, /) -> None:
    """Reference: µ-law encode ``pcm`` (int16) into ``out`` (uint8 buffer of equal length)."""
    src = _samples(pcm)
    dst = memoryview(out).cast("B")
    if len(dst) != len(src):
        raise ValueError("output length must equal the number of samples")
    for i, sample in enumerate(src):
        dst[i] = linear_to_ulaw(sample)


def ulaw2lin_into(payload: Any, out: Any, /) -> None:
    """Reference: µ-law decode ``payload`` (bytes-like) into ``out`` (int16 buffer)."""
    src = memoryview(payload).cast("B")
    dst = _samples(out)
    if len(dst) != len(src):
        raise ValueError("output length must equal the payload length")
    for i, code in enumerate(src):
        dst[i] = ulaw_to_linear(code)


def lin2alaw_into(pcm: Any, out: Any, /) -> None:
    """Reference: A-law encode ``pcm`` (int16) into ``out`` (uint8 buffer of equal length)."""
    src = _samples(pcm)
    dst = memoryview(out).cast("B")
    if len(dst) != len(src):
        raise ValueError("output length must equal the number of samples")
    for i, sample in enumerate(src):
        dst[i] = linear_to_alaw(sample)


def alaw2lin_into(payload: Any, out: Any, /) -> None:
    """Reference: A-law decode ``payload`` (bytes-like) into ``out`` (int16 buffer)."""
    src = memoryview(payload).cast("B")
    dst = _samples(out)
    if len(dst) != len(src):
        raise ValueError("output length must equal the payload length")
    for i, code in enumerate(src):
        dst[i] = alaw_to_linear(code)


def decode_table(law: str) -> npt.NDArray[np.int16]:
    """The 256-entry decode table of ``law`` ("ulaw" or "alaw"), built from the reference."""
    fn = ulaw_to_linear if law == "ulaw" else alaw_to_linear
    if law not in ("ulaw", "alaw"):
        raise ValueError(f"unknown law {law!r}")
    return np.array([fn(c) for c in range(256)], dtype=np.int16)


def encode_table(law: str) -> npt.NDArray[np.uint8]:
    """The 65,536-entry encode table of ``law`` indexed by the sample as uint16."""
    if law not in ("ulaw", "alaw"):
        raise ValueError(f"unknown law {law!r}")
    fn = linear_to_ulaw if law == "ulaw" else linear_to_alaw
    samples = np.arange(65536, dtype=np.uint16).view(np.int16)
    return np.array([fn(int(s)) for s in samples], dtype=np.uint8)


# --- public API ------------------------------------------------------------------------------

_kernel = load("media._g711", __name__)

#: Encode ``pcm`` (C-contiguous int16) into the uint8 buffer ``out`` of the same length.
ulaw_encode_into: Callable[[Any, Any], None] = _kernel.lin2ulaw_into
#: Decode ``payload`` (bytes-like) into the C-contiguous int16 buffer ``out`` of the same length.
ulaw_decode_into: Callable[[Any, Any], None] = _kernel.ulaw2lin_into
#: Encode ``pcm`` (C-contiguous int16) into the uint8 buffer ``out`` of the same length.
alaw_encode_into: Callable[[Any, Any], None] = _kernel.lin2alaw_into
#: Decode ``payload`` (bytes-like) into the C-contiguous int16 buffer ``out`` of the same length.
alaw_decode_into: Callable[[Any, Any], None] = _kernel.alaw2lin_into


def _contiguous_pcm(pcm: npt.ArrayLike) -> npt.NDArray[np.int16]:
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise TypeError(f"PCM must be int16, not {arr.dtype}")
    return np.ascontiguousarray(arr.reshape(-1))


def ulaw_encode(pcm: npt.ArrayLike) -> bytes:
    """µ-law encode an int16 array to a payload (one byte per sample)."""
    src = _contiguous_pcm(pcm)
    out = bytearray(len(src))
    ulaw_encode_into(src, out)
    return bytes(out)


def alaw_encode(pcm: npt.ArrayLike) -> bytes:
    """A-law encode an int16 array to a payload (one byte per sample)."""
    src = _contiguous_pcm(pcm)
    out = bytearray(len(src))
    alaw_encode_into(src, out)
    return bytes(out)


def ulaw_decode(payload: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """Decode a µ-law payload to a new int16 array."""
    out = np.empty(len(memoryview(payload).cast("B")), dtype=np.int16)
    ulaw_decode_into(payload, out)
    return out


def alaw_decode(payload: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """Decode an A-law payload to a new int16 array."""
    out = np.empty(len(memoryview(payload).cast("B")), dtype=np.int16)
    alaw_decode_into(payload, out)
    return out
