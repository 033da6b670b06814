"""Live events over WebSocket (``/api/v1/events``): what the event bus publishes, numbered, in
order, resumable, filtered by what the token may see.

:class:`EventLog` listens on the bus and keeps the last :data:`KEEP` events, so a client that
reconnects with ``?since=SEQ`` gets every event after SEQ it may see, then the live ones —
no gap and no duplicate (the replay and the subscription are taken in one step of the event
loop, and the bus publishes synchronously). When SEQ is older than what is kept, the first
message is ``{"kind": "gap", ...}`` saying which numbers are lost (resynchronise by reading the
resources). A client that does not keep up (:data:`QUEUE` events waiting) is disconnected with
close code 4008; it reconnects with ``since``.

Who sees what (:func:`visible`): an event naming a ``user_id`` goes to whoever may see that
user; one naming a ``tenant_id`` (and ``user_ids`` involved) to that tenant's admins and those
users; one naming neither is system-wide (``codes.changed``: the table is one for everybody).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pbx.api.catalogue import CATALOGUE
from pbx.services.events import Event, EventBus

if TYPE_CHECKING:
    from pbx.api.auth import Principal
    from pbx.store import User

__all__ = ["EVENT_KINDS", "KEEP", "CallEvents", "EventLog", "event_json", "visible"]

#: How many events the log keeps for clients that resume.
KEEP = 10_000
#: Events a client may have waiting before it is disconnected as too slow.
QUEUE = 1_000

#: The event catalogue: kind → what it says (from :data:`pbx.api.catalogue.CATALOGUE`, which
#: also has each kind's data model; the OpenAPI and AsyncAPI documents list it).
EVENT_KINDS = {kind: entry.summary for kind, entry in CATALOGUE.items()}


def event_json(event: Event) -> dict[str, Any]:
    """The wire form of an event."""
    return {"seq": event.seq, "kind": event.kind, "at": event.at, "data": dict(event.data)}


def visible(principal: Principal, event: Event, user_of: Callable[[int], User | None]) -> bool:
    """Whether ``principal`` may see ``event`` (see the module doc)."""
    data = event.data
    user_id = data.get("user_id")
    if isinstance(user_id, int):
        user = user_of(user_id)
        if user is None:
            return principal.tenant_id is None
        return principal.sees_user(user)
    tenant_id = data.get("tenant_id")
    if isinstance(tenant_id, int):
        if not principal.sees_tenant(tenant_id):
            return False
        from pbx.api.auth import Role

        involved = data.get("user_ids", ())
        return principal.role >= Role.TENANT_ADMIN or (
            isinstance(involved, list | tuple) and principal.user_id in involved)
    return True


class _Client:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE)
        self.overflowed = False
        #: set when the client hung up or the server shuts down
        self.closed = asyncio.Event()

    def offer(self, event: Event) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True


class EventLog:
    """The bus's recent events and the live clients (one per WebSocket)."""

    def __init__(self, bus: EventBus, keep: int = KEEP) -> None:
        self.bus = bus
        self.recent: collections.deque[Event] = collections.deque(maxlen=keep)
        self._clients: set[_Client] = set()
        self.stopping = False
        self._unsubscribe = bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        self.recent.append(event)
        for client in list(self._clients):
            client.offer(event)

    def close(self) -> None:
        """Stop listening on the bus."""
        self._unsubscribe()

    @property
    def last_seq(self) -> int:
        """The newest event's number (0: none yet)."""
        return self.bus.last_seq

    def open(self, since: int | None) -> tuple[_Client, list[Event], tuple[int, int] | None]:
        """Subscribe a client: (the client, the kept events after ``since``, the lost range
        (first, last) when ``since`` is older than what is kept)."""
        client = _Client()
        self._clients.add(client)
        if since is None:
            return client, [], None
        replay = [e for e in self.recent if e.seq > since]
        oldest = self.recent[0].seq if self.recent else self.last_seq + 1
        gap = (since + 1, oldest - 1) if since + 1 < oldest and since < self.last_seq else None
        return client, replay, gap

    def leave(self, client: _Client) -> None:
        """Unsubscribe a client."""
        self._clients.discard(client)

    def shutdown(self) -> None:
        """End every client's stream (the server is stopping: its sockets close with 1001,
        and the HTTP server does not wait for them)."""
        self.stopping = True
        for client in list(self._clients):
            client.closed.set()

    @property
    def clients(self) -> int:
        """How many clients are connected."""
        return len(self._clients)


def kinds_filter(text: str | None) -> Callable[[str], bool]:
    """``?kinds=settings.changed,call.*`` → a predicate (None/empty: every kind)."""
    if not text:
        return lambda kind: True
    wanted = [k.strip() for k in text.split(",") if k.strip()]
    exact = {k for k in wanted if not k.endswith(".*")}
    prefixes = tuple(k[:-1] for k in wanted if k.endswith(".*"))
    return lambda kind: kind in exact or kind.startswith(prefixes)


async def pump(send: Callable[[str], Any], client: _Client, replay: Iterable[Event],
               allowed: Callable[[Event], bool], closed: asyncio.Event) -> str:
    """Send the replay, then live events, until ``closed``; returns why it stopped."""
    last = 0
    for event in replay:
        if allowed(event):
            await send(json.dumps(event_json(event)))
        last = event.seq
    while not closed.is_set():
        if client.overflowed:
            return "overflow"
        get = asyncio.ensure_future(client.queue.get())
        stop = asyncio.ensure_future(closed.wait())
        try:
            done, _ = await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (get, stop):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if get not in done:
            break
        event = get.result()
        if event.seq <= last:
            continue
        last = event.seq
        if allowed(event):
            await send(json.dumps(event_json(event)))
    return "closed"


class CallEvents:
    """A call-record hook (``PbxServer.call_record_hooks``) that publishes ``call.started``,
    ``call.answered`` and ``call.ended`` on the bus, with the tenant (``tenant(record)``) and
    the users involved (``parties(record)`` → objects with ``user_id``) so each token sees its
    calls only."""

    def __init__(self, bus: EventBus, parties: Callable[[Any], Iterable[Any]],
                 tenant: Callable[[Any], int | None]) -> None:
        self.bus = bus
        self.parties = parties
        self.tenant = tenant
        #: call id → the last kind published for it
        self._state: dict[str, str] = {}

    def __call__(self, record: Any) -> None:
        kind = ("call.ended" if record.ended is not None else
                "call.answered" if record.answered is not None else "call.started")
        call_id = str(record.call_id)
        if self._state.get(call_id) == kind:
            return
        if kind == "call.ended":
            self._state.pop(call_id, None)
        else:
            self._state[call_id] = kind
        users = sorted({p.user_id for p in self.parties(record)})
        data: dict[str, Any] = {
            "call_id": call_id, "direction": record.direction, "caller": record.caller,
            "callee": record.callee, "started": record.started, "answered": record.answered,
            "ended": record.ended, "status": record.status, "cause": record.cause,
            "answered_by": record.answered_by, "missed": record.answered is None,
            # 0 (no tenant): only a system admin of every tenant sees a call of no tenant
            "tenant_id": self.tenant(record) or 0,
            "user_ids": users}
        self.bus.publish(kind, data)
