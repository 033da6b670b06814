"""The attachment of a voicemail mail: the message as Opus in Ogg, compact enough to mail.

Speech at :data:`BITRATE` (16 kbit/s, mono, 16 kHz) is 2 kB a second: a 3-minute message is
about 360 kB, well under 1 MB. Encoding is PyAV's (libopus, libavformat's Ogg muxer): not ours
to hand-write. A recording that already is Ogg/Opus (``.opus``, ``.ogg``) is attached as it is.
Blocking (file I/O, CPU): the sender runs it in a thread.
"""

from __future__ import annotations

import io
from pathlib import Path

import av

__all__ = ["BITRATE", "CONTENT_TYPE", "FILENAME_SUFFIX", "opus_ogg"]

BITRATE = 16000
SAMPLE_RATE = 16000
CONTENT_TYPE = ("audio", "ogg")
FILENAME_SUFFIX = ".opus"


def opus_ogg(path: str | Path) -> bytes:
    """The recording at ``path`` (WAV or anything PyAV reads) as Ogg/Opus bytes."""
    source = Path(path)
    if source.suffix.lower() in (".opus", ".ogg"):
        return source.read_bytes()
    out = io.BytesIO()
    with av.open(str(source)) as inp, av.open(out, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=SAMPLE_RATE)
        stream.bit_rate = BITRATE
        stream.layout = "mono"  # type: ignore[union-attr]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in inp.decode(audio=0):
            frame.pts = None
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):  # type: ignore[attr-defined]
                    container.mux(packet)
        for converted in resampler.resample(None):
            for packet in stream.encode(converted):  # type: ignore[attr-defined]
                container.mux(packet)
        for packet in stream.encode(None):  # type: ignore[attr-defined]
            container.mux(packet)
    return out.getvalue()
