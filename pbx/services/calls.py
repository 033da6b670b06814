"""What call control offers features beyond the call (:class:`pbx.callcontrol.Services`):
a user's settings from the directory cache, changes through the settings service, and whether
a number is routable for a user."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from pbx.callcontrol import Call, FeatureRegistry, Target, UserView
from pbx.directory import Directory
from pbx.routing.calls import CallRouter
from pbx.services.settings import SettingsService
from pbx.settings_schema import SettingError, defaults, stored_over_defaults

__all__ = ["CallServices"]

log = structlog.get_logger("pbx.features")


class CallServices:
    """:class:`pbx.callcontrol.Services` over the directory, the settings service and routing.
    Without a directory (a bare B2BUA) every user has the defaults and nothing is stored."""

    def __init__(self, registry: FeatureRegistry, routing: CallRouter) -> None:
        self.registry = registry
        self.routing = routing
        self.directory: Directory | None = None
        self.settings_service: SettingsService | None = None
        #: user id -> (the directory snapshot it was read from, the settings): a new snapshot
        #: (any change, this process's or another's) makes every entry stale.
        self._cache: dict[int, tuple[object, Mapping[str, Mapping[str, Any]]]] = {}

    def settings(self, user: UserView) -> Mapping[str, Mapping[str, Any]]:
        """Every feature's settings of ``user`` (stored over defaults)."""
        directory = self.directory
        if directory is not None and user.id is not None:
            cached = self._cache.get(user.id)
            if cached is not None and cached[0] is directory.snapshot:
                return cached[1]
        out: dict[str, Mapping[str, Any]] = {}
        for feature in self.registry.features:
            schema = feature.settings_schema
            if not schema:
                continue
            if self.directory is None or user.id is None:
                out[feature.name] = defaults(schema)
            else:
                out[feature.name] = stored_over_defaults(
                    schema, self.directory.settings(user.id, feature.name))
        if directory is not None and user.id is not None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[user.id] = (directory.snapshot, out)
        return out

    def update_settings(self, user: UserView, feature: str, changes: Mapping[str, Any], *,
                        source: str) -> dict[str, Any]:
        """Through the settings service (ValueError naming the key when refused)."""
        if self.settings_service is None or user.id is None:
            raise SettingError(f"{feature}: {user.key} has no stored settings")
        try:
            return self.settings_service.update(user.id, feature, changes, source=source)
        except ValueError as exc:
            log.info("settings.refused", user=user.key, feature=feature, source=source,
                     error=str(exc))
            raise

    def check_settings(self, user_id: int, feature: str, settings: Mapping[str, Any]) -> None:
        """The settings service's per-user check (:data:`~pbx.services.settings.SettingsCheck`):
        the feature's ``check_settings`` with the user as call control sees them."""
        found = self.registry.get(feature)
        check = getattr(found, "check_settings", None)
        user = self.directory.user_by_id(user_id) if self.directory is not None else None
        if check is not None and user is not None:
            check(self.routing.view(user), settings)

    def pickup_peers(self, user: UserView) -> tuple[str, ...]:
        """The users sharing a pickup group with ``user`` (read from the store: ``*98`` is
        rare, the groups are not in the directory's snapshot)."""
        directory = self.directory
        peers = getattr(directory.store, "pickup_peers", None) if directory is not None else None
        if directory is None or peers is None or user.id is None:
            return ()
        found = (directory.user_by_id(i) for i in peers(user.id))
        return tuple(self.routing.view(u).key for u in found if u is not None)

    def routable(self, user: UserView, dialled: str) -> bool:
        """Whether ``dialled`` would be routed for ``user``."""
        return self.routing.routable(user, dialled)

    def number_targets(self, call: Call, user: UserView, number: str) -> tuple[Target, ...]:
        """Targets ringing ``user``'s own external ``number`` over their trunk."""
        return self.routing.number_targets(call, user, number)
