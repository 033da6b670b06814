"""Mixer: the Cython mix-minus kernel equals the numpy reference; Mixer semantics on both."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import media.mixer as mixer
from media import g711
from media.errors import MediaUsageError
from media.mixer import FRESH, LISTEN, TALK, Codec, Mixer, Mode

ARRAYS = ("pcm_in", "pcm_out", "payload_in", "payload_out", "conference", "flags", "codec",
          "talk_gain", "listen_gain")


Case = tuple[dict[str, np.ndarray], int, list[tuple[int, int, np.ndarray]]]


def _ext() -> ModuleType:
    return importlib.import_module("media._mixer")


@st.composite
def _layouts(draw: st.DrawFn) -> Case:
    rows = draw(st.integers(1, 24))
    length = draw(st.integers(1, 40))
    confs = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    loud = draw(st.booleans())  # saturating inputs: full-scale samples, big gains
    hi = 32768 if loud else 3000
    arrays: dict[str, np.ndarray] = {
        "pcm_in": rng.integers(-hi, hi, (rows, length)).astype(np.int16),
        "pcm_out": rng.integers(-32768, 32768, (rows, length)).astype(np.int16),
        "payload_in": rng.integers(0, 256, (rows, length)).astype(np.uint8),
        "payload_out": rng.integers(0, 256, (rows, length)).astype(np.uint8),
        "conference": rng.integers(0, confs, rows).astype(np.int32),
        "flags": rng.integers(0, 8, rows).astype(np.uint8),
        "codec": rng.integers(0, 3, rows).astype(np.uint8),
        "talk_gain": np.where(
            rng.random(rows) < 0.5, 4096, rng.integers(0, 65536 if loud else 8192, rows)
        ).astype(np.int32),
        "listen_gain": np.where(
            rng.random(rows) < 0.5, 4096, rng.integers(0, 65536 if loud else 8192, rows)
        ).astype(np.int32),
    }
    ticks = []
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, rows))
        stop = draw(st.integers(start, rows))
        ticks.append((start, stop, rng.integers(0, 8, rows).astype(np.uint8) & FRESH))
    return arrays, confs, ticks


@given(_layouts())
@settings(max_examples=120)
def test_cython_kernel_equals_numpy_reference(
    case: Case,
) -> None:
    arrays, confs, ticks = case
    a = {k: v.copy() for k, v in arrays.items()}
    b = {k: v.copy() for k, v in arrays.items()}
    ka = _ext().MixKernel(*(a[k] for k in ARRAYS), confs)
    kb = mixer.MixKernel(*(b[k] for k in ARRAYS), confs)  # type: ignore[arg-type,call-arg]
    for start, stop, fresh in ticks:
        a["flags"] |= fresh
        b["flags"] |= fresh
        ka.mix(start, stop)
        kb.mix(start, stop)
        for name in ARRAYS:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_kernels_reject_bad_conference_and_range() -> None:
    for mod in (_ext(), mixer):
        arrays = {
            "pcm_in": np.zeros((2, 4), np.int16), "pcm_out": np.zeros((2, 4), np.int16),
            "payload_in": np.zeros((2, 4), np.uint8), "payload_out": np.zeros((2, 4), np.uint8),
            "conference": np.array([0, 5], np.int32), "flags": np.array([TALK, LISTEN], np.uint8),
            "codec": np.zeros(2, np.uint8), "talk_gain": np.full(2, 4096, np.int32),
            "listen_gain": np.full(2, 4096, np.int32),
        }
        kernel = mod.MixKernel(*(arrays[k] for k in ARRAYS), 2)  # type: ignore[attr-defined]
        with pytest.raises(ValueError):
            kernel.mix(0, 2)
        with pytest.raises(ValueError):
            kernel.mix(0, 3)
        kernel.mix(0, 1)  # row 1 (conference 5) is outside the range: fine
        with pytest.raises(ValueError):
            mod.MixKernel(*(arrays[k] for k in ARRAYS[:-1]), np.zeros(3, np.int32), 2)


@pytest.fixture(params=["cython", "numpy"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the Mixer tests over both kernels."""
    monkeypatch.setattr(mixer, "_kernel", _ext() if request.param == "cython" else mixer)
    yield request.param


def _heard(m: Mixer, participant: int, value: object) -> bool:
    frame = m.get_frame(participant)
    assert frame is not None
    return bool(np.all(frame == value))


