"""The prompt set: the text table, generation into the content-addressed cache (hits, misses,
what a changed text or voice regenerates), the store's clip choice (tenant recordings in MP3 and
Ogg/Opus made with PyAV here, a broken file, language fallback) and the prompt port."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog

from pbx.callcontrol import Prompt
from pbx.prompts import PromptPort, PromptStore, PromptTable, Voice, generate
from pbx.prompts.generate import PEAK, RATES, EspeakNg, read_wav
from pbx.prompts.table import DIGIT_PROMPTS, digit_prompts

DIGITS = {name: {"de": f"Ziffer {name}", "en": f"digit {name}"} for name in DIGIT_PROMPTS.values()}


def table(**texts: dict[str, str]) -> PromptTable:
    """A small table: the digits plus ``texts``."""
    return PromptTable.parse({"voices": {"de": {"voice": "de"}, "en": {"voice": "en-gb"}},
                              "prompts": {**DIGITS, **texts}})


class FakeSynth:
    """Speaks a 16 kHz tone whose pitch and length depend on the text; counts its calls."""

    def __init__(self, identity: str = "fake 1") -> None:
        self.identity = identity
        self.calls: list[tuple[str, str]] = []

    def synthesize(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        self.calls.append((text, voice.voice))
        rate = 16000
        n = np.arange(int(rate * (0.2 + 0.01 * len(text))))
        hz = 300 + 10 * (sum(map(ord, text)) % 50)
        tone = 8000 * np.sin(2 * np.pi * hz * n / rate)
        padded = np.concatenate([np.zeros(1600), tone, np.zeros(1600)])  # silence is trimmed
        return padded.astype(np.int16), rate


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(samples))


def encode(path: Path, hz: float, seconds: float, codec: str, rate: int) -> None:
    """A tone recorded into ``path`` (the container follows the extension) with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream: Any = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        n = np.arange(int(rate * seconds))
        pcm = (10000 * np.sin(2 * np.pi * hz * n / rate)).astype(np.int16)
        step = 960
        for i in range(0, len(pcm), step):
            chunk = pcm[i:i + step]
            if len(chunk) < step:
                chunk = np.concatenate([chunk, np.zeros(step - len(chunk), np.int16)])
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = i
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


# -- the table -------------------------------------------------------------------------------------


def test_the_shipped_table_has_every_prompt_the_features_use() -> None:
    shipped = PromptTable.load()
    assert shipped.languages == ("de", "en")
    for name in ("confirm", "activated", "deactivated", "forward_on_to", "forward_off",
                 "not_available", "anonymous_rejected", "error", "vm_greeting_default",
                 "vm_greeting_person_at", "vm_greeting_unavailable", "vm_you_have",
                 "vm_new_messages", "vm_menu_main", "vm_message_saved", "vm_message_deleted",
                 "vm_enter_pin", *DIGIT_PROMPTS.values()):
        assert set(shipped.texts[name]) == {"de", "en"}, name


def test_a_table_without_a_text_in_every_language_is_refused() -> None:
    with pytest.raises(ValueError, match=r"prompts.hello has no text for \['en'\]"):
        table(hello={"de": "Hallo"})
    with pytest.raises(ValueError, match=r"digit_0 \(a spoken digit\) is missing"):
        PromptTable.parse({"voices": {"de": {"voice": "de"}}, "prompts": {"a": {"de": "a"}}})
    with pytest.raises(ValueError, match="letters, digits"):
        table(**{"bad-name": {"de": "x", "en": "x"}})


def test_say_is_spoken_digit_by_digit() -> None:
    assert digit_prompts("+49 30*1#") == ["digit_plus", "digit_4", "digit_9", "digit_3",
                                          "digit_0", "digit_star", "digit_1", "digit_hash"]


# -- generation and its cache ------------------------------------------------------------------------


