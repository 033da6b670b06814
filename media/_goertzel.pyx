# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Goertzel filter kernel (reference and documentation: media/dtmf.py)."""

from libc.math cimport cos, sin, M_PI


cdef void _run(const double* x, Py_ssize_t n, double w, double* s1, double* s2) noexcept nogil:
    cdef double coeff = 2.0 * cos(w)
    cdef double a = 0.0
    cdef double b = 0.0
    cdef double s
    cdef Py_ssize_t i
    for i in range(n):
        s = x[i] + coeff * a - b
        b = a
        a = s
    s1[0] = a
    s2[0] = b


def goertzel_powers(const double[::1] x, const double[::1] freqs, double rate, double[::1] out):
    """``out[k] = |Σ x[n]·e^(−j2π·freqs[k]·n/rate)|²`` by the Goertzel recurrence."""
    cdef Py_ssize_t k, n = x.shape[0]
    cdef double w, s1, s2
    if out.shape[0] != freqs.shape[0]:
        raise ValueError("out needs one slot per frequency")
    if n == 0:
        for k in range(freqs.shape[0]):
            out[k] = 0.0
        return
    with nogil:
        for k in range(freqs.shape[0]):
            w = 2.0 * M_PI * freqs[k] / rate
            _run(&x[0], n, w, &s1, &s2)
            out[k] = s1 * s1 + s2 * s2 - 2.0 * cos(w) * s1 * s2


def goertzel_complex(const double[::1] x, double freq, double rate):
    """The DTFT ``Σ x[n]·e^(−j2π·freq·n/rate)`` as (real, imaginary)."""
    cdef Py_ssize_t n = x.shape[0]
    cdef double w = 2.0 * M_PI * freq / rate
    cdef double s1 = 0.0, s2 = 0.0, yr, yi, c, s
    if n == 0:
        return 0.0, 0.0
    with nogil:
        _run(&x[0], n, w, &s1, &s2)
    # y = s1 − e^(−jw)·s2 is the DFT rotated by e^(jw(n−1)); undo the rotation.
    yr = s1 - cos(w) * s2
    yi = sin(w) * s2
    c = cos(w * (n - 1))
    s = sin(w * (n - 1))
    return yr * c + yi * s, yi * c - yr * s
