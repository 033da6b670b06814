"""The prompt text table (``texts.toml`` beside this module): prompt name → text per language,
and the espeak-ng voice of each language. Pure data: no synthesis, no files but the table.

The shipped table names each prompt by its English text; its other languages come from the
product's message catalogue (:mod:`pbx.i18n`, context ``prompt``), which the portal and the
e-mails share. A table may also give the texts per language inline (``{de = …, en = …}``)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DIGIT_PROMPTS", "TEXTS", "PromptTable", "Voice", "digit_prompts"]

#: The table shipped with the PBX.
TEXTS = Path(__file__).with_name("texts.toml")

#: What each character of a :class:`~pbx.callcontrol.Prompt`'s ``say`` is spoken as.
DIGIT_PROMPTS: Mapping[str, str] = {
    **{str(d): f"digit_{d}" for d in range(10)},
    "*": "digit_star", "#": "digit_hash", "+": "digit_plus",
}


def digit_prompts(say: str) -> list[str]:
    """The prompt names that speak ``say`` digit by digit (other characters are skipped)."""
    return [DIGIT_PROMPTS[c] for c in say if c in DIGIT_PROMPTS]


@dataclass(frozen=True, slots=True)
class Voice:
    """An espeak-ng voice (``-v``) and speed in words per minute (``-s``)."""

    voice: str
    speed: int = 150


@dataclass(frozen=True, slots=True)
class PromptTable:
    """``texts[name][language]`` and ``voices[language]``; every prompt has a text in every
    language that has a voice (checked by :meth:`parse`)."""

    voices: Mapping[str, Voice]
    texts: Mapping[str, Mapping[str, str]]

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages of the set, in table order."""
        return tuple(self.voices)

    @classmethod
    def load(cls, path: Path = TEXTS) -> PromptTable:
        """Read and check a table file (ValueError naming the problem)."""
        with path.open("rb") as f:
            return cls.parse(tomllib.load(f), str(path))

    @classmethod
    def parse(cls, raw: Mapping[str, object], source: str = "texts") -> PromptTable:
        """Check a parsed table: ``[voices]`` lang = {voice, speed}; ``[prompts]`` name =
        {lang = text …} with a non-empty text for every language."""
        voices_raw, prompts_raw = raw.get("voices"), raw.get("prompts")
        if not isinstance(voices_raw, Mapping) or not voices_raw:
            raise ValueError(f"{source}: [voices] must name at least one language")
        if not isinstance(prompts_raw, Mapping):
            raise ValueError(f"{source}: [prompts] is missing")
        voices: dict[str, Voice] = {}
        for lang, spec in voices_raw.items():
            if not isinstance(spec, Mapping) or not isinstance(spec.get("voice"), str) \
                    or not isinstance(spec.get("speed", 150), int):
                raise ValueError(f"{source}: voices.{lang} must be {{voice = str, speed = int}}")
            voices[lang] = Voice(spec["voice"], spec.get("speed", 150))
        texts: dict[str, dict[str, str]] = {}
        for name, per_lang in prompts_raw.items():
            if not name.replace("_", "").isalnum() or not name.isascii():
                raise ValueError(f"{source}: prompt name {name!r} must be letters, digits, _")
            if isinstance(per_lang, str):
                per_lang = _translated(per_lang, voices, f"{source}: prompts.{name}")
            if not isinstance(per_lang, Mapping):
                raise ValueError(f"{source}: prompts.{name} must be {{lang = text}} or the "
                                 "English text")
            missing = [lang for lang in voices if not isinstance(per_lang.get(lang), str)
                       or not per_lang[lang].strip()]
            if missing:
                raise ValueError(f"{source}: prompts.{name} has no text for {missing}")
            texts[name] = {lang: per_lang[lang].strip() for lang in voices}
        for name in DIGIT_PROMPTS.values():
            if name not in texts:
                raise ValueError(f"{source}: prompts.{name} (a spoken digit) is missing")
        return cls(voices, texts)


def _translated(english: str, voices: Mapping[str, Voice], where: str) -> dict[str, str]:
    """{lang: text} of a prompt given by its English text (ValueError naming the prompt when
    the catalogue has no translation for one of the table's languages)."""
    from pbx.i18n import catalogue

    out = {}
    for lang in voices:
        if lang == "en":
            out[lang] = english
            continue
        found = catalogue(lang).get("prompt\x04" + english.strip())
        if not found:
            raise ValueError(f"{where}: {english!r} has no {lang} translation in the message "
                             f"catalogue (pbx/i18n/{lang}/prompts.po, msgctxt \"prompt\")")
        out[lang] = found
    return out
