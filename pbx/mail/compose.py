"""The voicemail mail itself: subject and text in the user's language, the audio attached.

Texts are Jinja2 templates (:data:`TEXTS`, German and English — the languages of the prompts);
dates are written by Babel in the language's own form. :func:`compose` is pure apart from
reading the attachment (done by the caller: ``audio`` is the Ogg/Opus bytes or None).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import jinja2
from babel.dates import format_datetime as babel_datetime

from pbx.mail.audio import CONTENT_TYPE, FILENAME_SUFFIX

__all__ = ["LANGUAGES", "TEXTS", "compose", "subject_and_text"]

LANGUAGES = ("de", "en")
_LOCALES = {"de": "de_DE", "en": "en_GB"}

#: (subject, text) templates per language. Variables: name, caller (number or "unknown"),
#: caller_name, when, duration (m:ss), kind (forward/notify/copy), attached (bool), extension.
TEXTS: Mapping[str, tuple[str, str]] = {
    "de": (
        "Neue Sprachnachricht von {{ caller_label }} ({{ duration }})",
        "Hallo {{ name }},\n\n"
        "{{ caller_label }} hat Ihnen am {{ when }} eine Sprachnachricht hinterlassen "
        "({{ duration }} Min.).\n\n"
        "{% if attached %}Die Nachricht ist als Audiodatei angehängt."
        "{% if kind == 'forward' %} Sie bleibt nur dann in Ihrer Sprachbox, wenn Sie "
        "„auch behalten“ eingestellt haben.{% endif %}"
        "{% else %}Sie können sie mit *86 an Ihrem Telefon abhören.{% endif %}\n\n"
        "-- \nIhre Telefonanlage (Nebenstelle {{ extension }})\n",
    ),
    "en": (
        "New voicemail from {{ caller_label }} ({{ duration }})",
        "Hello {{ name }},\n\n"
        "{{ caller_label }} left you a voicemail message on {{ when }} ({{ duration }} min).\n\n"
        "{% if attached %}The message is attached as an audio file."
        "{% if kind == 'forward' %} It stays in your voicemail box only if you turned on "
        "\"also keep\".{% endif %}"
        "{% else %}Dial *86 on your phone to listen to it.{% endif %}\n\n"
        "-- \nYour phone system (extension {{ extension }})\n",
    ),
}
_UNKNOWN = {"de": "Unbekannt", "en": "Unknown caller"}

_POLICY = policy.SMTP.clone(max_line_length=998)

_env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True)
_TEMPLATES = {lang: (_env.from_string(s), _env.from_string(t)) for lang, (s, t) in TEXTS.items()}


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
        label = caller_name or caller or _UNKNOWN[lang]
    values = {
        "name": payload.get("user_name") or payload.get("extension") or "",
        "caller": caller, "caller_name": caller_name, "caller_label": label,
        "when": babel_datetime(received, "medium", locale=_LOCALES[lang]),
        "duration": _duration(float(payload.get("duration", 0))),
        "kind": kind, "attached": attached, "extension": payload.get("extension", ""),
    }
    subject_t, text_t = _TEMPLATES[lang]
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