def test_generation_is_cached_and_regenerates_only_what_changed(tmp_path: Path) -> None:
    synth = FakeSynth()
    t = table(hello={"de": "Hallo", "en": "Hello"}, bye={"de": "Tschüss", "en": "Bye"})
    first = generate(t, tmp_path, synth=synth)
    entries = 2 * (len(DIGIT_PROMPTS) + 2)
    assert (first.generated, first.cached, first.failed) == (entries, 0, [])
    assert len(synth.calls) == entries
    files = first.files[("de", "hello")]
    assert set(files) == set(RATES) and all(p.exists() for p in files.values())
    eight, rate8 = read_wav(files[8000])
    sixteen, rate16 = read_wav(files[16000])
    assert (rate8, rate16) == (8000, 16000)
    assert abs(len(sixteen) - 2 * len(eight)) <= 2
    assert abs(int(np.max(np.abs(sixteen.astype(np.int32)))) - PEAK) < 200  # levelled
    assert abs(sixteen[:8]).max() < 2000  # leading silence trimmed to the margin only

    synth.calls.clear()
    again = generate(t, tmp_path, synth=synth)
    assert (again.generated, again.cached, synth.calls) == (0, entries, [])
    assert again.files == first.files

    # a changed text regenerates that prompt in that language only; its old files go
    changed = table(hello={"de": "Guten Tag", "en": "Hello"}, bye={"de": "Tschüss", "en": "Bye"})
    third = generate(changed, tmp_path, synth=synth)
    assert synth.calls == [("Guten Tag", "de")] and third.generated == 1
    assert not any(p.exists() for p in files.values())
    assert len(list((tmp_path / "de").glob("hello-*.wav"))) == len(RATES)

    # a changed voice regenerates its language; a new synthesizer version everything
    synth.calls.clear()
    voiced = PromptTable(voices={"de": Voice("de"), "en": Voice("en-us", 170)},
                         texts=changed.texts)
    assert generate(voiced, tmp_path, synth=synth).generated == entries // 2
    assert {v for _, v in synth.calls} == {"en-us"}
    assert generate(voiced, tmp_path, synth=FakeSynth("fake 2")).generated == entries


def test_only_the_prompts_asked_for_are_generated(tmp_path: Path) -> None:
    synth = FakeSynth()
    t = table(hello={"de": "Hallo", "en": "Hello"})
    result = generate(t, tmp_path, synth=synth, names=["hello", "digit_1"], languages=["en"])
    assert sorted(result.files) == [("en", "digit_1"), ("en", "hello")]
    assert len(synth.calls) == 2
    with pytest.raises(ValueError, match="no such prompts"):
        generate(t, tmp_path, synth=synth, names=["nope"])


