"""The compiled jitter buffer (``media._jitter``) and its source run as Python
(``media._jitter_py``) behave identically: both are driven in lock-step on Hypothesis traces
(loss, reordering, jitter, duplicates, SSRC changes, sequence and timestamp jumps, marker bits,
CN/DTX gaps, telephone-events through ``skip()``, clock drift, garbage) and every ``get()``
result, concealment flag, comfort-noise payload, counter and delay estimate must be equal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import media._jitter_py as reference
from media._accel import extensions_disabled
from media.rtp import RtpPacket

if extensions_disabled():
    compiled: ModuleType = pytest.importorskip("media._jitter")
else:
    import media._jitter as compiled  # a missing extension is an error, not a skip

PT_AUDIO, PT_CN, PT_EVENT = 0, 13, 101


@dataclass(frozen=True)
class Put:
    arrival: float
    packet: RtpPacket


@dataclass(frozen=True)
class Skip:
    arrival: float
    packet: RtpPacket


Event = Put | Skip


def test_the_two_builds_are_distinct() -> None:
    assert compiled.__file__ is not None and compiled.__file__.endswith(".so")
    assert reference.__file__ is not None and reference.__file__.endswith(".py")
    assert compiled.JitterBuffer is not reference.JitterBuffer


@st.composite
def traces(draw: st.DrawFn) -> tuple[dict[str, Any], list[Event], float, float, float]:
    """A sender's talkspurts as the network delivers them, plus the buffer's settings and the
    receiver's tick clock (phase, period with drift, duration)."""
    # The per-packet choices come from a seeded generator: hundreds of packets drawn one by one
    # from Hypothesis would exceed its entropy budget (HealthCheck.data_too_large).
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    clock_rate = draw(st.sampled_from([8000, 8000, 16000, 48000]))
    frame = clock_rate // 50
    min_delay = draw(st.sampled_from([0.02, 0.04]))
    max_delay = draw(st.sampled_from([0.1, 0.2, 0.5]))
    capacity = draw(st.sampled_from([None, None, 4, 10]))
    settings_ = {
        "clock_rate": clock_rate,
        "min_delay": min_delay,
        "max_delay": max_delay,
        "capacity": capacity,
        "cn_payload_type": draw(st.sampled_from([PT_CN, PT_CN, None])),
    }
    n = draw(st.integers(1, 400))
    loss = draw(st.sampled_from([0.0, 0.02, 0.1, 0.3]))
    dup = draw(st.sampled_from([0.0, 0.02, 0.1]))
    jitter = draw(st.sampled_from([0.0, 0.01, 0.06, 0.2]))
    burst = draw(st.sampled_from([0.0, 0.01]))  # chance of a network stall of up to 0.5 s
    dtx = draw(st.booleans())
    events: list[Event] = []
    ssrc = draw(st.integers(0, 0xFFFFFFFF))
    seq = draw(st.integers(0, 0xFFFF))
    ts = draw(st.integers(0, 0xFFFFFFFF))
    t_send = 0.0
    stall_until = 0.0
    talk_left = rng.randint(5, 60)
    marker = True
    for _ in range(n):
        r = rng.random()
        if r < 0.01:  # a new source (re-INVITE, transfer)
            ssrc = rng.getrandbits(32)
            seq, ts, marker = rng.getrandbits(16), rng.getrandbits(32), True
        elif r < 0.02:  # the sender's clock jumps
            ts = (ts + rng.choice([-1, 1]) * rng.randint(frame * 10, 1 << 31)) & 0xFFFFFFFF
        elif r < 0.03:  # the sequence jumps (a restarted or spliced stream)
            seq = (seq + rng.randint(3001, 60000)) & 0xFFFF
        if dtx and talk_left == 0:
            # End of a talkspurt: one CN packet, then silence (timestamps run, seq does not).
            events.append(Put(t_send + 0.03, RtpPacket(PT_CN, seq, ts, ssrc, bytes([rng.randrange(127)]))))
            seq = (seq + 1) & 0xFFFF
            gap = rng.randint(1, 60)
            ts = (ts + frame * gap) & 0xFFFFFFFF
            t_send += 0.02 * gap
            talk_left, marker = rng.randint(5, 60), True
        talk_left -= 1
        if rng.random() < 0.03:  # a DTMF digit: telephone-events share the sequence space
            for _ in range(rng.randint(1, 8)):
                payload = b"\x01\x0a\x00\xa0"
                events.append(Skip(t_send + 0.03, RtpPacket(PT_EVENT, seq, ts, ssrc, payload)))
                seq = (seq + 1) & 0xFFFF
                t_send += 0.02
            ts = (ts + frame * 8) & 0xFFFFFFFF
            marker = True
        packet = RtpPacket(PT_AUDIO, seq, ts, ssrc, bytes([seq & 0xFF]) * 4, marker=marker)
        marker = False
        seq = (seq + 1) & 0xFFFF
        ts = (ts + frame) & 0xFFFFFFFF
        if rng.random() < burst:
            stall_until = t_send + rng.uniform(0.05, 0.5)
        arrival = max(t_send + 0.03 + rng.uniform(0, jitter), stall_until)
        t_send += 0.02
        if rng.random() < loss:
            continue
        events.append(Put(arrival, packet))
        while rng.random() < dup:
            events.append(Put(arrival + rng.uniform(0, 0.3), packet))
    events.sort(key=lambda e: e.arrival)  # stable: same-time events keep their sending order
    phase = draw(st.floats(0, 0.02))
    period = 0.02 * (1 + draw(st.sampled_from([0.0, 0.0, 0.001, -0.001])))
    until = t_send + 1.5
    return settings_, events, phase, period, until


