"""The INVITE usage of one dialog, sans-IO: offer/answer, session timers, the 2xx/ACK rules, BYE.

Theory of operation
-------------------
An :class:`InviteSession` is our side of one INVITE-created dialog (RFC 3261 §13–§15, RFC 5057
calls it the *invite usage*), as UAC (we sent the dialog-creating INVITE) or UAS (we received
it).  The TU keeps building and sending its messages; it tells the session about every INVITE,
UPDATE, ACK, BYE and their responses of the dialog (``send_request``/``receive_request``/
``send_response``/``receive_response``) and reads back what the rules make it do: the
:func:`events` (an ACK or BYE to send, a 2xx to retransmit, a CANCEL, a session refresh or a
retry that is due) and, for requests it received, an :class:`Incoming` (is the body an offer or
an answer, which headers its 2xx needs) or a :class:`RequestRefused` carrying the status to
answer.  Nothing here reads a clock: every entry point takes ``now``; :meth:`timers` /
:meth:`next_deadline` / :meth:`handle_timer` are the aioquic pattern, like the transactions'.

Life cycle (one table, :data:`SESSION_TABLE`, ``(state, input) -> (action, next)``):

* UAC (§13.2): ``CALLING`` until a final response.  The first 2xx is ACKed (a new request, no
  transaction, §13.2.2.4) and the session is ``CONFIRMED``; every retransmission of that 2xx
  gets the same ACK again.  A 2xx from another fork (another dialog) is ACKed and BYEd.  Hanging
  up before the final response is a CANCEL (§9.1, §15: ``CANCELLING``); a 2xx that crosses it
  is ACKed and BYEd.
* UAS (§13.3): ``PROCEEDING`` until we answer.  After our 2xx the session is ``ACCEPTED``: the
  2xx is retransmitted at T1, doubling up to T2 (not over reliable transports, as the endpoint
  does), until the ACK comes; after 64*T1 without it the dialog is confirmed but the session
  ends with a BYE (§13.3.1.4).  §15: the callee must not send BYE before the ACK, so hanging up
  in ``ACCEPTED`` waits (``ACCEPTED_HANGUP``) for the ACK or the give-up, then sends the BYE;
  hanging up in ``PROCEEDING`` is a final error response the TU sends (action ``REJECT``).  The
  same retransmission runs for the 2xx of every re-INVITE in ``CONFIRMED``.  When the endpoint
  retransmits the 2xx itself (``Endpoint`` with ``retransmit_2xx``), set
  :attr:`SessionConfig.retransmit_2xx` false and feed its ``AckTimedOut`` to
  :meth:`InviteSession.ack_timed_out`.
* BYE, sent or received, 481/408 or no answer to an in-dialog request (§12.2.1.2, §14.1, RFC 4028
  §10), a 2xx never ACKed and an expired session end the session (``TERMINATED``, with one
  :class:`SessionEnded`).

Offer/answer (RFC 3264, RFC 3311, RFC 6337), a second table :data:`OFFER_TABLE` over
``NO_OFFER``, ``OFFER_SENT``, ``OFFER_RECEIVED`` and ``ANSWERED``: a body in an INVITE or UPDATE
is an offer; a body in a 2xx (or a reliable 1xx) answers a pending offer of ours, or is the
offer of a 2xx to an offerless INVITE, answered in the ACK.  SDP in an unreliable 1xx is a
preview of the 2xx's (no transition); a 2xx without SDP after such a preview is accepted as the
answer (common gateways do it).  An offer arriving while ours is pending is glare: **491** (RFC
3261 §14.2, RFC 3311 §5.2); an offer arriving while theirs is still unanswered: **500** with
Retry-After 0–10 s (RFC 3311 §5.2), as is a re-INVITE while their previous INVITE is unanswered
(§14.2); a re-INVITE while our INVITE is pending: 491.  A non-2xx to the request that carried the
pending offer rolls it back (``ANSWERED``).  On a 491 to our re-INVITE/UPDATE we retry after
2.1–4 s when we own the Call-ID (we were the UAC), else 0–2 s (§14.1): :class:`RetryToSend`.

Session timers (RFC 4028): :meth:`InviteSession.request_headers` puts Session-Expires (and
Min-SE after a 422) in our INVITE/UPDATE.  A request that asks for less than our Min-SE gets
**422** with our Min-SE (§8.1); otherwise :class:`Incoming` carries the 2xx's Session-Expires
with the interval (the request's, capped by ours, at least either Min-SE) and the refresher
(the requested one; else ``SessionConfig.refresher`` when the UAC supports ``timer``, else the
UAS, §9) and ``Require: timer`` when the UAC supports it.  The 2xx that is sent or received is
what counts (§7.2, §9): with a Session-Expires the timer runs from then, without one it stops.  The
refresher refreshes at half the interval (:class:`RefreshToSend`, §10); both sides send BYE when
no refresh succeeded by ``interval - min(32, interval/3)`` (§10).  A 422 to our request raises
our Session-Expires/Min-SE to the peer's Min-SE and asks the TU to send it again.

A missing pair means what the transactions' does: an input from the TU raises
:class:`~sipcore.errors.LocalProtocolError` (state unchanged), one from the network or a timer
is ignored (state unchanged).  :func:`session_lookup` and :func:`offer_lookup` spell it out and
the tests walk every pair.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sipcore.dialog import Dialog, DialogState
from sipcore.enums import FastEnum
from sipcore.errors import LocalProtocolError, RemoteProtocolError
from sipcore.message import Request, Response
from sipcore.transaction import TimerConfig

__all__ = [
    "OFFER_TABLE",
    "SESSION_TABLE",
    "AckToSend",
    "ByeToSend",
    "CancelToSend",
    "Incoming",
    "InviteSession",
    "OfferAction",
    "OfferInput",
    "OfferState",
    "RefreshToSend",
    "RequestRefused",
    "ResponseToRetransmit",
    "RetryToSend",
    "Role",
    "SdpRole",
    "SessionAction",
    "SessionConfig",
    "SessionEnded",
    "SessionEstablished",
    "SessionEvent",
    "SessionExpires",
    "SessionInput",
    "SessionState",
    "negotiate",
    "offer_lookup",
    "option_tags",
    "parse_min_se",
    "parse_session_expires",
    "session_lookup",
]


# --------------------------------------------------------------------------- states and inputs
class Role(FastEnum):
    """Our role in the INVITE that created the dialog."""

    UAC = "uac"
    UAS = "uas"


class SessionState(FastEnum):
    """The life cycle of the INVITE usage (see the module docstring)."""

    CALLING = "calling"  # UAC: INVITE sent, no final response
    CANCELLING = "cancelling"  # UAC: hung up before the final response, CANCEL sent
    PROCEEDING = "proceeding"  # UAS: INVITE received, no final response sent
    ACCEPTED = "accepted"  # UAS: 2xx sent, waiting for its ACK
    ACCEPTED_HANGUP = "accepted_hangup"  # UAS: as ACCEPTED, and the BYE waits for the ACK (§15)
    CONFIRMED = "confirmed"  # ACK sent (UAC) or received (UAS): the session is up
    TERMINATED = "terminated"


class SessionInput(FastEnum):
    """What can happen to the usage.  Timers double as timer identifiers."""

    SEND_2XX = "send_2xx"  # TU: our 2xx to an INVITE (the dialog-creating one or a re-INVITE)
    SEND_FAILURE = "send_failure"  # TU: our non-2xx final to the dialog-creating INVITE
    HANGUP = "hangup"  # TU: end the session
    RECV_1XX = "recv_1xx"  # a provisional response to the dialog-creating INVITE
    RECV_2XX = "recv_2xx"  # a 2xx to an INVITE of ours, in our dialog (or the first one)
    RECV_STRAY_2XX = "recv_stray_2xx"  # a 2xx to our INVITE in another dialog (a fork)
    RECV_FAILURE = "recv_failure"  # a non-2xx final (or no answer) to the dialog-creating INVITE
    RECV_422 = "recv_422"  # Session Interval Too Small to our INVITE/UPDATE (RFC 4028 §6)
    RECV_491 = "recv_491"  # Request Pending to our re-INVITE/UPDATE (§14.1)
    RECV_ACK = "recv_ack"  # the ACK for the 2xx we are retransmitting
    RECV_BYE = "recv_bye"
    RECV_CANCEL = "recv_cancel"  # UAS: the endpoint answered a CANCEL (200, then 487)
    ACK_TIMED_OUT = "ack_timed_out"  # the endpoint gave up retransmitting our 2xx
    REQUEST_FAILED = "request_failed"  # 481/408/no answer to an in-dialog request of ours
    TIMER_2XX = "timer_2xx"  # retransmit our 2xx (T1 doubling to T2)
    TIMER_ACK = "timer_ack"  # 64*T1 without ACK
    TIMER_REFRESH = "timer_refresh"  # we are the refresher: half the interval is over
    TIMER_EXPIRE = "timer_expire"  # no refresh by interval - min(32, interval/3)
    TIMER_GLARE = "timer_glare"  # the back-off after a 491 is over


class SessionAction(FastEnum):
    """What a transition does; each has one handler method on :class:`InviteSession`."""

    IGNORE = "ignore"
    ESTABLISH = "establish"  # UAC: first 2xx: ACK it, bind the dialog, start the timer
    ACK = "ack"  # UAC: ACK a 2xx (again, for a retransmission)
    ACK_AND_BYE = "ack_and_bye"  # UAC: a 2xx we do not want (fork, after CANCEL): ACK, BYE
    FAIL = "fail"  # UAC: the INVITE failed
    RETRY_INTERVAL = "retry_interval"  # 422: raise our interval, ask for the request again
    BACK_OFF = "back_off"  # 491: arm the glare timer
    RETRY_GLARE = "retry_glare"  # the glare timer fired: ask for the request again
    CANCEL = "cancel"  # UAC: hang up before the final response
    ACCEPT = "accept"  # UAS: our 2xx went out: retransmit it until the ACK
    RETRANSMIT_2XX = "retransmit_2xx"
    CONFIRM = "confirm"  # UAS: the ACK came
    CONFIRM_AND_BYE = "confirm_and_bye"  # UAS: the ACK came after we hung up: now the BYE
    ACK_TIMEOUT = "ack_timeout"  # UAS: no ACK in 64*T1: BYE (§13.3.1.4)
    DEFER_BYE = "defer_bye"  # UAS: hung up before the ACK: BYE once it comes (§15)
    REJECT = "reject"  # UAS: hung up before answering: the TU sends a final error response
    REJECTED = "rejected"  # UAS: our final error response went out
    CANCELLED = "cancelled"  # UAS: the caller cancelled
    BYE = "bye"  # send BYE (hang-up)
    REMOTE_BYE = "remote_bye"  # the peer sent BYE
    DIALOG_FAILED = "dialog_failed"  # an in-dialog request got 481/408/nothing: BYE
    REFRESH = "refresh"  # ask for a session refresh
    EXPIRE = "expire"  # the session expired: BYE


St, In, A = SessionState, SessionInput, SessionAction
SessionTable = dict[tuple[SessionState, SessionInput], tuple[SessionAction, SessionState]]

#: The life cycle of the usage, both roles (a role's inputs never occur in the other's states).
SESSION_TABLE: SessionTable = {
    # UAC, before the final response
    (St.CALLING, In.RECV_1XX): (A.IGNORE, St.CALLING),
    (St.CALLING, In.RECV_2XX): (A.ESTABLISH, St.CONFIRMED),
    (St.CALLING, In.RECV_FAILURE): (A.FAIL, St.TERMINATED),
    (St.CALLING, In.RECV_422): (A.RETRY_INTERVAL, St.CALLING),
    (St.CALLING, In.HANGUP): (A.CANCEL, St.CANCELLING),
    (St.CALLING, In.RECV_BYE): (A.REMOTE_BYE, St.TERMINATED),  # a BYE on an early dialog
    (St.CANCELLING, In.RECV_1XX): (A.IGNORE, St.CANCELLING),
    (St.CANCELLING, In.RECV_2XX): (A.ACK_AND_BYE, St.TERMINATED),  # the 2xx crossed our CANCEL
    (St.CANCELLING, In.RECV_FAILURE): (A.FAIL, St.TERMINATED),
    (St.CANCELLING, In.RECV_422): (A.FAIL, St.TERMINATED),  # nothing to retry after a hang-up
    (St.CANCELLING, In.HANGUP): (A.IGNORE, St.CANCELLING),
    (St.CANCELLING, In.RECV_BYE): (A.REMOTE_BYE, St.TERMINATED),
    # UAS, before the ACK
    (St.PROCEEDING, In.SEND_2XX): (A.ACCEPT, St.ACCEPTED),
    (St.PROCEEDING, In.SEND_FAILURE): (A.REJECTED, St.TERMINATED),
    (St.PROCEEDING, In.HANGUP): (A.REJECT, St.PROCEEDING),
    (St.PROCEEDING, In.RECV_CANCEL): (A.CANCELLED, St.TERMINATED),
    (St.PROCEEDING, In.RECV_BYE): (A.REMOTE_BYE, St.TERMINATED),  # §15.1.2: 487 the INVITE
    (St.ACCEPTED, In.RECV_ACK): (A.CONFIRM, St.CONFIRMED),
    (St.ACCEPTED, In.TIMER_2XX): (A.RETRANSMIT_2XX, St.ACCEPTED),
    (St.ACCEPTED, In.TIMER_ACK): (A.ACK_TIMEOUT, St.TERMINATED),
    (St.ACCEPTED, In.ACK_TIMED_OUT): (A.ACK_TIMEOUT, St.TERMINATED),
    (St.ACCEPTED, In.HANGUP): (A.DEFER_BYE, St.ACCEPTED_HANGUP),
    (St.ACCEPTED, In.RECV_BYE): (A.REMOTE_BYE, St.TERMINATED),
    (St.ACCEPTED, In.TIMER_EXPIRE): (A.EXPIRE, St.TERMINATED),
    (St.ACCEPTED_HANGUP, In.RECV_ACK): (A.CONFIRM_AND_BYE, St.TERMINATED),
    (St.ACCEPTED_HANGUP, In.TIMER_2XX): (A.RETRANSMIT_2XX, St.ACCEPTED_HANGUP),
    (St.ACCEPTED_HANGUP, In.TIMER_ACK): (A.ACK_TIMEOUT, St.TERMINATED),
    (St.ACCEPTED_HANGUP, In.ACK_TIMED_OUT): (A.ACK_TIMEOUT, St.TERMINATED),
    (St.ACCEPTED_HANGUP, In.HANGUP): (A.IGNORE, St.ACCEPTED_HANGUP),
    (St.ACCEPTED_HANGUP, In.RECV_BYE): (A.REMOTE_BYE, St.TERMINATED),
    (St.ACCEPTED_HANGUP, In.TIMER_EXPIRE): (A.EXPIRE, St.TERMINATED),
    # the session is up (both roles)
    (St.CONFIRMED, In.RECV_2XX): (A.ACK, St.CONFIRMED),  # retransmission, or a re-INVITE's 2xx
    (St.CONFIRMED, In.RECV_STRAY_2XX): (A.ACK_AND_BYE, St.CONFIRMED),
    (St.CONFIRMED, In.RECV_422): (A.RETRY_INTERVAL, St.CONFIRMED),
    (St.CONFIRMED, In.RECV_491): (A.BACK_OFF, St.CONFIRMED),
    (St.CONFIRMED, In.TIMER_GLARE): (A.RETRY_GLARE, St.CONFIRMED),
    (St.CONFIRMED, In.SEND_2XX): (A.ACCEPT, St.CONFIRMED),  # a re-INVITE's 2xx
    (St.CONFIRMED, In.RECV_ACK): (A.CONFIRM, St.CONFIRMED),
    (St.CONFIRMED, In.TIMER_2XX): (A.RETRANSMIT_2XX, St.CONFIRMED),
    (St.CONFIRMED, In.TIMER_ACK): (A.ACK_TIMEOUT, St.TERMINATED),
    (St.CONFIRMED, In.ACK_TIMED_OUT): (A.ACK_TIMEOUT, St.TERMINATED),
    (St.CONFIRMED, In.HANGUP): (A.BYE, St.TERMINATED),
    (St.CONFIRMED, In.RECV_BYE): (A.REMOTE_BYE, St.TERMINATED),
    (St.CONFIRMED, In.REQUEST_FAILED): (A.DIALOG_FAILED, St.TERMINATED),
    (St.CONFIRMED, In.TIMER_REFRESH): (A.REFRESH, St.CONFIRMED),
    (St.CONFIRMED, In.TIMER_EXPIRE): (A.EXPIRE, St.TERMINATED),
    # after the end: late 2xx are still ACKed (and BYEd once), hanging up again is harmless
    (St.TERMINATED, In.RECV_2XX): (A.ACK_AND_BYE, St.TERMINATED),
    (St.TERMINATED, In.RECV_STRAY_2XX): (A.ACK_AND_BYE, St.TERMINATED),
    (St.TERMINATED, In.HANGUP): (A.IGNORE, St.TERMINATED),
    # UAS: the 487 to the INVITE after the caller's BYE on the early dialog (§15.1.2)
    (St.TERMINATED, In.SEND_FAILURE): (A.IGNORE, St.TERMINATED),
}

#: Inputs from the TU: a missing pair with one of these is the caller's mistake.
SESSION_TU_INPUTS = frozenset({In.SEND_2XX, In.SEND_FAILURE, In.HANGUP})

SESSION_TIMERS = (In.TIMER_2XX, In.TIMER_ACK, In.TIMER_REFRESH, In.TIMER_EXPIRE, In.TIMER_GLARE)


def session_lookup(state: SessionState, event: SessionInput) -> tuple[SessionAction, SessionState]:
    """The life-cycle transition for ``(state, event)``, with the defined meaning of a missing
    pair: LocalProtocolError for a TU input, ``(IGNORE, state)`` otherwise."""
    entry = SESSION_TABLE.get((state, event))
    if entry is not None:
        return entry
    if event in SESSION_TU_INPUTS:
        raise LocalProtocolError(f"{event.value} is not allowed in state {state.value}")
    return (SessionAction.IGNORE, state)


# ------------------------------------------------------------------------------ offer/answer
class OfferState(FastEnum):
    """Where the offer/answer exchange of the session is (RFC 3264 §4, RFC 6337 §2)."""

    NO_OFFER = "no_offer"  # nothing exchanged yet
    OFFER_SENT = "offer_sent"  # our offer waits for its answer
    OFFER_RECEIVED = "offer_received"  # their offer waits for our answer
    ANSWERED = "answered"  # the last offer was answered: a new one may be made


class OfferInput(FastEnum):
    """An SDP body going out or coming in, or the failure of the message that carried it."""

    SEND_OFFER = "send_offer"
    SEND_ANSWER = "send_answer"
    RECV_OFFER = "recv_offer"
    RECV_ANSWER = "recv_answer"
    OFFER_REJECTED = "offer_rejected"  # a non-2xx to the request that carried the pending offer


class OfferAction(FastEnum):
    """What an offer/answer transition means."""

    IGNORE = "ignore"
    OFFER = "offer"  # an offer is now pending
    ANSWER = "answer"  # the pending offer is answered
    GLARE = "glare"  # an offer while ours is pending: 491
    PENDING = "pending"  # an offer while theirs is unanswered: 500 with Retry-After
    ROLLBACK = "rollback"  # the pending offer was rejected: the last answered one stands


OS, OI, OA = OfferState, OfferInput, OfferAction
OfferTable = dict[tuple[OfferState, OfferInput], tuple[OfferAction, OfferState]]

#: RFC 3264 offer/answer with the glare rules of RFC 3261 §14.2 and RFC 3311 §5.2.
OFFER_TABLE: OfferTable = {
    (OS.NO_OFFER, OI.SEND_OFFER): (OA.OFFER, OS.OFFER_SENT),
    (OS.NO_OFFER, OI.RECV_OFFER): (OA.OFFER, OS.OFFER_RECEIVED),
    (OS.ANSWERED, OI.SEND_OFFER): (OA.OFFER, OS.OFFER_SENT),
    (OS.ANSWERED, OI.RECV_OFFER): (OA.OFFER, OS.OFFER_RECEIVED),
    (OS.OFFER_SENT, OI.RECV_ANSWER): (OA.ANSWER, OS.ANSWERED),
    (OS.OFFER_SENT, OI.RECV_OFFER): (OA.GLARE, OS.OFFER_SENT),
    (OS.OFFER_SENT, OI.OFFER_REJECTED): (OA.ROLLBACK, OS.ANSWERED),
    (OS.OFFER_RECEIVED, OI.SEND_ANSWER): (OA.ANSWER, OS.ANSWERED),
    (OS.OFFER_RECEIVED, OI.RECV_OFFER): (OA.PENDING, OS.OFFER_RECEIVED),
    (OS.OFFER_RECEIVED, OI.OFFER_REJECTED): (OA.ROLLBACK, OS.ANSWERED),
}

#: Inputs from the TU: sending an offer or answer the state does not allow is our mistake.
OFFER_TU_INPUTS = frozenset({OI.SEND_OFFER, OI.SEND_ANSWER})


def offer_lookup(state: OfferState, event: OfferInput) -> tuple[OfferAction, OfferState]:
    """The offer/answer transition, with the meaning of a missing pair spelled out (as
    :func:`session_lookup`)."""
    entry = OFFER_TABLE.get((state, event))
    if entry is not None:
        return entry
    if event in OFFER_TU_INPUTS:
        raise LocalProtocolError(f"{event.value} is not allowed in offer state {state.value}")
    return (OfferAction.IGNORE, state)


class SdpRole(FastEnum):
    """What the body of a message is to the session."""

    NONE = "none"  # no SDP, or SDP that means nothing here (ignored)
    OFFER = "offer"
    ANSWER = "answer"  # includes the preview of an answer in an unreliable 1xx


# ------------------------------------------------------------------- events, results, errors
@dataclass(frozen=True, slots=True)
class AckToSend:
    """Send this ACK for a 2xx (outside any transaction, §13.2.2.4); the same one again for each
    retransmission of that 2xx."""

    request: Request


@dataclass(frozen=True, slots=True)
class ByeToSend:
    """Send this BYE (a new non-INVITE transaction).  ``cause`` says why."""

    request: Request
    cause: str


@dataclass(frozen=True, slots=True)
class CancelToSend:
    """CANCEL the dialog-creating INVITE (the endpoint builds it, §9.1)."""

    reason: str | None


@dataclass(frozen=True, slots=True)
class ResponseToRetransmit:
    """Send our 2xx to an INVITE again: its ACK has not come (§13.3.1.4)."""

    response: Response


@dataclass(frozen=True, slots=True)
class RefreshToSend:
    """We are the refresher and half the interval is over (RFC 4028 §10): send ``method``
    (a re-INVITE with our current SDP, or an UPDATE without) with ``headers``."""

    method: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RetryToSend:
    """Send the ``method`` request that got ``status`` again, as a new transaction with
    :meth:`InviteSession.request_headers` (after 422: the raised interval, RFC 4028 §7.4;
    after 491: the back-off is over, RFC 3261 §14.1)."""

    method: str
    status: int
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SessionEstablished:
    """The dialog-creating INVITE's 2xx was ACKed (UAC: by us, UAS: by the peer)."""


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The session is over.  ``cause``: bye, hangup, cancelled, rejected, failed, ack-timeout,
    session-expired, dialog-failed.  ``remote``: the peer ended it."""

    cause: str
    remote: bool
    status: int | None = None


SessionEvent = (
    AckToSend
    | ByeToSend
    | CancelToSend
    | ResponseToRetransmit
    | RefreshToSend
    | RetryToSend
    | SessionEstablished
    | SessionEnded
)


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a received request is to the session: its ``sdp`` role, and the ``headers`` our
    2xx to it needs (Session-Expires, Require: timer)."""

    sdp: SdpRole
    headers: tuple[tuple[str, str], ...] = ()


