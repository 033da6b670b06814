"""DTMF: RFC 4733 payloads, sender and receiver; the in-band detector; Goertzel kernel vs reference."""

from __future__ import annotations

import importlib
import math
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import media.dtmf as dtmf
from media.dtmf import (
    DIGITS,
    DigitReceived,
    DtmfDetector,
    DtmfGenerator,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    decode_event,
    dtmf_tone,
    encode_event,
)
from media.errors import MediaParseError, MediaUsageError

RATE = 8000


def _ext() -> ModuleType:
    return importlib.import_module("media._goertzel")


# --- RFC 4733 payload -----------------------------------------------------------------------


@given(
    st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF)
)
def test_event_payload_roundtrip(event: int, end: bool, volume: int, duration: int) -> None:
    ev = TelephoneEvent(event, end, volume, duration)
    payload = encode_event(ev)
    assert len(payload) == 4
    assert decode_event(payload) == ev


def test_event_payload_layout() -> None:
    # RFC 4733 §2.3: event | E R volume | duration (network order); '#' = 11.
    assert encode_event(TelephoneEvent(11, True, 10, 800)) == bytes([11, 0x8A, 0x03, 0x20])
    assert decode_event(bytes([5, 0x4A, 0, 160])) == TelephoneEvent(5, False, 10, 160)  # R ignored
    with pytest.raises(MediaParseError):
        decode_event(b"\x01\x02\x03")
    with pytest.raises(MediaUsageError):
        encode_event(TelephoneEvent(1, False, 64, 0))


def test_digit_event_mapping() -> None:
    assert [dtmf.digit_to_event(d) for d in "0*#AD!"] == [0, 10, 11, 12, 15, 16]
    assert "".join(dtmf.event_to_digit(e) or "?" for e in range(18)) == DIGITS + "!?"
    with pytest.raises(MediaUsageError):
        dtmf.digit_to_event("E")


# --- sender ---------------------------------------------------------------------------------


def _run(sender: DtmfSender, ticks: int, ts0: int = 1000) -> list[list[dtmf.DtmfPacket]]:
    return [sender.tick(ts0 + 160 * i) for i in range(ticks)]


def test_sender_start_updates_and_three_end_packets() -> None:
    s = DtmfSender(volume=12)
    s.send("5", duration_ms=100, gap_ms=40)
    assert s.busy and not s.active
    out = _run(s, 12)
    packets = [p for tick in out for p in tick]
    assert all(len(t) <= 1 for t in out)
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert {p.timestamp for p in packets} == {1000}  # the event's start, on every packet
    events = [p.event for p in packets]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert [p.retransmission for p in packets] == [False] * 5 + [True] * 2
    assert all(e.event == 5 and e.volume == 12 for e in events)
    assert all(decode_event(p.payload) == p.event for p in packets)
    assert not s.busy


def test_sender_digit_sequence_timestamps_and_gap() -> None:
    s = DtmfSender()
    s.send("12", duration_ms=60, gap_ms=60)
    out = _run(s, 20)
    starts = [(i, t[0]) for i, t in enumerate(out) if t and t[0].marker]
    assert [p.event.event for _, p in starts] == [1, 2]
    (i1, p1), (i2, p2) = starts
    assert p1.timestamp == 1000 and p2.timestamp == 1000 + 160 * i2
    # 3 packets (60 ms) + 2 repeats, then 3 silent gap intervals, then the next digit.
    assert i2 - i1 == 3 + 2 + 3
    assert all(out[i] == [] for i in range(i1 + 5, i2))


def test_sender_open_ended_event_and_active_flag() -> None:
    s = DtmfSender()
    s.start("#")
    for i in range(10):
        (p,) = s.tick(i * 160)
        assert s.active and not p.event.end
    s.stop()
    tail = _run(s, 4, ts0=1600)
    assert [len(t) for t in tail] == [1, 1, 1, 0]
    assert all(t[0].event.end and t[0].event.duration == 11 * 160 for t in tail[:3])
    assert not s.active


