"""The one message catalogue (pbx.i18n): every message of the portal, the e-mails and the
prompts has its German translation, translations keep their placeholders, and every page of
the portal renders in German and in English with no untranslated text — a text that comes out
the same in both languages must be data (names, numbers) or a word that is the same in both,
never an English sentence that escaped the catalogue."""

from __future__ import annotations

import html.parser
import re
from pathlib import Path

from babel.messages.pofile import read_po

from pbx.i18n import CATALOGUE_DIR, catalogue
from pbx.i18n.extract import messages, missing
from pbx.prompts.table import PromptTable
from tests.pbx.portal.conftest import PortalSite

#: Texts the same in German and English that are not data (brand, language names, words
#: German uses as they are).
SAME_IN_BOTH = {"asyncpbx", "Deutsch", "English", "Start", "E-Mail", "Chat", "Status", "Name",
                "PIN", "Login", "Token", "Tokens", "Webhook", "Webhooks", "Trunk", "Trunks",
                "Online", "Offline", "OK", "CSV", "SIP", "URL", "ID", "Details", "Feature",
                "Code", "Codes", "Export", "Tenant", "Admin", "Registrar", "Host", "Port",
                "Domain", "Realm", "Transport", "Display", "DTMF", "Mute", "Opus", "Jitter",
                "RTT", "WebRTC", "Hold", "Timeout", "Ping", "Events", "Event", "Secret",
                "Audio", "Download", "Service", "Portal", "Administration", "Version",
                "UDP", "TCP", "TLS"}
_PLACEHOLDER = re.compile(r"%\([a-z_]+\)[sd]|%[sd]|\{[a-z_]+\}")


def _po_files() -> list[Path]:
    return sorted(CATALOGUE_DIR.glob("*/*.po"))


def test_every_message_has_a_german_translation() -> None:
    assert messages(), "the extraction found no messages at all"
    gaps = missing("de")
    assert gaps == {}, "untranslated (python -m pbx.i18n.extract de): " + repr(gaps)


def test_the_prompts_are_in_the_catalogue() -> None:
    table = PromptTable.load()  # raises when a prompt has no German translation
    assert table.texts["confirm"] == {"de": "Bestätigt.", "en": "Confirmed."}
    assert any(k.startswith("prompt\x04") for k in catalogue("de"))


def test_translations_keep_their_placeholders() -> None:
    for path in _po_files():
        with path.open("rb") as fh:
            for message in read_po(fh):
                if not message.id or not message.string:
                    continue
                ids = message.id if isinstance(message.id, tuple) else (message.id,)
                strings = message.string if isinstance(message.string, tuple) \
                    else (message.string,)
                want = sorted(_PLACEHOLDER.findall(ids[0]))
                for s in strings:
                    assert sorted(_PLACEHOLDER.findall(s)) == want, (path.name, message.id, s)


class _Texts(html.parser.HTMLParser):
    """The visible text nodes and the labelling attributes of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        for name, value in attrs:
            if name in ("aria-label", "title", "placeholder", "alt") and value:
                self.texts.append(value.strip())
            if name == "value" and value and ("type", "submit") in attrs:
                self.texts.append(value.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.texts.append(" ".join(data.split()))


def _texts(page: str) -> list[str]:
    parser = _Texts()
    parser.feed(page)
    return parser.texts


def _is_data(text: str, data: set[str]) -> bool:
    words = re.findall(r"[A-Za-zÄÖÜäöüß][A-Za-zÄÖÜäöüß-]+", text)
    return all(w in data or w in SAME_IN_BOTH or len(w) <= 2 for w in words)


def _pages(site: PortalSite) -> list[str]:
    app = site.api.client.server.app
    paths = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = info.get("path")
        if not isinstance(path, str) or not path.startswith("/portal") or "{" in path \
                or "." in path.rsplit("/", 1)[-1]:  # files (audio, CSV), not pages
            continue
        if any(r.method == "GET" for r in resource) and not path.startswith(
                ("/portal/static", "/portal/vendor", "/portal/lang")):
            paths.add(path)
    return sorted(paths)


async def test_every_page_renders_in_german_and_in_english(portal: PortalSite) -> None:
    pages = _pages(portal)
    assert "/portal/" in pages and "/portal/login" in pages, pages
    data = {"Anna", "Ben", "Carl", "User", "default", "acme", "pbx", "test", "apx"}
    problems = []
    for who in ("100", "101"):
        de, en = await portal.sign_in(who, lang="de"), await portal.sign_in(who, lang="en")
        for path in pages:
            status_de, page_de = await de.get(path)
            status_en, page_en = await en.get(path)
            if status_de == 403 and who == "101":
                continue  # the administrator's pages: refused to a plain user (tested there)
            assert status_de == status_en == 200, (who, path, status_de, status_en)
            assert '<html lang="de">' in page_de and '<html lang="en">' in page_en, path
            german = set(_texts(page_de))
            for text in _texts(page_en):
                if text in german and not _is_data(text, data):
                    problems.append((who, path, text))
    assert not problems, "the same text in German and English (not translated?): " + \
        repr(sorted(set(problems))[:40])


async def test_a_form_that_does_not_parse_is_400_not_a_crash(portal: PortalSite) -> None:
    session = await portal.sign_in("101")
    for path in ("/portal/login", "/portal/logout"):
        async with session.session.post(portal.base + path, data=b"--x\r\n\r\n", headers={
                "Origin": portal.base, "Content-Type": "multipart/form-data"},
                allow_redirects=False) as r:
            assert r.status == 400, (path, r.status, await r.text())