class RequestRefused(RemoteProtocolError):
    """The request must be answered ``status_hint`` (422, 491, 500, 400) with ``headers``
    (Min-SE for 422, Retry-After for 500)."""

    def __init__(self, reason: str, status_hint: int,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason, status_hint)
        self.headers = headers


# ------------------------------------------------------------------------- session timers
@dataclass(frozen=True, slots=True)
class SessionExpires:
    """``Session-Expires: <delta-seconds>[;refresher=uac|uas]`` (RFC 4028 §4)."""

    seconds: int
    refresher: str | None = None

    def __str__(self) -> str:
        return f"{self.seconds};refresher={self.refresher}" if self.refresher else \
            str(self.seconds)


_DELTA = re.compile(r"[0-9]{1,10}")


def parse_session_expires(value: str | None) -> SessionExpires | None:
    """Parse a Session-Expires value; None when absent.  RemoteProtocolError(400) when
    malformed (not delta-seconds, a refresher other than uac/uas)."""
    if value is None:
        return None
    head, *params = value.split(";")
    head = head.strip()
    if _DELTA.fullmatch(head) is None or int(head) == 0:
        raise RemoteProtocolError("Bad Session-Expires", 400)
    refresher = None
    for param in params:
        name, _, v = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = v.strip().lower()
            if refresher not in ("uac", "uas"):
                raise RemoteProtocolError("Bad Session-Expires refresher", 400)
    return SessionExpires(int(head), refresher)