def _const(value: int, n: int = 160) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def test_three_party_mix_minus(impl: str) -> None:
    m = Mixer()
    conf = m.add_conference()
    a, b, c = (m.add_participant(conf) for _ in range(3))
    m.put_frame(a, _const(100))
    m.put_frame(b, _const(20))
    m.put_frame(c, _const(3))
    m.mix()
    assert _heard(m, a, 23)
    assert _heard(m, b, 103)
    assert _heard(m, c, 120)


def test_conferences_are_isolated_in_one_call(impl: str) -> None:
    m = Mixer(capacity=2, conferences=1)  # also exercises growth of both dimensions
    confs = [m.add_conference() for _ in range(5)]
    members = {c: [m.add_participant(c) for _ in range(3)] for c in confs}
    for c in confs:
        for i, p in enumerate(members[c]):
            m.put_frame(p, _const(1000 * c + i))
    m.mix()
    for c in confs:
        for i, p in enumerate(members[c]):
            expected = sum(1000 * c + j for j in range(3) if j != i)
            assert _heard(m, p, expected)


def test_saturation_to_int16(impl: str) -> None:
    m = Mixer()
    conf = m.add_conference()
    ps = [m.add_participant(conf) for _ in range(4)]
    for p in ps[:3]:
        m.put_frame(p, _const(30000))
    m.put_frame(ps[3], _const(-32768))
    m.mix()
    assert _heard(m, ps[3], 32767)
    assert _heard(m, ps[0], 30000 * 2 - 32768)  # 27232: no clip


def test_gain_mute_and_modes(impl: str) -> None:
    m = Mixer()
    conf = m.add_conference()
    a = m.add_participant(conf, talk_gain=0.5)
    b = m.add_participant(conf, mode=Mode.LISTEN_ONLY)
    c = m.add_participant(conf, mode=Mode.TALK_ONLY)
    d = m.add_participant(conf, listen_gain=2.0)
    for p, v in ((a, 1000), (b, 7), (c, 300), (d, 40)):
        m.put_frame(p, _const(v))
    m.mix()
    assert _heard(m, a, 340)
    assert _heard(m, b, 500 + 300 + 40)  # listen-only hears everybody…
    assert m.get_frame(c) is None  # talk-only hears nothing
    assert _heard(m, d, 2 * (500 + 300))  # …and b's 7 is never heard
    m.mute(a)
    m.set_gain(d, listen=1.0)
    m.set_mode(b, Mode.NORMAL)
    for p, v in ((a, 1000), (b, 7), (c, 300), (d, 40)):
        m.put_frame(p, _const(v))
    m.mix()
    assert _heard(m, d, 307)
    assert _heard(m, a, 347)  # muted still hears
    assert _heard(m, b, 340)


def test_missing_frame_is_silence(impl: str) -> None:
    m = Mixer()
    conf = m.add_conference()
    a, b = m.add_participant(conf), m.add_participant(conf)
    m.put_frame(a, _const(500))
    m.mix()
    assert _heard(m, b, 500)
    m.mix()  # nobody delivered a frame this tick
    assert _heard(m, b, 0)


def test_g711_fused_path_and_mixed_codecs(impl: str) -> None:
    m = Mixer()
    conf = m.add_conference()
    u = m.add_participant(conf, codec=Codec.PCMU)
    a = m.add_participant(conf, codec=Codec.PCMA)
    lin = m.add_participant(conf)
    t = np.arange(160)
    sig_u = (8000 * np.sin(2 * np.pi * 425 * t / 8000)).astype(np.int16)
    m.put_payload(u, g711.ulaw_encode(sig_u))
    m.put_payload(a, g711.alaw_encode(_const(1000)))
    m.put_frame(lin, _const(-200))
    m.mix()
    heard_u = g711.ulaw_decode(m.get_payload(u) or b"")
    expected_u = g711.ulaw_decode(g711.ulaw_encode(g711.alaw_decode(g711.alaw_encode(_const(1000)))
                                                   - 200))
    np.testing.assert_array_equal(heard_u, expected_u)
    heard_lin = m.get_frame(lin)
    assert heard_lin is not None
    expected = g711.ulaw_decode(g711.ulaw_encode(sig_u)).astype(np.int32) + g711.alaw_decode(
        g711.alaw_encode(_const(1000)))
    np.testing.assert_array_equal(heard_lin, expected)
    assert m.get_payload(lin) is None
    # A decoded frame may be delivered to a G.711 row too.
    m.put_frame(u, _const(300))
    m.mix()
    heard = m.get_frame(lin)
    assert heard is not None and (heard == g711.ulaw_decode(g711.ulaw_encode(_const(300)))).all()


