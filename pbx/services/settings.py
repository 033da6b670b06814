"""The settings service: the one way any user's feature setting changes.

``update(user_id, feature, changes, source=…)`` validates ``changes`` with the feature's schema
(:mod:`pbx.settings_schema`), stores the result, refreshes the directory cache the calls read
from, and publishes one ``settings.changed`` event with the old and new values. Feature codes use
it now; the CLI, the REST API and the portal use the same call (the API as
``update_off_loop``: the same steps with the disk write in a worker thread).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog

from pbx.services.events import EventBus
from pbx.settings_schema import SettingError, SettingsSchema, stored_over_defaults

__all__ = ["SettingsCheck", "SettingsService", "SettingsStore", "UnknownFeature"]

log = structlog.get_logger("pbx.settings")


class UnknownFeature(SettingError):
    """No feature of that name has settings."""


#: ``check(user_id, feature, settings)``: raise :class:`SettingError` to refuse ``settings`` (the
#: full settings after the change, not yet checked against the schema: the store does that).
SettingsCheck = Callable[[int, str, Mapping[str, Any]], None]


class SettingsStore(Protocol):
    """The store's side of settings (:class:`pbx.store.Store` fits)."""

    def set_feature_settings(self, user_id: int, feature: str, schema: SettingsSchema,
                             value: Mapping[str, Any]) -> dict[str, Any]: ...


class SettingsCache(Protocol):
    """The read side the calls use (:class:`pbx.directory.Directory` fits)."""

    def settings(self, user_id: int, feature: str,
                 schema: SettingsSchema | None = None) -> dict[str, Any]: ...

    def refresh_if_changed(self) -> bool: ...


class SettingsService:
    """Validate, store, refresh the cache, emit ``settings.changed`` — in that order.

    ``schemas(feature)`` gives a feature's schema (None: the feature has no settings);
    ``check(user_id, feature, settings)`` (optional) refuses a change that depends on the user —
    a number they do not own — with a :class:`SettingError`, before anything is stored.
    """

    def __init__(self, store: SettingsStore, cache: SettingsCache, bus: EventBus,
                 schemas: Callable[[str], SettingsSchema | None], *,
                 check: SettingsCheck | None = None) -> None:
        self.store = store
        self.cache = cache
        self.bus = bus
        self.schemas = schemas
        self.check = check
        #: per (user, feature), dropped when nobody holds them (see :meth:`lock`)
        self._locks: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = \
            weakref.WeakValueDictionary()

    def schema(self, feature: str) -> SettingsSchema:
        """``feature``'s schema (:class:`UnknownFeature` when it has none)."""
        schema = self.schemas(feature)
        if schema is None:
            raise UnknownFeature(f"{feature}: no such feature with settings")
        return schema

    def get(self, user_id: int, feature: str) -> dict[str, Any]:
        """A user's settings of ``feature`` (stored over defaults), from the cache."""
        return stored_over_defaults(self.schema(feature), self.cache.settings(user_id, feature))

    def update(self, user_id: int, feature: str, changes: Mapping[str, Any], *,
               source: str = "api") -> dict[str, Any]:
        """Apply ``changes``; returns the user's full settings of ``feature`` afterwards.

        Raises a ValueError naming ``feature.key`` (the store validates with the schema before
        it writes: nothing is stored then; ``check`` refuses what depends on the user), or for
        an unknown user. ``source`` says who changed it (``feature_code``,
        ``api``, ``cli``, ``portal``) for the event and the log.
        """
        schema = self.schema(feature)
        before = self.get(user_id, feature)
        if self.check is not None:  # the settings as they would be (the store checks types)
            self.check(user_id, feature, {**before, **changes})
        after = self.store.set_feature_settings(user_id, feature, schema, changes)
        return self._stored(user_id, feature, before, after, source)

    async def update_off_loop(self, user_id: int, feature: str, changes: Mapping[str, Any], *,
                              source: str = "api") -> dict[str, Any]:
        """:meth:`update` with the store's write in a worker thread: its commit waits for the
        disk (``synchronous=FULL``), and the event loop that carries the calls must not wait
        with it — the REST API's PATCH blocked SIP for ~1.5 ms per write (``bench api``).
        Schema, check, cache and event are the same and stay on the loop; the directory puts
        the stored entry in from the thread (it swaps whole snapshots). Callers that check an
        ETag first hold :meth:`lock` across the check and this call."""
        schema = self.schema(feature)
        before = self.get(user_id, feature)
        if self.check is not None:
            self.check(user_id, feature, {**before, **changes})
        after = await asyncio.to_thread(self.store.set_feature_settings, user_id, feature,
                                        schema, dict(changes))
        return self._stored(user_id, feature, before, after, source)

    def lock(self, user_id: int, feature: str) -> asyncio.Lock:
        """The lock of one user's settings of one feature: a read-check-write (If-Match) that
        awaits :meth:`update_off_loop` holds it, so two such writes never interleave."""
        key = (user_id, feature)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _stored(self, user_id: int, feature: str, before: Mapping[str, Any],
                after: dict[str, Any], source: str) -> dict[str, Any]:
        # The directory reloads on the store's change notice; this covers a cache that does not
        # listen (another process's store): the very next call must see the new value.
        self.cache.refresh_if_changed()
        changed = {k: after[k] for k in after if before.get(k) != after[k]}
        log.info("settings.changed", user_id=user_id, feature=feature, source=source,
                 changed=sorted(changed))
        self.bus.publish("settings.changed", {
            "user_id": user_id, "feature": feature, "source": source,
            "before": before, "after": after, "changed": changed})
        return after