def test_sender_long_event_is_segmented() -> None:
    s = DtmfSender()
    s.send("9", duration_ms=9000, gap_ms=0)
    packets = [p for t in _run(s, 460, ts0=0) for p in t]
    stamps = sorted({p.timestamp for p in packets})
    assert stamps == [0, 0xFFFF]
    assert max(p.event.duration for p in packets) <= 0xFFFF
    assert sum(p.marker for p in packets) == 1
    final = [p for p in packets if p.event.end]
    assert len(final) == 3 and final[0].event.duration == 72000 - 0xFFFF
    # and the receiver reports it as one key press
    r = DtmfReceiver()
    got = [d for p in packets for d in r.receive(p.payload, p.timestamp, p.marker)]
    assert [d.digit for d in got] == ["9"]


def test_sender_rejects_bad_digits_atomically() -> None:
    s = DtmfSender()
    with pytest.raises(MediaUsageError):
        s.send("12x")
    assert not s.busy


# --- receiver -------------------------------------------------------------------------------


def _packets(digits: str) -> list[dtmf.DtmfPacket]:
    s = DtmfSender()
    s.send(digits)
    return [p for t in _run(s, 20 * len(digits) + 10) for p in t]


def test_receiver_one_digit_per_event() -> None:
    r = DtmfReceiver()
    got = [d for p in _packets("1#1") for d in r.receive(p.payload, p.timestamp, p.marker)]
    assert [d.digit for d in got] == ["1", "#", "1"]
    assert all(isinstance(d, DigitReceived) and d.volume == 10 for d in got)


@given(st.data())
def test_receiver_survives_loss_duplication_and_reordering(data: st.DataObject) -> None:
    digits = data.draw(st.text(alphabet=DIGITS, min_size=1, max_size=4))
    packets = _packets(digits)
    # keep at least one packet per event (e.g. only an end packet), drop others at random
    by_event: dict[int, list[dtmf.DtmfPacket]] = {}
    for p in packets:
        by_event.setdefault(p.timestamp, []).append(p)
    kept: list[dtmf.DtmfPacket] = []
    for group in by_event.values():
        keep = data.draw(st.lists(st.booleans(), min_size=len(group), max_size=len(group)))
        chosen = [p for p, k in zip(group, keep, strict=True) if k] or [group[-1]]
        chosen += [p for p in chosen if data.draw(st.booleans())]  # duplicates
        kept += data.draw(st.permutations(chosen))
    r = DtmfReceiver()
    got = [d.digit for p in kept for d in r.receive(p.payload, p.timestamp, p.marker)]
    assert got == list(digits)


def test_receiver_only_end_packets_and_non_dtmf_events() -> None:
    r = DtmfReceiver()
    end = encode_event(TelephoneEvent(7, True, 10, 800))
    assert [d.digit for d in r.receive(end, 5000)] == ["7"]
    assert r.receive(end, 5000) == [] and r.receive(end, 5000) == []
    assert r.receive(encode_event(TelephoneEvent(32, False, 10, 160)), 9000) == []  # fax CED
    with pytest.raises(MediaParseError):
        r.receive(b"\x00", 1)


# --- Goertzel kernel vs reference, helpers ---------------------------------------------------


@given(
    st.lists(st.floats(-32768, 32767), min_size=0, max_size=300),
    st.lists(st.floats(10.0, 3990.0), min_size=1, max_size=8),
    st.sampled_from([8000.0, 16000.0, 48000.0]),
)
def test_goertzel_kernel_equals_reference(xs: list[float], freqs: list[float], rate: float) -> None:
    x = np.array(xs, dtype=np.float64)
    f = np.array(freqs, dtype=np.float64)
    a, b = np.zeros(f.size), np.zeros(f.size)
    _ext().goertzel_powers(x, f, rate, a)
    dtmf.goertzel_powers(x, f, rate, b)
    scale = max(1.0, float(x @ x)) * max(1, x.size)
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9 * scale)
    ca = complex(*_ext().goertzel_complex(x, float(f[0]), rate))
    cb = complex(*dtmf.goertzel_complex(x, float(f[0]), rate))
    assert abs(ca - cb) <= 1e-7 * abs(cb) + 1e-9 * math.sqrt(scale)


