"""Synthesis of the prompt set into the prompt cache (espeak-ng, Debian's ``espeak-ng``).

Theory of operation
-------------------
Each (language, prompt) is one cache entry, content-addressed: its key hashes what the audio
depends on — the text, the voice and speed, the synthesizer's version and :data:`ENGINE` (how we
trim, level and resample) — and its files are ``<cache>/<lang>/<name>-<key>-<rate>.wav``, 16-bit
mono PCM at each of :data:`RATES`. :func:`generate` synthesises only the entries whose files are
missing: an unchanged table costs one ``espeak-ng --version`` and a few ``stat`` calls; a changed
text or voice regenerates that prompt alone (its older files are removed). Files are written to
a temporary name and renamed, so PBXes sharing one cache (tests) never read half a file.

espeak-ng writes 22.05 kHz; the clip is trimmed of leading and trailing silence, levelled to a
fixed peak (:data:`PEAK`) and resampled with :func:`media.resample.resample` to each rate. When
espeak-ng is missing, whatever the cache holds for a prompt is used (any key) and the rest is
reported as failed: callers then hear tones instead (pbx.callcontrol's fallback).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import structlog

from media.resample import resample
from pbx.prompts.table import PromptTable, Voice

__all__ = ["ENGINE", "RATES", "EspeakNg", "GenerateResult", "Synthesizer", "generate",
           "prompt_key", "read_wav", "write_wav"]

log = structlog.get_logger("pbx.prompts")

Samples = npt.NDArray[np.int16]

#: Bump when trimming, levelling or resampling changes: every entry is regenerated.
ENGINE = 1
#: The rates generated prompts are stored at (legs at other rates resample from 16 kHz once).
RATES = (8000, 16000)
#: Peak level of a generated prompt (about -3 dBFS: loud, no clipping after G.711).
PEAK = 23000
#: Samples quieter than this count as silence when trimming.
SILENCE = 400
#: Silence kept before and after the speech, seconds.
MARGIN = 0.03


class Synthesizer(Protocol):
    """Text to speech: ``identity`` (name and version) is part of every cache key."""

    @property
    def identity(self) -> str: ...

    def synthesize(self, text: str, voice: Voice) -> tuple[Samples, int]:
        """``text`` spoken by ``voice``: mono int16 samples and their rate."""
        ...


class EspeakNg:
    """espeak-ng as a subprocess (raises FileNotFoundError when it is not installed)."""

    def __init__(self, binary: str = "espeak-ng") -> None:
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"{binary} is not installed (Debian: apt-get install "
                                    "espeak-ng)")
        self.binary = found
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """``espeak-ng --version``'s first words (the version, not the data path)."""
        if self._identity is None:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout
            self._identity = out.split("Data at")[0].strip()
        return self._identity

    def synthesize(self, text: str, voice: Voice) -> tuple[Samples, int]:
        """Speak ``text`` into a temporary WAV file and read it back."""
        with tempfile.TemporaryDirectory(prefix="asyncpbx-espeak-") as tmp:
            out = Path(tmp) / "prompt.wav"
            # -b 1: the text (on stdin, never parsed as options) is UTF-8
            subprocess.run([self.binary, "-b", "1", "-v", voice.voice, "-s", str(voice.speed),
                            "-w", str(out)], input=text.encode(), capture_output=True,
                           timeout=60, check=True)
            return read_wav(out)


