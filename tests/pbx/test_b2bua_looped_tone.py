"""The B2BUA's shared ringback/busy cycles play exactly what the tone generator would."""

from __future__ import annotations

import numpy as np
import pytest

from media.tones import Segment, Tone, ToneGenerator, ToneName, tone_plan
from pbx.tonesources import MOH_TONE, LoopedTone, looped_tone_cycle


@pytest.mark.parametrize("name", [ToneName.RINGBACK, ToneName.BUSY])
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_looped_tone_equals_generator(name: ToneName, rate: int) -> None:
    tone = tone_plan("DE")[name]
    cycle = looped_tone_cycle(tone, rate)
    assert cycle is not None
    gen, looped = ToneGenerator(tone, rate), LoopedTone(cycle, rate)
    # past several loop points of both cadences (5 s ringback, 0.96 s busy)
    for _ in range(600):
        a, b = gen.get_frame(), looped.get_frame()
        assert a is not None and b is not None
        np.testing.assert_array_equal(a, b)


def test_tones_that_would_click_at_the_loop_point_are_not_looped() -> None:
    assert looped_tone_cycle(MOH_TONE, 8000) is None  # 554.37 Hz: no whole periods per cycle
    once = Tone((Segment(100, (425.0,)),), repeat=False)
    assert looped_tone_cycle(once, 8000) is None


def test_shared_cycle_is_read_only() -> None:
    cycle = looped_tone_cycle(tone_plan("DE")[ToneName.RINGBACK], 8000)
    assert cycle is not None
    frame = LoopedTone(cycle, 8000).get_frame()
    assert frame is not None and not frame.flags.writeable
