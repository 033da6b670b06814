# C declarations that augment media/_jitter_py.py when setup.py compiles it (Cython pure-Python
# mode) into the extension ``media._jitter``. Cython finds this file by the extension's module
# name. Nothing here changes behaviour: the interpreted file is the reference and
# tests/media/test_jitter_differential.py holds both builds to identical outputs.

cimport cython

cdef long long _MAX_DROPOUT, _WINDOW, _STRETCH_EVERY, _RECENT, _MAX_UNDERRUN_CONCEAL
cdef long long _MAX_SKIPPED, _TS_LIMIT, _TS_CYCLE, _TS_HALF, _TS_MASK, _UNSET
cdef unsigned long long _RECENT_MASK
cdef double _RELEASE


@cython.final
@cython.freelist(32)
cdef class JitterOutput:
    cdef readonly object packet
    cdef readonly bint conceal
    cdef readonly object comfort_noise


@cython.final
cdef class JitterStatistics:
    cdef public long long received, emitted, late, duplicates, concealed
    cdef public long long overflows, discarded, resyncs, stretched


cdef JitterOutput _NOTHING, _CONCEAL


@cython.final
cdef class JitterBuffer:
    cdef readonly long long clock_rate
    cdef readonly double ptime
    cdef readonly long long frame
    cdef readonly double min_delay, max_delay
    cdef readonly long long capacity
    cdef readonly object cn_payload_type
    cdef readonly JitterStatistics stats
    cdef double _rate, _window
    cdef list _seqs, _stamps, _packets
    cdef long long _highest, _ssrc, _ts_ref, _bad_seq
    cdef bint _started
    cdef long long _playout_ts, _last_seq
    cdef unsigned long long _played
    cdef set _skipped
    cdef double _min_cur, _min_prev
    cdef long long _count_in_bucket
    cdef double _peak
    cdef long long _underrun, _since_stretch
    cdef bint _talking
    cdef object _comfort_noise
    cdef double _first_arrival

    cdef _reset(self)

    @cython.locals(stats=JitterStatistics, ssrc=cython.longlong, seq=cython.longlong,
                   seq_highest=cython.longlong, ext_seq=cython.longlong, ext_ts=cython.longlong)
    cpdef put(self, packet, double arrival)

    @cython.locals(ext_seq=cython.longlong)
    cpdef skip(self, packet)

    @cython.locals(frame=cython.longlong, ideal=cython.double, error=cython.double,
                   has_head=cython.bint, head_ts=cython.longlong, due=cython.bint,
                   jump=cython.longlong)
    cpdef JitterOutput get(self, double now)

    cdef double _target_delay(self)

    @cython.locals(ext_seq=cython.longlong, ext_ts=cython.longlong)
    cdef JitterOutput _emit(self)

    cdef JitterOutput _gap(self, bint has_head)

    @cython.locals(last=cython.longlong, s=cython.longlong, skipped=set)
    cdef bint _follows(self, long long ext_seq)

    cdef JitterOutput _hold(self)
    cdef JitterOutput _underrun_output(self)
    cdef _pop(self)

    @cython.locals(last=cython.longlong)
    cdef _remember(self, long long ext_seq)

    @cython.locals(last=cython.longlong, age=cython.longlong, seqs=list, i=Py_ssize_t,
                   s=cython.longlong)
    cdef bint _is_duplicate(self, long long ext_seq)

    @cython.locals(seqs=list, n=Py_ssize_t, i=Py_ssize_t, s=cython.longlong,
                   dropped_seq=cython.longlong, dropped_ts=cython.longlong)
    cdef _insert(self, long long ext_seq, long long ext_ts, packet)

    @cython.locals(highest=cython.longlong, ext=cython.longlong)
    cdef long long _extend_seq(self, long long seq) noexcept

    @cython.locals(ref=cython.longlong, ext=cython.longlong)
    cdef long long _extend_ts(self, long long ts) noexcept

    @cython.locals(ref=cython.longlong)
    cdef bint _ts_jumped(self, long long ext_ts, long long ext_seq)

    @cython.locals(ssrc=cython.longlong, ext_seq=cython.longlong, ext_ts=cython.longlong)
    cdef _resync(self, packet, double arrival)

    @cython.locals(transit=cython.double, delay=cython.double)
    cdef _observe(self, long long ext_ts, double arrival)