def prompt_key(text: str, voice: Voice, identity: str) -> str:
    """The cache key of one prompt (16 hex digits of a SHA-256)."""
    blob = json.dumps([ENGINE, identity, voice.voice, voice.speed, text])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_wav(path: Path) -> tuple[Samples, int]:
    """A mono 16-bit PCM WAV file's samples and rate (ValueError for anything else)."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: not mono 16-bit PCM")
        data = w.readframes(w.getnframes())
        return np.frombuffer(data, "<i2").astype(np.int16), w.getframerate()


def write_wav(path: Path, samples: Samples, rate: int) -> None:
    """Write mono 16-bit PCM atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f, wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(samples.astype("<i2").tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def polish(samples: Samples, rate: int) -> Samples:
    """Trim silence at both ends (keeping :data:`MARGIN`) and level the peak to :data:`PEAK`."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SILENCE)
    if len(loud) == 0:
        return samples
    margin = int(MARGIN * rate)
    clip = samples[max(0, int(loud[0]) - margin): int(loud[-1]) + 1 + margin]
    peak = int(np.max(np.abs(clip.astype(np.int32))))
    scaled = np.rint(clip.astype(np.float64) * (PEAK / peak))
    out: Samples = np.clip(scaled, -32768, 32767).astype(np.int16)
    return out


def cache_files(cache: Path, lang: str, name: str, key: str) -> dict[int, Path]:
    """Where the entry's WAV files live, per rate."""
    return {rate: cache / lang / f"{name}-{key}-{rate}.wav" for rate in RATES}


def _any_cached(cache: Path, lang: str, name: str) -> dict[int, Path] | None:
    """Some complete entry for (lang, name), whatever its key (no synthesizer to key by)."""
    for first in sorted((cache / lang).glob(f"{name}-*-{RATES[0]}.wav")):
        key = first.name[len(name) + 1:].rsplit("-", 1)[0]
        if len(key) != 16:  # another prompt whose name starts with this one
            continue
        files = cache_files(cache, lang, name, key)
        if all(p.exists() for p in files.values()):
            return files
    return None


def _remove_stale(cache: Path, lang: str, name: str, key: str) -> None:
    for old in (cache / lang).glob(f"{name}-*.wav"):
        parts = old.name[len(name) + 1:].rsplit("-", 1)
        if len(parts) == 2 and len(parts[0]) == 16 and parts[0] != key:
            old.unlink(missing_ok=True)


@dataclass
class GenerateResult:
    """The cache's files per (language, name) and per rate, and what it took."""

    files: dict[tuple[str, str], dict[int, Path]] = field(default_factory=dict)
    generated: int = 0
    cached: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def generate(table: PromptTable, cache: Path, *, synth: Synthesizer | None = None,
             names: Iterable[str] | None = None, languages: Iterable[str] | None = None,
             workers: int = 2) -> GenerateResult:
    """Make sure every (language, prompt) of ``table`` — or only ``names`` / ``languages`` —
    is in ``cache``; synthesise what is missing with ``synth`` (default: espeak-ng)."""
    wanted_names = list(names) if names is not None else list(table.texts)
    wanted_langs = list(languages) if languages is not None else list(table.languages)
    unknown = [n for n in wanted_names if n not in table.texts]
    if unknown:
        raise ValueError(f"no such prompts: {unknown}")
    result = GenerateResult()
    identity = ""
    try:
        synth = synth if synth is not None else EspeakNg()
        identity = synth.identity
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("prompts.synthesizer_missing", error=str(exc))
        synth = None
    todo: list[tuple[str, str, str, Mapping[int, Path]]] = []
    for lang in wanted_langs:
        for name in wanted_names:
            if synth is None:
                found = _any_cached(cache, lang, name)
                if found is None:
                    result.failed.append((lang, name))
                else:
                    result.files[(lang, name)] = found
                    result.cached += 1
                continue
            key = prompt_key(table.texts[name][lang], table.voices[lang], identity)
            files = cache_files(cache, lang, name, key)
            if all(p.exists() for p in files.values()):
                result.files[(lang, name)] = files
                result.cached += 1
            else:
                todo.append((lang, name, key, files))
    if synth is None or not todo:
        return result

    def make(job: tuple[str, str, str, Mapping[int, Path]]) -> bool:
        lang, name, key, files = job
        assert synth is not None
        try:
            samples, rate = synth.synthesize(table.texts[name][lang], table.voices[lang])
        except (OSError, subprocess.SubprocessError, ValueError, wave.Error) as exc:
            log.warning("prompts.synthesis_failed", language=lang, prompt=name, error=str(exc))
            return False
        clip = polish(samples, rate)
        for out_rate, path in files.items():
            write_wav(path, clip if out_rate == rate else resample(clip, rate, out_rate),
                      out_rate)
        _remove_stale(cache, lang, name, key)
        return True

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for job, ok in zip(todo, pool.map(make, todo), strict=True):
            lang, name, _, made = job
            if ok:
                result.files[(lang, name)] = dict(made)
                result.generated += 1
            else:
                result.failed.append((lang, name))
    log.info("prompts.generated", generated=result.generated, cached=result.cached,
             failed=len(result.failed), cache=str(cache))
    return result
