"""The ``asyncpbx`` command line.

``asyncpbx serve``, ``asyncpbx tenant|user|device|number|trunk add|list|remove``,
``asyncpbx codes list|set|reset`` (:mod:`pbx.cli_codes`), ``asyncpbx settings show|set``
(:mod:`pbx.cli_settings`), ``asyncpbx token create|list|revoke`` (:mod:`pbx.cli_tokens`),
``asyncpbx call-back USER TARGET`` (:mod:`pbx.cli_callback`, through the running server's API),
``asyncpbx pickup-group add|list|remove|members`` (:mod:`pbx.cli_pickup`),
``asyncpbx voicemail list|play|delete`` (:mod:`pbx.cli_voicemail`),
``asyncpbx bench NAME``. Every command fails with a one-line message naming what is wrong (exit
status 2 for usage, configuration and input errors) instead of a traceback.

Without ``--tenant`` the commands work on the default tenant (single-company mode):
``asyncpbx user add 100 --password PW`` creates user 100 with one SIP device 100/PW.
"""

from __future__ import annotations

import argparse
import importlib
import re
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pbx import (
    cli_callback,
    cli_codes,
    cli_mail,
    cli_password,
    cli_pickup,
    cli_tokens,
    cli_voicemail,
)
from pbx.cli_settings import add_parser as add_settings_parser
from pbx.cli_settings import run as run_settings
from pbx.config import Config, ConfigError, load_config
from pbx.feature_codes import CodeError
from pbx.settings_schema import SettingError
from pbx.store import (
    DEFAULT_TENANT,
    DEVICE_KINDS,
    LANGUAGES,
    TRUNK_KINDS,
    TRUNK_TRANSPORTS,
    Store,
    StoreError,
    Tenant,
)

BENCHES = ("parser", "register", "mixer", "g711", "jitter", "rtp", "calls", "callcost", "overload",
           "soak", "conference", "api", "webrtc")
PERMISSIONS = ("internal", "national", "international")

DEMO_USERS = (("100", "Anna Schmidt"), ("101", "Ben Weber"), ("102", "Clara Fischer"),
              ("103", "David Wagner"))


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``asyncpbx user add: error: …``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default ./asyncpbx-data)")


def _add_tenant(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", metavar="NAME",
                   help=f"tenant name (default: the {DEFAULT_TENANT!r} tenant)")


def _ext_length(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"([2-8])(?:-([2-8]))?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or N-M with digits 2 to 8")
    low = int(m.group(1))
    high = int(m.group(2) or low)
    if high < low:
        raise argparse.ArgumentTypeError(f"{text!r}: the maximum is below the minimum")
    return low, high


