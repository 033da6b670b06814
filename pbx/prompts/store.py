"""The prompt set in memory: the generated prompts and the tenants' recordings, decoded once
at start-up, played by :class:`~pbx.prompts.port.PromptPort` without any file I/O on a call.

A tenant replaces a prompt with a recording in any format PyAV (FFmpeg) reads — WAV, MP3,
Ogg/Vorbis or Opus, FLAC — at ``<data>/prompts/tenants/<tenant>/<lang>/<name>.<ext>``, where
``<tenant>`` is the tenant's id, domain or name. A file that cannot be decoded gets one log
line naming it and the generated prompt plays instead.

Which clip plays for (name, language, tenant): for each language of ``language``, the store's
``default_language`` and ``"de"`` in turn, the tenant's recording, else the generated prompt;
the first found wins (an English user of a tenant that recorded only German prompts hears the
generated English ones). Clips are kept at 8 and 16 kHz; a leg at another rate (48 kHz Opus)
gets the 16 kHz clip resampled once, then cached.
"""

from __future__ import annotations

import wave
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from media.resample import resample
from pbx.callcontrol import Prompt
from pbx.prompts.generate import RATES, Synthesizer, generate, read_wav
from pbx.prompts.port import PromptPort
from pbx.prompts.table import PromptTable, digit_prompts

__all__ = ["AUDIO_EXTENSIONS", "PromptStore", "decode_file"]

log = structlog.get_logger("pbx.prompts")

Samples = npt.NDArray[np.int16]
#: rate → samples of one clip
Clip = dict[int, Samples]

#: File endings a tenant's recording may have.
AUDIO_EXTENSIONS = frozenset({"wav", "mp3", "ogg", "oga", "opus", "flac"})
#: Silence between a prompt and the digits it says, and between the digits (seconds).
DIGIT_GAP = 0.12


def _frozen(samples: Samples) -> Samples:
    samples.setflags(write=False)
    return samples


def decode_file(path: Path, rate: int) -> Samples:
    """Decode an audio file (PyAV) to mono int16 at ``rate``; ValueError when it holds no
    decodable audio."""
    import av

    chunks: list[Samples] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(np.asarray(out.to_ndarray(), np.int16).reshape(-1))
            for out in resampler.resample(None):
                chunks.append(np.asarray(out.to_ndarray(), np.int16).reshape(-1))
    except av.FFmpegError as exc:
        raise ValueError(str(exc)) from None
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    if len(samples) == 0:
        raise ValueError("no audio in the file")
    return samples


def _load_tenants(root: Path) -> dict[str, dict[tuple[str, str], Clip]]:
    """Every decodable recording under ``root`` (tenant/lang/name.ext), at :data:`RATES`."""
    tenants: dict[str, dict[tuple[str, str], Clip]] = {}
    if not root.is_dir():
        return tenants
    for path in sorted(root.glob("*/*/*")):
        ext = path.suffix.lower().lstrip(".")
        if not path.is_file() or ext not in AUDIO_EXTENSIONS:
            continue
        tenant, lang, name = path.parent.parent.name, path.parent.name, path.stem
        try:
            top = decode_file(path, max(RATES))
        except (OSError, ValueError) as exc:
            log.warning("prompts.recording_broken", path=str(path), error=str(exc))
            continue
        clip = {rate: _frozen(top if rate == max(RATES) else resample(top, max(RATES), rate))
                for rate in RATES}
        tenants.setdefault(tenant, {})[(lang, name)] = clip
    return tenants


