"""Voicemail by e-mail (FEATURES.md §3, issue 15 item 5): the user's settings; the mail itself
is :mod:`pbx.mail` (an outbox filled in the transaction that records the message).

``mode``:

* ``off`` — no mail (the default);
* ``forward`` — the message as an audio attachment (Opus in Ogg) to ``address``; the message is
  then removed from the box once the mail is out, unless ``also_keep`` is on;
* ``notify`` — a notification without audio to ``address``;
* ``copy`` — a notification to ``address`` and a copy with audio to ``copy_to``.

``address`` empty: the user's own e-mail address. The mail is written in the user's language.
"""

from __future__ import annotations

from collections.abc import Mapping

from pbx.callcontrol import BaseFeature, Setting

#: The modes (``voicemail_mail.mode``).
MODES = ("off", "forward", "notify", "copy")


class VoicemailMail(BaseFeature):
    """Settings only: the outbox (pbx.mail) reads them when a message is deposited."""

    name = "voicemail_mail"
    priority = 910
    settings_schema: Mapping[str, Setting] = {
        "mode": Setting(str, "off", "off, forward (audio, then removed), notify (no audio), "
                        "copy (notify + audio to copy_to)", choices=MODES),
        "address": Setting(str, "", "where the mail goes (empty: the user's e-mail address)",
                           max_length=254),
        "copy_to": Setting(str, "", "copy mode: the second address, which gets the audio",
                           max_length=254),
        "also_keep": Setting(bool, False, "forward mode: keep the message in the box too"),
    }
