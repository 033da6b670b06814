"""SIP-specific event notification (RFC 6665): the subscription state machines, sans-IO.

Theory of operation
-------------------
A subscription is a dialog usage (RFC 6665 §4, RFC 5057) between a *subscriber* that sends
SUBSCRIBE and a *notifier* that answers it and sends NOTIFY.  Both sides here are one table each,
``(state, input) -> (action, next_state)``, like :mod:`sipcore.transaction`; time is always
passed in (``now``), nothing here sends or sleeps.  The caller (a PBX service, a test phone)
turns the returned :class:`Step` into messages on a :class:`~sipcore.dialog.Dialog`.

Notifier (§4.2): :func:`check_subscribe` screens a SUBSCRIBE first — 489 Bad Event for a
package we do not serve (with ``Allow-Events``), 400 without ``Event``, 423 Interval Too Brief
under ``min_expires`` (with ``Min-Expires``) — and grants the duration (the requested
``Expires``, at most ``max_expires``; the package default when absent).  An accepted SUBSCRIBE
is answered 200 and followed at once by a NOTIFY with ``Subscription-State: active;expires=N``
(§4.2.1.2); a refresh (a SUBSCRIBE in the dialog) gets 200 and a NOTIFY too; ``Expires: 0``
unsubscribes: 200 and a final NOTIFY with ``Subscription-State: terminated`` (§4.2.1.4; an
initial ``Expires: 0`` is a fetch: the same, without ever being active).  Every change of the
resource is a NOTIFY.  When the granted time runs out without a refresh, the notifier sends
``terminated;reason=timeout`` (§4.2.2); a NOTIFY answered 481/408 (or timing out) ends the
subscription without more ado (§4.2.2, RFC 5057); shutting down sends
``terminated;reason=deactivated`` (the subscriber may subscribe again at once, §4.1.3).

Subscriber (§4.1): SUBSCRIBE, then any 2xx (or a NOTIFY first, §4.1.2.4) makes it active; it
refreshes before the granted time ends (at the earlier of ``expires - REFRESH_MARGIN`` seconds
and ``expires * 0.9`` after the grant, as RFC 6665 §4.1.2.2 asks), unsubscribes with
``Expires: 0``, and ends on a NOTIFY with ``terminated``, a failed (re)subscription or expiry.

An input missing from a table is defined: an input from the local user (starting,
unsubscribing, a change of the resource) in a state that does not take it raises
:class:`~sipcore.errors.LocalProtocolError`; one from the network or the clock is ignored
(a stray retransmission, a stale timer).  A network SUBSCRIBE for a subscription that is over
is answered 481 (the table says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sipcore.enums import FastEnum
from sipcore.errors import LocalProtocolError, ParseError
from sipcore.message import Request

__all__ = [
    "NOTIFIER_TABLE",
    "SUBSCRIBER_TABLE",
    "Notifier",
    "Screened",
    "Step",
    "SubAction",
    "SubInput",
    "SubState",
    "Subscriber",
    "check_subscribe",
    "parse_subscription_state",
]

#: Seconds before the end of the granted time at which a subscriber refreshes (at most).
REFRESH_MARGIN = 32.0


class SubState(FastEnum):
    """Where a subscription is (RFC 6665 §4.1.2, §4.2.1)."""

    IDLE = "idle"  # created, nothing sent or accepted yet
    PENDING = "pending"  # subscriber: SUBSCRIBE sent, neither 2xx nor NOTIFY yet
    ACTIVE = "active"
    TERMINATING = "terminating"  # subscriber: unsubscribed, waiting for the final NOTIFY
    TERMINATED = "terminated"


class SubInput(FastEnum):
    """What can happen to a subscription."""

    # notifier
    SUBSCRIBE = "subscribe"  # an accepted initial SUBSCRIBE (Expires > 0)
    FETCH = "fetch"  # an initial SUBSCRIBE with Expires: 0
    REFRESH = "refresh"  # a SUBSCRIBE in the dialog, Expires > 0
    UNSUBSCRIBE = "unsubscribe"  # notifier: a SUBSCRIBE in the dialog with Expires: 0;
    #                              subscriber: the local user ends it
    CHANGED = "changed"  # notifier: the resource's state changed
    NOTIFY_FAILED = "notify_failed"  # notifier: our NOTIFY got 481/408 or timed out
    SHUTDOWN = "shutdown"  # notifier: we stop serving it
    EXPIRED = "expired"  # both: the granted time ran out
    # subscriber
    START = "start"  # the local user subscribes
    ACCEPTED = "accepted"  # a 2xx to our SUBSCRIBE
    REJECTED = "rejected"  # a final non-2xx (or a timeout) to our SUBSCRIBE
    NOTIFY_ACTIVE = "notify_active"  # a NOTIFY with Subscription-State active/pending
    NOTIFY_TERMINATED = "notify_terminated"  # a NOTIFY with Subscription-State terminated
    REFRESH_DUE = "refresh_due"  # timer: time to refresh


class SubAction(FastEnum):
    """What a transition asks the caller to do."""

    IGNORE = "ignore"
    # notifier
    ACCEPT = "accept"  # answer 200 (Expires: granted), NOTIFY active;expires=N
    NOTIFY = "notify"  # NOTIFY active;expires=remaining with the current state
    FINAL_NOTIFY = "final_notify"  # (200 when it answers a SUBSCRIBE) NOTIFY terminated;reason
    REJECT_481 = "reject_481"  # the subscription does not exist (any more)
    END = "end"  # forget it, send nothing
    # subscriber
    SEND_SUBSCRIBE = "send_subscribe"  # SUBSCRIBE with Expires
    ARM_REFRESH = "arm_refresh"  # note the grant, schedule the refresh
    ACCEPT_NOTIFY = "accept_notify"  # answer the NOTIFY 200, take its body
    ACCEPT_FINAL_NOTIFY = "accept_final_notify"  # answer 200, take its body, the end
    SEND_UNSUBSCRIBE = "send_unsubscribe"  # SUBSCRIBE with Expires: 0


S, In, A = SubState, SubInput, SubAction
Table = Mapping[tuple[SubState, SubInput], tuple[SubAction, SubState]]

#: The notifier (RFC 6665 §4.2).
NOTIFIER_TABLE: Table = {
    (S.IDLE, In.SUBSCRIBE): (A.ACCEPT, S.ACTIVE),
    (S.IDLE, In.FETCH): (A.FINAL_NOTIFY, S.TERMINATED),
    (S.ACTIVE, In.REFRESH): (A.ACCEPT, S.ACTIVE),
    (S.ACTIVE, In.UNSUBSCRIBE): (A.FINAL_NOTIFY, S.TERMINATED),
    (S.ACTIVE, In.CHANGED): (A.NOTIFY, S.ACTIVE),
    (S.ACTIVE, In.EXPIRED): (A.FINAL_NOTIFY, S.TERMINATED),
    (S.ACTIVE, In.NOTIFY_FAILED): (A.END, S.TERMINATED),
    (S.ACTIVE, In.SHUTDOWN): (A.FINAL_NOTIFY, S.TERMINATED),
    (S.TERMINATED, In.REFRESH): (A.REJECT_481, S.TERMINATED),
    (S.TERMINATED, In.UNSUBSCRIBE): (A.REJECT_481, S.TERMINATED),
    (S.TERMINATED, In.CHANGED): (A.IGNORE, S.TERMINATED),
    (S.TERMINATED, In.SHUTDOWN): (A.IGNORE, S.TERMINATED),
}
#: Notifier inputs from the local side (a missing pair is the caller's mistake).
NOTIFIER_LOCAL = frozenset({In.CHANGED, In.SHUTDOWN})

#: The subscriber (RFC 6665 §4.1).
SUBSCRIBER_TABLE: Table = {
    (S.IDLE, In.START): (A.SEND_SUBSCRIBE, S.PENDING),
    (S.PENDING, In.ACCEPTED): (A.ARM_REFRESH, S.ACTIVE),
    (S.PENDING, In.NOTIFY_ACTIVE): (A.ACCEPT_NOTIFY, S.ACTIVE),  # §4.1.2.4: NOTIFY before 2xx
    (S.PENDING, In.NOTIFY_TERMINATED): (A.ACCEPT_FINAL_NOTIFY, S.TERMINATED),
    (S.PENDING, In.REJECTED): (A.END, S.TERMINATED),
    (S.ACTIVE, In.ACCEPTED): (A.ARM_REFRESH, S.ACTIVE),  # the 2xx to a refresh
    (S.ACTIVE, In.REJECTED): (A.END, S.TERMINATED),  # a refresh refused (481, ...)
    (S.ACTIVE, In.NOTIFY_ACTIVE): (A.ACCEPT_NOTIFY, S.ACTIVE),
    (S.ACTIVE, In.NOTIFY_TERMINATED): (A.ACCEPT_FINAL_NOTIFY, S.TERMINATED),
    (S.ACTIVE, In.REFRESH_DUE): (A.SEND_SUBSCRIBE, S.ACTIVE),
    (S.ACTIVE, In.EXPIRED): (A.END, S.TERMINATED),
    (S.ACTIVE, In.UNSUBSCRIBE): (A.SEND_UNSUBSCRIBE, S.TERMINATING),
    (S.PENDING, In.UNSUBSCRIBE): (A.SEND_UNSUBSCRIBE, S.TERMINATING),
    (S.TERMINATING, In.ACCEPTED): (A.IGNORE, S.TERMINATING),
    (S.TERMINATING, In.NOTIFY_ACTIVE): (A.ACCEPT_NOTIFY, S.TERMINATING),
    (S.TERMINATING, In.NOTIFY_TERMINATED): (A.ACCEPT_FINAL_NOTIFY, S.TERMINATED),
    (S.TERMINATING, In.REJECTED): (A.END, S.TERMINATED),
    (S.TERMINATING, In.EXPIRED): (A.END, S.TERMINATED),
}
SUBSCRIBER_LOCAL = frozenset({In.START, In.UNSUBSCRIBE})


def lookup(table: Table, local: frozenset[SubInput], state: SubState,
           event: SubInput) -> tuple[SubAction, SubState]:
    """The transition for ``(state, event)``; a missing pair raises for a local input and is
    ``(IGNORE, state)`` for one from the network or the clock."""
    entry = table.get((state, event))
    if entry is not None:
        return entry
    if event in local:
        raise LocalProtocolError(f"{event.value} is not allowed in subscription state "
                                 f"{state.value}")
    return (SubAction.IGNORE, state)


@dataclass(frozen=True, slots=True)
class Step:
    """What the caller does after an input: ``action``; for a response, ``status``; for a
    NOTIFY, its ``Subscription-State`` value; ``expires`` the granted seconds (a 200's
    ``Expires``, a SUBSCRIBE's ``Expires`` on the subscriber side)."""

    action: SubAction
    status: int | None = None
    subscription_state: str | None = None
    expires: int | None = None


@dataclass(frozen=True, slots=True)
class Screened:
    """:func:`check_subscribe`'s answer: ``status`` 200 (go on, ``expires`` granted) or the
    refusal, with the extra headers it needs."""

    status: int
    expires: int = 0
    headers: tuple[tuple[str, str], ...] = ()


def check_subscribe(request: Request, packages: Mapping[str, int], *, min_expires: int = 60,
                    max_expires: int = 3600) -> Screened:
    """Screen a SUBSCRIBE (RFC 6665 §4.2.1.1) for the event ``packages`` we serve (package →
    its default duration): 400 without a usable Event or Expires, 489 for another package,
    423 for a duration under ``min_expires`` (0 is an unsubscribe or fetch, always fine);
    otherwise 200 with the granted duration (at most ``max_expires``)."""
    event = (request.headers.get("Event") or "").strip()  # "o" (compact) is folded in
    package = event.split(";", 1)[0].strip().lower()
    if not package:
        return Screened(400)
    if package not in packages:
        return Screened(489, headers=(("Allow-Events", ", ".join(sorted(packages))),))
    raw = request.headers.get("Expires")
    if raw is None:
        requested = packages[package]
    else:
        try:
            requested = int(raw.strip())
        except ValueError:
            return Screened(400)
        if requested < 0:
            return Screened(400)
    if 0 < requested < min_expires:
        return Screened(423, headers=(("Min-Expires", str(min_expires)),))
    return Screened(200, min(requested, max_expires))


def parse_subscription_state(value: str | None) -> tuple[str, dict[str, str]]:
    """``Subscription-State`` (RFC 6665 §8.2.3): (state, params), the state lowercased; a
    missing or empty header is a :class:`ParseError` (400)."""
    if not value or not value.strip():
        raise ParseError("NOTIFY without Subscription-State", 400)
    state, *params = (part.strip() for part in value.split(";"))
    out: dict[str, str] = {}
    for param in params:
        name, _, v = param.partition("=")
        out[name.strip().lower()] = v.strip()
    return state.lower(), out


class Notifier:
    """The notifier side of one subscription.  ``expires_at`` is when the granted time ends
    (None before it is granted and after the end); ask :meth:`poll` as time passes."""

    def __init__(self) -> None:
        self.state = SubState.IDLE
        self.expires_at: float | None = None

    def _go(self, event: SubInput) -> SubAction:
        action, self.state = lookup(NOTIFIER_TABLE, NOTIFIER_LOCAL, self.state, event)
        return action

    def _remaining(self, now: float) -> int:
        return max(0, round((self.expires_at or now) - now))

    def _active(self, now: float) -> str:
        return f"active;expires={self._remaining(now)}"

    def subscribe(self, expires: int, now: float) -> Step:
        """An accepted SUBSCRIBE (screened by :func:`check_subscribe`) with ``expires``
        granted: the initial one (IDLE) or a refresh/unsubscribe in the dialog."""
        if self.state is SubState.IDLE:
            event = SubInput.SUBSCRIBE if expires > 0 else SubInput.FETCH
        else:
            event = SubInput.REFRESH if expires > 0 else SubInput.UNSUBSCRIBE
        action = self._go(event)
        if action is SubAction.ACCEPT:
            self.expires_at = now + expires
            return Step(action, 200, self._active(now), expires)
        if action is SubAction.FINAL_NOTIFY:
            self.expires_at = None
            # §4.2.1.4: an unsubscribe (or a fetch) is answered and gets a final NOTIFY
            return Step(action, 200, "terminated;reason=timeout", 0)
        if action is SubAction.REJECT_481:
            return Step(action, 481)
        return Step(action)

    def changed(self, now: float) -> Step:
        """The resource changed: a NOTIFY when active (nothing once terminated)."""
        action = self._go(SubInput.CHANGED)
        if action is SubAction.NOTIFY:
            return Step(action, subscription_state=self._active(now))
        return Step(action)

    def poll(self, now: float) -> Step:
        """Has the granted time run out?  Then the final NOTIFY (``reason=timeout``)."""
        if self.expires_at is None or now < self.expires_at:
            return Step(SubAction.IGNORE)
        action = self._go(SubInput.EXPIRED)
        self.expires_at = None
        if action is SubAction.FINAL_NOTIFY:
            return Step(action, subscription_state="terminated;reason=timeout")
        return Step(action)

    def notify_failed(self) -> Step:
        """Our NOTIFY was answered 481/408 or timed out: the subscription is gone (§4.2.2)."""
        self.expires_at = None
        return Step(self._go(SubInput.NOTIFY_FAILED))

    def shutdown(self) -> Step:
        """We stop serving the subscription: ``terminated;reason=deactivated`` when active."""
        action = self._go(SubInput.SHUTDOWN)
        self.expires_at = None
        if action is SubAction.FINAL_NOTIFY:
            return Step(action, subscription_state="terminated;reason=deactivated")
        return Step(action)


class Subscriber:
    """The subscriber side of one subscription asking for ``expires`` seconds; ``refresh_at``
    and ``expires_at`` are its timers (ask :meth:`poll`)."""

    def __init__(self, expires: int) -> None:
        self.state = SubState.IDLE
        self.requested = expires
        self.refresh_at: float | None = None
        self.expires_at: float | None = None

    def _go(self, event: SubInput) -> SubAction:
        action, self.state = lookup(SUBSCRIBER_TABLE, SUBSCRIBER_LOCAL, self.state, event)
        return action

    def _grant(self, expires: int, now: float) -> None:
        self.expires_at = now + expires
        self.refresh_at = now + max(0.0, min(expires - REFRESH_MARGIN, expires * 0.9))

    def start(self) -> Step:
        """Subscribe: send SUBSCRIBE with ``Expires: requested``."""
        return Step(self._go(SubInput.START), expires=self.requested)

    def response(self, status: int, expires: int | None, now: float) -> Step:
        """The final response to our (re)SUBSCRIBE; ``expires`` its Expires header (absent:
        what we asked for)."""
        if 200 <= status < 300:
            action = self._go(SubInput.ACCEPTED)
            if action is SubAction.ARM_REFRESH:
                self._grant(self.requested if expires is None else expires, now)
            return Step(action, status, expires=expires)
        if status < 200:
            return Step(SubAction.IGNORE)
        self.refresh_at = self.expires_at = None
        return Step(self._go(SubInput.REJECTED), status)

    def notify(self, subscription_state: str | None, now: float) -> Step:
        """A NOTIFY arrived; answer it 200 (or 400 when its Subscription-State is unusable)."""
        try:
            state, params = parse_subscription_state(subscription_state)
        except ParseError:
            return Step(SubAction.IGNORE, 400)
        if state == "terminated":
            self.refresh_at = self.expires_at = None
            return Step(self._go(SubInput.NOTIFY_TERMINATED), 200, state)
        action = self._go(SubInput.NOTIFY_ACTIVE)
        if "expires" in params and self.state is SubState.ACTIVE:
            try:
                self._grant(int(params["expires"]), now)
            except ValueError:
                pass
        return Step(action, 200, state)

    def unsubscribe(self) -> Step:
        """End it: send SUBSCRIBE with ``Expires: 0``, then wait for the final NOTIFY."""
        self.refresh_at = None
        return Step(self._go(SubInput.UNSUBSCRIBE), expires=0)

    def poll(self, now: float) -> Step:
        """Time to refresh (SUBSCRIBE with ``Expires: requested``), or the grant ran out."""
        if self.expires_at is not None and now >= self.expires_at:
            self.refresh_at = self.expires_at = None
            return Step(self._go(SubInput.EXPIRED))
        if self.refresh_at is not None and now >= self.refresh_at:
            self.refresh_at = None
            return Step(self._go(SubInput.REFRESH_DUE), expires=self.requested)
        return Step(SubAction.IGNORE)
