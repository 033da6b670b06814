"""Chat between the users of a tenant over SIP MESSAGE (RFC 3428), also during a call.

A MESSAGE outside a dialog is authenticated like an INVITE (:func:`pbx.origin.find_origin`:
407 in the tenant's realm, From must be the device or its user); one from a trunk or from a
device that belongs to no user gets 403. The recipient is the Request-URI's user in the
sender's tenant (404 when there is none; a Request-URI naming another tenant's domain gets 403:
messages never cross tenants). Inside a call's dialog the sender is that leg's user and the
recipient the user at the other end of the call (403 when either is no user); the message goes
on in the other party's dialog, and to every device of theirs when that phone refuses it.

Each sender may send ``[chat] burst`` messages at once and ``rate`` a second after that
(:mod:`pbx.chat.ratelimit`): one more gets 503 with Retry-After over SIP (the API answers 429),
is neither kept nor delivered, and the episode is logged once (``chat.rate_limited``).
The content is checked (:mod:`pbx.chat.content`: 415, 413, 400), the message is kept in the
store (its conversation's history, :class:`pbx.store.chat.ChatStoreMixin`) and the sender gets
200 — 202 when no device of the recipient is registered: it is then delivered when one
registers (:meth:`ChatService.registered`, called from the registrar's binding-added path).
Delivery sends one MESSAGE per registered device of the recipient; the first 2xx marks the
message delivered. A round in which no device accepts is tried again after
:data:`RETRY_DELAYS`, then left for the user's next registration or refresh: at least once,
with the message's id in every copy so clients drop duplicates.

Store calls run in worker threads (the event loop never waits for the database); every task
is a child of the B2BUA's task scope.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from pbx.chat.content import MESSAGE_ID_HEADER, Incoming, Refusal, check, delivery
from pbx.chat.ratelimit import SenderLimit
from pbx.legs.inbound import InboundLeg
from pbx.legs.sip import SipLeg
from pbx.origin import find_origin
from pbx.store.chat import ChatMessage
from sipcore.endpoint import Event, RequestReceived, ResponseReceived
from sipcore.registrar import Binding
from sipcore.uri import SipURI

if TYPE_CHECKING:
    from pbx.b2bua import B2bua
    from pbx.callcontrol import Leg
    from pbx.directory import Directory
    from pbx.services.events import EventBus
    from pbx.store import Store, User

__all__ = ["DEFAULT_MAX_SIZE", "RETRY_DELAYS", "ChatService"]

log = structlog.get_logger("pbx.chat")

#: The largest message body we take by default (bytes; ``[chat] max_size``).
DEFAULT_MAX_SIZE = 8192
#: Seconds before a delivery round in which no device accepted is tried again.
RETRY_DELAYS = (2.0, 8.0)
#: How long one delivery attempt waits for the devices' answers (under Timer F, 32 s).
ATTEMPT_TIMEOUT = 10.0


class ChatRateLimited(Exception):
    """The sender is over their message limit; ``retry_after`` seconds until the next."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many messages: retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Parties:
    sender: User
    recipient: User


