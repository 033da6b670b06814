"""``/tenants/{tenant}/music-on-hold``: an upload in any common format (WAV, MP3, Ogg/Opus,
FLAC — made here with PyAV) is decoded into the 16 kHz mono WAV the hold player reads, and the
player then plays the uploaded tone; what is no audio is refused; only the tenant's admins
(and system admins) change it, and only its own users see it; DELETE goes back to the default. The B2BUA's hold
source plays the tenant's file when there is one."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from media.player import Player
from pbx.moh import RATE, MusicOnHold, decode_to_wav
from tests.pbx.api.conftest import Api


def tone_file(fmt: str, codec: str, rate: int = 44100, seconds: float = 1.5,
              freq: float = 440.0, layout: str = "stereo") -> bytes:
    """``seconds`` of a ``freq`` Hz sine in container ``fmt`` with ``codec`` (PyAV)."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout  # type: ignore[union-attr]
        t = np.arange(int(rate * seconds)) / rate
        mono = (np.sin(2 * np.pi * freq * t) * 12000).astype(np.int16)
        channels = 2 if layout == "stereo" else 1
        pcm = np.tile(mono, (channels, 1)).T.reshape(1, -1) if channels == 2 else mono[None]
        frame_size = 960 if codec in ("libopus", "opus") else 1152 if codec == "libmp3lame" \
            else 1024
        for start in range(0, len(mono), frame_size):
            chunk = np.ascontiguousarray(pcm[:, start * channels:(start + frame_size) * channels])
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):  # type: ignore[union-attr]
                container.mux(packet)
        for packet in stream.encode(None):  # type: ignore[union-attr]
            container.mux(packet)
    return out.getvalue()


def dominant(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(float) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def played(path: Path, rate: int, frames: int = 25) -> np.ndarray:
    player = Player(path, rate, loop=True)
    out = [player.get_frame() for _ in range(frames)]
    player.stop()
    return np.concatenate([f for f in out if f is not None])


@pytest.mark.parametrize(("fmt", "codec", "rate"), [
    ("wav", "pcm_s16le", 44100), ("mp3", "libmp3lame", 44100), ("ogg", "libopus", 48000),
    ("flac", "flac", 22050)])
def test_any_common_format_decodes_to_16k_mono_wav(fmt: str, codec: str, rate: int) -> None:
    wav_bytes, duration = decode_to_wav(tone_file(fmt, codec, rate))
    assert duration == pytest.approx(1.5, abs=0.1)
    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert dominant(samples[RATE // 10:RATE], RATE) == pytest.approx(440, abs=5)


async def test_upload_read_and_reset(pbx_api: Api, tmp_path: Path) -> None:
    tenant = pbx_api.store.tenant("default").id
    path = f"/api/v1/tenants/{tenant}/music-on-hold"
    status, state, _ = await pbx_api.call("GET", path)
    assert status == 200 and state["custom"] is False and state["default"] == "tone"
    mp3 = tone_file("mp3", "libmp3lame", freq=600.0)
    status, state, _ = await pbx_api.call("PUT", path, data=mp3,
                                          headers={"Content-Type": "audio/mpeg"})
    assert status == 200, state
    assert state["custom"] is True and state["duration"] == pytest.approx(1.5, abs=0.1)
    stored = tmp_path / "moh" / f"tenant-{tenant}.wav"
    assert stored.is_file() and state["size"] == stored.stat().st_size
    # what the hold player makes of it at a G.711 leg's rate: the uploaded tone
    assert dominant(played(stored, 8000)[800:], 8000) == pytest.approx(600, abs=10)
    status, again, _ = await pbx_api.call("GET", path)
    assert again["custom"] is True
    status, _, _ = await pbx_api.call("DELETE", path)
    assert status == 204 and not stored.exists()
    status, state, _ = await pbx_api.call("GET", path)
    assert state["custom"] is False


async def test_what_is_no_audio_is_refused(pbx_api: Api) -> None:
    tenant = pbx_api.store.tenant("default").id
    path = f"/api/v1/tenants/{tenant}/music-on-hold"
    status, problem, _ = await pbx_api.call("PUT", path, data=b"not audio at all" * 100,
                                            headers={"Content-Type": "audio/wav"})
    assert status == 422 and problem["code"] == "invalid_audio", problem
    status, problem, _ = await pbx_api.call("PUT", path, json={"file": "x"})
    assert status == 415, problem
    status, problem, _ = await pbx_api.call("PUT", path, data=b"",
                                            headers={"Content-Type": "audio/wav"})
    assert status == 400, problem
    status, state, _ = await pbx_api.call("GET", path)
    assert state["custom"] is False


async def test_only_the_tenants_admins(pbx_api: Api) -> None:
    tenant = pbx_api.store.tenant("default").id
    path = f"/api/v1/tenants/{tenant}/music-on-hold"
    wav = tone_file("wav", "pcm_s16le")
    kw = {"data": wav, "headers": {"Content-Type": "audio/wav"}}
    assert (await pbx_api.call("PUT", path, who="anna", **kw))[0] == 403
    assert (await pbx_api.call("DELETE", path, who="anna"))[0] == 403
    assert (await pbx_api.call("GET", path, who="anna"))[0] == 200  # the state: for all of it
    assert (await pbx_api.call("GET", path, who="carl"))[0] == 404
    assert (await pbx_api.call("PUT", path, who="acme", **kw))[0] == 404  # another tenant's
    assert (await pbx_api.call("DELETE", path, who="acme"))[0] == 404
    assert (await pbx_api.call("PUT", path, who="root", **kw))[0] == 200
    _, document, _ = await pbx_api.call("GET", "/api/v1/openapi.json", who=None)
    op = document["paths"]["/api/v1/tenants/{tenant}/music-on-hold"]["put"]
    assert "audio/*" in op["requestBody"]["content"]


def test_the_b2bua_hold_source_plays_the_tenants_file(tmp_path: Path) -> None:
    from pbx.b2bua import B2bua

    moh = MusicOnHold(tmp_path / "moh")
    moh.save(7, tone_file("wav", "pcm_s16le", freq=800.0))
    b2bua = B2bua.__new__(B2bua)  # only the hold sources are used
    b2bua.moh = moh
    from pbx.callsettings import CallSettings

    b2bua.settings = CallSettings()
    port = b2bua._hold_for(7)(8000)
    assert isinstance(port, Player)
    frames = np.concatenate([port.get_frame() for _ in range(25)])  # type: ignore[misc]
    assert dominant(frames[800:], 8000) == pytest.approx(800, abs=10)
    other = b2bua._hold_for(8)(8000)  # a tenant without its own: the built-in tone
    assert not isinstance(other, Player)
    assert not isinstance(b2bua._hold_for(None)(8000), Player)
