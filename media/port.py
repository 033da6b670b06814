"""The media port: the one shape every media object has (the pjmedia model, DESIGN.md §5).

A frame is 20 ms of mono signed 16-bit PCM at the port's ``sample_rate`` as a 1-D ``numpy.int16``
array of ``sample_rate // 50`` samples. The 20 ms media clock pulls ``get_frame()`` from sources and
pushes ``put_frame()`` into sinks once per tick.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.int16]

#: Length of one media tick in seconds.
PTIME = 0.020


def samples_per_frame(sample_rate: int) -> int:
    """Samples in one 20 ms frame at ``sample_rate``."""
    return sample_rate // 50


@runtime_checkable
class MediaPort(Protocol):
    """A source and/or sink of 20 ms frames."""

    sample_rate: int

    def get_frame(self) -> Frame | None:
        """The next frame to hear from this port, or ``None`` for silence/nothing."""
        ...

    def put_frame(self, frame: Frame) -> None:
        """Deliver one frame to this port (to be sent, recorded, mixed…)."""
        ...
