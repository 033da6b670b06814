"""The product's one message catalogue, German and English (DESIGN.md: Babel/gettext).

Message ids are the English texts; ``de/*.po`` holds their German translations, one file per
area (``portal.po``, ``admin.po``, ``mail.po`` …) so that work on one area never touches
another's file — they are read and merged into one catalogue per language. English needs no
file: a message id is its own English text. ``tests/pbx/test_catalogue.py`` extracts every
message of the templates and the code and fails on one without a German translation.

Dates, times and numbers are written by Babel in each language's own form.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
from collections.abc import Mapping
from pathlib import Path

from babel import Locale, negotiate_locale
from babel.dates import format_date as _babel_date
from babel.dates import format_datetime as _babel_datetime
from babel.dates import format_time as _babel_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations

__all__ = ["CATALOGUE_DIR", "DEFAULT", "LANGUAGES", "LOCALES", "N_", "catalogue", "format_date",
           "format_datetime", "format_duration", "format_number", "format_time", "gettext",
           "negotiate", "pgettext", "translations"]

LANGUAGES = ("de", "en")
DEFAULT = "de"
LOCALES: Mapping[str, str] = {"de": "de_DE", "en": "en_GB"}
CATALOGUE_DIR = Path(__file__).resolve().parent


@functools.cache
def _catalog(lang: str) -> tuple[bytes, Mapping[str, str]]:
    """(the merged .mo image, msgid → msgstr) of ``lang`` (empty for English)."""
    from babel.messages.catalog import Catalog

    merged = Catalog(locale=LOCALES.get(lang, lang), domain="asyncpbx")
    plain: dict[str, str] = {}
    folder = CATALOGUE_DIR / lang
    for path in sorted(folder.glob("*.po")) if folder.is_dir() else ():
        with path.open("rb") as fh:
            part = read_po(fh, locale=LOCALES.get(lang, lang))
        for message in part:
            if not message.id or not message.string:
                continue
            before = merged.get(message.id, context=message.context)
            if before is not None and before.string != message.string:
                raise ValueError(f"{path.name}: {message.id!r} is translated differently "
                                 "in another file of the catalogue")
            merged.add(message.id, message.string, context=message.context)
            if isinstance(message.id, str) and isinstance(message.string, str):
                key = f"{message.context}\x04{message.id}" if message.context else message.id
                plain[key] = message.string
    out = io.BytesIO()
    write_mo(out, merged)
    return out.getvalue(), plain


def catalogue(lang: str) -> Mapping[str, str]:
    """msgid → translation of ``lang`` (singular messages; empty for English); a message with
    a context is keyed ``context + "\\x04" + msgid``, as gettext does."""
    return _catalog(lang)[1]


@functools.cache
def translations(lang: str) -> Translations:
    """The gettext translations of ``lang`` (what Jinja2's i18n extension installs)."""
    return Translations(io.BytesIO(_catalog(lang)[0]), domain="asyncpbx")


def gettext(lang: str, message: str) -> str:
    """``message`` in ``lang``."""
    return translations(lang).gettext(message)


def pgettext(lang: str, context: str, message: str) -> str:
    """``message`` of ``context`` (``prompt``: the announcements) in ``lang``."""
    return str(translations(lang).pgettext(context, message))


def negotiate(accept_language: str, default: str = DEFAULT) -> str:
    """The language of an ``Accept-Language`` header we speak (``default`` otherwise)."""
    wanted = []
    for part in accept_language.split(","):
        tag = part.split(";", 1)[0].strip().replace("-", "_")
        if tag and tag != "*":
            wanted.append(tag)
    found = negotiate_locale(wanted, list(LANGUAGES) + [LOCALES[x] for x in LANGUAGES], sep="_")
    if found is None:
        found = negotiate_locale([w.split("_")[0] for w in wanted], list(LANGUAGES))
    return found.split("_")[0] if found else default


def _locale(lang: str) -> Locale:
    return Locale.parse(LOCALES.get(lang, LOCALES[DEFAULT]))


def _when(ts: float, tz: dt.tzinfo | None) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz or dt.datetime.now().astimezone().tzinfo)


def format_datetime(ts: float, lang: str, tz: dt.tzinfo | None = None) -> str:
    """POSIX time ``ts`` as a date and time in ``lang``'s form (``07.12.2026, 14:05``)."""
    return _babel_datetime(_when(ts, tz), "short", locale=_locale(lang))


def format_date(ts: float, lang: str, tz: dt.tzinfo | None = None) -> str:
    """The date of ``ts`` in ``lang``'s form."""
    return _babel_date(_when(ts, tz), "medium", locale=_locale(lang))


def format_time(ts: float, lang: str, tz: dt.tzinfo | None = None) -> str:
    """The time of day of ``ts`` in ``lang``'s form."""
    return _babel_time(_when(ts, tz), "short", locale=_locale(lang))


def format_number(value: float, lang: str) -> str:
    """A number in ``lang``'s form (``1.234,5`` in German)."""
    return format_decimal(value, locale=_locale(lang))


def format_duration(seconds: float) -> str:
    """A duration as ``m:ss`` (``h:mm:ss`` from an hour)."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue where it is defined; it is translated where shown
    (navigation labels, notices)."""
    return message
