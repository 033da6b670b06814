"""``asyncpbx voicemail list|play|delete USER``: a user's voicemail box from the command line.

::

    asyncpbx voicemail list 101 [--tenant NAME]
    asyncpbx voicemail play 101 ID [--out FILE]     # the WAV to FILE (default: stdout)
    asyncpbx voicemail delete 101 ID

``ID`` is a message's id as ``list`` shows it, or a unique prefix of it. ``play`` marks a new
message heard. The box's settings (``voicemail.enabled``, ``silence_timeout``, ``max_length``,
and ``forward_*.voicemail``) are ``asyncpbx settings show|set``'s. A running server learns of a
change made here when a phone next looks (the message-waiting indication follows the server's
own changes).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from pbx.config import Config
from pbx.store import Store, StoreError
from pbx.store.voicemail import VoicemailMessage

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``voicemail`` command and its actions."""
    help_text = "list, play and delete a user's voicemail messages"
    p = sub.add_parser("voicemail", help=help_text, description=help_text)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, what in (("list", "the box's messages, oldest first"),
                       ("play", "write a message's audio (WAV) and mark it heard"),
                       ("delete", "delete a message")):
        a = actions.add_parser(name, help=what)
        a.add_argument("user", metavar="USER", help="the box's extension")
        if name != "list":
            a.add_argument("id", metavar="ID", help="the message's id (or a unique prefix)")
        if name == "play":
            a.add_argument("--out", metavar="FILE", help="write to FILE (default: stdout)")
        a.add_argument("--tenant", metavar="NAME", help="the user's tenant (default: default)")
        common(a)


def _message(store: Store, user_id: int, prefix: str) -> VoicemailMessage:
    found = [m for m in store.voicemails(user_id) if m.id.startswith(prefix.lower())]
    if len(found) != 1:
        raise StoreError(f"no message {prefix!r}" if not found
                         else f"{prefix!r} names {len(found)} messages: give more of the id")
    return found[0]


def run(args: argparse.Namespace, config: Config, store: Store) -> None:
    """Carry out ``asyncpbx voicemail ACTION USER`` (StoreError names what is wrong)."""
    del config
    user = store.user(args.user, tenant=args.tenant)
    if args.action == "list":
        messages = store.voicemails(user.id)
        if not messages:
            print(f"no messages for {args.user}")
        for m in messages:
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.received_at))
            caller = m.caller or "anonymous"
            name = f" ({m.caller_name})" if m.caller_name else ""
            print(f"{m.id}  {m.state:<3}  {at}  {m.duration:6.1f} s  {caller}{name}")
        return
    message = _message(store, user.id, args.id)
    if args.action == "play":
        with open(message.audio_path, "rb") as audio:
            if args.out:
                with open(args.out, "wb") as out:
                    shutil.copyfileobj(audio, out)
            else:
                shutil.copyfileobj(audio, sys.stdout.buffer)
                sys.stdout.flush()
        store.mark_voicemail_heard(message.id)
    elif args.action == "delete":
        store.delete_voicemail(message.id)
        print(f"deleted {message.id}")
