# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The conference mix-minus kernel (reference, semantics and API: media/mixer.py).

One ``MixKernel`` is bound once to the mixer's preallocated arrays; ``mix(start, stop)`` then
takes only two integers, so the fixed cost of a call is a Python method call (well under 1 µs)
and one call covers every conference whose rows lie in ``[start, stop)``.

Per conference an int32 accumulator row holds the sum of the talkers; a generation stamp per
conference replaces zeroing the accumulators (the first talker of a call stores, later ones add).
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memset, memcpy

import numpy as np

# Row flags and codecs: the same values as media.mixer (TALK/LISTEN/FRESH, Codec).
cdef enum:
    TALK = 1
    LISTEN = 2
    FRESH = 4
    UNITY = 4096  # Q12 gain 1.0
    LINEAR = 0
    PCMU = 1
    PCMA = 2

cdef uint8_t ULAW_ENC[65536]
cdef uint8_t ALAW_ENC[65536]
cdef int16_t ULAW_DEC[256]
cdef int16_t ALAW_DEC[256]


def _install_tables(const uint8_t[::1] ulaw_enc, const uint8_t[::1] alaw_enc,
                    const int16_t[::1] ulaw_dec, const int16_t[::1] alaw_dec):
    memcpy(ULAW_ENC, &ulaw_enc[0], 65536)
    memcpy(ALAW_ENC, &alaw_enc[0], 65536)
    memcpy(ULAW_DEC, &ulaw_dec[0], 256 * sizeof(int16_t))
    memcpy(ALAW_DEC, &alaw_dec[0], 256 * sizeof(int16_t))


def _build_tables():
    # The G.711 tables come from the G.711 kernel so there is one definition of the law.
    import media._g711 as g
    samples = np.arange(65536, dtype=np.uint16).view(np.int16)
    ue = np.empty(65536, dtype=np.uint8)
    ae = np.empty(65536, dtype=np.uint8)
    g.lin2ulaw_into(samples, ue)
    g.lin2alaw_into(samples, ae)
    codes = np.arange(256, dtype=np.uint8)
    ud = np.empty(256, dtype=np.int16)
    ad = np.empty(256, dtype=np.int16)
    g.ulaw2lin_into(codes, ud)
    g.alaw2lin_into(codes, ad)
    _install_tables(ue, ae, ud, ad)

_build_tables()


cdef inline int32_t _clip16(int64_t v) noexcept nogil:
    if v > 32767:
        return 32767
    if v < -32768:
        return -32768
    return <int32_t>v


