"""``asyncpbx mail outbox``: the voicemail mail outbox from the command line.

Lists the mails that are pending (with their attempts, next try and last error) and those that
failed for good (refused by the server, the recording gone, or not out after
``[smtp] give_up_after``); ``--all`` adds the sent ones. The exit status is 1 when any mail
failed, so a monitoring check can run it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from pbx.config import Config
from pbx.store import Store

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``mail`` command and its actions."""
    help_text = "the voicemail mail outbox"
    p = sub.add_parser("mail", help=help_text, description=help_text)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    outbox = actions.add_parser("outbox", help="list pending and failed mails")
    outbox.add_argument("--all", action="store_true", help="the sent mails too")
    common(outbox)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def run(args: argparse.Namespace, config: Config, store: Store) -> int:
    """Print the outbox; 1 when a mail failed for good, else 0."""
    mails = [m for m in store.outbox() if args.all or m.status != "sent"]
    if not mails:
        print("outbox empty" if args.all else "no pending or failed mail")
    for m in mails:
        line = (f"{m.id}  {m.status:<7}  {m.kind:<7}  {m.recipient}  {m.message_id}  "
                f"attempts={m.attempts}")
        if m.status == "pending":
            line += f"  next={_when(m.next_attempt_at)}"
        if m.status == "sent":
            line += f"  sent={_when(m.sent_at)}"
        if m.last_error:
            line += f"  error={m.last_error}"
        print(line)
    return 1 if any(m.status == "failed" for m in mails) else 0
