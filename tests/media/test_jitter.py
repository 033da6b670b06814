"""Jitter buffer: properties on random traces, adaptation, resync, CN, and audio through loss."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from media.codecs import PayloadTypeRegistry
from media.jitter import JitterBuffer, JitterOutput
from media.rtp import RtpPacket, SequenceExtender

TICK = 0.020


def make_trace(
    n: int, *, loss: float, jitter: float, dup: float, seed: int, seq0: int = 1000,
    ts0: int = 5000, ssrc: int = 0x1234,
) -> list[tuple[float, RtpPacket]]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        if rng.random() < loss:
            continue
        p = RtpPacket(0, (seq0 + i) & 0xFFFF, (ts0 + 160 * i) & 0xFFFFFFFF, ssrc, bytes([i & 0xFF]) * 160)
        t = 0.05 + i * TICK + rng.uniform(0, jitter)
        events.append((t, p))
        if rng.random() < dup:
            events.append((t + rng.uniform(0, 0.1), p))
    events.sort(key=lambda e: e[0])
    return events


def run(
    jb: JitterBuffer, events: list[tuple[float, RtpPacket]], until: float, phase: float = 0.007,
    check: bool = True,
) -> list[JitterOutput]:
    outputs: list[JitterOutput] = []
    k = 0
    now = phase
    while now < until:
        while k < len(events) and events[k][0] <= now:
            jb.put(events[k][1], events[k][0])
            k += 1
            if check:
                assert len(jb) <= jb.capacity
        outputs.append(jb.get(now))
        now += TICK
    return outputs


@settings(max_examples=60)
@given(
    n=st.integers(1, 300),
    loss=st.floats(0, 0.3),
    jitter=st.floats(0, 0.15),
    dup=st.floats(0, 0.2),
    seed=st.integers(0, 10**6),
    seq0=st.integers(0, 0xFFFF),
    ts0=st.integers(0, 0xFFFFFFFF),
    phase=st.floats(0, TICK),
)
def test_properties_on_random_traces(
    n: int, loss: float, jitter: float, dup: float, seed: int, seq0: int, ts0: int, phase: float
) -> None:
    events = make_trace(n, loss=loss, jitter=jitter, dup=dup, seed=seed, seq0=seq0, ts0=ts0)
    jb = JitterBuffer(8000, capacity=12)
    outputs = run(jb, events, until=n * TICK + 1.5, phase=phase)
    ext = SequenceExtender()
    emitted = [ext.extend(o.packet.sequence_number) for o in outputs if o.packet is not None]
    # In order, at most once, never a duplicate.
    assert all(a < b for a, b in itertools.pairwise(emitted))
    sent = {p.sequence_number for _, p in events}
    assert {e & 0xFFFF for e in emitted} <= sent
    st_ = jb.stats
    assert st_.emitted == len(emitted)
    # Every received packet is accounted for exactly once.
    assert st_.received == (
        st_.emitted + st_.late + st_.duplicates + st_.discarded + st_.overflows + len(jb)
    )
    assert len(jb) == 0  # everything was played out or dropped by the end
    assert jb.min_delay <= jb.target_delay <= jb.max_delay
    # Concealment is never signalled together with a packet.
    assert not any(o.conceal and o.packet is not None for o in outputs)


def test_clean_stream_plays_everything() -> None:
    events = make_trace(500, loss=0, jitter=0, dup=0, seed=1)
    jb = JitterBuffer(8000)
    outputs = run(jb, events, until=500 * TICK + 0.5)
    assert jb.stats.emitted == 500
    assert jb.stats.late == 0 and jb.stats.discarded == 0
    first = next(i for i, o in enumerate(outputs) if o.packet is not None)
    # No concealment inside the stream: only the end-of-stream underrun may conceal.
    inside = outputs[first : first + 500]
    assert all(o.packet is not None for o in inside)
    assert jb.target_delay < 0.05


def test_adapts_to_jitter_and_drops_few_late_packets() -> None:
    events = make_trace(1500, loss=0, jitter=0.08, dup=0, seed=2)
    jb = JitterBuffer(8000)
    run(jb, events, until=1500 * TICK + 1)
    assert 0.07 <= jb.target_delay <= 0.2
    assert jb.stats.late < 30  # < 2 %: the target grew to cover the jitter
    assert jb.stats.emitted > 1450


def test_duplicates_and_late_packets_are_counted() -> None:
    jb = JitterBuffer(8000)
    p = [RtpPacket(0, i, i * 160, 7, b"x") for i in range(10)]
    jb.put(p[0], 0.0)
    jb.put(p[0], 0.001)
    assert jb.stats.duplicates == 1
    outs = [jb.get(0.005 + i * TICK) for i in range(5)]
    assert outs[0].packet is None  # still buffering
    assert any(o.packet is p[0] for o in outs)
    jb.put(p[0], 0.2)  # already played: a duplicate, not a new packet
    assert jb.stats.duplicates == 2
    assert jb.stats.late == 0
    jb2 = JitterBuffer(8000)
    events = [(i * TICK, RtpPacket(0, i, i * 160, 7, b"y")) for i in range(10) if i != 5]
    run(jb2, events, until=0.3)
    jb2.put(RtpPacket(0, 5, 5 * 160, 7, b"y"), 0.3)  # its slot has passed
    assert jb2.stats.late == 1 and jb2.stats.duplicates == 0
    assert jb2.stats.concealed >= 1  # its slot was concealed


def test_ssrc_change_resyncs() -> None:
    jb = JitterBuffer(8000)
    run(jb, make_trace(50, loss=0, jitter=0, dup=0, seed=0), until=0.5)
    second = [(t + 0.5, p) for t, p in make_trace(50, loss=0, jitter=0, dup=0, seed=0, seq0=40000, ts0=9, ssrc=99)]
    outputs = run(jb, second, until=2.0, phase=0.507)
    assert jb.stats.resyncs == 1
    assert jb.ssrc == 99
    assert sum(1 for o in outputs if o.packet is not None and o.packet.ssrc == 99) == 50


def test_timestamp_jump_resyncs() -> None:
    jb = JitterBuffer(8000)
    events = make_trace(100, loss=0, jitter=0, dup=0, seed=0)
    # Halfway the sender's timestamp jumps by an hour while the sequence continues.
    events = [(t, RtpPacket(0, p.sequence_number, (p.timestamp + (0 if i < 50 else 8000 * 3600)) & 0xFFFFFFFF, p.ssrc, p.payload))
              for i, (t, p) in enumerate(events)]
    outputs = run(jb, events, until=3.0)
    assert jb.stats.resyncs == 1
    assert sum(1 for o in outputs if o.packet is not None) >= 97


def test_dtx_gap_and_comfort_noise_are_not_loss() -> None:
    jb = JitterBuffer(8000)
    events = []
    for i in range(20):
        events.append((0.05 + i * TICK, RtpPacket(0, i, i * 160, 1, b"a" * 160)))
    events.append((0.05 + 20 * TICK, RtpPacket(13, 20, 20 * 160, 1, b"\x40")))  # CN, then silence
    for i in range(60, 80):  # talkspurt after 0.8 s of silence: seq continues, marker set
        events.append((0.05 + i * TICK, RtpPacket(0, i - 39, i * 160, 1, b"b" * 160, marker=(i == 60))))
    outputs = run(jb, events, until=2.0)
    assert jb.stats.concealed <= 5  # only the end-of-stream underrun
    cn = [o for o in outputs if o.comfort_noise is not None]
    assert len(cn) > 20 and all(o.comfort_noise == b"\x40" and not o.conceal for o in cn)
    assert jb.stats.emitted == 41


def goertzel_power(x: npt.NDArray[np.int16], freq: float, rate: int) -> float:
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for v in x.astype(np.float64):
        s1, s2 = v + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (len(x) ** 2)


def test_tone_through_loss_and_jitter() -> None:
    """A 1 kHz tone over PCMU with 5 % loss and 40 ms jitter is still a 1 kHz tone."""
    reg = PayloadTypeRegistry()
    tx, rx = reg.create_codec(0), reg.create_codec(0)
    t = np.arange(8000 * 3)
    x = (8000 * np.sin(2 * np.pi * 1000 * t / 8000)).astype(np.int16)
    rng = random.Random(5)
    events = []
    for i in range(150):
        payload = tx.encode(x[i * 160 : (i + 1) * 160])
        if rng.random() < 0.05:
            continue
        events.append((0.05 + i * TICK + rng.uniform(0, 0.04), RtpPacket(0, i, i * 160, 1, payload)))
    events.sort(key=lambda e: e[0])
    jb = JitterBuffer(8000)
    frames = []
    for out in run(jb, events, until=4.0):
        if out.packet is not None:
            frames.append(rx.decode(out.packet.payload))
        elif out.conceal:
            frames.append(rx.conceal())
    y = np.concatenate(frames)[:8000 * 2]
    assert jb.stats.concealed > 0
    p1k = goertzel_power(y, 1000, 8000)
    assert p1k > 0.5 * float(np.mean(y.astype(np.float64) ** 2)) / 2
    assert all(p1k > 100 * goertzel_power(y, f, 8000) for f in (600.0, 1300.0, 2500.0))


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 1, 1, 2]),  # ssrc (mostly one source)
            st.integers(0, 0xFFFF),  # seq
            st.integers(0, 0xFFFFFFFF),  # timestamp
            st.floats(0, 0.1),  # arrival offset
            st.booleans(),  # marker
            st.sampled_from([0, 0, 13]),  # payload type (some CN)
        ),
        max_size=120,
    )
)
def test_arbitrary_packets_never_break_the_buffer(
    items: list[tuple[int, int, int, float, bool, int]],
) -> None:
    """Garbage traces (random SSRCs, sequence numbers, timestamps): no exception, bounded, and
    within one SSRC run nothing is emitted twice or out of order."""
    jb = JitterBuffer(8000, capacity=10)
    emitted: list[tuple[int, int]] = []
    now = 0.0
    for i, (ssrc, seq, ts, offset, marker, pt) in enumerate(items):
        jb.put(RtpPacket(pt, seq, ts, ssrc, b"p", marker=marker), now + offset)
        assert len(jb) <= 10
        if i % 2:
            out = jb.get(now)
            if out.packet is not None:
                emitted.append((out.packet.ssrc, out.packet.sequence_number))
            now += TICK
    for _ in range(100):
        out = jb.get(now)
        if out.packet is not None:
            emitted.append((out.packet.ssrc, out.packet.sequence_number))
        now += TICK
    assert len(jb) == 0
    # Between resyncs, emitted sequence numbers strictly increase (mod 2**16).
    resyncs = jb.stats.resyncs
    backwards = sum(
        1 for (s1, a), (s2, b) in itertools.pairwise(emitted) if s1 == s2 and not 0 < (b - a) & 0xFFFF < 0x8000
    )
    assert backwards <= resyncs


def test_delay_shrinks_again_in_silence_after_jitter_subsides() -> None:
    rng = random.Random(9)
    events = []
    arrival: dict[int, float] = {}
    seq = 0
    for i in range(2500):  # 50 s of media time
        talking = (i % 100) < 80  # 1.6 s talkspurts, 0.4 s DTX gaps
        if not talking:
            continue
        jitter = 0.15 if i < 500 else 0.0
        t = 0.05 + i * TICK + rng.uniform(0, jitter)
        events.append((t, RtpPacket(0, seq & 0xFFFF, i * 160, 5, b"v", marker=(i % 100 == 0))))
        arrival[seq] = 0.05 + i * TICK  # when it was sent (network delay 50 ms + jitter)
        seq += 1
    events.sort(key=lambda e: e[0])
    jb = JitterBuffer(8000)
    delays: list[tuple[float, float]] = []
    k, now = 0, 0.013
    while now < 51:
        while k < len(events) and events[k][0] <= now:
            jb.put(events[k][1], events[k][0])
            k += 1
        out = jb.get(now)
        if out.packet is not None:
            delays.append((now, now - arrival[out.packet.sequence_number]))
        now += TICK
    early = [d for t, d in delays if 5 < t < 10]
    late = [d for t, d in delays if t > 45]
    # Sent → played: grew to cover 150 ms of jitter, and came back down once the network calmed.
    assert sum(early) / len(early) > 0.12
    assert sum(late) / len(late) < 0.06
    assert jb.stats.emitted > 0.95 * len(events)


def test_skipped_telephone_events_are_not_loss() -> None:
    jb = JitterBuffer(8000)
    events = []
    for i in range(60):
        if 20 <= i < 30:  # a DTMF digit: telephone-event packets replace audio for 200 ms
            events.append((0.05 + i * TICK, RtpPacket(101, i, 20 * 160, 3, b"\x01\x0a\x00\xa0")))
        else:
            events.append((0.05 + i * TICK, RtpPacket(0, i, i * 160, 3, b"a", marker=(i == 30))))
    k, now, outputs = 0, 0.009, []
    while now < 1.6:
        while k < len(events) and events[k][0] <= now:
            t, p = events[k]
            if p.payload_type == 101:
                jb.skip(p)
            else:
                jb.put(p, t)
            k += 1
        outputs.append(jb.get(now))
        now += TICK
    first = next(i for i, o in enumerate(outputs) if o.packet is not None)
    middle = outputs[first : first + 50]
    assert not any(o.conceal for o in middle)
    assert jb.stats.emitted == 50 and jb.stats.late == 0


def test_a_sender_catching_up_on_a_backlog_does_not_stall_playout() -> None:
    """A sender that starts ``behind`` packets late and catches up at one packet per 5 ms keeps
    the buffer full; each overflow drops the head just before it is due. The dropped slots must
    be passed (they are lost), or playout conceals behind the buffer for the rest of the call —
    what a phone that first sends a burst of RTP did to a transcoding bridge."""
    for behind in (50, 200):
        jb = JitterBuffer()
        arrivals: list[tuple[float, int]] = []
        t = 0.0
        for i in range(behind + 600):
            t = max(t + 0.005, (i - behind) * 0.02) if i else 0.0
            arrivals.append((t, i))
        pending = iter(arrivals)
        nxt = next(pending, None)
        played: list[bool] = []
        for k in range(600):
            now = k * 0.02
            while nxt is not None and nxt[0] <= now:
                jb.put(RtpPacket(0, nxt[1], nxt[1] * 160, 1, b"\xff" * 160), nxt[0])
                nxt = next(pending, None)
            played.append(jb.get(now).packet is not None)
        assert sum(played[-400:]) == 400, (behind, jb.stats.as_dict())
        assert jb.stats.concealed < 20, (behind, jb.stats.as_dict())