def _actions(sub: argparse._SubParsersAction[_Parser], name: str,
             help_text: str) -> argparse._SubParsersAction[_Parser]:
    p = sub.add_parser(name, help=help_text, description=help_text)
    return p.add_subparsers(dest="action", required=True, metavar="ACTION")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="asyncpbx", description="asyncpbx — a Cloud PBX")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the PBX")
    _add_common(serve)
    serve.add_argument("--demo", action="store_true",
                       help="create four demo users with a softphone device each (credentials "
                            "are printed) when there are no users")
    serve.add_argument("--log-json", action="store_true", help="log JSON lines")

    # tenant
    tsub = _actions(sub, "tenant", "manage tenants (companies with their own SIP domain)")
    p = tsub.add_parser("add", help="add a tenant")
    p.add_argument("name", metavar="NAME", help="short name used with --tenant (a-z 0-9 _ -)")
    p.add_argument("--domain", required=True, help="the tenant's SIP domain")
    p.add_argument("--company", default="", help="company name")
    p.add_argument("--realm", default="", help="digest realm (default: the domain)")
    p.add_argument("--extension-length", type=_ext_length, default=(3, 3), metavar="N[-M]",
                   help="digits of extensions (default 3)")
    p.add_argument("--main-number", help="the company's main number")
    p.add_argument("--country-code", default="49", help="country calling code (default 49)")
    p.add_argument("--area-code", default="", help="area code for local numbers, e.g. 30")
    p.add_argument("--language", default="de", choices=LANGUAGES,
                   help="default language of its users and what non-users hear (default de)")
    _add_common(p)
    p = tsub.add_parser("list", help="list tenants")
    _add_common(p)
    p = tsub.add_parser("remove", help="remove a tenant with all its users, numbers and trunks")
    p.add_argument("name", metavar="NAME")
    _add_common(p)

    # user
    usub = _actions(sub, "user", "manage users")
    p = usub.add_parser("add", help="add a user (with --password: one SIP device EXT/PASSWORD)")
    p.add_argument("extension", metavar="EXT")
    p.add_argument("--password", help="password of a SIP device with username EXT")
    p.add_argument("--name", default="")
    p.add_argument("--email", default="")
    p.add_argument("--language", default=None, choices=LANGUAGES,
                   help="prompts and portal language (default: the tenant's)")
    p.add_argument("--pin", metavar="DIGITS", help="voicemail PIN (4-8 digits; stored hashed)")
    p.add_argument("--mobile", metavar="NUMBER", help="mobile number")
    p.add_argument("--remote-office", metavar="NUMBER", help="remote office number")
    p.add_argument("--permission", default="national", choices=PERMISSIONS,
                   help="outgoing calls allowed (default national)")
    p.add_argument("--premium", action="store_true", help="allow premium-rate numbers")
    p.add_argument("--device-kind", default="softphone", choices=DEVICE_KINDS,
                   help="kind of the device made with --password")
    _add_tenant(p)
    _add_common(p)
    p = usub.add_parser("list", help="list users")
    _add_tenant(p)
    _add_common(p)
    p = usub.add_parser("remove", help="remove a user with their devices and numbers")
    p.add_argument("extension", metavar="EXT")
    _add_tenant(p)
    _add_common(p)
    cli_password.add_parser(usub, _add_common, _add_tenant)

    # device
    dsub = _actions(sub, "device", "manage devices (SIP accounts of users)")
    p = dsub.add_parser("add", help="add a SIP device to a user")
    p.add_argument("extension", metavar="EXT", help="the user's extension")
    p.add_argument("--username", required=True, help="SIP username (unique in the realm)")
    p.add_argument("--password", help="SIP password (generated and printed when omitted)")
    p.add_argument("--kind", default="softphone", choices=DEVICE_KINDS)
    _add_tenant(p)
    _add_common(p)
    p = dsub.add_parser("list", help="list devices")
    _add_tenant(p)
    _add_common(p)
    p = dsub.add_parser("remove", help="remove a device")
    p.add_argument("username", metavar="USERNAME")
    _add_tenant(p)
    _add_common(p)

    # number
    nsub = _actions(sub, "number", "manage numbers (DIDs)")
    p = nsub.add_parser("add", help="assign a DID to a user, a group or the company")
    p.add_argument("number", metavar="NUMBER", help="e.g. +4930123456 or 030 123456")
    owner = p.add_mutually_exclusive_group(required=True)
    owner.add_argument("--user", metavar="EXT")
    owner.add_argument("--group", metavar="NAME")
    owner.add_argument("--company", action="store_true")
    owner.add_argument("--voice-portal", action="store_true",
                       help="a company number whose callers from the trunk reach the voice "
                            "portal (mailbox number and PIN)")
    _add_tenant(p)
    _add_common(p)
    p = nsub.add_parser("list", help="list numbers")
    _add_tenant(p)
    _add_common(p)
    p = nsub.add_parser("remove", help="release a number")
    p.add_argument("number", metavar="NUMBER")
    _add_tenant(p)
    _add_common(p)

    # trunk
    ksub = _actions(sub, "trunk", "manage SIP trunks (carriers)")
    p = ksub.add_parser("add", help="add a trunk")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--kind", required=True, choices=TRUNK_KINDS,
                   help="register: we register with the carrier; ip: known by address")
    p.add_argument("--host", required=True,
                   help="the carrier's IP address or DNS name (a name is resolved by the "
                        "server, A/AAAA, and followed when it changes)")
    p.add_argument("--port", type=int, default=5060)
    p.add_argument("--transport", default="udp", choices=TRUNK_TRANSPORTS)
    p.add_argument("--username", default="")
    p.add_argument("--password", default="")
    p.add_argument("--realm", default="", help="the carrier's digest realm (we answer only it)")
    p.add_argument("--allow", action="append", default=[], metavar="ADDR",
                   help="[transport:]address[/prefix][:port] calls may come from (repeatable; "
                        "default: the host's address(es))")
    p.add_argument("--trusted", action="store_true",
                   help="send/accept P-Asserted-Identity")
    p.add_argument("--register-expiry", type=int, default=600, metavar="SECONDS")
    _add_tenant(p)
    _add_common(p)
    p = ksub.add_parser("list", help="list trunks")
    _add_tenant(p)
    _add_common(p)
    p = ksub.add_parser("remove", help="remove a trunk")
    p.add_argument("name", metavar="NAME")
    _add_tenant(p)
    _add_common(p)

    bsub = _actions(sub, "bans", "list or lift the running server's per-source bans")
    p = bsub.add_parser("list", help="the sources banned now")
    _add_common(p)
    p = bsub.add_parser("lift", help="end a source's ban")
    p.add_argument("address", metavar="ADDRESS")
    _add_common(p)
    cli_codes.add_parser(sub, _add_common)
    add_settings_parser(sub, _add_common, _add_tenant)
    cli_tokens.add_parser(sub, _add_common)
    cli_callback.add_parser(sub, _add_common, _add_tenant)
    cli_mail.add_parser(sub, _add_common)
    cli_pickup.add_parser(sub, _add_common, _add_tenant)
    cli_voicemail.add_parser(sub, _add_common)

    bench = sub.add_parser("bench", help="run a benchmark (one final JSON line)")
    bench.add_argument("name", choices=BENCHES)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    return parser


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, data_dir=args.data_dir)


