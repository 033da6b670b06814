"""Recognising the default music on hold (:data:`pbx.tonesources.MOH_TONE`) in received audio."""

from __future__ import annotations

import numpy as np

from media.dtmf import tone_ratio
from pbx.tonesources import MOH_TONE

#: The notes of the default melody (an arpeggio of 400 ms notes).
MOH_HZ: tuple[float, ...] = tuple(MOH_TONE.frequencies)


def is_music_on_hold(window: np.ndarray, rate: int = 8000) -> bool:
    """True when ``window`` (say 200 ms) holds the default melody.

    The notes are summed: a window that straddles a note change (the hold starts at any phase
    of the window grid) holds two notes for half its length, each with about a quarter of its
    energy; the largest note alone would miss every other window then.
    """
    return sum(tone_ratio(window, f, rate) for f in MOH_HZ) > 0.4