def parse_min_se(value: str | None) -> int | None:
    """Parse a Min-SE value (delta-seconds, generic parameters ignored); None when absent.
    RemoteProtocolError(400) when malformed."""
    if value is None:
        return None
    head = value.split(";", 1)[0].strip()
    if _DELTA.fullmatch(head) is None:
        raise RemoteProtocolError("Bad Min-SE", 400)
    return int(head)


def option_tags(message: Request | Response, name: str) -> set[str]:
    """The option tags of every ``name`` header (Supported, Require …), lower case."""
    return {t.strip().lower() for v in message.headers.get_all(name) for t in v.split(",")
            if t.strip()}


def negotiate(se: SessionExpires, supported: bool, *, min_se: int, session_expires: int,
              their_min_se: int = 0, prefer: str = "uac") -> SessionExpires:
    """RFC 4028 §9 for a request we answer (its ``se``; ``supported``: its UAC supports
    ``timer``): the interval is the requested one capped by our ``session_expires``, at least
    our ``min_se`` and the request's Min-SE; the refresher is the requested one, else ``prefer``
    when the UAC supports timers, else the UAS (a UAC without timer support cannot refresh).
    The 422 for ``se.seconds < min_se`` is the caller's to send before asking this."""
    seconds = max(min_se, their_min_se, min(se.seconds, session_expires))
    refresher = se.refresher or (prefer if supported else "uas")
    if refresher == "uac" and not supported:
        refresher = "uas"
    return SessionExpires(seconds, refresher)


