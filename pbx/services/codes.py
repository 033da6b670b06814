"""The codes service: the one way the feature-code table changes (CLI now, the REST API later).

``set("dnd.on", "*80", alternate=…)`` checks the change against the whole table in force (the
rules of :mod:`pbx.feature_codes`: form, no code twice, no code shadowing another's number),
stores it, refreshes the directory, makes it the registry's table — the next call dials the new
code — and publishes one ``codes.changed`` event. ``reset`` gives rows their seed codes back.

Another process's change (``asyncpbx codes set`` while the server runs) reaches the server's
directory through its once-a-second ``data_version`` poll; :meth:`CodesService.refresh`, called
after it, puts the stored changes in force and publishes ``codes.changed`` (source ``store``)
when the table changed. The table is system-wide: one for every tenant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import structlog

from pbx.callcontrol import FeatureRegistry
from pbx.feature_codes import CodeError, CodeRow, Key, check_code, split_key
from pbx.services.events import EventBus

__all__ = ["CodesCache", "CodesService", "CodesStore"]

_log = structlog.get_logger("pbx.codes")


class CodesStore(Protocol):
    """The store's side of feature codes (:class:`pbx.store.Store` fits)."""

    def set_feature_code(self, feature: str, action: str, code: str,
                         alternate: str = "") -> None: ...
    def reset_feature_codes(self, keys: Iterable[tuple[str, str]] | None = None) -> int: ...


class CodesCache(Protocol):
    """The directory: its snapshot's ``feature_codes``, how often it reloaded, and the poll."""

    @property
    def reloads(self) -> int: ...
    def feature_codes(self) -> Mapping[Key, tuple[str, str]]: ...
    def refresh_if_changed(self) -> bool: ...


def _codes(rows: Mapping[Key, CodeRow]) -> dict[str, dict[str, str]]:
    return {row.key: {"code": row.code, "alternate": row.alternate} for row in rows.values()}


class CodesService:
    """Check, store, refresh, put in force, publish ``codes.changed`` — in that order. Made, it
    puts the stored changes in force at once (a change that breaks a rule is logged and left
    out: its row keeps the seed's code)."""

    def __init__(self, store: CodesStore, cache: CodesCache, registry: FeatureRegistry,
                 bus: EventBus, *, log: Any = None) -> None:
        self.log = log if log is not None else _log
        self.store = store
        self.cache = cache
        self.registry = registry
        self.bus = bus
        self._seen = -1
        self.refresh(publish=False)

    def table(self) -> list[tuple[CodeRow, bool]]:
        """The table in force: each row and whether a feature implements it."""
        return self.registry.rows()

    def set(self, key: str, code: str, alternate: str | None = None, *,
            source: str = "api") -> CodeRow:
        """Give ``feature.action`` the main ``code`` (and ``alternate``: '' removes it, None
        keeps the current one); returns the row in force afterwards. CodeError names what is
        wrong; nothing is stored then."""
        fa = split_key(key)
        row = self.registry.row(fa)
        if row is None:
            raise CodeError(f"{key}: no such feature code (see asyncpbx codes list)")
        alt = row.alternate if alternate is None else alternate
        check_code(code, f"{key}: feature code")
        if alt:
            check_code(alt, f"{key}: alternate code")
        if alt == code:
            raise CodeError(f"{key}: the alternate code must differ from {code}")
        self.registry.check_changes({**self.registry.changes, fa: (code, alt)})
        self.store.set_feature_code(fa[0], fa[1], code, alt)
        self._stored(source)
        after = self.registry.row(fa)
        assert after is not None
        return after

    def reset(self, keys: Iterable[str] | None = None, *, source: str = "api") -> int:
        """Give the rows ``keys`` (``feature.action``; None: every row) their seed codes back;
        returns how many stored changes were dropped. CodeError when a seed code now belongs to
        another row (change that one first) or a key names no row."""
        pairs = None if keys is None else [split_key(k) for k in keys]
        if pairs is not None:
            for fa in pairs:
                if self.registry.row(fa) is None:
                    raise CodeError(f"{fa[0]}.{fa[1]}: no such feature code "
                                    "(see asyncpbx codes list)")
        remaining = {} if pairs is None else {
            k: v for k, v in self.registry.changes.items() if k not in pairs}
        self.registry.check_changes(remaining)
        dropped = self.store.reset_feature_codes(pairs)
        if dropped:
            self._stored(source)
        return dropped

    def _stored(self, source: str) -> None:
        # The directory reloads on the store's change notice; this covers a cache that does
        # not listen (another process's store).
        self.cache.refresh_if_changed()
        self.refresh(source=source)

    def refresh(self, *, source: str = "store", publish: bool = True) -> bool:
        """Put the directory's stored changes in force when it reloaded since the last time;
        True (and one ``codes.changed`` event) when the table in force changed."""
        reloads = self.cache.reloads
        if reloads == self._seen:
            return False
        self._seen = reloads
        before = _codes({row_key(r): r for r, _ in self.registry.rows()})
        for problem in self.registry.apply_changes(self.cache.feature_codes()):
            self.log.error("codes.change_ignored", error=problem)
        after = _codes({row_key(r): r for r, _ in self.registry.rows()})
        changed = sorted(k for k in after if before.get(k) != after[k])
        if not changed:
            return False
        if not publish:  # start-up: the stored changes were in force before, too
            self.log.debug("codes.loaded", changed=changed)
            return True
        self.log.info("codes.changed", source=source, changed=changed)
        data: dict[str, Any] = {
            "source": source, "changed": changed,
            "before": {k: before.get(k) for k in changed},
            "after": {k: after[k] for k in changed}}
        self.bus.publish("codes.changed", data)
        return True


def row_key(row: CodeRow) -> Key:
    """(feature, action) of ``row``."""
    return row.feature, row.action
