"""``asyncpbx settings show|set``: a user's feature settings from the command line, through the
settings service — the same validation (the feature's schema and its per-user check, e.g. a
displayed number the user must own), the same store and the same ``settings.changed`` event as a
feature code or the API. A running server sees the change within a second (the directory polls
the store).

    asyncpbx settings show 100 [FEATURE] [--tenant NAME]
    asyncpbx settings set 100 displayed_number number=+4930555100 [--tenant NAME]

``set`` takes ``key=value`` pairs, each value read as its setting's type (``true``/``false``,
``on``/``off`` for switches; numbers; comma-separated lists; text as given).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import structlog

from pbx.callcontrol import FeatureRegistry
from pbx.config import Config
from pbx.directory import Directory
from pbx.routing.calls import CallRouter, RoutingHost
from pbx.routing.router import Router
from pbx.services import EventBus, SettingsService
from pbx.services.calls import CallServices
from pbx.settings_schema import Setting, SettingError
from pbx.store import Store

__all__ = ["add_parser", "parse_value", "run"]

_TRUE = frozenset({"true", "on", "yes", "1"})
_FALSE = frozenset({"false", "off", "no", "0"})


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None],
               tenant: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``settings`` command with its ``show`` and ``set`` actions."""
    p = sub.add_parser("settings", help="show or change a user's feature settings",
                       description="show or change a user's feature settings")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="a user's settings (one feature or all)")
    show.add_argument("extension", metavar="EXT")
    show.add_argument("feature", metavar="FEATURE", nargs="?")
    change = actions.add_parser("set", help="change a user's settings of one feature")
    change.add_argument("extension", metavar="EXT")
    change.add_argument("feature", metavar="FEATURE")
    change.add_argument("pairs", metavar="KEY=VALUE", nargs="+")
    for q in (show, change):
        tenant(q)
        common(q)


def parse_value(feature: str, key: str, spec: Setting | None, text: str) -> Any:
    """``text`` as the type of setting ``key`` (SettingError naming ``feature.key``)."""
    if spec is None:
        return text  # the service names the unknown key
    kind = spec.type
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SettingError(f"{feature}.{key}: {text!r} is not true/false (on/off)")
    if kind is int or kind is float:
        try:
            return kind(text)
        except ValueError:
            raise SettingError(f"{feature}.{key}: {text!r} is not a number") from None
    if kind is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _service(config: Config, store: Store) -> tuple[SettingsService, FeatureRegistry]:
    from pbx.app import feature_registry  # the composition root (loads every feature)

    directory = Directory(store, listen=False)
    registry = feature_registry(config)
    host = SimpleNamespace(router=Router(directory), trunks=None, origins={},
                           user_exists=lambda ext: False, log=structlog.get_logger("pbx.cli"))
    services = CallServices(registry, CallRouter(cast("RoutingHost", host)))
    services.directory = directory
    service = SettingsService(store, directory, EventBus(), registry.schema,
                              check=services.check_settings)
    return service, registry


def run(args: argparse.Namespace, config: Config, store: Store, tenant: str | None) -> None:
    """Carry out ``settings show|set`` (SettingError / StoreError for bad input)."""
    user = store.user(args.extension, tenant=tenant)
    service, registry = _service(config, store)
    if args.action == "show":
        names = [args.feature] if args.feature else [
            f.name for f in registry.features if f.settings_schema]
        for name in names:
            print(f"{name}\t{json.dumps(service.get(user.id, name), sort_keys=True)}")
        return
    schema = service.schema(args.feature)
    changes: dict[str, Any] = {}
    for pair in args.pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SettingError(f"{args.feature}: {pair!r} is not KEY=VALUE")
        changes[key] = parse_value(args.feature, key, schema.get(key), text)
    after = service.update(user.id, args.feature, changes, source="cli")
    print(f"{args.feature}\t{json.dumps(after, sort_keys=True)}")
