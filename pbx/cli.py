"""The ``asyncpbx`` command line.

``asyncpbx serve``, ``asyncpbx user add|list|remove``, ``asyncpbx bench NAME``. Every command fails
with a one-line message naming what is wrong (exit status 2 for usage/config errors) instead of a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import secrets
import sys
from collections.abc import Sequence

from pbx.config import Config, ConfigError, load_config
from pbx.store import Store, StoreError

BENCHES = ("parser", "register", "mixer", "g711", "jitter", "rtp")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default ./asyncpbx-data)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asyncpbx", description="asyncpbx — a Cloud PBX")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the PBX")
    _add_common(serve)
    serve.add_argument("--demo", action="store_true",
                       help="create demo users (printed with passwords) when there are none")
    serve.add_argument("--log-json", action="store_true", help="log JSON lines")

    user = sub.add_parser("user", help="manage users")
    usub = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = usub.add_parser("add", help="add a user with one SIP account EXT/PASSWORD")
    add.add_argument("extension", metavar="EXT")
    add.add_argument("--password", required=True)
    add.add_argument("--name", default="")
    _add_common(add)
    lst = usub.add_parser("list", help="list users")
    _add_common(lst)
    rm = usub.add_parser("remove", help="remove a user")
    rm.add_argument("extension", metavar="EXT")
    _add_common(rm)

    bench = sub.add_parser("bench", help="run a benchmark (one final JSON line)")
    bench.add_argument("name", choices=BENCHES)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    return parser


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, data_dir=args.data_dir)


def demo_users(store: Store, realm: str) -> list[tuple[str, str, str]]:
    """Create four demo users when the store has none; returns (ext, password, name)."""
    if store.user_count():
        return []
    made = []
    for ext, name in (("100", "Anna Schmidt"), ("101", "Ben Weber"), ("102", "Clara Fischer"),
                      ("103", "David Wagner")):
        password = secrets.token_urlsafe(9)
        store.add_user(ext, password, realm, name)
        made.append((ext, password, name))
    return made


def _cmd_user(args: argparse.Namespace) -> int:
    config = _config(args)
    store = Store(config.data_dir)
    try:
        if args.action == "add":
            user = store.add_user(args.extension, args.password, config.realm, args.name)
            print(f"added user {user.extension} ({user.name or 'no name'}) in realm {user.realm}")
        elif args.action == "list":
            for u in store.users():
                print(f"{u.extension}\t{u.name}")
        elif args.action == "remove":
            store.remove_user(args.extension)
            print(f"removed user {args.extension}")
    finally:
        store.close()
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"bench.{args.name}")
    return int(module.main(list(args.args)))


def _cmd_serve(args: argparse.Namespace) -> int:
    from pbx.app import serve  # imported late: pulls in asyncio, uvloop, the SIP stack

    config = _config(args)
    if args.log_json:
        config = load_config(args.config, data_dir=args.data_dir, overrides={"log": {"json": True}})
    return serve(config, demo=args.demo)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asyncpbx`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "user":
            return _cmd_user(args)
        if args.command == "bench":
            return _cmd_bench(args)
    except ConfigError as exc:
        print(f"asyncpbx: configuration error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"asyncpbx: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
