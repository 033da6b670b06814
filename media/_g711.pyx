# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Table-driven G.711 kernel (see media/g711.py for the readable reference and the API).

Tables are built once at import: 65,536 encode entries per law indexed by the sample as uint16
(so encoding is one load per sample, no branches) and 256 decode entries per law.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int16_t, uint8_t, uint16_t, uint64_t
from libc.string cimport memcpy

cdef uint8_t ULAW_ENC[65536]
cdef uint8_t ALAW_ENC[65536]
cdef int16_t ULAW_DEC[256]
cdef int16_t ALAW_DEC[256]

cdef int _segment(int value, const int* ends) noexcept nogil:
    cdef int seg
    for seg in range(8):
        if value <= ends[seg]:
            return seg
    return 8

cdef int[8] SEG_UEND = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]
cdef int[8] SEG_AEND = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]

cdef uint8_t _lin2ulaw(int sample) noexcept nogil:
    cdef int pcm = sample >> 2
    cdef int mask, seg
    if pcm < 0:
        pcm = -pcm
        mask = 0x7F
    else:
        mask = 0xFF
    if pcm > 8159:
        pcm = 8159
    pcm += 0x84 >> 2
    seg = _segment(pcm, SEG_UEND)
    if seg >= 8:
        return <uint8_t>(0x7F ^ mask)
    return <uint8_t>(((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask)

cdef int16_t _ulaw2lin(int code) noexcept nogil:
    cdef int u = (~code) & 0xFF
    cdef int t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    if u & 0x80:
        return <int16_t>(0x84 - t)
    return <int16_t>(t - 0x84)

cdef uint8_t _lin2alaw(int sample) noexcept nogil:
    cdef int pcm = sample >> 3
    cdef int mask, seg, code
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = _segment(pcm, SEG_AEND)
    if seg >= 8:
        return <uint8_t>(0x7F ^ mask)
    code = seg << 4
    if seg < 2:
        code |= (pcm >> 1) & 0x0F
    else:
        code |= (pcm >> seg) & 0x0F
    return <uint8_t>(code ^ mask)

cdef int16_t _alaw2lin(int code) noexcept nogil:
    cdef int a = code ^ 0x55
    cdef int t = (a & 0x0F) << 4
    cdef int seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    if a & 0x80:
        return <int16_t>t
    return <int16_t>(-t)

cdef void _build_tables() noexcept nogil:
    cdef int i
    for i in range(65536):
        ULAW_ENC[i] = _lin2ulaw(<int16_t><uint16_t>i)
        ALAW_ENC[i] = _lin2alaw(<int16_t><uint16_t>i)
    for i in range(256):
        ULAW_DEC[i] = _ulaw2lin(i)
        ALAW_DEC[i] = _alaw2lin(i)

_build_tables()

# --- C-level entry points for other kernels (the mixer's fused path uses its own copy) -------

cdef inline void _encode(const uint8_t* table, const int16_t* src, uint8_t* dst,
                         Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = table[<uint16_t>src[i]]

cdef uint16_t _ONE = 1
cdef bint _LITTLE_ENDIAN = (<uint8_t*>&_ONE)[0] == 1  # the packed loads/stores assume it

cdef inline void _decode(const int16_t* table, const uint8_t* src, int16_t* dst,
                         Py_ssize_t n) noexcept nogil:
    # Eight codes per 64-bit load and four samples per 64-bit store: the loop is then bound by
    # the table loads alone (memcpy keeps the unaligned accesses well-defined).
    cdef Py_ssize_t i = 0
    cdef uint64_t codes, lo, hi
    while _LITTLE_ENDIAN and i + 8 <= n:
        memcpy(&codes, src + i, 8)
        lo = (<uint64_t><uint16_t>table[codes & 0xFF]
              | (<uint64_t><uint16_t>table[(codes >> 8) & 0xFF]) << 16
              | (<uint64_t><uint16_t>table[(codes >> 16) & 0xFF]) << 32
              | (<uint64_t><uint16_t>table[(codes >> 24) & 0xFF]) << 48)
        hi = (<uint64_t><uint16_t>table[(codes >> 32) & 0xFF]
              | (<uint64_t><uint16_t>table[(codes >> 40) & 0xFF]) << 16
              | (<uint64_t><uint16_t>table[(codes >> 48) & 0xFF]) << 32
              | (<uint64_t><uint16_t>table[codes >> 56]) << 48)
        memcpy(dst + i, &lo, 8)
        memcpy(dst + i + 4, &hi, 8)
        i += 8
    while i < n:
        dst[i] = table[src[i]]
        i += 1

# Releasing the GIL costs more than converting a 20 ms frame; only long buffers do it.
cdef Py_ssize_t _NOGIL_MIN = 4096

# The entry points take any C-contiguous buffer and use the raw buffer protocol: acquiring typed
# memoryviews costs more than the 160-sample loop itself on the per-frame hot path.

cdef int _encode_into(const uint8_t* table, object pcm, object out) except -1:
    cdef Py_buffer src
    cdef Py_buffer dst
    PyObject_GetBuffer(pcm, &src, PyBUF_SIMPLE)
    try:
        PyObject_GetBuffer(out, &dst, PyBUF_WRITABLE)
        try:
            if src.len % 2:
                raise ValueError("PCM buffer has an odd number of bytes")
            if dst.len != src.len // 2:
                raise ValueError("output length must equal the number of samples")
            if dst.len < _NOGIL_MIN:
                _encode(table, <const int16_t*>src.buf, <uint8_t*>dst.buf, dst.len)
            else:
                with nogil:
                    _encode(table, <const int16_t*>src.buf, <uint8_t*>dst.buf, dst.len)
        finally:
            PyBuffer_Release(&dst)
    finally:
        PyBuffer_Release(&src)
    return 0

cdef int _decode_into(const int16_t* table, object payload, object out) except -1:
    cdef Py_buffer src
    cdef Py_buffer dst
    PyObject_GetBuffer(payload, &src, PyBUF_SIMPLE)
    try:
        PyObject_GetBuffer(out, &dst, PyBUF_WRITABLE)
        try:
            if dst.len != 2 * src.len:
                raise ValueError("output length must equal the payload length")
            if src.len < _NOGIL_MIN:
                _decode(table, <const uint8_t*>src.buf, <int16_t*>dst.buf, src.len)
            else:
                with nogil:
                    _decode(table, <const uint8_t*>src.buf, <int16_t*>dst.buf, src.len)
        finally:
            PyBuffer_Release(&dst)
    finally:
        PyBuffer_Release(&src)
    return 0

def lin2ulaw_into(pcm, out, /):
    """µ-law encode the int16 samples of ``pcm`` into the byte buffer ``out`` (equal counts)."""
    _encode_into(&ULAW_ENC[0], pcm, out)

def lin2alaw_into(pcm, out, /):
    """A-law encode the int16 samples of ``pcm`` into the byte buffer ``out`` (equal counts)."""
    _encode_into(&ALAW_ENC[0], pcm, out)

def ulaw2lin_into(payload, out, /):
    """µ-law decode ``payload`` into the int16 buffer ``out`` (equal counts)."""
    _decode_into(&ULAW_DEC[0], payload, out)

def alaw2lin_into(payload, out, /):
    """A-law decode ``payload`` into the int16 buffer ``out`` (equal counts)."""
    _decode_into(&ALAW_DEC[0], payload, out)
