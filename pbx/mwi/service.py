"""The MWI service: ``message-summary`` subscriptions of a user's phones, and their NOTIFYs.

* A SUBSCRIBE outside a dialog with ``Event: message-summary`` must come from an authenticated
  device (407 digest challenge in its tenant's realm, like an INVITE; failures count in the ban
  table) and ask for its own user's box (Request-URI user: the device's username or its user's
  extension, else 403). :func:`sipcore.subscription.check_subscribe` screens it (489 Bad Event
  for any other package, 423 under ``MIN_EXPIRES``); the answer is 200 with the granted Expires
  and at once the first NOTIFY with the box's counts.  A SUBSCRIBE in the dialog refreshes it;
  ``Expires: 0`` ends it (200, final NOTIFY ``terminated``); an unknown dialog gets 481.
* Every ``voicemail.changed`` event (the voicemail box's) NOTIFYs each subscription of that user.
  Devices of the user that did not subscribe get an *unsolicited* NOTIFY (outside any dialog) when
  the user's ``mwi.unsolicited`` setting is on (default off: a phone that never asked may answer
  481, and a user turns it on for phones that are configured to expect it).
* ``*99`` (features/mwi.py) sets ``mwi.cleared``: the lamp goes off (``Messages-Waiting: no``)
  until the box changes next; that change clears the flag again.
* Expiry: :meth:`tick` (once a second from :meth:`run`) sends ``terminated;reason=timeout`` to
  subscriptions that were not refreshed; a NOTIFY answered 481/408 or unanswered drops its
  subscription.  Subscriptions live in memory: after a restart phones re-subscribe (their refresh
  gets 481 and they start over, RFC 6665 §4.1.2.2).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pbx.logsetup import get_logger
from pbx.origin import verify_with_bans
from sipcore.dialog import Dialog, DialogId
from sipcore.digest import Credentials, DigestServer
from sipcore.endpoint import RequestReceived
from sipcore.errors import ParseError, RemoteProtocolError
from sipcore.message import Request, Response, make_response, new_call_id, new_tag
from sipcore.message_summary import CONTENT_TYPE, EVENT, Counts, build
from sipcore.registrar import Registrar
from sipcore.subscription import Notifier, Step, SubAction, check_subscribe
from sipcore.transaction import ResponseReceived, TransactionTimedOut, TransportErrored
from sipcore.transport import Peer
from sipcore.uri import SipURI

__all__ = ["MWI_FEATURE", "Counts4", "MwiService"]

#: The feature whose settings steer MWI (features/mwi.py): ``unsolicited``, ``cleared``.
MWI_FEATURE = "mwi"
#: (new, old, new_urgent, old_urgent) of a user's box, by user id.
Counts4 = tuple[int, int, int, int]
#: Subscription durations (seconds): the package default, the least and most we grant.
DEFAULT_EXPIRES = 3600
MIN_EXPIRES = 60
MAX_EXPIRES = 86400
#: At most this many subscriptions per user (a phone that loops on SUBSCRIBE cannot grow us).
MAX_PER_USER = 32

AuthFor = Callable[[Request], tuple[DigestServer, Callable[[str], Credentials | None]]]


def _no_counts(user_id: int) -> Counts4:
    return (0, 0, 0, 0)


@dataclass(eq=False, slots=True)
class _Subscription:
    """One accepted subscription: whose box, its dialog, its notifier, where the phone is."""

    user_id: int
    account: str
    dialog: Dialog
    notifier: Notifier
    peer: Peer


class MwiService:
    """Serves ``message-summary`` for the PBX (see the module docstring).

    ``sip`` is the running endpoint, ``auth_for(request)`` the 407 digest server and credentials
    lookup of the request's tenant, ``directory`` the in-memory view (devices, users, tenants),
    ``settings`` the settings service (reads ``mwi``, clears ``mwi.cleared``), ``counts`` the box
    counts by user id (default: the store's ``voicemail_counts``), ``contact_for(peer)`` our
    Contact towards a peer.
    """

    def __init__(self, sip: Any, *, auth_for: AuthFor, directory: Any, registrar: Registrar,
                 settings: Any, domain: str, contact_for: Callable[[Peer], str],
                 counts: Callable[[int], Counts4] | None = None, bans: Any = None,
                 log: Any = None, seclog: Any = None) -> None:
        self.sip = sip
        self.auth_for = auth_for
        self.directory = directory
        self.registrar = registrar
        self.settings = settings
        self.domain = domain
        self.contact_for = contact_for
        self.counts = counts or _no_counts
        self.bans = bans
        self.log = log or get_logger("pbx.mwi")
        self.seclog = seclog or get_logger("security")
        self.subscriptions: dict[DialogId, _Subscription] = {}
        self.stats = {"subscribes": 0, "notifies": 0, "unsolicited": 0, "rejected": 0}
        #: The counts each user's phones were last told (see :meth:`recheck`).
        self._told: dict[int, Counts4] = {}

    # -- the event bus ---------------------------------------------------------------------------

    def attach(self, bus: Any) -> None:
        """Listen to the box changes and to ``*99`` (settings of ``mwi``)."""
        bus.subscribe(self.on_voicemail_changed, "voicemail.changed")
        bus.subscribe(self.on_settings_changed, "settings.changed")

    def on_voicemail_changed(self, event: Any) -> None:
        """A box changed: clear a ``*99`` (which notifies by itself) or notify now."""
        data: Mapping[str, Any] = event.data
        user_id = int(data["user_id"])
        counts = (int(data.get("new", 0)), int(data.get("old", 0)),
                  int(data.get("new_urgent", 0)), int(data.get("old_urgent", 0)))
        if self._setting(user_id, "cleared"):
            try:
                self.settings.update(user_id, MWI_FEATURE, {"cleared": False}, source="mwi")
                return  # on_settings_changed notifies
            except ValueError as exc:
                self.log.warning("mwi.uncleared_failed", user_id=user_id, error=str(exc))
        self.notify_user(user_id, counts)

    def on_settings_changed(self, event: Any) -> None:
        """``mwi.cleared`` changed (``*99``, or the next box change): notify the new state."""
        data: Mapping[str, Any] = event.data
        if data.get("feature") == MWI_FEATURE and "cleared" in data.get("changed", {}):
            self.notify_user(int(data["user_id"]))

    def _setting(self, user_id: int, name: str) -> Any:
        try:
            return self.settings.get(user_id, MWI_FEATURE).get(name)
        except ValueError:
            return None

    # -- bodies ----------------------------------------------------------------------------------

    def summary(self, user_id: int, counts: Counts4 | None = None) -> bytes:
        """The message-summary body of ``user_id``'s box as the lamp should show it now."""
        counts = counts if counts is not None else self.counts(user_id)
        self._told[user_id] = counts
        new, old, new_urgent, old_urgent = counts
        account = self._account(user_id)
        if self._setting(user_id, "cleared"):
            # *99: the lamp is off; what was new counts as old for the phone's display
            return build(False, Counts(0, new + old, 0, new_urgent + old_urgent),
                         account=account)
        return build(new > 0, Counts(new, old, new_urgent, old_urgent), account=account)

    def _account(self, user_id: int) -> str | None:
        user = self.directory.user_by_id(user_id)
        if user is None:
            return None
        return f"sip:{user.extension}@{self._domain_of(user)}"

    def _domain_of(self, user: Any) -> str:
        tenant = self.directory.tenant(user.tenant_id)
        default = self.directory.default_tenant
        if tenant is None or (default is not None and tenant.id == default.id):
            return self.domain
        return str(tenant.domain)

    # -- SUBSCRIBE -------------------------------------------------------------------------------

    def on_request(self, event: RequestReceived) -> None:
        """A SUBSCRIBE (in or out of a dialog) from the endpoint."""
        request = event.request
        try:
            if request.to_tag is None:
                self._new_subscription(event)
            else:
                self._in_dialog(event)
        except (ParseError, RemoteProtocolError) as exc:
            self._reply(request, event.transaction_id, exc.status_hint)

    def _reply(self, request: Request, tx: str, status: int,
               headers: tuple[tuple[str, str], ...] = (), to_tag: str | None = None) -> Response:
        response = make_response(request, status, to_tag=to_tag)
        for name, value in headers:
            response.headers.add(name, value)
        if status >= 300:
            self.stats["rejected"] += 1
        self.sip.send_response(response, transaction_id=tx)
        return response

    def _new_subscription(self, event: RequestReceived) -> None:
        request, peer, tx = event.request, event.peer, event.transaction_id
        now = time.time()
        screened = check_subscribe(request, {EVENT: DEFAULT_EXPIRES}, min_expires=MIN_EXPIRES,
                                   max_expires=MAX_EXPIRES)
        if screened.status == 489:  # before the challenge: the package is not ours anyway
            self._reply(request, tx, 489, screened.headers)
            return
        digest, lookup = self.auth_for(request)
        result = (verify_with_bans(digest, self.bans, request, peer.host, lookup, now)
                  if self.bans is not None else digest.verify(request, peer.host, lookup, now))
        if not result.ok:
            if result.failed and result.reason is not None and result.is_guess:
                self.seclog.warning("security.auth.failed", src=peer.host,
                                    user=result.username, reason=result.reason.value,
                                    method="SUBSCRIBE", call_id=request.call_id)
            self.sip.send_response(digest.challenge(request, peer.host, now, stale=result.stale),
                                   transaction_id=tx)
            return
        username = result.username or ""
        user = self.directory.user_of_device(digest.realm, username)
        ruri = request.uri
        box = ruri.user if isinstance(ruri, SipURI) else None
        if user is None or box not in (username, user.extension):
            self._reply(request, tx, 403)
            return
        if screened.status != 200:
            self._reply(request, tx, screened.status, screened.headers)
            return
        if sum(1 for s in self.subscriptions.values() if s.user_id == user.id) >= MAX_PER_USER:
            self._reply(request, tx, 503, (("Retry-After", "60"),))
            return
        notifier = Notifier()
        step = notifier.subscribe(screened.expires, now)
        contact = self.contact_for(peer)
        response = self._reply(request, tx, 200, (("Expires", str(step.expires or 0)),
                                                  ("Contact", contact)), to_tag=new_tag())
        dialog = Dialog.from_uas(request, response, local_contact=contact)
        sub = _Subscription(user.id, self._account(user.id) or "", dialog, notifier, peer)
        self.stats["subscribes"] += 1
        self.log.info("mwi.subscribed", user=user.extension, device=username,
                      expires=step.expires, call_id=request.call_id)
        if step.action is SubAction.ACCEPT:
            self.subscriptions[dialog.id] = sub
        self._notify(sub, step)

    def _in_dialog(self, event: RequestReceived) -> None:
        request, tx = event.request, event.transaction_id
        key = (request.call_id, request.to_tag or "", request.from_tag or "")
        sub = self.subscriptions.get(key)
        if sub is None:
            self._reply(request, tx, 481)
            return
        screened = check_subscribe(request, {EVENT: DEFAULT_EXPIRES}, min_expires=MIN_EXPIRES,
                                   max_expires=MAX_EXPIRES)
        if screened.status != 200:
            self._reply(request, tx, screened.status, screened.headers)
            return
        sub.dialog.receive_request(request)
        sub.peer = event.peer
        step = sub.notifier.subscribe(screened.expires, time.time())
        if step.action is SubAction.REJECT_481:
            self.subscriptions.pop(key, None)
            self._reply(request, tx, 481)
            return
        self._reply(request, tx, 200, (("Expires", str(step.expires or 0)),
                                       ("Contact", sub.dialog.local_contact or "")))
        if step.action is not SubAction.ACCEPT:
            self.subscriptions.pop(key, None)
            self.log.info("mwi.unsubscribed", user_id=sub.user_id, call_id=request.call_id)
        self._notify(sub, step)

    # -- NOTIFY ----------------------------------------------------------------------------------

    def _notify(self, sub: _Subscription, step: Step) -> None:
        """Send the NOTIFY a notifier step asks for (nothing for other steps)."""
        if step.subscription_state is None or step.action not in (
                SubAction.ACCEPT, SubAction.NOTIFY, SubAction.FINAL_NOTIFY):
            return
        request = sub.dialog.create_request(
            "NOTIFY", body=self.summary(sub.user_id), content_type=CONTENT_TYPE,
            extra=[("Event", EVENT), ("Subscription-State", step.subscription_state)])
        self.stats["notifies"] += 1
        key = sub.dialog.id

        def on_result(event: Any) -> None:
            failed = isinstance(event, TransactionTimedOut | TransportErrored) or (
                isinstance(event, ResponseReceived) and event.response.status in (481, 408))
            if failed and self.subscriptions.get(key) is sub:
                sub.notifier.notify_failed()
                del self.subscriptions[key]
                self.log.info("mwi.subscription_gone", user_id=sub.user_id,
                              call_id=sub.dialog.call_id)

        self.sip.send_request(request, sub.peer, owner=on_result)

    def recheck(self) -> int:
        """Another process changed the store (``asyncpbx voicemail delete`` while the server
        runs publishes nothing on our bus): NOTIFY each user whose box no longer has the counts
        their phones were last told. Returns how many users were notified."""
        users = {s.user_id for s in self.subscriptions.values()} | set(self._told)
        notified = 0
        for user_id in sorted(users):
            counts = self.counts(user_id)
            if self._told.get(user_id) != counts:
                self.notify_user(user_id, counts)
                notified += 1
        return notified

    def notify_user(self, user_id: int, counts: Counts4 | None = None) -> int:
        """NOTIFY every subscription of ``user_id`` and, with ``mwi.unsolicited`` on, every
        other registered device of the user; returns how many NOTIFYs went out."""
        if counts is None:
            counts = self.counts(user_id)
        now = time.time()
        sent = 0
        subscribed: set[tuple[str, int]] = set()
        for sub in [s for s in self.subscriptions.values() if s.user_id == user_id]:
            subscribed.add((sub.peer.host, sub.peer.port))
            self._notify(sub, sub.notifier.changed(now))
            sent += 1
        if self._setting(user_id, "unsolicited"):
            sent += self._unsolicited(user_id, counts, subscribed, now)
        return sent

    def _unsolicited(self, user_id: int, counts: Counts4, subscribed: set[tuple[str, int]],
                     now: float) -> int:
        user = self.directory.user_by_id(user_id)
        if user is None:
            return 0
        aor = f"sip:{user.extension}@{self._domain_of(user)}"
        body = self.summary(user_id, counts)
        sent = 0
        for binding in self.registrar.bindings(aor, now):
            peer = binding.received
            if peer is None or (peer.host, peer.port) in subscribed:
                continue
            request = Request("NOTIFY", binding.uri)
            h = request.headers
            h.add("Max-Forwards", "70")
            h.add("From", f"<{aor}>;tag={new_tag()}")
            h.add("To", f"<{aor}>")
            h.add("Call-ID", new_call_id())
            h.add("CSeq", "1 NOTIFY")
            h.add("Contact", self.contact_for(peer))
            h.add("Event", EVENT)
            h.add("Subscription-State", "active")
            h.add("Content-Type", CONTENT_TYPE)
            request.body = body
            self.sip.send_request(request, peer, owner=None)
            self.stats["unsolicited"] += 1
            sent += 1
        return sent

    # -- time ------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """End the subscriptions whose granted time ran out (final NOTIFY, reason timeout)."""
        for key, sub in list(self.subscriptions.items()):
            step = sub.notifier.poll(now)
            if step.action is not SubAction.IGNORE:
                del self.subscriptions[key]
                self.log.info("mwi.subscription_expired", user_id=sub.user_id,
                              call_id=sub.dialog.call_id)
                self._notify(sub, step)

    def shutdown(self) -> None:
        """The server stops: ``terminated;reason=deactivated`` to every subscriber."""
        for sub in list(self.subscriptions.values()):
            self._notify(sub, sub.notifier.shutdown())
        self.subscriptions.clear()

    async def run(self, interval: float = 1.0) -> None:
        """Call :meth:`tick` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.tick(time.time())
            except Exception:
                self.log.exception("mwi.tick_failed")