def test_goertzel_helper_measures_amplitude() -> None:
    t = np.arange(160) / RATE
    x = (5000 * np.sin(2 * np.pi * 425 * t)).astype(np.int16)
    assert dtmf.goertzel(x, 425, RATE) == pytest.approx(5000, rel=0.01)
    assert dtmf.goertzel(x, 1000, RATE) < 100
    assert dtmf.tone_ratio(x, 425, RATE) == pytest.approx(1.0, abs=0.02)
    assert dtmf.tone_ratio(np.zeros(160), 425, RATE) == 0.0
    assert dtmf.goertzel(np.zeros(0), 425, RATE) == 0.0


# --- in-band detection ----------------------------------------------------------------------


def _detect(signal: np.ndarray, rate: int = RATE, chunk: int = 160) -> list[str]:
    det = DtmfDetector(rate)
    out: list[str] = []
    for i in range(0, signal.size, chunk):
        out += [d.digit for d in det.process(signal[i : i + chunk])]
    return out


def _padded(x: np.ndarray, lead: int) -> np.ndarray:
    return np.concatenate([np.zeros(lead, np.int16), x, np.zeros(400, np.int16)])


@pytest.mark.parametrize("digit", list(DIGITS))
def test_detects_every_digit_at_levels(digit: str) -> None:
    for level in (-3.0, -15.0, -30.0):
        x = dtmf_tone(digit, 60, low_dbm0=level, high_dbm0=level + 2)
        assert _detect(_padded(x, 37)) == [digit], level


@pytest.mark.parametrize("deviation", [0.015, -0.015])
def test_accepts_1_5_percent_deviation(deviation: float) -> None:
    for digit in DIGITS:
        for which in ("low_deviation", "high_deviation"):
            x = dtmf_tone(digit, 60, **{which: deviation})  # type: ignore[arg-type]
            assert _detect(_padded(x, 11)) == [digit], (digit, which)


@pytest.mark.parametrize("deviation", [0.035, -0.035, 0.05])
def test_rejects_3_5_percent_deviation(deviation: float) -> None:
    for digit in DIGITS:
        for which in ("low_deviation", "high_deviation"):
            x = dtmf_tone(digit, 100, **{which: deviation})  # type: ignore[arg-type]
            assert _detect(_padded(x, 11)) == [], (digit, which)


def test_twist_limits() -> None:
    for digit in DIGITS:
        ok_normal = dtmf_tone(digit, 60, low_dbm0=-8, high_dbm0=-15.5)  # high 7.5 dB below
        ok_reverse = dtmf_tone(digit, 60, low_dbm0=-11.5, high_dbm0=-8)  # high 3.5 dB above
        bad_normal = dtmf_tone(digit, 60, low_dbm0=-6, high_dbm0=-16)  # 10 dB
        bad_reverse = dtmf_tone(digit, 60, low_dbm0=-14, high_dbm0=-8)  # 6 dB
        assert _detect(_padded(ok_normal, 0)) == [digit]
        assert _detect(_padded(ok_reverse, 0)) == [digit]
        assert _detect(_padded(bad_normal, 0)) == []
        assert _detect(_padded(bad_reverse, 0)) == []


def test_too_quiet_is_ignored() -> None:
    assert _detect(_padded(dtmf_tone("5", 100, low_dbm0=-45, high_dbm0=-45), 0)) == []


def test_40ms_tone_detected_at_every_alignment_and_20ms_never() -> None:
    for lead in range(0, 106, 3):
        assert _detect(_padded(dtmf_tone("8", 40), lead)) == ["8"], lead
        assert _detect(_padded(dtmf_tone("8", 20), lead)) == [], lead


def test_40ms_pause_separates_digits_and_10ms_dropout_does_not() -> None:
    digits = "1155990#"
    for lead in range(0, 106, 13):
        parts = [np.zeros(lead, np.int16)]
        for d in digits:
            parts += [dtmf_tone(d, 40), np.zeros(320, np.int16)]
        assert _detect(np.concatenate(parts)) == list(digits), lead
        tone = dtmf_tone("3", 150)
        tone[400 + lead : 480 + lead] = 0  # a 10 ms drop-out in the middle
        assert _detect(_padded(tone, lead)) == ["3"], lead