class PromptStore:
    """The prompt set (see the module docstring). ``tenant_names(tenant_id)`` gives the
    folder names a tenant's recordings may be under (its id, domain and name; the server
    sets it from the directory)."""

    def __init__(self, table: PromptTable, generated: dict[tuple[str, str], Clip],
                 tenants: dict[str, dict[tuple[str, str], Clip]] | None = None, *,
                 default_language: str = "de", tenants_dir: Path | None = None) -> None:
        self.table = table
        self.default_language = default_language
        self.tenants_dir = tenants_dir
        self._generated = generated
        self._tenants = tenants or {}
        self.tenant_names: Callable[[int], Sequence[str]] = lambda tenant_id: (str(tenant_id),)

    @classmethod
    def load(cls, data_dir: Path, *, cache: Path | None = None, default_language: str = "de",
             table: PromptTable | None = None, synth: Synthesizer | None = None,
             names: Iterable[str] | None = None,
             languages: Iterable[str] | None = None) -> PromptStore:
        """Generate what the cache lacks (default cache: ``<data>/prompts/generated``), then
        read the generated prompts and the tenants' recordings into memory. Blocking (file
        I/O, subprocesses): run it off the event loop."""
        table = table if table is not None else PromptTable.load()
        cache = cache if cache is not None else data_dir / "prompts" / "generated"
        result = generate(table, cache, synth=synth, names=names, languages=languages)
        generated: dict[tuple[str, str], Clip] = {}
        for entry, files in result.files.items():
            clip: Clip = {}
            for rate, path in files.items():
                try:
                    samples, file_rate = read_wav(path)
                except (OSError, ValueError, EOFError, wave.Error) as exc:
                    # removed: the next start generates it again
                    log.warning("prompts.cache_file_broken", path=str(path), error=str(exc))
                    path.unlink(missing_ok=True)
                    continue
                if file_rate == rate:
                    clip[rate] = _frozen(samples)
            if clip:
                generated[entry] = clip
        tenants_dir = data_dir / "prompts" / "tenants"
        store = cls(table, generated, _load_tenants(tenants_dir),
                    default_language=default_language, tenants_dir=tenants_dir)
        log.info("prompts.loaded", prompts=len(generated), generated=result.generated,
                 recordings=sum(len(t) for t in store._tenants.values()))
        return store

    def reload_recordings(self) -> None:
        """Read the tenants' recordings again (after an administrator replaced one)."""
        if self.tenants_dir is not None:
            self._tenants = _load_tenants(self.tenants_dir)

    def languages(self, language: str) -> list[str]:
        """The languages tried for ``language``, in order."""
        out: list[str] = []
        for lang in (language, self.default_language, "de"):
            if lang and lang not in out:
                out.append(lang)
        return out

    def has(self, name: str) -> bool:
        """Whether prompt ``name`` exists in some language (generated or recorded)."""
        return any(n == name for _, n in self._generated) or any(
            n == name for recordings in self._tenants.values() for _, n in recordings)

    def clip(self, name: str, language: str, rate: int,
             tenant_id: int | None = None) -> Samples | None:
        """The samples of ``name`` at ``rate`` (see the module docstring for the order)."""
        tenants = [self._tenants[key] for key in (
            self.tenant_names(tenant_id) if tenant_id is not None and self._tenants else ())
            if key in self._tenants]
        for lang in self.languages(language):
            for recordings in tenants:
                if (lang, name) in recordings:
                    return self._at(recordings[(lang, name)], rate)
            if (lang, name) in self._generated:
                return self._at(self._generated[(lang, name)], rate)
        return None

    def port(self, prompt: Prompt, language: str, rate: int,
             tenant_id: int | None = None) -> PromptPort:
        """A port playing ``prompt`` once, then its ``say`` digit by digit; LookupError when
        the prompt is in no language (a digit that is missing is left out)."""
        main = self.clip(prompt.name, language, rate, tenant_id)
        if main is None:
            raise LookupError(f"no prompt {prompt.name!r}")
        clips = [main]
        for digit in digit_prompts(prompt.say):
            spoken = self.clip(digit, language, rate, tenant_id)
            if spoken is not None:
                clips.append(spoken)
        return PromptPort(clips, rate, gap=DIGIT_GAP)

    @staticmethod
    def _at(clip: Clip, rate: int) -> Samples:
        """The clip at ``rate`` (resampled from the highest rate once, then kept)."""
        found = clip.get(rate)
        if found is None:
            top = max(clip)
            found = clip[rate] = _frozen(resample(clip[top], top, rate))
        return found
