"""``asyncpbx codes list|set|reset``: the feature-code table from the command line.

``list`` prints the table in force (code, alternate, the digits-only form mobiles dial,
``feature.action``, what follows the code, description, and notes: ``changed`` for an
administrator's code, ``not implemented`` for a row no feature handles yet). ``set`` and
``reset`` go through :class:`pbx.services.codes.CodesService`, like every change: checked
against the whole table, stored, and in force in a running server within a second (it polls
the store) — no restart. Quote codes in the shell: ``asyncpbx codes set dnd.on '*80'``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import structlog

from pbx.config import Config
from pbx.store import Store

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: Any) -> None:
    """The ``codes`` command and its actions (``common`` adds --config/--data-dir)."""
    help_text = "list the feature-code table in force, change or reset a code"
    p = sub.add_parser("codes", help=help_text, description=help_text)
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = csub.add_parser("list", help="print the feature-code table in force")
    common(p)
    p = csub.add_parser("set", help="give a feature action a new code (quote it: '*80')")
    p.add_argument("key", metavar="FEATURE.ACTION", help="the row, e.g. dnd.on")
    p.add_argument("code", metavar="CODE", help="* or # followed by digits, * and #")
    p.add_argument("--alternate", metavar="CODE",
                   help="a second code for the same action ('' removes it; default: keep)")
    common(p)
    p = csub.add_parser("reset", help="give rows their default codes back")
    p.add_argument("keys", nargs="*", metavar="FEATURE.ACTION")
    p.add_argument("--all", action="store_true", help="every row")
    common(p)


def run(args: argparse.Namespace, config: Config, store: Store) -> None:
    """Carry out ``asyncpbx codes ACTION`` (CodeError / StoreError name what is wrong)."""
    from pbx.app import feature_registry  # the composition root: it knows the features
    from pbx.directory import Directory
    from pbx.feature_codes import CodeError
    from pbx.services import EventBus
    from pbx.services.codes import CodesService

    registry = feature_registry(config)
    digits = registry.digits_only
    # the command prints its result; only problems are logged (to stderr)
    quiet = structlog.wrap_logger(structlog.PrintLogger(sys.stderr),
                                  wrapper_class=structlog.make_filtering_bound_logger(
                                      logging.WARNING))
    service = CodesService(store, Directory(store), registry, EventBus(), log=quiet)
    if args.action == "list":
        changed = registry.changes
        print("\t".join(("code", "alternate", "mobile", "feature.action", "argument",
                         "description", "notes")))
        for row, implemented in service.table():
            notes = [n for n, on in (("changed", (row.feature, row.action) in changed),
                                     ("not implemented", not implemented)) if on]
            print("\t".join((row.code, row.alternate, digits.encode(row.code), row.key,
                             row.argument, row.description, ", ".join(notes))).rstrip())
    elif args.action == "set":
        row = service.set(args.key, args.code, args.alternate, source="cli")
        print(f"{row.key}: {row.code}" + (f" (alternate {row.alternate})" if row.alternate
                                          else "") + f", dialled {digits.encode(row.code)} "
              "from a mobile")
    elif args.action == "reset":
        if not args.keys and not args.all:
            raise CodeError("name the rows to reset (FEATURE.ACTION …) or give --all")
        dropped = service.reset(None if args.all else args.keys, source="cli")
        print(f"reset {dropped} changed code(s) to the defaults")
