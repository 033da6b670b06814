"""Player: WAV/MP3/Opus/FLAC decoded and resampled to 20 ms frames, loops, playlists."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from media.player import Player
from media.port import MediaPort


def goertzel_power(x: npt.NDArray[np.int16], freq: float, rate: int) -> float:
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for v in x.astype(np.float64):
        s1, s2 = v + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (len(x) ** 2)


def is_tone(x: npt.NDArray[np.int16], freq: float, rate: int) -> bool:
    p = goertzel_power(x, freq, rate)
    total = float(np.mean(x.astype(np.float64) ** 2)) / 2
    return p > 0.5 * total and all(p > 100 * goertzel_power(x, f, rate) for f in (freq * 0.6, freq * 1.4))


def write_wav(path: Path, rate: int, seconds: float, freq: float) -> Path:
    t = np.arange(int(rate * seconds))
    x = (10000 * np.sin(2 * np.pi * freq * t / rate)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return path


def write_av(path: Path, codec: str, fmt: str, rate: int, seconds: float, freq: float) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo"
        n = 960 if codec == "libopus" else 1152 if codec == "libmp3lame" else 1024
        total = int(rate * seconds)
        for start in range(0, total, n):
            t = np.arange(start, min(total, start + n))
            mono = 0.3 * np.sin(2 * np.pi * freq * t / rate)
            if fmt == "fltp":  # planar: one row per channel
                data = np.vstack([mono, mono]).astype(np.float32)
            else:  # packed s16: one interleaved row
                data = (np.column_stack([mono, mono]) * 32767).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "wav": write_wav(tmp_path / "a.wav", 44100, 1.0, 1000.0),
        "mp3": write_av(tmp_path / "a.mp3", "libmp3lame", "fltp", 44100, 1.0, 1000.0),
        "opus": write_av(tmp_path / "a.opus", "libopus", "s16", 48000, 1.0, 1000.0),
        "flac": write_av(tmp_path / "a.flac", "flac", "s16", 48000, 1.0, 1000.0),
    }


@pytest.mark.parametrize("kind", ["wav", "mp3", "opus", "flac"])
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_plays_each_format_at_the_leg_rate(files: dict[str, Path], kind: str, rate: int) -> None:
    player = Player(files[kind], rate)
    assert isinstance(player, MediaPort)
    frames = []
    while (frame := player.get_frame()) is not None:
        assert frame.dtype == np.int16 and frame.shape == (rate // 50,)
        frames.append(frame)
        assert len(frames) < 200
    assert player.finished and player.errors == 0
    assert 48 <= len(frames) <= 53  # one second, give or take codec padding
    y = np.concatenate(frames)
    assert is_tone(y[rate // 5 : rate * 4 // 5], 1000.0, rate)


def test_loop_for_music_on_hold(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "moh.wav", 8000, 0.1, 1000.0)  # 5 frames per pass
    player = Player(path, 8000, loop=True)
    frames = [player.get_frame() for _ in range(23)]
    assert all(f is not None for f in frames)
    assert not player.finished
    y = np.concatenate([f for f in frames if f is not None])
    assert is_tone(y, 1000.0, 8000)  # the seam adds no gaps
    player.stop()
    assert player.get_frame() is None


def test_playlist_in_order_then_finished(tmp_path: Path) -> None:
    a = write_wav(tmp_path / "a.wav", 8000, 0.2, 500.0)
    b = write_wav(tmp_path / "b.wav", 16000, 0.2, 1500.0)
    done: list[bool] = []
    player = Player([a, b], 8000, on_finished=lambda: done.append(True))
    frames = []
    while (frame := player.get_frame()) is not None:
        frames.append(frame)
    assert len(frames) == 20
    assert is_tone(np.concatenate(frames[1:9]), 500.0, 8000)
    assert is_tone(np.concatenate(frames[11:19]), 1500.0, 8000)
    assert done == [True]


def test_broken_items_are_skipped(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    good = write_wav(tmp_path / "good.wav", 8000, 0.1, 1000.0)
    player = Player([tmp_path / "missing.mp3", bad, good], 8000)
    frames = []
    while (frame := player.get_frame()) is not None:
        frames.append(frame)
    assert len(frames) == 5 and player.errors == 2
    # A looping playlist of only broken items finishes instead of spinning.
    dead = Player([bad], 8000, loop=True)
    assert dead.get_frame() is None and dead.finished