class ChatService:
    """MESSAGE in, stored, delivered to every device of the recipient (module docstring)."""

    def __init__(self, b2bua: B2bua, store: Store, directory: Directory, *,
                 max_size: int = DEFAULT_MAX_SIZE,
                 retry_delays: Sequence[float] = RETRY_DELAYS,
                 limit: SenderLimit | None = None, events: EventBus | None = None) -> None:
        self.b2bua = b2bua
        #: ``chat.message`` is published here for every message kept (SIP or API)
        self.events = events
        self.limit = limit or SenderLimit(rate=2.0, burst=30)
        self.store = store
        self.directory = directory
        self.max_size = max_size
        self.retry_delays = tuple(retry_delays)
        self.stats = {"received": 0, "refused": 0, "delivered": 0, "stored_offline": 0,
                      "rate_limited": 0}
        #: users with messages no device of theirs accepted yet (since this process started):
        #: a registration refresh of theirs delivers them too, not only a new binding
        self.waiting: set[int] = set()

    async def send(self, sender: User, recipient: User, body: bytes, *,
                   content_type: str = "text/plain") -> tuple[ChatMessage, bool]:
        """A message from ``sender`` to ``recipient`` that did not come over SIP (the API's
        POST /users/{user}/chats/{other}): kept in the store, then delivered to the
        recipient's devices as a MESSAGE from the sender would be (left for their next
        registration when none is registered). Returns the stored message and whether a
        device of the recipient was registered. ValueError: not two users of one tenant."""
        if sender.tenant_id != recipient.tenant_id:
            raise ValueError("chat is between the users of a tenant")
        now = time.time()
        if not self._within_limit(sender, time.monotonic()):
            raise ChatRateLimited(self.limit.retry_after(sender.id))
        stored = await asyncio.to_thread(
            self.store.chat_add, tenant_id=sender.tenant_id, sender_id=sender.id,
            recipient_id=recipient.id, message_id=uuid.uuid4().hex,
            content_type=content_type, body=body, now=now)
        self.stats["received"] += 1
        self._published(stored, "api")
        online = bool(self._bindings(recipient))
        log.info("chat.received", sender=sender.extension, recipient=recipient.extension,
                 tenant_id=sender.tenant_id, message_id=stored.message_id, online=online,
                 size=len(body), content_type=content_type, source="api")
        if not online:
            self.stats["stored_offline"] += 1
            self.waiting.add(recipient.id)
        else:
            self._spawn(self._deliver(stored, sender, recipient, retry=True),
                        f"chat-api-{stored.message_id}")
        return stored, online

    # -- requests ------------------------------------------------------------------------------

    def on_request(self, event: RequestReceived) -> None:
        """A MESSAGE outside any dialog."""
        b2b, request, tx = self.b2bua, event.request, event.transaction_id
        if b2b.trunks is not None and b2b.trunks.inbound(request, event.peer) is not None:
            self._refuse(event, Refusal(403, "Forbidden: chat is between users"))
            return
        origin = find_origin(b2b, event, time.time())
        if origin is None:
            return  # challenged (407) or refused (403)
        sender = origin.user
        if sender is None:
            self._refuse(event, Refusal(403, "Forbidden: not a user"))
            return
        ruri = request.uri
        host = ruri.host.strip("[]") if isinstance(ruri, SipURI) else ""
        tenant = self.directory.tenant_for_domain(host) if host else None
        if tenant is not None and tenant.id != sender.tenant_id:
            log.warning("chat.cross_tenant_refused", sender=sender.extension, host=host)
            self._refuse(event, Refusal(403, "Forbidden: not across tenants"))
            return
        ext = ruri.user if isinstance(ruri, SipURI) and ruri.user else ""
        recipient = self.directory.user_in_tenant(sender.tenant_id, ext) if ext else None
        if recipient is None:
            self._refuse(event, Refusal(404, "Not Found"))
            return
        self._accept(event, _Parties(sender, recipient), tx)

    def on_dialog_request(self, event: RequestReceived, leg: Leg) -> None:
        """A MESSAGE inside a call's dialog: from that leg's user to the other party's."""
        sender = self._user_of(leg)
        other = self._other_party(leg)
        recipient = self._user_of(other) if other is not None else None
        if sender is None or recipient is None or sender.tenant_id != recipient.tenant_id:
            self._refuse(event, Refusal(403, "Forbidden: not between users"))
            return
        self._accept(event, _Parties(sender, recipient), event.transaction_id,
                     via=other if isinstance(other, SipLeg) else None)

    def registered(self, binding: Binding, *, refresh: bool = False) -> None:
        """A device registered (a new binding, or with ``refresh`` a binding renewed): deliver
        what waits for its user (on a refresh only when something is known to wait: no store
        query per refresh)."""
        user = self._user_of_aor(binding.aor)
        if user is None or (refresh and user.id not in self.waiting):
            return
        self.waiting.discard(user.id)
        self._spawn(self._deliver_pending(user), f"chat-pending-{user.id}")

    # -- internals -----------------------------------------------------------------------------

    def _refuse(self, event: RequestReceived, refusal: Refusal) -> None:
        self.stats["refused"] += 1
        log.info("chat.refused", status=refusal.status, reason=refusal.reason,
                 call_id=event.request.call_id)
        self.b2bua.respond(event.request, refusal.status, tx=event.transaction_id,
                           extra=list(refusal.headers))

    def _accept(self, event: RequestReceived, parties: _Parties, tx: str, *,
                via: SipLeg | None = None) -> None:
        sender = parties.sender
        if not self._within_limit(sender, time.monotonic()):
            self._refuse(event, Refusal(503, "Service Unavailable: too many messages", (
                ("Retry-After", str(self.limit.retry_after(sender.id))),)))
            return
        verdict = check(event.request, self.max_size)
        if isinstance(verdict, Refusal):
            self._refuse(event, verdict)
            return
        self.stats["received"] += 1
        self._spawn(self._keep_and_deliver(event, parties, verdict, tx, via),
                    f"chat-{event.request.call_id}")

    def _published(self, message: ChatMessage, source: str) -> None:
        """``chat.message`` on the bus (both users and the tenant's admins see it; the text
        is not in the event: the conversation has it)."""
        if self.events is None:
            return
        self.events.publish("chat.message", {
            "id": message.id, "message_id": message.message_id,
            "from_user_id": message.sender_id, "to_user_id": message.recipient_id,
            "tenant_id": message.tenant_id,
            "user_ids": sorted({message.sender_id, message.recipient_id}),
            "created_at": message.created_at, "source": source})

    def _within_limit(self, sender: User, now: float) -> bool:
        if self.limit.take(sender.id, now):
            return True
        self.stats["rate_limited"] += 1
        if self.limit.newly_limited(sender.id):
            log.warning("chat.rate_limited", sender=sender.extension, tenant_id=sender.tenant_id,
                        rate=self.limit.rate, burst=self.limit.burst)
        return False

    def _spawn(self, coro: Any, name: str) -> None:
        b2b = self.b2bua
        b2b.ensure_tasks()
        b2b.tasks.spawn(coro, name)

    async def _keep_and_deliver(self, event: RequestReceived, parties: _Parties,
                                message: Incoming, tx: str, via: SipLeg | None) -> None:
        sender, recipient = parties.sender, parties.recipient
        try:
            stored = await asyncio.to_thread(
                self.store.chat_add, tenant_id=sender.tenant_id, sender_id=sender.id,
                recipient_id=recipient.id, message_id=message.message_id,
                content_type=message.content_type, body=message.body, now=time.time())
        except Exception:
            log.exception("chat.store_failed", call_id=event.request.call_id)
            self.b2bua.respond(event.request, 500, tx=tx)
            return
        self._published(stored, "sip")
        online = via is not None or bool(self._bindings(recipient))
        self.b2bua.respond(event.request, 200 if online else 202, tx=tx)
        log.info("chat.received", sender=sender.extension, recipient=recipient.extension,
                 tenant_id=sender.tenant_id, message_id=stored.message_id, online=online,
                 size=len(message.body), content_type=message.content_type)
        if not online:
            self.stats["stored_offline"] += 1
            self.waiting.add(recipient.id)
            return
        if stored.delivered_at is not None:
            return
        if via is not None and await self._send_in_dialog(stored, via):
            await self._delivered(stored, recipient, 1)
            return
        await self._deliver(stored, sender, recipient, retry=True)

    async def _send_in_dialog(self, message: ChatMessage, leg: SipLeg) -> bool:
        """During a call: the message in the other party's dialog (their phone shows it with
        the call); False when that phone refuses it (then to every device, as outside)."""
        answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_event(event: Event) -> None:
            if not answered.done():
                if isinstance(event, ResponseReceived):
                    if event.response.status >= 200:
                        answered.set_result(event.response.status)
                else:
                    answered.set_result(408)

        sent = leg.send_in_dialog("MESSAGE", body=message.body,
                                  content_type=message.content_type,
                                  extra=[(MESSAGE_ID_HEADER, message.message_id)],
                                  on_response=on_event)
        if sent is None:
            return False
        try:
            status = await asyncio.wait_for(answered, ATTEMPT_TIMEOUT)
        except TimeoutError:
            status = 408
        return 200 <= status < 300

    async def _delivered(self, message: ChatMessage, recipient: User, devices: int) -> None:
        await asyncio.to_thread(self.store.chat_delivered, message.id, time.time())
        self.stats["delivered"] += 1
        log.info("chat.delivered", message_id=message.message_id,
                 recipient=recipient.extension, devices=devices)

    async def _deliver_pending(self, user: User) -> None:
        pending = await asyncio.to_thread(self.store.chat_pending, user.id)
        for message in pending:
            sender = self.directory.user_by_id(message.sender_id)
            if sender is not None:
                await self._deliver(message, sender, user, retry=True)

    async def _deliver(self, message: ChatMessage, sender: User, recipient: User, *,
                       retry: bool) -> bool:
        """Send ``message`` to every device of ``recipient``; True once one accepted."""
        delays = (0.0, *self.retry_delays) if retry else (0.0,)
        for delay in delays:
            if delay:
                await asyncio.sleep(delay)
            bindings = self._bindings(recipient)
            if not bindings:
                self.waiting.add(recipient.id)
                return False  # offline now: the next registration delivers it
            results = await asyncio.gather(*(self._send(message, sender, recipient, b)
                                             for b in bindings))
            if any(results):
                await self._delivered(message, recipient, sum(results))
                return True
            log.info("chat.delivery_failed", message_id=message.message_id,
                     recipient=recipient.extension, devices=len(bindings))
        self.waiting.add(recipient.id)  # the next registration or refresh tries again
        return False

    async def _send(self, message: ChatMessage, sender: User, recipient: User,
                    binding: Binding) -> bool:
        b2b = self.b2bua
        peer = binding.received
        if peer is None:
            return False
        request = delivery(contact=binding.uri, route=binding.path,
                           sender_aor=b2b.aor(b2b.routing.user_key(sender)),
                           sender_name=sender.name,
                           recipient_aor=b2b.aor(b2b.routing.user_key(recipient)),
                           content_type=message.content_type, body=message.body,
                           message_id=message.message_id)
        answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_event(event: Event) -> None:
            if answered.done():
                return
            if isinstance(event, ResponseReceived):
                if event.response.status >= 200:
                    answered.set_result(event.response.status)
            else:  # timed out, transport error
                answered.set_result(408)

        b2b.send_request(request, peer, on_event)
        try:
            status = await asyncio.wait_for(answered, ATTEMPT_TIMEOUT)
        except TimeoutError:
            status = 408
        return 200 <= status < 300

    def _bindings(self, user: User) -> list[Binding]:
        b2b = self.b2bua
        return b2b.registrar.bindings(b2b.aor(b2b.routing.user_key(user)), time.time())

    def _user_of_aor(self, aor: str) -> User | None:
        rest = aor.split(":", 1)[-1]
        ext, _, domain = rest.partition("@")
        return self.directory.user(domain.split(";")[0], ext) if ext else None

    def _user_of(self, leg: Leg) -> User | None:
        """The user at ``leg``: the caller's (its origin) or a rung device's."""
        b2b, call = self.b2bua, leg.call
        if call is None:
            return None
        if leg is call.caller and isinstance(leg, InboundLeg):
            origin = b2b.origins.get(call.id)
            return origin.user if origin is not None else None
        target = leg.target
        if target is None or target.kind != "device":
            return None
        ext, _, domain = target.user.partition("@")
        return self.directory.user(domain or b2b.domain, ext)

    @staticmethod
    def _other_party(leg: Leg) -> Leg | None:
        """The leg at the other end of ``leg``'s call (its bridge partner)."""
        call = leg.call
        if call is None:
            return None
        for bridge in call.bridges:
            if leg in (bridge.a, bridge.b):
                return bridge.other(leg)
        if leg is not call.caller:
            return call.caller
        return None