def test_without_a_synthesizer_whatever_the_cache_holds_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = table(hello={"de": "Hallo", "en": "Hello"})
    generate(t, tmp_path, synth=FakeSynth(), names=["hello"], languages=["de"])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no espeak-ng
    with structlog.testing.capture_logs() as logs:
        result = generate(t, tmp_path, names=["hello", "digit_1"], languages=["de"])
    assert list(result.files) == [("de", "hello")] and result.failed == [("de", "digit_1")]
    assert [e["event"] for e in logs] == ["prompts.synthesizer_missing"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_ng_speaks_the_shipped_texts(tmp_path: Path) -> None:
    shipped = PromptTable.load()
    result = generate(shipped, tmp_path, names=["activated", "digit_7"])
    assert result.generated == 4 and not result.failed
    assert EspeakNg().identity.startswith("eSpeak NG")
    for lang in ("de", "en"):
        samples, rate = read_wav(result.files[(lang, "activated")][8000])
        assert rate == 8000 and 0.8 < len(samples) / rate < 4.0  # a short sentence
        digit, _ = read_wav(result.files[(lang, "digit_7")][8000])
        assert 0.2 < len(digit) / rate < len(samples) / rate
        # speech, not a tone: energy spread over the voice band
        spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
        band = spectrum[int(300 * len(samples) / rate):int(3400 * len(samples) / rate)]
        assert np.sort(band)[-len(band) // 10:].sum() < 0.9 * band.sum()


# -- the store ---------------------------------------------------------------------------------------


def load(data: Path, cache: Path, **kwargs: object) -> PromptStore:
    t = table(hello={"de": "Hallo", "en": "Hello"}, bye={"de": "Tschüss", "en": "Bye"})
    return PromptStore.load(data, cache=cache, table=t, synth=FakeSynth(), **kwargs)  # type: ignore[arg-type]


def test_language_falls_back_to_the_default_then_german(tmp_path: Path) -> None:
    store = load(tmp_path / "data", tmp_path / "cache")
    de = store.clip("hello", "de", 8000)
    en = store.clip("hello", "en", 8000)
    assert de is not None and en is not None and not np.array_equal(de, en)
    assert store.clip("hello", "fr", 8000) is de  # unknown language: the default (de)
    assert store.clip("hello", "", 8000) is de
    english = load(tmp_path / "data", tmp_path / "cache", default_language="en")
    picked = english.clip("hello", "fr", 8000)
    assert picked is not None and np.array_equal(picked, en)
    # a language whose prompt is missing falls back too
    partial = load(tmp_path / "data2", tmp_path / "cache2", languages=["de"])
    assert partial.clip("hello", "en", 8000) is not None
    assert store.clip("nope", "de", 8000) is None and not store.has("nope")
    with pytest.raises(LookupError, match="nope"):
        store.port(Prompt("nope"), "de", 8000)


def test_tenant_recordings_replace_the_generated_prompts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acme = data / "prompts" / "tenants" / "acme.example.com"
    (acme / "de").mkdir(parents=True)
    (data / "prompts" / "tenants" / "7" / "en").mkdir(parents=True)
    encode(acme / "de" / "hello.mp3", 440.0, 1.0, "libmp3lame", 16000)
    encode(data / "prompts" / "tenants" / "7" / "en" / "bye.ogg", 1000.0, 0.6, "libopus", 48000)
    store = load(data, tmp_path / "cache")
    store.tenant_names = lambda tid: (str(tid), "acme.example.com") if tid == 7 else (str(tid),)

    hello = store.clip("hello", "de", 8000, tenant_id=7)
    assert hello is not None and abs(dominant_hz(hello, 8000) - 440) < 10
    assert 0.9 < len(hello) / 8000 < 1.2
    wide = store.clip("hello", "de", 16000, tenant_id=7)
    assert wide is not None and abs(len(wide) - 2 * len(hello)) < 20
    bye = store.clip("bye", "en", 16000, tenant_id=7)
    assert bye is not None and abs(dominant_hz(bye, 16000) - 1000) < 10
    # other tenants, other languages and other prompts: the generated set
    generated = store.clip("hello", "de", 8000)
    assert generated is not None and not np.array_equal(generated, hello)
    assert np.array_equal(store.clip("hello", "de", 8000, tenant_id=8), generated)  # type: ignore[arg-type]
    assert store.clip("hello", "en", 8000, tenant_id=7) is store.clip("hello", "en", 8000)
    # an English user of tenant 7 with no English "hello" recording hears the generated one,
    # not the German recording
    assert not np.array_equal(store.clip("hello", "en", 8000, tenant_id=7), hello)  # type: ignore[arg-type]


def test_a_broken_recording_is_logged_once_and_the_generated_prompt_plays(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    folder = data / "prompts" / "tenants" / "3" / "de"
    folder.mkdir(parents=True)
    (folder / "hello.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    (folder / "notes.txt").write_text("not audio")  # ignored: not an audio file
    with structlog.testing.capture_logs() as logs:
        store = load(data, tmp_path / "cache")
    broken = [e for e in logs if e["event"] == "prompts.recording_broken"]
    assert len(broken) == 1 and broken[0]["path"] == str(folder / "hello.wav")
    assert np.array_equal(store.clip("hello", "de", 8000, tenant_id=3),  # type: ignore[arg-type]
                          store.clip("hello", "de", 8000))  # type: ignore[arg-type]


def test_a_prompt_port_plays_the_prompt_then_the_digits_once(tmp_path: Path) -> None:
    store = load(tmp_path / "data", tmp_path / "cache")
    port = store.port(Prompt("hello", say="12"), "de", 8000)
    main, one, two = (store.clip(n, "de", 8000) for n in ("hello", "digit_1", "digit_2"))
    assert main is not None and one is not None and two is not None
    frames = []
    while (frame := port.get_frame()) is not None:
        assert len(frame) == 160
        frames.append(frame)
    assert port.finished and port.get_frame() is None
    played = np.concatenate(frames)
    gap = np.zeros(int(0.12 * 8000), np.int16)
    expected = np.concatenate([main, gap, one, gap, two])
    assert len(played) == -(-len(expected) // 160) * 160  # the last frame padded
    assert np.array_equal(played[:len(expected)], expected)
    assert port.duration == pytest.approx(len(expected) / 8000)


def test_other_rates_are_resampled_once(tmp_path: Path) -> None:
    store = load(tmp_path / "data", tmp_path / "cache")
    opus = store.clip("hello", "de", 48000)
    wide = store.clip("hello", "de", 16000)
    assert opus is not None and wide is not None and abs(len(opus) - 3 * len(wide)) < 4
    assert store.clip("hello", "de", 48000) is opus
    port = store.port(Prompt("hello"), "de", 48000)
    assert len(port.get_frame()) == 960  # type: ignore[arg-type]


def test_a_stopped_port_plays_nothing_more() -> None:
    port = PromptPort([np.ones(400, np.int16)], 8000)
    assert port.get_frame() is not None
    port.stop()
    assert port.get_frame() is None and port.finished


def test_recordings_are_read_again_on_reload(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = load(data, tmp_path / "cache")
    generated = store.clip("bye", "de", 8000, tenant_id=1)
    encode(data / "prompts" / "tenants" / "1" / "de" / "bye.flac", 500.0, 0.5, "flac", 16000)
    assert store.clip("bye", "de", 8000, tenant_id=1) is generated  # decoded at load only
    store.reload_recordings()
    recorded = store.clip("bye", "de", 8000, tenant_id=1)
    assert recorded is not None and abs(dominant_hz(recorded, 8000) - 500) < 10


def test_python_m_pbx_prompts_fills_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import functools

    import pbx.prompts.__main__ as cli

    synth = FakeSynth()
    monkeypatch.setattr(cli, "generate", functools.partial(generate, synth=synth))
    assert cli.main(["--data-dir", str(tmp_path)]) == 0
    entries = len(synth.calls)
    assert entries == 2 * len(PromptTable.load().texts)
    assert f"{entries} generated, 0 cached" in capsys.readouterr().out
    assert (tmp_path / "prompts" / "generated" / "de").is_dir()
    assert cli.main(["--cache", str(tmp_path / "prompts" / "generated")]) == 0
    assert f"0 generated, {entries} cached" in capsys.readouterr().out


def test_a_damaged_cache_file_is_logged_and_the_other_rate_serves(tmp_path: Path) -> None:
    load(tmp_path / "data", tmp_path / "cache")
    damaged = next((tmp_path / "cache" / "de").glob("hello-*-8000.wav"))
    damaged.write_bytes(b"RIFF")  # cut short
    with structlog.testing.capture_logs() as logs:
        store = load(tmp_path / "data", tmp_path / "cache")
    assert [e["path"] for e in logs if e["event"] == "prompts.cache_file_broken"] == [
        str(damaged)]
    wide = store.clip("hello", "de", 16000)
    narrow = store.clip("hello", "de", 8000)  # resampled from 16 kHz instead
    assert wide is not None and narrow is not None and abs(2 * len(narrow) - len(wide)) < 4
    assert not damaged.exists()  # so the next start generates it again
    again = generate(table(hello={"de": "Hallo", "en": "Hello"}, bye={"de": "Tschüss", "en": "Bye"}),
                     tmp_path / "cache", synth=FakeSynth())
    assert again.generated == 1 and damaged.exists()
