"""``asyncpbx token create|list|revoke``: API tokens from the command line.

``create`` prints the token once (the store keeps only its SHA-256) and how to use it::

    asyncpbx token create --role tenant_admin [--tenant NAME] [--user EXT] [--days N] [--name TEXT]

A ``user`` token acts for one user (``--user EXT``: their own data only); a ``tenant_admin``
token for a tenant (default: the default tenant); a ``system_admin`` token without ``--tenant``
for every tenant.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from pbx.config import Config
from pbx.store import ROLES, Store, StoreError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``token`` command and its actions."""
    help_text = "create, list and revoke API tokens"
    p = sub.add_parser("token", help=help_text, description=help_text)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a token (printed once)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--tenant", metavar="NAME",
                        help="the tenant (default: the default tenant; a system_admin token "
                             "without it is for every tenant)")
    create.add_argument("--user", metavar="EXT", help="the user a user token acts for")
    create.add_argument("--days", type=float, metavar="N",
                        help="expire after N days (default: never)")
    create.add_argument("--name", default="", help="what the token is for")
    common(create)
    listing = actions.add_parser("list", help="list tokens (never the tokens themselves)")
    common(listing)
    revoke = actions.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int, metavar="ID")
    common(revoke)


def run(args: argparse.Namespace, config: Config, store: Store) -> None:
    """Carry out ``asyncpbx token ACTION`` (StoreError names what is wrong)."""
    now = time.time()
    if args.action == "create":
        tenant = None
        if args.tenant or args.role != "system_admin":
            tenant = store.tenant(args.tenant) if args.tenant else \
                store.find_tenant("default")
            if tenant is None:
                raise StoreError("there is no default tenant yet: name one with --tenant")
        user_id = None
        if args.user is not None:
            if tenant is None:
                raise StoreError("--user needs the user's tenant (--tenant)")
            user_id = store.user(args.user, tenant=tenant.name).id
        elif args.role == "user":
            raise StoreError("a user token needs --user EXT")
        expires = now + args.days * 86400 if args.days is not None else None
        token, record = store.create_api_token(
            role=args.role, tenant_id=tenant.id if tenant else None, user_id=user_id,
            name=args.name, expires_at=expires, now=now)
        scope = f"tenant {tenant.name}" if tenant else "every tenant"
        who = f", user {args.user}" if args.user else ""
        print(token)
        print(f"token {record.id}: {record.role}, {scope}{who}"
              + (f", expires in {args.days:g} days" if args.days is not None else "")
              + " — shown only now; use it as: Authorization: Bearer <token>")
    elif args.action == "list":
        names = {t.id: t.name for t in store.tenants()}
        print("\t".join(("id", "role", "tenant", "user_id", "name", "expires", "last_used",
                         "state")))
        for t in store.api_tokens():
            state = "revoked" if t.revoked else "expired" if t.expired(now) else "active"
            print("\t".join((str(t.id), t.role,
                             names.get(t.tenant_id, "*") if t.tenant_id else "*",
                             str(t.user_id or ""), t.name, _when(t.expires_at),
                             _when(t.last_used_at), state)))
    elif args.action == "revoke":
        if not store.revoke_api_token(args.id):
            raise StoreError(f"no token {args.id}")
        print(f"revoked token {args.id}")


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(at)) if at is not None else "-"