cdef class MixKernel:
    """Mix-minus over rows ``[start, stop)`` of the bound arrays (see media.mixer.MixKernel)."""

    cdef int16_t[:, ::1] _pcm_in
    cdef int16_t[:, ::1] _pcm_out
    cdef uint8_t[:, ::1] _payload_in
    cdef uint8_t[:, ::1] _payload_out
    cdef int32_t[::1] _conference
    cdef uint8_t[::1] _flags
    cdef uint8_t[::1] _codec
    cdef int32_t[::1] _talk_gain
    cdef int32_t[::1] _listen_gain
    cdef int32_t[:, ::1] _acc
    cdef uint32_t[::1] _stamp
    cdef int32_t[::1] _scratch
    cdef uint32_t _gen
    cdef Py_ssize_t _rows, _length, _conferences

    def __init__(self, int16_t[:, ::1] pcm_in, int16_t[:, ::1] pcm_out,
                 uint8_t[:, ::1] payload_in, uint8_t[:, ::1] payload_out,
                 int32_t[::1] conference, uint8_t[::1] flags, uint8_t[::1] codec,
                 int32_t[::1] talk_gain, int32_t[::1] listen_gain, Py_ssize_t n_conferences):
        cdef Py_ssize_t rows = pcm_in.shape[0]
        cdef Py_ssize_t length = pcm_in.shape[1]
        if (pcm_out.shape[0] != rows or payload_in.shape[0] != rows
                or payload_out.shape[0] != rows or conference.shape[0] != rows
                or flags.shape[0] != rows or codec.shape[0] != rows
                or talk_gain.shape[0] != rows or listen_gain.shape[0] != rows):
            raise ValueError("all per-row arrays need the same number of rows")
        if (pcm_out.shape[1] != length or payload_in.shape[1] != length
                or payload_out.shape[1] != length):
            raise ValueError("all frame arrays need the same frame length")
        if n_conferences < 1 or length < 1:
            raise ValueError("need at least one conference slot and one sample")
        self._pcm_in = pcm_in
        self._pcm_out = pcm_out
        self._payload_in = payload_in
        self._payload_out = payload_out
        self._conference = conference
        self._flags = flags
        self._codec = codec
        self._talk_gain = talk_gain
        self._listen_gain = listen_gain
        self._acc = np.zeros((n_conferences, length), dtype=np.int32)
        self._stamp = np.zeros(n_conferences, dtype=np.uint32)
        self._scratch = np.zeros(length, dtype=np.int32)
        self._gen = 0
        self._rows = rows
        self._length = length
        self._conferences = n_conferences

    def mix(self, Py_ssize_t start, Py_ssize_t stop):
        """Mix rows ``[start, stop)``: decode, mix-minus, saturate, encode; clear FRESH."""
        cdef Py_ssize_t p
        cdef int32_t c
        if start < 0 or stop > self._rows or start > stop:
            raise ValueError("row range out of bounds")
        for p in range(start, stop):
            if self._flags[p] & (TALK | LISTEN):
                c = self._conference[p]
                if c < 0 or c >= self._conferences:
                    raise ValueError(f"row {p} has conference {c} outside the accumulator")
        self._gen += 1
        if self._gen == 0:  # wrapped: old stamps could alias the new generation
            self._stamp[:] = 0
            self._gen = 1
        with nogil:
            self._mix(start, stop)

    cdef void _mix(self, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
        cdef Py_ssize_t p, j
        cdef Py_ssize_t L = self._length
        cdef uint8_t fl, codec
        cdef int32_t c, g, lg
        cdef int16_t* pin
        cdef int16_t* pout
        cdef uint8_t* bin_
        cdef uint8_t* bout
        cdef int32_t* acc
        cdef int32_t* own = &self._scratch[0]
        cdef const int16_t* dec
        cdef const uint8_t* enc
        cdef int64_t s
        cdef uint32_t gen = self._gen

        # Pass 1: every talking row with a fresh frame adds its (gained, clipped) signal.
        for p in range(start, stop):
            fl = self._flags[p]
            if (fl & (TALK | FRESH)) != (TALK | FRESH):
                continue
            pin = &self._pcm_in[p, 0]
            codec = self._codec[p]
            if codec != LINEAR:
                dec = &ULAW_DEC[0] if codec == PCMU else &ALAW_DEC[0]
                bin_ = &self._payload_in[p, 0]
                for j in range(L):
                    pin[j] = dec[bin_[j]]
            c = self._conference[p]
            acc = &self._acc[c, 0]
            g = self._talk_gain[p]
            if self._stamp[c] != gen:
                self._stamp[c] = gen
                if g == UNITY:
                    for j in range(L):
                        acc[j] = pin[j]
                else:
                    for j in range(L):
                        acc[j] = _clip16((<int32_t>pin[j] * g) >> 12)
            else:
                if g == UNITY:
                    for j in range(L):
                        acc[j] += pin[j]
                else:
                    for j in range(L):
                        acc[j] += _clip16((<int32_t>pin[j] * g) >> 12)

        # Pass 2: every listening row hears its conference's sum minus its own contribution.
        for p in range(start, stop):
            fl = self._flags[p]
            if not (fl & LISTEN):
                self._flags[p] = fl & ~FRESH
                continue
            c = self._conference[p]
            pout = &self._pcm_out[p, 0]
            lg = self._listen_gain[p]
            if self._stamp[c] != gen:
                memset(own, 0, L * sizeof(int32_t))
                acc = own  # nobody talked: the sum is zero
            else:
                acc = &self._acc[c, 0]
            if (fl & (TALK | FRESH)) == (TALK | FRESH):
                pin = &self._pcm_in[p, 0]
                g = self._talk_gain[p]
                if g == UNITY:
                    for j in range(L):
                        own[j] = pin[j]
                else:
                    for j in range(L):
                        own[j] = _clip16((<int32_t>pin[j] * g) >> 12)
                if lg == UNITY:
                    for j in range(L):
                        pout[j] = <int16_t>_clip16(acc[j] - own[j])
                else:
                    for j in range(L):
                        s = (<int64_t>(acc[j] - own[j]) * lg) >> 12
                        pout[j] = <int16_t>_clip16(s)
            else:
                if lg == UNITY:
                    for j in range(L):
                        pout[j] = <int16_t>_clip16(acc[j])
                else:
                    for j in range(L):
                        s = (<int64_t>acc[j] * lg) >> 12
                        pout[j] = <int16_t>_clip16(s)
            codec = self._codec[p]
            if codec != LINEAR:
                enc = &ULAW_ENC[0] if codec == PCMU else &ALAW_ENC[0]
                bout = &self._payload_out[p, 0]
                for j in range(L):
                    bout[j] = enc[<uint16_t>pout[j]]
            self._flags[p] = fl & ~FRESH
