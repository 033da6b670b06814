"""Voicemail by e-mail (issue 15 item 5): the outbox a deposit fills in its own transaction
(:mod:`pbx.mail.outbox`), the mail's text and attachment (:mod:`pbx.mail.compose`,
:mod:`pbx.mail.audio`) and the sender that drains the outbox through ``[smtp]``
(:mod:`pbx.mail.sender`)."""

from pbx.mail.outbox import FEATURE, MailOutbox, mails_for
from pbx.mail.sender import MailSender, backoff

__all__ = ["FEATURE", "MailOutbox", "MailSender", "backoff", "mails_for"]
