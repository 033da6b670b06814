"""The voicemail mail itself: subject and text in the user's language, the audio attached.

Texts are Jinja2 templates (:data:`TEMPLATES`, in the catalogue's German and English);
dates are written by Babel in the language's own form. :func:`compose` is pure apart from
reading the attachment (done by the caller: ``audio`` is the Ogg/Opus bytes or None).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import jinja2
from babel.dates import format_datetime as babel_datetime

from pbx import i18n
from pbx.i18n import N_
from pbx.mail.audio import CONTENT_TYPE, FILENAME_SUFFIX

__all__ = ["LANGUAGES", "TEMPLATES", "compose", "subject_and_text"]

LANGUAGES = i18n.LANGUAGES

#: The mail's templates (``templates/`` beside this module): English text in gettext calls,
#: translated from the product's one message catalogue (:mod:`pbx.i18n`, ``de/mail.po``),
#: which the portal and the prompts share. Variables: name, caller_label, when, duration
#: (m:ss), kind (forward/notify/copy), attached (bool), extension.
TEMPLATES = Path(__file__).resolve().parent / "templates"
UNKNOWN = N_("Unknown caller")

_POLICY = policy.SMTP.clone(max_line_length=998)



@functools.cache
def _templates(lang: str) -> tuple[jinja2.Template, jinja2.Template]:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(i18n.translations(lang), newstyle=True)  # type: ignore[attr-defined]
    return env.get_template("voicemail_subject.txt"), env.get_template("voicemail.txt")


def _language(payload: Mapping[str, Any]) -> str:
    lang = str(payload.get("language") or "de")[:2].lower()
    return lang if lang in LANGUAGES else "de"


def _duration(seconds: float) -> str:
    total = max(0, round(seconds))
    return f"{total // 60}:{total % 60:02d}"


def subject_and_text(kind: str, payload: Mapping[str, Any], *, attached: bool,
                     tz: dt.tzinfo | None = None) -> tuple[str, str]:
    """The subject and the plain text of a mail of ``kind`` about the message ``payload``."""
    lang = _language(payload)
    received = dt.datetime.fromtimestamp(float(payload.get("received_at", 0)),
                                         tz or dt.datetime.now().astimezone().tzinfo)
    caller = str(payload.get("caller") or "")
    caller_name = str(payload.get("caller_name") or "")
    if caller and caller_name:
        label = f"{caller_name} ({caller})"
    else:
        label = caller_name or caller or i18n.gettext(lang, UNKNOWN)
    values = {
        "name": payload.get("user_name") or payload.get("extension") or "",
        "caller": caller, "caller_name": caller_name, "caller_label": label,
        "when": babel_datetime(received, "medium", locale=i18n.LOCALES[lang]),
        "duration": _duration(float(payload.get("duration", 0))),
        "kind": kind, "attached": attached, "extension": payload.get("extension", ""),
    }
    subject_t, text_t = _templates(lang)
    subject = " ".join(subject_t.render(values).split())  # one line, whatever the caller name
    return subject, text_t.render(values)


def compose(*, kind: str, payload: Mapping[str, Any], sender: str, recipient: str,
            message_id: str, created_at: float, audio: bytes | None,
            tz: dt.tzinfo | None = None) -> EmailMessage:
    """The mail of an outbox row: headers (the row's fixed Message-ID and date), the text,
    and the audio attachment when ``audio`` is given."""
    subject, text = subject_and_text(kind, payload, attached=audio is not None, tz=tz)
    # headers are never folded below SMTP's 998 octets: a long Message-ID stays on its line,
    # byte for byte the same on every attempt (whoever compares it need not unfold it)
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = format_datetime(dt.datetime.fromtimestamp(created_at, dt.UTC))
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to us
    msg.set_content(text)
    if audio is not None:
        stamp = dt.datetime.fromtimestamp(float(payload.get("received_at", created_at)), dt.UTC)
        name = f"voicemail-{payload.get('extension', '')}-{stamp:%Y%m%d-%H%M%S}{FILENAME_SUFFIX}"
        msg.add_attachment(audio, maintype=CONTENT_TYPE[0], subtype=CONTENT_TYPE[1],
                           filename=name)
    msg["Content-Language"] = _language(payload)  # after: a multipart moves Content-* down
    return msg
