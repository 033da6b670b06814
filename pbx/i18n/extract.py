"""Find every message of the catalogue's sources: the portal's and the e-mails' templates
(``_()`` and ``{% trans %}``) and the Python that marks messages (``_``, ``N_``, ``pr.t``, ``gettext``,
``ngettext``). ``python -m pbx.i18n.extract [LANG]`` prints those without a translation in
``LANG`` (default de) as .po entries to paste into the area's file."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from babel.messages.extract import extract_from_file

from pbx.i18n import catalogue

__all__ = ["SOURCES", "messages", "missing"]

ROOT = Path(__file__).resolve().parent.parent
#: (folder, glob, Babel extraction method)
SOURCES = ((ROOT / "portal" / "templates", "**/*.html", "jinja2"),
           (ROOT / "portal", "**/*.py", "python"),
           (ROOT / "mail" / "templates", "*.txt", "jinja2"),
           (ROOT / "mail", "*.py", "python"))
KEYWORDS = {"_": None, "N_": None, "t": None, "gettext": None, "ngettext": (1, 2)}


def _extract(path: Path, method: str) -> Iterator[tuple[int, str]]:
    method_name = "jinja2.ext:babel_extract" if method == "jinja2" else "python"
    options = {"extensions": "jinja2.ext.i18n", "trimmed": "false"} if method == "jinja2" \
        else {}
    for line, message, _comments, _context in extract_from_file(
            method_name, str(path), keywords=KEYWORDS, options=options):
        for text in message if isinstance(message, tuple) else (message,):
            if text:
                yield line, text


def messages() -> dict[str, list[str]]:
    """msgid → where it is used (``file:line``)."""
    found: dict[str, list[str]] = {}
    for folder, pattern, method in SOURCES:
        for path in sorted(folder.glob(pattern)) if folder.is_dir() else ():
            for line, text in _extract(path, method):
                found.setdefault(text, []).append(f"{path.relative_to(ROOT)}:{line}")
    return found


def missing(lang: str = "de") -> dict[str, list[str]]:
    """The messages ``lang``'s catalogue does not translate (the prompts' texts are checked
    where the prompt table loads: :mod:`pbx.prompts.table`)."""
    have = catalogue(lang)
    return {m: where for m, where in messages().items() if not have.get(m)}


def _po_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def main(argv: list[str]) -> int:
    """Print the untranslated messages of ``argv[0]`` (de) as .po entries."""
    lang = argv[0] if argv else "de"
    gaps = missing(lang)
    for text, where in sorted(gaps.items()):
        print(f"#: {' '.join(where[:3])}\nmsgid {_po_string(text)}\nmsgstr \"\"\n")
    return 1 if gaps else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
