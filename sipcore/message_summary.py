"""The ``message-summary`` event package body (RFC 3842 §5): what a message-waiting lamp shows.

::

    Messages-Waiting: yes
    Message-Account: sip:201@pbx.example
    Voice-Message: 2/8 (0/2)

``Messages-Waiting`` is ``yes`` or ``no``; ``Message-Account`` the mailbox (optional); each
``<message-context-class>: new/old (new_urgent/old_urgent)`` line counts one class of messages
(``voice-message``, ``fax-message``, …; the urgent part is optional). Header names are
case-insensitive, lines end with CRLF (LF accepted), unknown lines (optional message headers after
a blank line, unknown classes) are kept out of the counts but do not make the body invalid.
:func:`build` writes the body our NOTIFYs carry, :func:`parse` reads one (a phone's view, the
tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sipcore.errors import ParseError

__all__ = ["CONTENT_TYPE", "EVENT", "Counts", "MessageSummary", "build", "parse"]

#: The event package (RFC 3842 §3.1) and its body's media type (§3.5).
EVENT = "message-summary"
CONTENT_TYPE = "application/simple-message-summary"

#: RFC 3842 §5.1 message-context-class values (RFC 3458).
CLASSES = ("voice-message", "fax-message", "pager-message", "multimedia-message",
           "text-message", "none")

_COUNTS = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*(?:\(\s*(\d+)\s*/\s*(\d+)\s*\))?\s*$")


@dataclass(frozen=True, slots=True)
class Counts:
    """One message class: new and old messages, and how many of each are urgent."""

    new: int = 0
    old: int = 0
    new_urgent: int = 0
    old_urgent: int = 0

    def __str__(self) -> str:
        return f"{self.new}/{self.old} ({self.new_urgent}/{self.old_urgent})"


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """A parsed or to-be-built body: the lamp (``waiting``), the account, counts per class."""

    waiting: bool
    account: str | None = None
    classes: dict[str, Counts] = field(default_factory=dict)

    @property
    def voice(self) -> Counts:
        """The ``Voice-Message`` counts (zeros when the body has none)."""
        return self.classes.get("voice-message", Counts())


def build(waiting: bool, voice: Counts | None = None, *, account: str | None = None) -> bytes:
    """The body of a ``message-summary`` NOTIFY (RFC 3842 §5.2): the lamp, the account when
    given, the voice-message counts when given."""
    lines = [f"Messages-Waiting: {'yes' if waiting else 'no'}"]
    if account:
        lines.append(f"Message-Account: {account}")
    if voice is not None:
        lines.append(f"Voice-Message: {voice}")
    return ("\r\n".join(lines) + "\r\n").encode()


def parse(body: bytes | str) -> MessageSummary:
    """Read a ``message-summary`` body; :class:`ParseError` (400) without a valid
    ``Messages-Waiting`` line or with a garbled counts line of a known class."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    waiting: bool | None = None
    account: str | None = None
    classes: dict[str, Counts] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # optional message headers follow (§5.2); not counts
        name, sep, value = line.partition(":")
        if not sep:
            raise ParseError(f"message-summary: not a header line: {line!r}", 400)
        key, value = name.strip().lower(), value.strip()
        if key == "messages-waiting":
            if value.lower() not in ("yes", "no"):
                raise ParseError(f"message-summary: Messages-Waiting {value!r}", 400)
            waiting = value.lower() == "yes"
        elif key == "message-account":
            account = value
        elif key in CLASSES:
            match = _COUNTS.match(value)
            if match is None:
                raise ParseError(f"message-summary: {name.strip()} {value!r}", 400)
            new, old, new_urgent, old_urgent = (int(g) if g else 0 for g in match.groups())
            classes[key] = Counts(new, old, new_urgent, old_urgent)
    if waiting is None:
        raise ParseError("message-summary: no Messages-Waiting line", 400)
    return MessageSummary(waiting, account, classes)