def _open(config: Config) -> Store:
    return Store(config.data_dir, domain=config.domain)


def demo_users(store: Store, realm: str, domain: str | None = None) -> list[tuple[str, str, str]]:
    """Create the demo tenant (the default tenant, ``domain``) with four users and one softphone
    device each when the store has no users; returns (extension, password, name). Each user
    logs in to the portal with the same password; the first is the tenant's administrator."""
    if store.user_count():
        return []
    from pbx.api.passwords import Passwords  # argon2: only for the demo, not for every command

    store.ensure_default_tenant(domain or realm, realm)
    hasher = Passwords()
    made = []
    for i, (ext, name) in enumerate(DEMO_USERS):
        password = secrets.token_urlsafe(9)
        user = store.add_user(ext, password, realm, name, device_kind="softphone")
        store.set_portal_password(user.id, hasher.hash(password), now=time.time(),
                                  role="tenant_admin" if i == 0 else "user")
        made.append((ext, password, name))
    return made


def _tenant_name(args: argparse.Namespace) -> str | None:
    return str(args.tenant) if getattr(args, "tenant", None) else None


def _realm_for(config: Config, tenant: str | None) -> str | None:
    # The default tenant's devices use the configured realm (the server's digest realm); other
    # tenants' devices use the tenant's own realm.
    return config.realm if tenant is None or tenant == DEFAULT_TENANT else None


def _cmd_tenant(args: argparse.Namespace, config: Config, store: Store) -> None:
    if args.action == "add":
        low, high = args.extension_length
        t = store.add_tenant(args.name, args.domain, company=args.company, realm=args.realm,
                             ext_min_len=low, ext_max_len=high, main_number=args.main_number,
                             country_code=args.country_code, area_code=args.area_code,
                             language=args.language)
        print(f"added tenant {t.name}: domain {t.domain}, realm {t.realm}, "
              f"extensions {_span(t)} digits")
    elif args.action == "list":
        for t in store.tenants():
            print("\t".join((t.name, t.domain, t.company, f"ext {_span(t)}",
                             f"+{t.country_code} {t.area_code}".rstrip(), t.main_number or "",
                             t.language)))
    elif args.action == "remove":
        store.remove_tenant(args.name)
        print(f"removed tenant {args.name}")