def test_remove_and_reuse(impl: str) -> None:
    m = Mixer()
    c1, c2 = m.add_conference(), m.add_conference()
    a, b = m.add_participant(c1), m.add_participant(c1)
    m.remove_participant(a)
    assert m.participants(c1) == [b]
    x = m.add_participant(c2)
    assert x == a  # the row is reused
    y = m.add_participant(c2)
    m.put_frame(x, _const(9))
    m.put_frame(b, _const(77))
    m.mix()
    assert _heard(m, y, 9)
    assert _heard(m, b, 0)
    m.remove_conference(c2)
    assert m.conferences == [c1]
    with pytest.raises(MediaUsageError):
        m.get_frame(x)
    with pytest.raises(MediaUsageError):
        m.add_participant(c2)


def test_participant_port_and_errors(impl: str) -> None:
    m = Mixer(sample_rate=16000)
    conf = m.add_conference()
    a, b = m.add_participant(conf), m.add_participant(conf)
    pa, pb = m.port(a), m.port(b)
    assert pa.sample_rate == 16000
    pa.put_frame(_const(42, 320))
    m.mix()
    out = pb.get_frame()
    assert out is not None and out.shape == (320,) and (out == 42).all()
    with pytest.raises(MediaUsageError):
        m.put_frame(a, _const(1, 160))
    with pytest.raises(MediaUsageError):
        m.add_participant(conf, codec=Codec.PCMU)  # G.711 needs 8 kHz
    with pytest.raises(MediaUsageError):
        m.put_payload(a, b"\xff" * 320)
    with pytest.raises(MediaUsageError):
        Mixer(sample_rate=8001)


def test_mark_fresh_batch_io(impl: str) -> None:
    m = Mixer()
    conf = m.add_conference()
    ps = [m.add_participant(conf, codec=Codec.PCMU) for _ in range(3)]
    m.payload_in[ps] = np.frombuffer(g711.ulaw_encode(_const(1000)), np.uint8)
    m.mark_fresh(ps)
    m.mix()
    expected = g711.ulaw_encode(2 * g711.ulaw_decode(g711.ulaw_encode(_const(1000))))
    assert all(m.get_payload(p) == expected for p in ps)
    assert not (m.flags[ps] & FRESH).any()


def test_gain_to_q12() -> None:
    assert mixer.gain_to_q12(1.0) == 4096
    assert mixer.gain_to_q12(-1) == 0
    assert mixer.gain_to_q12(100.0) == 65535


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(list(Mode)), st.booleans(),
                  st.integers(-32768, 32767), st.booleans()),
        min_size=1, max_size=12,
    ),
    st.sampled_from(["cython", "numpy"]),
)
@settings(max_examples=60)
def test_mixer_matches_plain_model(
    people: list[tuple[int, Mode, bool, int, bool]], which: str
) -> None:
    """An independent oracle: each listener hears clip(sum of the other talkers' values)."""
    saved = mixer._kernel
    mixer._kernel = _ext() if which == "cython" else mixer
    try:
        m = Mixer(capacity=1, conferences=1)
        confs = [m.add_conference() for _ in range(4)]
        ids = []
        for conf, mode, muted, value, sends in people:
            pid = m.add_participant(confs[conf], mode=mode, muted=muted)
            ids.append(pid)
            if sends:
                m.put_frame(pid, _const(value))
        m.mix()
        for pid, (conf, mode, _muted, _value, _sends) in zip(ids, people, strict=True):
            frame = m.get_frame(pid)
            if mode == Mode.TALK_ONLY:
                assert frame is None
                continue
            total = sum(
                v for other, (c, md, mu, v, s) in zip(ids, people, strict=True)
                if other != pid and c == conf and md != Mode.LISTEN_ONLY and not mu and s
            )
            assert frame is not None and (frame == max(-32768, min(32767, total))).all()
    finally:
        mixer._kernel = saved
