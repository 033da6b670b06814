"""The voicemail greeting resource: an upload in any common format (encoded here with PyAV:
MP3, Ogg/Opus, FLAC, a 44.1 kHz stereo WAV) is decoded to the 16 kHz mono WAV the box plays,
at the path the deposit reads; GET serves it back, DELETE restores the default greeting;
no audio, too long, a wrong media type and foreign users are refused."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from media.dtmf import tone_ratio
from pbx.voicemail import Boxes
from tests.pbx.api.conftest import Api

URL = "/api/v1/users/me/voicemail/greetings/personal"


def encoded(fmt: str, codec: str, seconds: float = 1.0, hz: float = 600.0,
            rate: int = 48000, layout: str = "mono") -> bytes:
    """A tone of ``hz`` encoded as ``fmt``/``codec`` by PyAV."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)  # type: ignore[call-arg]
        n = int(rate * seconds)
        tone = (0.4 * np.sin(2 * np.pi * hz * np.arange(n) / rate)).astype(np.float32)
        channels = 2 if layout == "stereo" else 1
        size = 1024
        for start in range(0, n, size):
            chunk = (tone[start:start + size] * 32767).astype(np.int16)
            data = np.repeat(chunk, channels).reshape(1, -1)  # packed s16: interleaved
            frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def _wav(data: bytes) -> tuple[int, int, np.ndarray]:
    with wave.open(io.BytesIO(data)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        return w.getframerate(), w.getnchannels(), pcm


@pytest.mark.parametrize(("fmt", "codec", "rate", "layout"), [
    ("mp3", "libmp3lame", 44100, "mono"), ("ogg", "libopus", 48000, "mono"),
    ("flac", "flac", 44100, "stereo"), ("wav", "pcm_s16le", 44100, "stereo")])
async def test_an_upload_in_any_format_becomes_the_greeting_the_box_plays(
        pbx_api: Api, fmt: str, codec: str, rate: int, layout: str) -> None:
    data = encoded(fmt, codec, rate=rate, layout=layout)
    status, body, _ = await pbx_api.call("PUT", URL, who="anna", data=data,
                                         headers={"Content-Type": "audio/mpeg"})
    assert status == 200, body
    assert body["kind"] == "personal" and abs(body["duration"] - 1.0) < 0.1, body
    path = Boxes(pbx_api.store.data_dir).greeting("default", "100")
    stored_rate, channels, pcm = _wav(path.read_bytes())
    assert (stored_rate, channels) == (16000, 1)
    middle = pcm[4000:4320].astype(np.float64)
    assert tone_ratio(middle, 600.0, 16000) > 0.8
    async with pbx_api.client.get(URL, headers=pbx_api.auth("anna")) as resp:
        assert resp.status == 200 and resp.content_type == "audio/wav"
        assert await resp.read() == path.read_bytes()
    assert not list(path.parent.glob(".greeting-*"))  # no temporary file left


async def test_a_form_upload_and_delete(pbx_api: Api) -> None:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("file", encoded("wav", "pcm_s16le", rate=8000), filename="hello.wav",
                   content_type="audio/wav")
    status, body, _ = await pbx_api.call("PUT", URL, who="ben", data=form)
    assert status == 200, body
    path = Boxes(pbx_api.store.data_dir).greeting("default", "101")
    assert path.is_file()
    status, body, _ = await pbx_api.call("DELETE", URL, who="ben")
    assert status == 204 and not path.exists()
    status, body, _ = await pbx_api.call("DELETE", URL, who="ben")
    assert status == 404 and body["code"] == "not_found"
    status, body, _ = await pbx_api.call("GET", URL, who="ben")
    assert status == 404, body


async def test_what_is_refused(pbx_api: Api) -> None:
    status, body, _ = await pbx_api.call("PUT", URL, who="anna", data=b"not audio at all",
                                         headers={"Content-Type": "audio/wav"})
    assert status == 422 and body["code"] == "invalid_audio", body
    long = encoded("wav", "pcm_s16le", seconds=61.0, rate=8000)
    status, body, _ = await pbx_api.call("PUT", URL, who="anna", data=long,
                                         headers={"Content-Type": "audio/wav"})
    assert status == 422 and "60 seconds" in body["detail"], body
    status, body, _ = await pbx_api.call("PUT", URL, who="anna", data=b"{}",
                                         headers={"Content-Type": "application/json"})
    assert status == 415, body
    status, body, _ = await pbx_api.call("PUT", URL.replace("personal", "busy"), who="anna",
                                         data=b"x", headers={"Content-Type": "audio/wav"})
    assert status == 404, body
    ok = encoded("wav", "pcm_s16le", rate=8000)
    carl = pbx_api.users["200"]
    status, body, _ = await pbx_api.call(
        "PUT", f"/api/v1/users/{carl.id}/voicemail/greetings/personal", who="anna", data=ok,
        headers={"Content-Type": "audio/wav"})
    assert status == 404, body  # another tenant's user
    status, body, _ = await pbx_api.call("PUT", URL, who=None, data=ok,
                                         headers={"Content-Type": "audio/wav"})
    assert status == 401, body
    assert not Boxes(pbx_api.store.data_dir).greeting("default", "100").exists()


async def test_a_multipart_body_without_its_boundary_is_400(pbx_api: Api) -> None:
    """aiohttp raises a bare ValueError for it: a problem, not a 500 (schemathesis found it
    on the music-on-hold upload's sibling)."""
    for url in (URL, f"/api/v1/tenants/{pbx_api.users['100'].tenant_id}/music-on-hold"):
        status, problem, _ = await pbx_api.call(
            "PUT", url, who="anna" if url == URL else "admin", data=b"--x\r\n\r\n",
            headers={"Content-Type": "multipart/form-data"})
        assert status in (400, 415), (url, problem)
        assert problem["code"] != "internal_error"
