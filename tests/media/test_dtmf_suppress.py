"""In-band DTMF suppression: a leg that sends digits as tones to a leg that gets them as RFC 4733
events must not deliver the tones as well (the far end would dial twice). The sans-IO
``DtmfSuppressor`` and the transcoding ``Bridge`` that uses it, over real RTP on loopback on a
fake clock."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from media.bridge import Bridge, inband_only
from media.dtmf import DtmfDetector, DtmfSuppressor, dtmf_tone, is_dtmf_frame, tone_ratio
from tests.media.fakeclock import FakeClock, Phone, fake_engine
from tests.media.test_aio import tone

PORTS = (31700, 31799)
FRAME = 160


def _signal(digit: str, offset: int, duration_ms: int, seconds: float = 1.2
            ) -> tuple[np.ndarray[Any, Any], int, int]:
    """A 1 kHz 'voice' tone with ``digit`` replacing it from sample ``offset``."""
    n = int(8000 * seconds)
    sig = tone(1000.0, 8000, n, amp=6000.0).copy()
    dt = dtmf_tone(digit, duration_ms)
    sig[offset:offset + dt.size] = dt
    return sig, offset, offset + dt.size


def _detect(pcm: np.ndarray[Any, Any]) -> list[str]:
    det = DtmfDetector(8000)
    return [d.digit for d in det.process(pcm)]


@pytest.mark.parametrize(("digit", "offset", "ms"),
                         [("5", 4000, 100), ("1", 4037, 60), ("#", 3999, 200), ("D", 4110, 45)])
def test_suppressor_mutes_the_digit_and_nothing_far_from_it(digit: str, offset: int,
                                                            ms: int) -> None:
    sig, start, end = _signal(digit, offset, ms)
    assert _detect(sig) == [digit]  # the input really carries the digit
    sup = DtmfSuppressor(8000)
    frames = [sig[i:i + FRAME] for i in range(0, sig.size, FRAME)]
    out = [sup.process(f) for f in frames] + [sup.process(None)]
    assert out[0] is None  # one frame of delay
    got = np.concatenate([f for f in out[1:] if f is not None])
    assert got.size == sig.size
    assert _detect(got) == []
    # no DTMF energy left anywhere around the digit
    window = got[max(0, start - FRAME):end + FRAME]
    for i in range(0, window.size - FRAME + 1, FRAME // 2):
        assert not is_dtmf_frame(window[i:i + FRAME], 8000)
    # the voice far from the digit is untouched
    lo, hi = (start // FRAME - 1) * FRAME, (end // FRAME + 3) * FRAME
    assert np.array_equal(got[:lo], sig[:lo])
    assert np.array_equal(got[hi:], sig[hi:])
    assert sup.muted <= (end - start) // FRAME + 4


def test_suppressor_passes_speechlike_tones_and_silence() -> None:
    sup = DtmfSuppressor(8000)
    n = 0
    for f in (300.0, 440.0, 697.0, 1000.0, 1209.0, 1633.0, 2500.0):
        for _ in range(5):
            frame = tone(f, 8000, FRAME, start=n)
            n += FRAME
            sup.process(frame)
        sup.process(None)
    assert sup.muted == 0
    assert not is_dtmf_frame(np.zeros(FRAME, np.int16), 8000)
    assert all(is_dtmf_frame(dtmf_tone(d, 20), 8000) for d in "0123456789*#ABCD")
    assert is_dtmf_frame(dtmf_tone("9", 20, 16000), 16000)


def test_inband_only_decides_the_direction() -> None:
    class P:
        def __init__(self, pt: int | None) -> None:
            self.telephone_event_pt = pt

    assert inband_only(P(None), P(101))
    assert not inband_only(P(None), P(None))
    assert not inband_only(P(101), P(101))
    assert not inband_only(P(101), P(None))
    assert not inband_only(object(), P(101))  # a player or recorder sends no digits


async def _bridge_call(te_b: int | None) -> tuple[np.ndarray[Any, Any], Bridge]:
    sig, _, _ = _signal("7", 8000 + 50, 150, seconds=2.5)
    async with fake_engine(PORTS) as engine:
        pa, pb = Phone(), Phone("PCMA", 8)
        a = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr,
                                  telephone_event_pt=None)
        b = engine.create_session(payload_type=8, codec="PCMA", remote=pb.addr,
                                  telephone_event_pt=te_b)
        bridge = Bridge(engine.clock, a, b)
        clock = FakeClock(engine, [pa, pb])
        frames = sig.size // FRAME
        clock.talk(pa, a.local_addr, [pa.packet(sig[i * FRAME:(i + 1) * FRAME])
                                      for i in range(frames)])
        clock.run(frames + 15)
        clock.settle()
        bridge.close()
        return pb.audio(), bridge


async def test_bridge_mutes_tones_towards_an_rfc4733_leg() -> None:
    heard, bridge = await _bridge_call(101)
    assert bridge.suppress_ab is not None and bridge.suppress_ba is None
    assert bridge.suppress_ab.muted >= 5
    assert heard.size > 8000
    assert _detect(heard) == []
    # the voice still gets through
    assert tone_ratio(heard[:4000], 1000.0, 8000) > 0.5


async def test_bridge_passes_tones_between_inband_legs() -> None:
    heard, bridge = await _bridge_call(None)
    assert bridge.suppress_ab is None and bridge.suppress_ba is None
    assert _detect(heard) == ["7"]
