"""Stub of the compiled mix-minus kernel (reference, semantics and docs: media/mixer.py)."""

import numpy as np
import numpy.typing as npt

class MixKernel:
    def __init__(
        self,
        pcm_in: npt.NDArray[np.int16],
        pcm_out: npt.NDArray[np.int16],
        payload_in: npt.NDArray[np.uint8],
        payload_out: npt.NDArray[np.uint8],
        conference: npt.NDArray[np.int32],
        flags: npt.NDArray[np.uint8],
        codec: npt.NDArray[np.uint8],
        talk_gain: npt.NDArray[np.int32],
        listen_gain: npt.NDArray[np.int32],
        n_conferences: int,
    ) -> None: ...
    def mix(self, start: int, stop: int) -> None: ...
