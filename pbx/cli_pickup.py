"""``asyncpbx pickup-group add|list|remove|members``: pickup groups from the command line.

A member of a group takes a call ringing another member with ``*98``::

    asyncpbx pickup-group add sales [--tenant NAME]
    asyncpbx pickup-group members sales --add 201 202 [--remove 203]
    asyncpbx pickup-group list
    asyncpbx pickup-group remove sales

The running server reads a change on its next look at the store (``*98`` reads the groups when
it is dialled).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from pbx.config import Config
from pbx.store import Store, StoreError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None],
               tenant: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``pickup-group`` command and its actions."""
    help_text = "add, list and remove pickup groups (*98) and their members"
    p = sub.add_parser("pickup-group", help=help_text, description=help_text)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="make an empty group")
    add.add_argument("name", metavar="NAME")
    listing = actions.add_parser("list", help="the groups and their members")
    remove = actions.add_parser("remove", help="delete a group")
    remove.add_argument("name", metavar="NAME")
    members = actions.add_parser("members", help="add or remove members (extensions)")
    members.add_argument("name", metavar="NAME")
    members.add_argument("--add", nargs="+", default=[], metavar="EXT")
    members.add_argument("--remove", nargs="+", default=[], metavar="EXT")
    for q in (add, listing, remove, members):
        tenant(q)
        common(q)


def run(args: argparse.Namespace, config: Config, store: Store) -> None:
    """Carry out ``asyncpbx pickup-group ACTION`` (StoreError names what is wrong)."""
    name = str(args.tenant) if getattr(args, "tenant", None) else None
    tenant = store.tenant(name) if name else store.find_tenant("default")
    if tenant is None:
        raise StoreError("there is no default tenant yet: name one with --tenant")
    if args.action == "add":
        group = store.add_pickup_group(tenant.id, args.name)
        print(f"pickup group {group.name} added (tenant {tenant.name})")
    elif args.action == "list":
        extensions = {u.id: u.extension for u in store.users(tenant.name)}
        print("group\tmembers")
        for g in store.pickup_groups(tenant.id):
            print(f"{g.name}\t" + " ".join(sorted(extensions.get(i, str(i)) for i in g.members)))
    elif args.action == "remove":
        if not store.remove_pickup_group(tenant.id, args.name):
            raise StoreError(f"no pickup group {args.name} in tenant {tenant.name}")
        print(f"pickup group {args.name} removed")
    else:
        found = store.pickup_group(tenant.id, args.name)
        if found is None:
            raise StoreError(f"no pickup group {args.name} in tenant {tenant.name}")
        add = tuple(store.user(e, tenant=tenant.name).id for e in args.add)
        remove = tuple(store.user(e, tenant=tenant.name).id for e in args.remove)
        store.set_pickup_members(found.id, add=add, remove=remove)
        now = store.pickup_group(tenant.id, args.name)
        extensions = {u.id: u.extension for u in store.users(tenant.name)}
        print(f"pickup group {args.name}: " + " ".join(
            sorted(extensions.get(i, str(i)) for i in (now.members if now else ()))))