def _timer_supported(message: Request | Response) -> bool:
    return "timer" in option_tags(message, "Supported") | option_tags(message, "Require")


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Our session-timer preferences and the transaction timers (RFC 3261 table 4)."""

    #: The interval we ask for, and the most we grant (RFC 4028 §4: 1800 s recommended).
    session_expires: int = 1800
    #: Our Min-SE: less is refused with 422 (at least 90 s, RFC 4028 §5).
    min_se: int = 90
    #: Who refreshes when the UAC supports timers and names nobody (RFC 4028 §9): ``"uac"``
    #: leaves it to the peer.
    refresher: str = "uac"
    #: Put Session-Expires into the dialog-creating INVITE we send (RFC 4028 §7.1).
    request_timer: bool = True
    #: Refresh with UPDATE (RFC 4028 §7.4 prefers it) when the peer allows it; else re-INVITE.
    refresh_with_update: bool = False
    #: Retransmit our 2xx until the ACK ourselves (False: the endpoint does, see the docstring).
    retransmit_2xx: bool = True
    #: The largest Min-SE of a 422 we follow (a peer demanding more ends the attempt).
    max_min_se: int = 86400
    timers: TimerConfig = field(default_factory=TimerConfig)

    def __post_init__(self) -> None:
        if self.min_se < 90 or self.session_expires < self.min_se:
            raise ValueError("need 90 <= min_se <= session_expires (RFC 4028 §5)")
        if self.refresher not in ("uac", "uas"):
            raise ValueError("refresher must be 'uac' or 'uas'")


def _is_sdp(message: Request | Response) -> bool:
    return bool(message.body) and (message.content_type or "application/sdp") == "application/sdp"


def _reliable_1xx(response: Response) -> bool:
    """RFC 3262: a provisional response sent reliably (``Require: 100rel`` and ``RSeq``)."""
    return "100rel" in option_tags(response, "Require") and response.headers.get("RSeq") is not None


_HANDLERS: dict[SessionAction, str] = {action: "_" + action.value for action in SessionAction}


# ------------------------------------------------------------------------------- the usage
class InviteSession:
    """Our side of one INVITE dialog usage (see the module docstring)."""

    def __init__(self, role: Role, config: SessionConfig | None = None, *, reliable: bool = False,
                 rng: Callable[[], float] = random.random) -> None:
        self.role = role
        self.config = config if config is not None else SessionConfig()
        #: Over a reliable transport our 2xx is not retransmitted (as the endpoint does).
        self.reliable = reliable
        self._rng = rng
        self.state = SessionState.CALLING if role is Role.UAC else SessionState.PROCEEDING
        self.offer_state = OfferState.NO_OFFER
        #: The dialog, once the first 2xx (UAC) or our first 1xx/2xx with a tag (UAS) made it.
        self.dialog: Dialog | None = None
        #: CSeq number of the dialog-creating INVITE (in the UAC's CSeq space: ours when we
        #: are the UAC, the peer's when we are the UAS).
        self.invite_seq: int | None = None
        #: Session timer: the running interval (None: no timer) and whether we refresh.
        self.interval: int | None = None
        self.we_refresh = False
        #: Why the session ended (set with SessionEnded).
        self.end_cause: str | None = None
        self._events: list[SessionEvent] = []
        self._timers: dict[SessionInput, float] = {}
        self._end_remote = False
        self._end_status: int | None = None
        # our requests in progress (method -> CSeq) and theirs not yet answered
        self._out: dict[str, int] = {}
        self._in: dict[str, int] = {}
        # the message that carries the pending offer: ("out"/"in", method, CSeq)
        self._offer_carrier: tuple[str, str, int] | None = None
        self._early_answer = False
        # RFC 4028: what we ask for (raised by a 422) and what the last request asks of us
        self._session_expires = self.config.session_expires
        self._min_se = self.config.min_se
        self._pending_headers: tuple[tuple[str, str], ...] = ()
        self._peer_allows_update = False
        # UAS: the 2xx we retransmit until its ACK, and the interval
        self._pending_2xx: Response | None = None
        self._interval_2xx = self.config.timers.t1
        self._bye_reason: str | None = None
        # UAC: the ACK we sent for each 2xx, by (dialog id, CSeq), resent on retransmissions
        self._acks: dict[tuple[tuple[str, str, str], int], Request] = {}
        self._byed: set[tuple[str, str, str]] = set()
        self._retry_method: str | None = None
        self._delayed_ack: tuple[Dialog, int] | None = None
        self._offerless_invite: int | None = None
        self._offerless_out: int | None = None

    def __repr__(self) -> str:
        return f"<InviteSession {self.role.value} {self.state.value} {self.offer_state.value}>"

    # ------------------------------------------------------------------------- outputs, time
    def events(self) -> list[SessionEvent]:
        """What the rules ask of the TU since the last call, in order."""
        out, self._events = self._events, []
        return out

    def timers(self) -> dict[SessionInput, float]:
        """The armed timers and their deadlines."""
        return dict(self._timers)

    def next_deadline(self) -> float | None:
        """The earliest armed deadline, or None."""
        return min(self._timers.values()) if self._timers else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now`` (earliest first); earlier calls do nothing."""
        while self._timers:
            timer, deadline = min(self._timers.items(), key=lambda item: item[1])
            if deadline > now:
                return
            del self._timers[timer]
            self._handle(timer, now)

    def _arm(self, timer: SessionInput, deadline: float) -> None:
        self._timers[timer] = deadline

    def _disarm(self, *timers: SessionInput) -> None:
        for timer in timers:
            self._timers.pop(timer, None)

    # ---------------------------------------------------------------------------- the tables
    def _handle(self, event: SessionInput, now: float, message: Request | Response | None = None,
                dialog: Dialog | None = None) -> SessionAction:
        before = self.state
        action, self.state = session_lookup(before, event)
        if action is not SessionAction.IGNORE:
            getattr(self, _HANDLERS[action])(now, message, dialog)
        if self.state is SessionState.TERMINATED and before is not SessionState.TERMINATED:
            self._timers.clear()
            self._events.append(SessionEnded(self.end_cause or "ended", self._end_remote,
                                             self._end_status))
        return action

    def _our_initial(self, seq: int) -> bool:
        """A response with this CSeq is to the dialog-creating INVITE we sent (UAC)."""
        return self.role is Role.UAC and seq == self.invite_seq

    def _offer(self, event: OfferInput) -> OfferAction:
        action, self.offer_state = offer_lookup(self.offer_state, event)
        return action

    def _end(self, cause: str, remote: bool, status: int | None = None) -> None:
        self.end_cause, self._end_remote, self._end_status = cause, remote, status

    # ------------------------------------------------------------------------ TU: requests out
    def request_headers(self) -> list[tuple[str, str]]:
        """Session-timer headers for an INVITE or UPDATE we send (RFC 4028 §7.1, §7.4): the
        running interval with its refresher, else the interval we ask for; Min-SE once a 422
        raised it.  The TU lists ``timer`` in its Supported header itself."""
        headers: list[tuple[str, str]] = []
        if self.interval is not None:
            who = "uac" if self.we_refresh else "uas"  # this request's UAC is us
            headers.append(("Session-Expires", f"{self.interval};refresher={who}"))
        elif self.config.request_timer:
            headers.append(("Session-Expires", str(self._session_expires)))
        if self._min_se > 90:
            headers.append(("Min-SE", str(self._min_se)))
        return headers

    def send_request(self, request: Request, now: float) -> None:
        """We send ``request`` in this usage: the dialog-creating INVITE (UAC), a re-INVITE or
        an UPDATE.  Raises LocalProtocolError when the rules forbid it now (an INVITE while
        another is in progress, §14.1; an offer while one is pending)."""
        method = request.method
        if method == "BYE":
            raise LocalProtocolError("end the session with hangup()")
        if method not in ("INVITE", "UPDATE"):
            return
        seq = request.cseq.seq
        initial = False
        if method == "INVITE":
            if "INVITE" in self._out or "INVITE" in self._in:
                raise LocalProtocolError("an INVITE transaction is already in progress (§14.1)")
            initial = self.role is Role.UAC and self.state is SessionState.CALLING
            if not initial and self.state is not SessionState.CONFIRMED:
                raise LocalProtocolError("a re-INVITE needs a confirmed dialog")
        if self.state is SessionState.TERMINATED:
            raise LocalProtocolError("the session is over")
        if _is_sdp(request):
            self._offer(OfferInput.SEND_OFFER)
            self._offer_carrier = ("out", method, seq)
            self._early_answer = False
        elif method == "INVITE":
            self._offerless_out = seq  # its 2xx will carry the peer's offer
        if initial:
            self.invite_seq = seq
        self._out[method] = seq
        if self._retry_method == method:  # the retry went out (or the TU sent another request)
            self._disarm(SessionInput.TIMER_GLARE)
            self._retry_method = None

    def answer_in_ack(self, body: bytes, now: float,
                      content_type: str = "application/sdp") -> None:
        """UAC of an offerless INVITE: the 2xx carried the offer; send our answer in the ACK
        (§13.2.2.4).  Queues :class:`AckToSend`."""
        if self._delayed_ack is None:
            raise LocalProtocolError("no 2xx is waiting for an answer in its ACK")
        dialog, seq = self._delayed_ack
        self._delayed_ack = None
        self._offer(OfferInput.SEND_ANSWER)
        self._offer_carrier = None
        ack = dialog.create_ack(seq, body=body, content_type=content_type)
        self._acks[(dialog.id, seq)] = ack
        self._events.append(AckToSend(ack))

    def hangup(self, now: float, reason: str | None = None) -> SessionAction:
        """End the session by the rules of §15: BYE when confirmed, CANCEL before a final
        response (UAC), BYE after the ACK (UAS that answered), ``REJECT`` (send a final error
        response yourself) before answering (UAS).  ``reason`` is a Reason header value."""
        self._bye_reason = reason
        return self._handle(SessionInput.HANGUP, now)

    def request_failed(self, method: str, now: float) -> None:
        """A request of ours in this dialog (any method) got no answer (transaction timeout or
        transport error): for the dialog-creating INVITE the call failed; otherwise the dialog
        is gone (§12.2.1.2, §14.1, RFC 4028 §10: BYE)."""
        self._out.pop(method, None)
        if method == "INVITE" and self.state in (SessionState.CALLING, SessionState.CANCELLING):
            if self.state is SessionState.CALLING:
                self._end("failed", False, 408)
            self._handle(SessionInput.RECV_FAILURE, now)
            return
        self._rollback_if_carrier("out", method, None)
        self._handle(SessionInput.REQUEST_FAILED, now)

    def ack_timed_out(self, now: float) -> None:
        """The endpoint gave up retransmitting our 2xx (its ``AckTimedOut``)."""
        self._handle(SessionInput.ACK_TIMED_OUT, now)

    def cancelled(self, now: float) -> None:
        """UAS: the caller's CANCEL matched the INVITE (the endpoint answered 200 and 487)."""
        self._in.pop("INVITE", None)
        self._handle(SessionInput.RECV_CANCEL, now)

    # --------------------------------------------------------------------- network: requests in
    def receive_request(self, request: Request, now: float) -> Incoming:
        """A request of this usage arrived: INVITE (the dialog-creating one or a re-INVITE),
        UPDATE, ACK or BYE (others are not the usage's and give ``Incoming(NONE)``).

        Raises :class:`RequestRefused` when it must be answered with an error: 491 (glare),
        500 + Retry-After (their earlier offer or INVITE is unanswered), 422 + Min-SE (too
        short a session interval), 400 (bad Session-Expires/Min-SE); the state is unchanged.
        """
        method = request.method
        if method == "ACK":
            return self._receive_ack(request, now)
        if method == "BYE":
            self._handle(SessionInput.RECV_BYE, now, request)
            return Incoming(SdpRole.NONE)
        if method not in ("INVITE", "UPDATE"):
            return Incoming(SdpRole.NONE)
        if self.state is SessionState.TERMINATED:
            raise RequestRefused("Call/Transaction Does Not Exist", 481)
        if "update" in option_tags(request, "Allow"):
            self._peer_allows_update = True
        initial = method == "INVITE" and self.role is Role.UAS and self.invite_seq is None
        if method == "INVITE" and not initial:
            if "INVITE" in self._out:
                raise RequestRefused("Request Pending", 491)
            if "INVITE" in self._in:
                raise RequestRefused("Server Internal Error", 500, self._retry_after())
        offer = _is_sdp(request)
        if offer:
            entry = OFFER_TABLE.get((self.offer_state, OfferInput.RECV_OFFER))
            if entry is not None and entry[0] is OfferAction.GLARE:
                raise RequestRefused("Request Pending", 491)
            if entry is not None and entry[0] is OfferAction.PENDING:
                raise RequestRefused("Server Internal Error", 500, self._retry_after())
        headers = self._negotiate(request)
        # accepted: from here on the request is the session's
        seq = request.cseq.seq
        if initial:
            self.invite_seq = seq
        self._in[method] = seq
        self._pending_headers = headers
        if offer:
            self._offer(OfferInput.RECV_OFFER)
            self._offer_carrier = ("in", method, seq)
            return Incoming(SdpRole.OFFER, headers)
        if method == "INVITE":
            self._offerless_invite = seq  # our 2xx (or a reliable 1xx) must offer
        return Incoming(SdpRole.NONE, headers)

    def response_headers(self) -> list[tuple[str, str]]:
        """The session-timer headers the 2xx to the last accepted INVITE/UPDATE needs."""
        return list(self._pending_headers)

    def _retry_after(self) -> tuple[tuple[str, str], ...]:
        return (("Retry-After", str(min(10, int(self._rng() * 11)))),)

    def _negotiate(self, request: Request) -> tuple[tuple[str, str], ...]:
        """RFC 4028 §9 for a request we will answer: 422 when it asks for less than our
        Min-SE; else the Session-Expires (and Require) our 2xx carries."""
        se = parse_session_expires(request.headers.get("Session-Expires"))
        their_min = parse_min_se(request.headers.get("Min-SE")) or 0
        supported = _timer_supported(request)
        config = self.config
        if se is not None:
            if se.seconds < config.min_se:
                raise RequestRefused("Session Interval Too Small", 422,
                                     (("Min-SE", str(config.min_se)),))
            granted = negotiate(se, supported, min_se=config.min_se,
                                session_expires=config.session_expires, their_min_se=their_min,
                                prefer=config.refresher)
        elif self.interval is not None:
            # a refresh without Session-Expires keeps the running timer (named from this
            # transaction's point of view: we are its UAS)
            running = SessionExpires(self.interval, "uas" if self.we_refresh else "uac")
            granted = negotiate(running, supported, min_se=self.interval,
                                session_expires=self.interval)
        else:
            return ()
        headers = [("Session-Expires", str(granted))]
        if supported:
            headers.append(("Require", "timer"))
        return tuple(headers)

    def _receive_ack(self, ack: Request, now: float) -> Incoming:
        pending = self._pending_2xx
        if pending is None or ack.cseq.seq != pending.cseq.seq:
            return Incoming(SdpRole.NONE)  # a retransmitted or stray ACK
        role = SdpRole.NONE
        if self.offer_state is OfferState.OFFER_SENT:
            if _is_sdp(ack):
                self._offer(OfferInput.RECV_ANSWER)
                self._offer_carrier = None
                role = SdpRole.ANSWER
            else:  # §13.3.1: the answer to our offer in the 2xx must come in the ACK
                self._rollback_if_carrier("out", "INVITE", ack.cseq.seq)
        self._handle(SessionInput.RECV_ACK, now, ack)
        return Incoming(role)

    # -------------------------------------------------------------------- TU: responses out
    def send_response(self, response: Response, now: float, dialog: Dialog | None = None) -> None:
        """We answer an INVITE or UPDATE of this usage (provisional or final).  ``dialog`` is
        the dialog the response made or belongs to (bound on the first one with a tag).

        Raises LocalProtocolError (nothing changed) for a 2xx the rules do not allow: one that
        lacks the answer to a pending offer or the offer an offerless INVITE needs (RFC 3264,
        §13.3.1.4), a 2xx after the final response, the first 2xx without a dialog."""
        method = response.cseq.method
        if method not in ("INVITE", "UPDATE"):
            return
        status = response.status
        seq = response.cseq.seq
        sdp = _is_sdp(response)
        initial = method == "INVITE" and self.role is Role.UAS and \
            (self.invite_seq is None or seq == self.invite_seq)
        if status >= 300 and initial:
            session_lookup(self.state, SessionInput.SEND_FAILURE)  # raises after a 2xx
        if 200 <= status < 300:
            if not sdp and self.offer_state is OfferState.OFFER_RECEIVED and \
                    self._offer_carrier == ("in", method, seq):
                raise LocalProtocolError("the 2xx must carry the answer to the offer (RFC 3264)")
            if not sdp and method == "INVITE" and self._offerless_invite == seq:
                raise LocalProtocolError("the 2xx to an offerless INVITE must carry an offer")
            if method == "INVITE":
                session_lookup(self.state, SessionInput.SEND_2XX)  # raises when not allowed
                if self.dialog is None and dialog is None:
                    raise LocalProtocolError("the first 2xx needs its dialog")
        if dialog is not None and self.dialog is None and 100 < status < 300:
            self.dialog = dialog
        if status < 200:
            if sdp and _reliable_1xx(response):
                self._sdp_out(method, seq)
            return
        self._in.pop(method, None)
        if status >= 300:
            if self._offerless_invite == seq and method == "INVITE":
                self._offerless_invite = None
            self._rollback_if_carrier("in", method, seq)
            if initial:
                if self.state is SessionState.PROCEEDING:
                    self._end("rejected", False, status)
                self._handle(SessionInput.SEND_FAILURE, now, response)
            return
        if sdp:
            self._sdp_out(method, seq)
        self._commit_timer(response, we_are_uac=False, now=now)
        if method == "INVITE":
            self._handle(SessionInput.SEND_2XX, now, response)

    def _sdp_out(self, method: str, seq: int) -> None:
        if self.offer_state is OfferState.OFFER_RECEIVED:
            self._offer(OfferInput.SEND_ANSWER)
            self._offer_carrier = None
        elif method == "INVITE" and self._offerless_invite == seq:
            self._offerless_invite = None
            self._offer(OfferInput.SEND_OFFER)  # offerless INVITE: our offer, answered in the ACK
            self._offer_carrier = ("out", method, seq)

    # ---------------------------------------------------------------- network: responses in
    def receive_response(self, response: Response, now: float,
                         dialog: Dialog | None = None) -> SdpRole:
        """A response to an INVITE or UPDATE of ours.  ``dialog`` is the dialog it belongs to
        (from :class:`~sipcore.dialog.DialogSet`; needed for a 2xx to the dialog-creating
        INVITE, which binds the first one).  Returns what its body is to the session."""
        method = response.cseq.method
        if method not in ("INVITE", "UPDATE"):
            return SdpRole.NONE
        status = response.status
        seq = response.cseq.seq
        if "update" in option_tags(response, "Allow"):
            self._peer_allows_update = True
        if status < 200:
            if method == "INVITE" and self._our_initial(seq):
                role = self._sdp_in_provisional(response, method, seq)
                self._handle(SessionInput.RECV_1XX, now, response)
                return role
            return SdpRole.NONE
        if status >= 300:
            return self._receive_failure(response, now, method, seq)
        if method == "UPDATE":
            if self._out.get("UPDATE") != seq:
                return SdpRole.NONE
            del self._out["UPDATE"]
            role = self._sdp_in_final(response, method, seq)
            self._commit_timer(response, we_are_uac=True, now=now)
            return role
        # a 2xx to an INVITE of ours
        if self.dialog is None and dialog is None:
            raise LocalProtocolError("a 2xx to the INVITE needs its dialog")
        stray = self.dialog is not None and dialog is not None and dialog is not self.dialog
        first = self._out.get("INVITE") == seq and not stray
        role = SdpRole.NONE
        if first:
            del self._out["INVITE"]
            role = self._sdp_in_final(response, method, seq)
            self._commit_timer(response, we_are_uac=True, now=now)
        event = SessionInput.RECV_STRAY_2XX if stray else SessionInput.RECV_2XX
        self._handle(event, now, response, dialog)
        return role

    def _receive_failure(self, response: Response, now: float, method: str, seq: int) -> SdpRole:
        if self._out.get(method) != seq:
            return SdpRole.NONE  # not the request in progress (a late or stray answer)
        del self._out[method]
        status = response.status
        initial = method == "INVITE" and self._our_initial(seq)
        if initial:
            self.offer_state = OfferState.NO_OFFER  # a new INVITE is a new exchange
            self._offer_carrier = None
        else:
            self._rollback_if_carrier("out", method, seq)
        if status == 422 and self._can_retry_422(response):
            self._retry_method = method
            self._handle(SessionInput.RECV_422, now, response)
        elif status == 491 and not initial:
            self._retry_method = method
            self._handle(SessionInput.RECV_491, now, response)
        elif status in (408, 481) and not initial:
            self._handle(SessionInput.REQUEST_FAILED, now, response)
        elif initial:
            if self.state is SessionState.CALLING:
                self._end("failed", True, status)
            self._handle(SessionInput.RECV_FAILURE, now, response)
        return SdpRole.NONE

    def _sdp_in_provisional(self, response: Response, method: str, seq: int) -> SdpRole:
        if not _is_sdp(response):
            return SdpRole.NONE
        if _reliable_1xx(response):
            return self._sdp_in_final(response, method, seq)
        if self.offer_state is OfferState.OFFER_SENT:
            self._early_answer = True  # a preview of the 2xx's answer (RFC 6337 §3.1)
            return SdpRole.ANSWER
        return SdpRole.NONE

    def _sdp_in_final(self, response: Response, method: str, seq: int) -> SdpRole:
        if self.offer_state is OfferState.OFFER_SENT and self._offer_carrier == ("out", method,
                                                                                seq):
            if _is_sdp(response) or self._early_answer:
                self._offer(OfferInput.RECV_ANSWER)
                self._offer_carrier = None
                return SdpRole.ANSWER
            self._rollback_if_carrier("out", method, seq)  # no answer at all: the offer lapsed
            return SdpRole.NONE
        if _is_sdp(response) and method == "INVITE" and self._offerless_out == seq:
            self._offerless_out = None
            self._offer(OfferInput.RECV_OFFER)  # offerless INVITE: the 2xx offers
            self._offer_carrier = ("in", method, seq)
            return SdpRole.OFFER
        return SdpRole.NONE

    def _rollback_if_carrier(self, direction: str, method: str, seq: int | None) -> None:
        carrier = self._offer_carrier
        if carrier is None or carrier[:2] != (direction, method) or \
                (seq is not None and carrier[2] != seq):
            return
        self._offer_carrier = None
        self._offer(OfferInput.OFFER_REJECTED)

    # --------------------------------------------------------------------- session timer
    def _commit_timer(self, response: Response, *, we_are_uac: bool, now: float) -> None:
        """A 2xx to an INVITE/UPDATE, sent or received: its Session-Expires is the timer from
        now on (RFC 4028 §7.2, §9); none stops it."""
        try:
            se = parse_session_expires(response.headers.get("Session-Expires"))
        except RemoteProtocolError:
            se = None  # a garbled value in a 2xx: no timer rather than no call
        self._disarm(SessionInput.TIMER_REFRESH, SessionInput.TIMER_EXPIRE)
        if se is None:
            self.interval = None
            self.we_refresh = False
            return
        self.interval = max(se.seconds, self.config.min_se) if we_are_uac else se.seconds
        # a 2xx received without a refresher names the UAC (§7.2)
        refresher = se.refresher or "uac"
        self.we_refresh = (refresher == "uac") == we_are_uac
        self._arm_session_timer(now)

    def _arm_session_timer(self, now: float) -> None:
        interval = self.interval
        if interval is None:
            return
        if self.we_refresh:
            self._arm(SessionInput.TIMER_REFRESH, now + interval / 2)
        self._arm(SessionInput.TIMER_EXPIRE, now + interval - min(32.0, interval / 3))

    # --------------------------------------------------------------------- action handlers
    # Each takes (now, message, dialog): the message that caused the input, if any, and the
    # dialog a response belongs to.

    def _send_ack(self, dialog: Dialog, response: Response) -> bool:
        """ACK a 2xx; True when it was the first ACK for that 2xx."""
        key = (dialog.id, response.cseq.seq)
        ack = self._acks.get(key)
        if ack is not None:
            self._events.append(AckToSend(ack))
            return False
        if self.offer_state is OfferState.OFFER_RECEIVED and self._offer_carrier == \
                ("in", "INVITE", response.cseq.seq):
            self._delayed_ack = (dialog, response.cseq.seq)  # answer_in_ack() sends it
            return True
        ack = dialog.create_ack(response.cseq.seq)
        self._acks[key] = ack
        self._events.append(AckToSend(ack))
        return True

    def _establish(self, now: float, message: object, dialog: Dialog | None) -> None:
        assert isinstance(message, Response) and dialog is not None
        self.dialog = dialog
        self._send_ack(dialog, message)
        self._events.append(SessionEstablished())

    def _ack(self, now: float, message: object, dialog: Dialog | None) -> None:
        assert isinstance(message, Response)
        target = dialog or self.dialog
        if target is not None:
            self._send_ack(target, message)

    def _ack_and_bye(self, now: float, message: object, dialog: Dialog | None) -> None:
        assert isinstance(message, Response)
        target = dialog or self.dialog
        if target is None:
            return
        self._send_ack(target, message)
        if target.id not in self._byed and target.state is not DialogState.TERMINATED:
            self._byed.add(target.id)
            self._events.append(ByeToSend(target.create_request("BYE"), "unwanted-2xx"))
        if self.state is SessionState.TERMINATED and self.end_cause is None:
            self._end("cancelled", False)

    def _fail(self, now: float, message: object, dialog: Dialog | None) -> None:
        if self.end_cause is None:
            status = message.status if isinstance(message, Response) else None
            self._end("failed", True, status)

    def _can_retry_422(self, response: Response) -> bool:
        """A 422 names a Min-SE we can follow: larger than what we asked, not absurd."""
        try:
            wanted = parse_min_se(response.headers.get("Min-SE"))
        except RemoteProtocolError:
            return False
        asked = self.interval if self.interval is not None else self._session_expires
        return wanted is not None and asked < wanted <= self.config.max_min_se

    def _retry_interval(self, now: float, message: object, dialog: Dialog | None) -> None:
        assert isinstance(message, Response)
        wanted = parse_min_se(message.headers.get("Min-SE"))
        assert wanted is not None  # _can_retry_422
        self._min_se = max(self._min_se, wanted)
        self._session_expires = max(self._session_expires, wanted)
        if self.interval is not None:
            self.interval = max(self.interval, wanted)
        method = self._retry_method or "INVITE"
        self._events.append(RetryToSend(method, 422, tuple(self.request_headers())))

    def _back_off(self, now: float, message: object, dialog: Dialog | None) -> None:
        # §14.1: 2.1-4 s for the owner of the Call-ID (the UAC of the dialog), else 0-2 s,
        # in units of 10 ms
        if self.role is Role.UAC:
            delay = 2.1 + round(self._rng() * 190) / 100
        else:
            delay = round(self._rng() * 200) / 100
        self._arm(SessionInput.TIMER_GLARE, now + delay)

    def _retry_glare(self, now: float, message: object, dialog: Dialog | None) -> None:
        method = self._retry_method or "INVITE"
        self._events.append(RetryToSend(method, 491, tuple(self.request_headers())))

    def _cancel(self, now: float, message: object, dialog: Dialog | None) -> None:
        self._end("hangup", False)
        self._events.append(CancelToSend(self._bye_reason))

    def _accept(self, now: float, message: object, dialog: Dialog | None) -> None:
        assert isinstance(message, Response)
        self._pending_2xx = message
        self._interval_2xx = self.config.timers.t1
        if self.config.retransmit_2xx:
            if not self.reliable:
                self._arm(SessionInput.TIMER_2XX, now + self._interval_2xx)
            self._arm(SessionInput.TIMER_ACK, now + 64 * self.config.timers.t1)

    def _retransmit_2xx(self, now: float, message: object, dialog: Dialog | None) -> None:
        if self._pending_2xx is None:
            return
        self._events.append(ResponseToRetransmit(self._pending_2xx))
        self._interval_2xx = min(2 * self._interval_2xx, self.config.timers.t2)
        self._arm(SessionInput.TIMER_2XX, now + self._interval_2xx)

    def _stop_2xx(self) -> bool:
        """Stop retransmitting; True when it was the dialog-creating INVITE's 2xx."""
        pending = self._pending_2xx
        self._pending_2xx = None
        self._disarm(SessionInput.TIMER_2XX, SessionInput.TIMER_ACK)
        return pending is not None and self.role is Role.UAS and \
            pending.cseq.seq == self.invite_seq

    def _confirm(self, now: float, message: object, dialog: Dialog | None) -> None:
        if self._stop_2xx():
            self._events.append(SessionEstablished())

    def _confirm_and_bye(self, now: float, message: object, dialog: Dialog | None) -> None:
        self._confirm(now, message, dialog)
        self._send_bye("hangup", remote=False)

    def _ack_timeout(self, now: float, message: object, dialog: Dialog | None) -> None:
        self._stop_2xx()
        self._send_bye("ack-timeout", remote=False)

    def _defer_bye(self, now: float, message: object, dialog: Dialog | None) -> None:
        pass  # the BYE goes with the ACK (CONFIRM_AND_BYE) or the give-up (ACK_TIMEOUT)

    def _reject(self, now: float, message: object, dialog: Dialog | None) -> None:
        pass  # the TU sends its final error response; send_response() ends the session

    def _rejected(self, now: float, message: object, dialog: Dialog | None) -> None:
        if self.end_cause is None:
            self._end("rejected", False)

    def _cancelled(self, now: float, message: object, dialog: Dialog | None) -> None:
        self._end("cancelled", True, 487)

    def _bye(self, now: float, message: object, dialog: Dialog | None) -> None:
        self._send_bye("hangup", remote=False)

    def _remote_bye(self, now: float, message: object, dialog: Dialog | None) -> None:
        self._stop_2xx()
        self._end("bye", True)

    def _dialog_failed(self, now: float, message: object, dialog: Dialog | None) -> None:
        status = message.status if isinstance(message, Response) else 408
        self._send_bye("dialog-failed", remote=False, status=status)

    def _refresh(self, now: float, message: object, dialog: Dialog | None) -> None:
        if self._out or self._in or self.offer_state in (OfferState.OFFER_SENT,
                                                         OfferState.OFFER_RECEIVED):
            # a transaction is in progress: its 2xx refreshes the session; try again shortly
            self._arm(SessionInput.TIMER_REFRESH, now + self.config.timers.t2)
            return
        method = "UPDATE" if self.config.refresh_with_update and self._peer_allows_update \
            else "INVITE"
        self._events.append(RefreshToSend(method, tuple(self.request_headers())))

    def _expire(self, now: float, message: object, dialog: Dialog | None) -> None:
        self._send_bye("session-expired", remote=False,
                       reason='SIP;cause=408;text="Session timer expired"')

    def _send_bye(self, cause: str, *, remote: bool, status: int | None = None,
                  reason: str | None = None) -> None:
        self._end(cause, remote, status)
        dialog = self.dialog
        if dialog is None or dialog.state is DialogState.TERMINATED:
            return  # nothing to end (e.g. the 481 that failed the dialog already ended it)
        reason = reason or self._bye_reason
        extra = [("Reason", reason)] if reason else None
        self._byed.add(dialog.id)
        self._events.append(ByeToSend(dialog.create_request("BYE", extra=extra), cause))