def _snapshot(jb: Any) -> tuple[Any, ...]:
    return (len(jb), jb.ssrc, jb.target_delay, sorted(jb.statistics().items()))


def _same_output(a: Any, b: Any) -> bool:
    return a.packet is b.packet and a.conceal == b.conceal and a.comfort_noise == b.comfort_noise


def _lockstep(
    settings_: dict[str, Any], events: list[Event], phase: float, period: float, until: float
) -> int:
    """Drive both builds through the same trace; returns the number of packets played."""
    fast = compiled.JitterBuffer(**settings_)
    slow = reference.JitterBuffer(**settings_)
    assert _snapshot(fast) == _snapshot(slow)
    played = 0
    k = 0
    tick = 0
    now = phase
    while now < until:
        while k < len(events) and events[k].arrival <= now:
            ev = events[k]
            if isinstance(ev, Put):
                fast.put(ev.packet, ev.arrival)
                slow.put(ev.packet, ev.arrival)
            else:
                fast.skip(ev.packet)
                slow.skip(ev.packet)
            assert _snapshot(fast) == _snapshot(slow), f"after event {k}: {ev}"
            k += 1
        a, b = fast.get(now), slow.get(now)
        assert _same_output(a, b), f"tick {tick} at {now}: {a} != {b}"
        assert _snapshot(fast) == _snapshot(slow), f"after tick {tick}"
        played += a.packet is not None
        tick += 1
        now = phase + tick * period
    return played


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces())
def test_builds_agree_on_random_traces(
    trace: tuple[dict[str, Any], list[Event], float, float, float],
) -> None:
    _lockstep(*trace)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "put", "put", "skip", "get"]),
            st.sampled_from([1, 1, 1, 2]),  # ssrc (mostly one source)
            st.integers(0, 0xFFFF),  # seq
            st.integers(0, 0xFFFFFFFF),  # timestamp
            st.floats(-0.05, 0.1),  # arrival offset from the tick clock
            st.booleans(),  # marker
            st.sampled_from([0, 0, 13]),  # payload type (some CN)
        ),
        max_size=150,
    )
)
def test_builds_agree_on_garbage(
    items: list[tuple[str, int, int, int, float, bool, int]],
) -> None:
    """Arbitrary packets and call orders (no network model at all)."""
    fast = compiled.JitterBuffer(8000, capacity=10)
    slow = reference.JitterBuffer(8000, capacity=10)
    now = 0.0
    for op, ssrc, seq, ts, offset, marker, pt in items:
        packet = RtpPacket(pt, seq, ts, ssrc, b"p", marker=marker)
        if op == "put":
            fast.put(packet, now + offset)
            slow.put(packet, now + offset)
        elif op == "skip":
            fast.skip(packet)
            slow.skip(packet)
        else:
            assert _same_output(fast.get(now), slow.get(now))
            now += 0.02
        assert _snapshot(fast) == _snapshot(slow)
    for _ in range(60):
        assert _same_output(fast.get(now), slow.get(now))
        assert _snapshot(fast) == _snapshot(slow)
        now += 0.02


def test_a_long_clean_call_agrees_and_plays_everything() -> None:
    """Ten minutes of a clean stream across sequence and timestamp wrap-around."""
    events: list[Event] = [
        Put(0.05 + i * 0.02, RtpPacket(0, (65000 + i) & 0xFFFF, (0xFFFF0000 + 160 * i) & 0xFFFFFFFF, 7, b"x"))
        for i in range(30_000)
    ]
    played = _lockstep(
        {"clock_rate": 8000, "min_delay": 0.02, "max_delay": 0.2, "capacity": None,
         "cn_payload_type": 13},
        events, 0.007, 0.02, 30_000 * 0.02 + 1,
    )
    assert played == 30_000


def test_public_types_behave_alike() -> None:
    for mod in (compiled, reference):
        out = mod.JitterOutput(None, True, b"\x40")
        assert (out.packet, out.conceal, out.comfort_noise) == (None, True, b"\x40")
        assert out == mod.JitterOutput(None, True, b"\x40") and out != mod.JitterOutput(None)
        assert "conceal=True" in repr(out)
        stats = mod.JitterStatistics()
        assert stats.as_dict() == dict.fromkeys(mod.COUNTERS, 0)
        with pytest.raises(ValueError):
            mod.JitterBuffer(8000, min_delay=0.3, max_delay=0.2)
        jb = mod.JitterBuffer(48000)
        assert (jb.clock_rate, jb.frame, jb.capacity, jb.ssrc, len(jb)) == (48000, 960, 28, None, 0)
