"""Prompts (announcements): the German and English prompt set, generated from the text table
``texts.toml`` with espeak-ng into a cache (:mod:`pbx.prompts.generate`), loaded into memory
with the tenants' recorded replacements (:mod:`pbx.prompts.store`) and played once by
:class:`PromptPort`. ``python -m pbx.prompts`` fills the cache ahead of the first start.
"""

from pbx.prompts.generate import EspeakNg, GenerateResult, generate
from pbx.prompts.port import PromptPort
from pbx.prompts.store import PromptStore, decode_file
from pbx.prompts.table import PromptTable, Voice, digit_prompts

__all__ = ["EspeakNg", "GenerateResult", "PromptPort", "PromptStore", "PromptTable", "Voice",
           "decode_file", "digit_prompts", "generate"]
