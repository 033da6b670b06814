"""``asyncpbx user password EXT [--tenant NAME] [--role ROLE]``: set a user's portal password.

The password is read from the terminal (asked twice, not echoed) or, when stdin is no
terminal, from its first line — never from the command line, where ``ps`` and the shell's
history would show it. It is stored as an argon2id hash (:mod:`pbx.api.passwords`); the
user's sessions end. ``--role`` gives the login a portal role (default: keep it; ``user`` for
a new login).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable
from typing import Any

from pbx.store import ROLES, Store, StoreError

__all__ = ["add_parser", "read_password", "run"]


def add_parser(usub: Any, common: Callable[[argparse.ArgumentParser], None],
               tenant: Callable[[argparse.ArgumentParser], None]) -> None:
    """``user password`` under the ``user`` command's actions."""
    p = usub.add_parser("password", help="set a user's portal password (read from the "
                                         "terminal or stdin, never from the command line)")
    p.add_argument("extension", metavar="EXT")
    p.add_argument("--role", choices=ROLES, help="the portal role (default: keep; user)")
    tenant(p)
    common(p)


def read_password() -> str:
    """The new password: asked twice on a terminal, else stdin's first line."""
    if sys.stdin.isatty():
        first = getpass.getpass("new portal password: ")
        if getpass.getpass("again: ") != first:
            raise StoreError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def run(args: argparse.Namespace, store: Store, tenant: str | None) -> None:
    """Carry out ``asyncpbx user password`` (StoreError names what is wrong)."""
    # imported here: pbx.api loads pydantic and aiohttp, which every other command (and the
    # start of each one) does without
    from pbx.api.passwords import Passwords, check

    user = store.user(args.extension, tenant=tenant)
    password = read_password()
    try:
        check(password)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    store.set_portal_password(user.id, Passwords().hash(password), now=time.time(),
                              role=args.role)
    login = store.portal_login(user.id)
    print(f"portal password of user {user.extension} set"
          + (f" (role {login.role})" if login is not None else ""))