def _span(t: Tenant) -> str:
    return str(t.ext_min_len) if t.ext_min_len == t.ext_max_len else f"{t.ext_min_len}-{t.ext_max_len}"


def _cmd_user(args: argparse.Namespace, config: Config, store: Store) -> None:
    tenant = _tenant_name(args)
    if args.action == "add":
        user = store.add_user(
            args.extension, args.password, _realm_for(config, tenant), args.name, tenant=tenant,
            email=args.email, language=args.language, voicemail_pin=args.pin,
            mobile_number=args.mobile, remote_office_number=args.remote_office,
            permission=args.permission, premium_allowed=args.premium,
            device_kind=args.device_kind)
        where = store.tenant(tenant or DEFAULT_TENANT)
        print(f"added user {user.extension} ({user.name or 'no name'}) in tenant {where.name}"
              + (f", SIP device {user.extension} in realm "
                 f"{_realm_for(config, tenant) or where.realm}" if args.password else
                 "; add a SIP device with `asyncpbx device add`"))
    elif args.action == "list":
        if tenant is None and store.find_tenant(DEFAULT_TENANT) is None:
            return
        devices: dict[int, int] = {}
        for d in store.devices(tenant or DEFAULT_TENANT):
            devices[d.user_id] = devices.get(d.user_id, 0) + 1
        for u in store.users(tenant or DEFAULT_TENANT):
            perm = u.permission.value + ("+premium" if u.premium_allowed else "")
            print("\t".join((u.extension, u.name, perm, f"{devices.get(u.id, 0)} device(s)",
                             u.email)).rstrip())
    elif args.action == "remove":
        store.remove_user(args.extension, tenant=tenant)
        print(f"removed user {args.extension}")
    elif args.action == "password":
        cli_password.run(args, store, tenant)


def _cmd_device(args: argparse.Namespace, config: Config, store: Store) -> None:
    tenant = _tenant_name(args)
    if args.action == "add":
        password = args.password or secrets.token_urlsafe(9)
        d = store.add_device(args.extension, args.username, password, tenant=tenant,
                             kind=args.kind)
        print(f"added {d.kind} device {d.username} for user {args.extension} in realm {d.realm}"
              + ("" if args.password else f"; password {password} (shown only once)"))
    elif args.action == "list":
        if tenant is None and store.find_tenant(DEFAULT_TENANT) is None:
            return
        name = tenant or DEFAULT_TENANT
        ext = {u.id: u.extension for u in store.users(name)}
        for d in store.devices(name):
            print("\t".join((d.username, ext.get(d.user_id, "?"), d.kind, d.realm)))
    elif args.action == "remove":
        store.remove_device(args.username, tenant=tenant)
        print(f"removed device {args.username}")


def _cmd_number(args: argparse.Namespace, config: Config, store: Store) -> None:
    tenant = _tenant_name(args)
    if args.action == "add":
        n = store.add_number(args.number, tenant=tenant, user=args.user, group=args.group)
        if args.voice_portal:
            store.set_voice_portal(n.e164)
        owner = (f"user {args.user}" if args.user else f"group {args.group}" if args.group
                 else "the voice portal" if args.voice_portal else "the company")
        print(f"added number {n.e164} for {owner}")
    elif args.action == "list":
        if tenant is None and store.find_tenant(DEFAULT_TENANT) is None:
            return
        name = tenant or DEFAULT_TENANT
        ext = {u.id: u.extension for u in store.users(name)}
        portal = store.voice_portal_numbers()
        for n in store.numbers(name):
            owner = (ext.get(n.user_id, "?") if n.user_id is not None else n.group_name or
                     ("voice-portal" if n.e164 in portal else ""))
            print("\t".join((n.e164, n.owner_kind, owner)).rstrip())
    elif args.action == "remove":
        store.remove_number(args.number, tenant=tenant)
        print(f"removed number {args.number}")


