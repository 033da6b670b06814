"""Recorder: WAV/Opus output, silence detection, length limit, crash safety (kill -9), recover()."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from media.port import MediaPort
from media.recorder import Recorder, recover

ROOT = Path(__file__).resolve().parents[2]


def goertzel_power(x: npt.NDArray[np.int16], freq: float, rate: int) -> float:
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for v in x.astype(np.float64):
        s1, s2 = v + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (len(x) ** 2)


def tone_frames(rate: int, seconds: float, freq: float = 1000.0) -> list[npt.NDArray[np.int16]]:
    n = rate // 50
    t = np.arange(int(rate * seconds))
    x = (8000 * np.sin(2 * np.pi * freq * t / rate)).astype(np.int16)
    return [x[i : i + n] for i in range(0, len(x), n)]


def read_wav(path: Path) -> tuple[int, npt.NDArray[np.int16]]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")


def test_wav_recording_holds_the_tone(tmp_path: Path) -> None:
    path = tmp_path / "msg.wav"
    rec = Recorder(path, 16000)
    assert isinstance(rec, MediaPort)
    assert rec.partial_path.exists() and not path.exists()
    for frame in tone_frames(16000, 1.5):
        rec.put_frame(frame)
    assert rec.close() == path
    assert not rec.partial_path.exists()
    rate, y = read_wav(path)
    assert rate == 16000 and len(y) == 24000
    p = goertzel_power(y, 1000, rate)
    assert p > 100 * goertzel_power(y, 1400, rate)


def test_opus_recording(tmp_path: Path) -> None:
    path = tmp_path / "msg.opus"
    rec = Recorder(path, 8000)
    for frame in tone_frames(8000, 1.0):
        rec.put_frame(frame)
    rec.close()
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        chunks = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(audio=0)
            for out in resampler.resample(frame)
        ]
    y = np.concatenate(chunks)
    assert 7000 < len(y) < 9000
    assert goertzel_power(y[2000:6000], 1000, 8000) > 100 * goertzel_power(y[2000:6000], 1400, 8000)


def test_silence_detection_and_max_length(tmp_path: Path) -> None:
    events: list[str] = []
    rec = Recorder(
        tmp_path / "s.wav", 8000, silence_timeout=1.0, max_duration=3.0,
        on_silence=lambda: events.append("silence"), on_limit=lambda: events.append("limit"),
    )
    for frame in tone_frames(8000, 0.5):
        rec.put_frame(frame)
    for _ in range(49):
        rec.put_frame(np.zeros(160, np.int16))
    assert not rec.silence_detected
    rec.put_frame(np.zeros(160, np.int16))
    assert rec.silence_detected and events == ["silence"]
    rec.put_frame(tone_frames(8000, 0.02)[0])  # sound resets it
    assert not rec.silence_detected
    for _ in range(200):
        rec.put_frame(np.zeros(160, np.int16))
    assert rec.limit_reached and events == ["silence", "silence", "limit"]
    assert rec.duration == pytest.approx(3.0)
    rec.close()
    _, y = read_wav(tmp_path / "s.wav")
    assert len(y) == 24000


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "x.wav", 8000)
    rec.put_frame(np.ones(160, np.int16))
    rec.abort()
    assert list(tmp_path.iterdir()) == []


def test_recover_removes_empty_and_repairs_partial(tmp_path: Path) -> None:
    empty = Recorder(tmp_path / "empty.wav", 8000)  # header only, then "crash"
    assert empty.partial_path.exists()
    partial = Recorder(tmp_path / "half.wav", 8000, sync_interval=100.0)
    for frame in tone_frames(8000, 0.5):
        partial.put_frame(frame)  # never synced: the header still says 0 samples
    (tmp_path / "other.txt").write_text("not ours")
    found = recover(tmp_path)
    assert found == [tmp_path / "half.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.wav", "other.txt"]
    _, y = read_wav(tmp_path / "half.wav")
    assert len(y) == 4000


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from media.recorder import Recorder
    rec = Recorder(sys.argv[1], 8000)
    t = np.arange(160)
    i = 0
    start = time.monotonic()
    while True:
        frame = (8000 * np.sin(2 * np.pi * 1000 * (t + 160 * i) / 8000)).astype(np.int16)
        rec.put_frame(frame)
        i += 1
        print(i, flush=True)
        delay = start + i * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    """
)


@pytest.mark.timeout(60)
def test_kill_9_keeps_all_but_the_last_second(tmp_path: Path) -> None:
    target = tmp_path / "vm.wav"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target)], stdout=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None
    written = 0
    try:
        for line in proc.stdout:
            written = int(line)
            if written >= 170:  # 3.4 s: a kill between two syncs
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert not target.exists()
    partial = tmp_path / ".vm.wav.partial"
    # The partial file opens as it is, and holds audio up to ≤ 1 s before the kill.
    _, y = read_wav(partial)
    assert len(y) >= (written - 50) * 160
    assert len(y) % 160 == 0
    assert goertzel_power(y, 1000, 8000) > 100 * goertzel_power(y, 1400, 8000)
    # recover() turns it into the final file with everything the kernel had.
    assert recover(tmp_path) == [target]
    _, z = read_wav(target)
    assert len(z) >= written * 160


@pytest.mark.parametrize("pt", [0, 8, 9, 111])
def test_tone_through_codec_jitter_buffer_into_recording(tmp_path: Path, pt: int) -> None:
    """Tone → codec → 5 % loss, 40 ms jitter → jitter buffer → decode/PLC → WAV → still 1 kHz."""
    import random

    from media.codecs import PayloadTypeRegistry
    from media.jitter import JitterBuffer
    from media.rtp import RtpPacket

    reg = PayloadTypeRegistry([(111, "opus", 48000, 2, "")])
    tx, rx = reg.create_codec(pt), reg.create_codec(pt)
    rate, clock = tx.sample_rate, reg[pt].clock_rate
    frames = tone_frames(rate, 3.0)
    rng = random.Random(pt)
    events = []
    for i, frame in enumerate(frames):
        payload = tx.encode(frame)
        if rng.random() < 0.05:
            continue
        packet = RtpPacket(pt, i, i * tx.timestamp_increment, 42, payload)
        events.append((0.05 + i * 0.02 + rng.uniform(0, 0.04), packet))
    events.sort(key=lambda e: e[0])
    jb = JitterBuffer(clock)
    rec = Recorder(tmp_path / "call.wav", rate)
    k, now = 0, 0.011
    while now < 3.5:
        while k < len(events) and events[k][0] <= now:
            jb.put(events[k][1], events[k][0])
            k += 1
        out = jb.get(now)
        if out.packet is not None:
            rec.put_frame(rx.decode(out.packet.payload))
        elif out.conceal:
            rec.put_frame(rx.conceal())
        now += 0.02
    rec.close()
    assert jb.stats.concealed > 0 and jb.stats.emitted >= 0.9 * len(frames)
    got_rate, y = read_wav(tmp_path / "call.wav")
    assert got_rate == rate and len(y) >= 2.5 * rate
    y = y[rate // 2 : rate * 5 // 2]
    p = goertzel_power(y, 1000, rate)
    assert p > 0.5 * float(np.mean(y.astype(np.float64) ** 2)) / 2
    assert p > 100 * goertzel_power(y, 1400, rate) and p > 100 * goertzel_power(y, 600, rate)
