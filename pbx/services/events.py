"""The event bus: what changed, in order, for whoever listens (call control, the portal's live
view, webhooks later).

Every event gets the next sequence number, so a listener that reconnects can tell what it missed.
A listener that raises is logged and kept; it never stops the publisher.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = ["Event", "EventBus", "Listener"]

log = structlog.get_logger("pbx.events")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened: ``kind`` like ``"settings.changed"``, its ``data``, its place in
    the bus's order (``seq``) and the wall-clock time it was published."""

    seq: int
    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)
    at: float = 0.0


Listener = Callable[[Event], None]


class EventBus:
    """Publish events to subscribed listeners, synchronously and in order."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._listeners: list[tuple[str | None, Listener]] = []
        self.last_seq = 0

    def subscribe(self, listener: Listener, kind: str | None = None) -> Callable[[], None]:
        """Call ``listener`` for every event (of ``kind`` only, when given); returns the
        function that unsubscribes it."""
        entry = (kind, listener)
        self._listeners.append(entry)

        def unsubscribe() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)

        return unsubscribe

    def publish(self, kind: str, data: Mapping[str, Any] | None = None) -> Event:
        """Number ``kind`` + ``data`` as the next event and hand it to the listeners."""
        event = Event(next(self._seq), kind, dict(data or {}), time.time())
        self.last_seq = event.seq
        for wanted, listener in list(self._listeners):
            if wanted is not None and wanted != kind:
                continue
            try:
                listener(event)
            except Exception:
                log.exception("events.listener_failed", kind=kind, seq=event.seq)
        return event