def test_detects_in_noise_and_at_other_rates() -> None:
    rng = np.random.default_rng(7)
    for digit in DIGITS:
        x = dtmf_tone(digit, 60, low_dbm0=-20, high_dbm0=-18).astype(np.float64)
        noise = rng.standard_normal(x.size + 800) * math.sqrt(np.mean(x**2) / 10 ** (15 / 10))
        noise[300 : 300 + x.size] += x
        assert _detect(noise.astype(np.int16)) == [digit]
    x16 = dtmf_tone("7", 60, 16000)
    assert _detect(_padded(x16, 5), 16000, 320) == ["7"]


def test_generator_port_roundtrip_through_detector_port() -> None:
    gen = DtmfGenerator("0123456789*#ABCD", duration_ms=60, gap_ms=60)
    det = DtmfDetector()
    frames = 0
    while (frame := gen.get_frame()) is not None:
        assert frame.shape == (160,)
        det.put_frame(frame)
        frames += 1
    assert "".join(det.digits) == "0123456789*#ABCD"
    assert frames == math.ceil(16 * 960 / 160)


# --- no false detection ---------------------------------------------------------------------


def _speech(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Synthetic speech: a gliding glottal pulse train through moving formant resonators,
    syllable envelopes, and unvoiced (noise) stretches."""
    n = int(seconds * RATE)
    out = np.zeros(n)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.08, 0.3) * RATE)
        seg = np.zeros(length)
        if rng.random() < 0.75:  # voiced
            f0 = np.linspace(rng.uniform(90, 240), rng.uniform(90, 240), length)
            phase = np.cumsum(f0 / RATE)
            seg[np.flatnonzero(np.diff(np.floor(phase), prepend=0) > 0)] = 1.0
            for _ in range(3):
                fc, bw = rng.uniform(250, 3200), rng.uniform(60, 200)
                r = math.exp(-math.pi * bw / RATE)
                a1, a2 = 2 * r * math.cos(2 * math.pi * fc / RATE), -r * r
                y = np.zeros(length)
                for i in range(length):
                    y[i] = seg[i] + a1 * (y[i - 1] if i else 0) + a2 * (y[i - 2] if i > 1 else 0)
                seg = y
        else:
            seg = rng.standard_normal(length)
        seg *= np.hanning(length) / (np.std(seg) + 1e-9) * 10 ** (rng.uniform(-25, -5) / 20) * 20000
        take = min(length, n - pos)
        out[pos : pos + take] = seg[:take]
        pos += take
    return np.clip(out, -32768, 32767).astype(np.int16)


def test_no_false_detection_on_speech_like_signal() -> None:
    rng = np.random.default_rng(2024)
    assert _detect(_speech(rng, 20.0)) == []


def test_no_false_detection_on_noise_chords_and_sweeps() -> None:
    rng = np.random.default_rng(99)
    t = np.arange(int(RATE * 2.0)) / RATE
    assert _detect((rng.standard_normal(t.size) * 6000).astype(np.int16)) == []
    # chords of equal-tempered notes with harmonics (what hold music is made of)
    notes = [440.0 * 2 ** (k / 12) for k in range(-24, 19)]
    for _ in range(40):
        chord = rng.choice(notes, size=int(rng.integers(2, 5)), replace=False)
        sig = np.zeros(t.size // 4)
        tt = t[: sig.size]
        for f in chord:
            for h, amp in ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.2)):
                sig += amp * np.sin(2 * np.pi * f * h * tt + rng.uniform(0, 6.3))
        sig *= 8000 / np.max(np.abs(sig))
        assert _detect(sig.astype(np.int16)) == [], chord
    # sweeps: one slow tone glide, and a fast chirp
    f1 = np.linspace(300, 3400, t.size)
    sweep = 8000 * np.sin(2 * np.pi * np.cumsum(f1) / RATE)
    assert _detect(sweep.astype(np.int16)) == []
    # a fast repeating chirp (a "siren"); two tones gliding *together* are left out on purpose:
    # while both sit within tolerance of a DTMF pair for 27 ms they are a DTMF signal.
    f2 = np.tile(np.linspace(300, 3400, RATE // 5), 10)
    chirp = 8000 * np.sin(2 * np.pi * np.cumsum(f2) / RATE)
    assert _detect(chirp.astype(np.int16)) == []