def _cmd_trunk(args: argparse.Namespace, config: Config, store: Store) -> None:
    tenant = _tenant_name(args)
    if args.action == "add":
        tr = store.add_trunk(args.name, tenant=tenant, kind=args.kind, host=args.host,
                             port=args.port, transport=args.transport, username=args.username,
                             password=args.password, realm=args.realm,
                             allowed_sources=args.allow, trusted=args.trusted,
                             register_expiry=args.register_expiry)
        print(f"added {tr.kind} trunk {tr.name} to {tr.transport}:{tr.host}:{tr.port}")
    elif args.action == "list":
        if tenant is None and store.find_tenant(DEFAULT_TENANT) is None:
            return
        for tr in store.trunks(tenant or DEFAULT_TENANT):
            print("\t".join((tr.name, tr.kind, f"{tr.transport}:{tr.host}:{tr.port}",
                             "trusted" if tr.trusted else "untrusted",
                             ",".join(tr.allowed_sources))).rstrip())
    elif args.action == "remove":
        store.remove_trunk(args.name, tenant=tenant)
        print(f"removed trunk {args.name}")


def _cmd_settings(args: argparse.Namespace, config: Config, store: Store) -> None:
    run_settings(args, config, store, _tenant_name(args))


def _cmd_call_back(args: argparse.Namespace, config: Config, store: Store) -> None:
    cli_callback.run(args, config, store, _tenant_name(args))


_MANAGE = {"tenant": _cmd_tenant, "user": _cmd_user, "device": _cmd_device,
           "number": _cmd_number, "trunk": _cmd_trunk, "codes": cli_codes.run,
           "settings": _cmd_settings, "token": cli_tokens.run, "call-back": _cmd_call_back,
           "mail": cli_mail.run, "pickup-group": cli_pickup.run, "voicemail": cli_voicemail.run}


def _cmd_manage(args: argparse.Namespace) -> int:
    config = _config(args)
    store = _open(config)
    try:
        if args.command == "mail":
            return cli_mail.run(args, config, store)
        _MANAGE[args.command](args, config, store)
    finally:
        store.close()
    return 0


def _cmd_bans(args: argparse.Namespace) -> int:
    """``bans list`` / ``bans lift ADDRESS``: through files in the data directory, which the
    running server reads and writes once a second (pbx/banfile.py)."""
    import time

    from pbx.banfile import LIFT_FILE, read_bans, request_lift

    data_dir = Path(_config(args).data_dir)
    if not data_dir.is_dir():
        print(f"asyncpbx: no data directory {data_dir}", file=sys.stderr)
        return 2
    now = time.time()
    if args.action == "list":
        bans = [b for b in read_bans(data_dir) if b.until > now]
        if not bans:
            print("no bans")
        for b in bans:
            until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b.until))
            print(f"{b.source}  {b.reason} ({b.count})  until {until} "
                  f"({round(b.until - now)} s left)")
        return 0
    address = args.address.strip()
    was = any(b.source == address and b.until > now for b in read_bans(data_dir))
    request_lift(data_dir, address)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (data_dir / LIFT_FILE).exists():
        time.sleep(0.1)
    if (data_dir / LIFT_FILE).exists():
        print(f"asked to lift {address}; the server has not taken the request yet "
              "(is it running on this data directory?)")
        return 1
    print(f"lifted the ban of {address}" if was else f"{address} was not banned")
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
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, message already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command in _MANAGE:
            return _cmd_manage(args)
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "bans":
            return _cmd_bans(args)
    except ConfigError as exc:
        print(f"asyncpbx: configuration error: {exc}", file=sys.stderr)
        return 2
    except (StoreError, CodeError, SettingError) as exc:
        print(f"asyncpbx: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
