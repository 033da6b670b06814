"""SIP transactions: the four state machines of RFC 3261 §17, as amended by RFC 6026.

Theory of operation
-------------------
A transaction is one request and every response to it (RFC 3261 §17).  There are four kinds:

* :class:`InviteClientTransaction` (ICT, §17.1.1, RFC 6026 §8.4): sends an INVITE, retransmits it
  on Timer A over unreliable transports, gives up on Timer B (64*T1).  A non-2xx final response is
  acknowledged *by the transaction itself* with an ACK on the same branch (§17.1.1.3) and the
  transaction lingers in Completed for Timer D to absorb retransmitted finals.  A 2xx is passed to
  the TU, which sends its own ACK (a new transaction-less request, §13.2.2.4); RFC 6026 keeps the
  ICT in *Accepted* for Timer M (64*T1) so that 2xx retransmissions from forked branches still reach
  the TU instead of being treated as strays.
* :class:`NonInviteClientTransaction` (NICT, §17.1.2): retransmits on Timer E (T1, doubling, capped
  at T2; T2 flat once a provisional arrived), times out on Timer F (64*T1), absorbs retransmitted
  finals in Completed for Timer K (T4).
* :class:`InviteServerTransaction` (IST, §17.2.1, RFC 6026 §7.1): answers 100 Trying at once,
  resends its last response whenever the INVITE is retransmitted, retransmits a non-2xx final on
  Timer G (T1 doubling, capped at T2) until the ACK arrives or Timer H (64*T1) expires, then absorbs
  further ACKs in Confirmed for Timer I (T4).  After a 2xx it stays in *Accepted* for Timer L
  (64*T1): retransmitted INVITEs are absorbed (the TU retransmits the 2xx itself, §13.3.1.4) and
  any ACK that does reach it is handed to the TU.
* :class:`NonInviteServerTransaction` (NIST, §17.2.2): resends its last response on request
  retransmissions and lingers in Completed for Timer J (64*T1).

Over reliable transports (TCP/TLS/WS/WSS) the retransmission timers A, E and G are never started
and the linger timers D, I, J, K are zero (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2), i.e. they fire
immediately.  T1, T2, T4 and Timer D are configurable (:class:`TimerConfig`).

Every machine is one dict ``(state, input) -> (action, next_state)``.  An input missing from the
table is defined, never an accident: an input from the TU (``START`` on a client, a response on a
server) raises :class:`~sipcore.errors.LocalProtocolError` and leaves the state unchanged; an input
from the network or a timer is *ignored* and leaves the state unchanged (this is how stray or
retransmitted messages and stale timers are absorbed).  :func:`lookup` spells this out and the
tests walk every pair.

Transactions are sans-IO: they talk to a :class:`TransactionHost` (the :class:`~sipcore.endpoint.
Endpoint`) that transmits bytes, keeps the timer heap and collects events for the TU.  Matching
(§17.1.3, §17.2.3, with the RFC 2543 fallback) is done by :func:`client_key` and
:func:`server_key`; the endpoint keeps the dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sipcore.enums import FastEnum
from sipcore.errors import LocalProtocolError
from sipcore.headers import Headers
from sipcore.message import MAGIC_COOKIE, Request, Response, make_response
from sipcore.transport import Peer

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["MAGIC_COOKIE"]  # re-exported: the branch prefix of RFC 3261 §8.1.1.7


# --------------------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request arrived and a server transaction was created for it (not for ACK)."""

    request: Request
    peer: Peer
    transaction_id: str


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response matched one of our client transactions (retransmitted 2xx included).

    ``peer`` is where the response came from (its connection for TCP/TLS/WS): a TU that
    answers challenges checks it against where it sent the request (SECURITY.md, "credential
    leaks").
    """

    response: Response
    transaction_id: str
    peer: Peer
    #: Whom the TU gave the transaction to (:meth:`Endpoint.send_request`'s ``owner``).
    owner: Any = None


@dataclass(frozen=True, slots=True)
class ForeignChallengeDropped:
    """A 401/407 matched one of our client transactions but came from another address than
    the one the request went to (``sent_to``).  The transaction never saw it — it still waits
    for the real answer — and nobody may answer it; the TU logs it (a security event)."""

    response: Response
    transaction_id: str
    peer: Peer
    sent_to: Peer


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B/F (client: no final response) or Timer H (IST: no ACK for a non-2xx) fired."""

    transaction_id: str
    owner: Any = None


@dataclass(frozen=True, slots=True)
class TransportErrored:
    """The transport failed while the transaction needed it (§17.1.4, §17.2.4)."""

    transaction_id: str
    owner: Any = None


@dataclass(frozen=True, slots=True)
class RequestCancelled:
    """A CANCEL matched a pending INVITE server transaction; the endpoint already sent 487."""

    transaction_id: str
    owner: Any = None


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK outside any server transaction (the ACK for a 2xx, §13.3.1.4, §17.2.1)."""

    request: Request
    peer: Peer


@dataclass(frozen=True, slots=True)
class AckTimedOut:
    """We retransmitted a 2xx to INVITE for 64*T1 without any ACK (§13.3.1.4): send a BYE."""

    transaction_id: str
    owner: Any = None


Event = (
    RequestReceived
    | ResponseReceived
    | TransactionTimedOut
    | TransportErrored
    | RequestCancelled
    | AckReceived
    | AckTimedOut
    | ForeignChallengeDropped
)


# ------------------------------------------------------------------------------ states, inputs
class State(FastEnum):
    """Transaction states (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2; RFC 6026 Accepted)."""

    IDLE = "idle"  # created, START not yet applied
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class Input(FastEnum):
    """What can happen to a transaction.  Timers double as timer identifiers."""

    START = "start"  # client: the TU hands over the request; server: the request arrived
    REQUEST = "request"  # server: the request was retransmitted
    ACK = "ack"  # server: an ACK matched (IST only)
    RESPONSE_1XX = "1xx"  # client: received; server: from the TU
    RESPONSE_2XX = "2xx"
    RESPONSE_FINAL = "300-699"
    TRANSPORT_ERROR = "transport_error"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"


class Action(FastEnum):
    """What a transition does; each has one handler method on the transaction classes."""

    IGNORE = "ignore"
    SEND_REQUEST = "send_request"  # first transmission; start A/B or E/F
    RETRANSMIT_BACKOFF = "retransmit_backoff"  # A: x2; E: x2 capped at T2
    RETRANSMIT_T2 = "retransmit_t2"  # E in Proceeding: every T2
    PROCEED = "proceed"  # ICT first 1xx: stop A and B, pass
    PASS_PROVISIONAL = "pass_provisional"
    PASS_2XX = "pass_2xx"  # ICT -> Accepted, start M
    PASS_RESPONSE = "pass_response"  # no timer changes (2xx retransmission in Accepted)
    ACK_AND_PASS = "ack_and_pass"  # ICT: non-2xx final: ACK, pass, start D
    RESEND_ACK = "resend_ack"
    PASS_FINAL = "pass_final"  # NICT: stop E/F, pass, start K
    SEND_TRYING = "send_trying"  # IST creation
    ACCEPT_REQUEST = "accept_request"  # NIST creation: nothing to send yet
    SEND_RESPONSE = "send_response"
    SEND_2XX = "send_2xx"  # IST -> Accepted, start L
    SEND_FINAL = "send_final"  # IST: start G/H; NIST: start J
    RESEND_RESPONSE = "resend_response"
    RETRANSMIT_RESPONSE = "retransmit_response"  # Timer G
    CONFIRM = "confirm"  # IST ACK: stop G/H, start I
    PASS_ACK = "pass_ack"  # IST Accepted: ACK to the TU
    TIMEOUT = "timeout"  # report TransactionTimedOut, terminate
    REPORT_TRANSPORT_ERROR = "report_transport_error"
    TERMINATE = "terminate"  # silent end (D, I, J, K, L, M)


S, In, A = State, Input, Action
Table = dict[tuple[State, Input], tuple[Action, State]]

#: RFC 3261 §17.1.1.2 figure 5 with RFC 6026 §8.4 figure 5 (Accepted, Timer M).
ICT_TABLE: Table = {
    (S.IDLE, In.START): (A.SEND_REQUEST, S.CALLING),
    (S.CALLING, In.TIMER_A): (A.RETRANSMIT_BACKOFF, S.CALLING),
    (S.CALLING, In.TIMER_B): (A.TIMEOUT, S.TERMINATED),
    (S.CALLING, In.RESPONSE_1XX): (A.PROCEED, S.PROCEEDING),
    (S.CALLING, In.RESPONSE_2XX): (A.PASS_2XX, S.ACCEPTED),
    (S.CALLING, In.RESPONSE_FINAL): (A.ACK_AND_PASS, S.COMPLETED),
    (S.CALLING, In.TRANSPORT_ERROR): (A.REPORT_TRANSPORT_ERROR, S.TERMINATED),
    (S.PROCEEDING, In.RESPONSE_1XX): (A.PASS_PROVISIONAL, S.PROCEEDING),
    (S.PROCEEDING, In.RESPONSE_2XX): (A.PASS_2XX, S.ACCEPTED),
    (S.PROCEEDING, In.RESPONSE_FINAL): (A.ACK_AND_PASS, S.COMPLETED),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (A.REPORT_TRANSPORT_ERROR, S.TERMINATED),
    # Timer B is re-armed in Proceeding only once we sent a CANCEL (§9.1: give up 64*T1 later).
    (S.PROCEEDING, In.TIMER_B): (A.TIMEOUT, S.TERMINATED),
    (S.COMPLETED, In.RESPONSE_FINAL): (A.RESEND_ACK, S.COMPLETED),
    (S.COMPLETED, In.TRANSPORT_ERROR): (A.REPORT_TRANSPORT_ERROR, S.TERMINATED),
    (S.COMPLETED, In.TIMER_D): (A.TERMINATE, S.TERMINATED),
    (S.ACCEPTED, In.RESPONSE_2XX): (A.PASS_RESPONSE, S.ACCEPTED),
    (S.ACCEPTED, In.TIMER_M): (A.TERMINATE, S.TERMINATED),
}

#: RFC 3261 §17.1.2.2 figure 6.
NICT_TABLE: Table = {
    (S.IDLE, In.START): (A.SEND_REQUEST, S.TRYING),
    (S.TRYING, In.TIMER_E): (A.RETRANSMIT_BACKOFF, S.TRYING),
    (S.TRYING, In.TIMER_F): (A.TIMEOUT, S.TERMINATED),
    (S.TRYING, In.TRANSPORT_ERROR): (A.REPORT_TRANSPORT_ERROR, S.TERMINATED),
    (S.TRYING, In.RESPONSE_1XX): (A.PASS_PROVISIONAL, S.PROCEEDING),
    (S.TRYING, In.RESPONSE_2XX): (A.PASS_FINAL, S.COMPLETED),
    (S.TRYING, In.RESPONSE_FINAL): (A.PASS_FINAL, S.COMPLETED),
    (S.PROCEEDING, In.TIMER_E): (A.RETRANSMIT_T2, S.PROCEEDING),
    (S.PROCEEDING, In.TIMER_F): (A.TIMEOUT, S.TERMINATED),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (A.REPORT_TRANSPORT_ERROR, S.TERMINATED),
    (S.PROCEEDING, In.RESPONSE_1XX): (A.PASS_PROVISIONAL, S.PROCEEDING),
    (S.PROCEEDING, In.RESPONSE_2XX): (A.PASS_FINAL, S.COMPLETED),
    (S.PROCEEDING, In.RESPONSE_FINAL): (A.PASS_FINAL, S.COMPLETED),
    (S.COMPLETED, In.TIMER_K): (A.TERMINATE, S.TERMINATED),
}

#: RFC 3261 §17.2.1 figure 7 with RFC 6026 §7.1 figure 7 (Accepted, Timer L).
IST_TABLE: Table = {
    (S.IDLE, In.START): (A.SEND_TRYING, S.PROCEEDING),
    (S.PROCEEDING, In.REQUEST): (A.RESEND_RESPONSE, S.PROCEEDING),
    (S.PROCEEDING, In.RESPONSE_1XX): (A.SEND_RESPONSE, S.PROCEEDING),
    (S.PROCEEDING, In.RESPONSE_2XX): (A.SEND_2XX, S.ACCEPTED),
    (S.PROCEEDING, In.RESPONSE_FINAL): (A.SEND_FINAL, S.COMPLETED),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (A.REPORT_TRANSPORT_ERROR, S.TERMINATED),
    (S.COMPLETED, In.REQUEST): (A.RESEND_RESPONSE, S.COMPLETED),
    (S.COMPLETED, In.TIMER_G): (A.RETRANSMIT_RESPONSE, S.COMPLETED),
    (S.COMPLETED, In.TIMER_H): (A.TIMEOUT, S.TERMINATED),
    (S.COMPLETED, In.ACK): (A.CONFIRM, S.CONFIRMED),
    (S.COMPLETED, In.TRANSPORT_ERROR): (A.REPORT_TRANSPORT_ERROR, S.TERMINATED),
    (S.CONFIRMED, In.ACK): (A.IGNORE, S.CONFIRMED),
    (S.CONFIRMED, In.REQUEST): (A.IGNORE, S.CONFIRMED),
    (S.CONFIRMED, In.TIMER_I): (A.TERMINATE, S.TERMINATED),
    (S.ACCEPTED, In.REQUEST): (A.IGNORE, S.ACCEPTED),
    (S.ACCEPTED, In.ACK): (A.PASS_ACK, S.ACCEPTED),
    (S.ACCEPTED, In.RESPONSE_2XX): (A.SEND_RESPONSE, S.ACCEPTED),
    (S.ACCEPTED, In.TRANSPORT_ERROR): (A.REPORT_TRANSPORT_ERROR, S.ACCEPTED),
    (S.ACCEPTED, In.TIMER_L): (A.TERMINATE, S.TERMINATED),
}

#: RFC 3261 §17.2.2 figure 8.
NIST_TABLE: Table = {
    (S.IDLE, In.START): (A.ACCEPT_REQUEST, S.TRYING),
    (S.TRYING, In.REQUEST): (A.IGNORE, S.TRYING),
    (S.TRYING, In.RESPONSE_1XX): (A.SEND_RESPONSE, S.PROCEEDING),
    (S.TRYING, In.RESPONSE_2XX): (A.SEND_FINAL, S.COMPLETED),
    (S.TRYING, In.RESPONSE_FINAL): (A.SEND_FINAL, S.COMPLETED),
    (S.PROCEEDING, In.REQUEST): (A.RESEND_RESPONSE, S.PROCEEDING),
    (S.PROCEEDING, In.RESPONSE_1XX): (A.SEND_RESPONSE, S.PROCEEDING),
    (S.PROCEEDING, In.RESPONSE_2XX): (A.SEND_FINAL, S.COMPLETED),
    (S.PROCEEDING, In.RESPONSE_FINAL): (A.SEND_FINAL, S.COMPLETED),
    (S.PROCEEDING, In.TRANSPORT_ERROR): (A.REPORT_TRANSPORT_ERROR, S.TERMINATED),
    (S.COMPLETED, In.REQUEST): (A.RESEND_RESPONSE, S.COMPLETED),
    (S.COMPLETED, In.TRANSPORT_ERROR): (A.REPORT_TRANSPORT_ERROR, S.TERMINATED),
    (S.COMPLETED, In.TIMER_J): (A.TERMINATE, S.TERMINATED),
}

#: Inputs that come from the TU; a missing pair with one of these is the caller's mistake.
CLIENT_TU_INPUTS = frozenset({In.START})
SERVER_TU_INPUTS = frozenset({In.START, In.RESPONSE_1XX, In.RESPONSE_2XX, In.RESPONSE_FINAL})

TIMERS = (
    In.TIMER_A, In.TIMER_B, In.TIMER_D, In.TIMER_E, In.TIMER_F, In.TIMER_G, In.TIMER_H,
    In.TIMER_I, In.TIMER_J, In.TIMER_K, In.TIMER_L, In.TIMER_M,
)  # fmt: skip


def lookup(
    table: Mapping[tuple[State, Input], tuple[Action, State]],
    tu_inputs: frozenset[Input],
    state: State,
    event: Input,
) -> tuple[Action, State]:
    """The transition for ``(state, event)``, with the defined meaning of a missing pair.

    A missing pair with a TU input raises :class:`LocalProtocolError` (state unchanged); with a
    network or timer input it is ``(Action.IGNORE, state)``: absorbed, state unchanged.
    """
    entry = table.get((state, event))
    if entry is not None:
        return entry
    if event in tu_inputs:
        raise LocalProtocolError(f"{event.value} is not allowed in state {state.value}")
    return (Action.IGNORE, state)


#: Action -> the name of the transaction method that performs it.
_HANDLER_NAMES: dict[Action, str] = {action: "_" + action.value for action in Action}


def response_input(status: int) -> Input:
    """Classify a status code into the input it is for a transaction."""
    if status < 200:
        return In.RESPONSE_1XX
    if status < 300:
        return In.RESPONSE_2XX
    return In.RESPONSE_FINAL


# ------------------------------------------------------------------------------------ timers
@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 table 4 base values.  T1 is the RTT estimate (default 500 ms)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    #: Timer D for unreliable transports: "> 32 s" (§17.1.1.2); 0 for reliable ones.
    timer_d: float = 32.0

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 >= 0 and self.timer_d >= 0):
            raise ValueError("timer values must satisfy t1 > 0, t2 >= t1, t4 >= 0, timer_d >= 0")


# ---------------------------------------------------------------------------------- matching
def client_key(branch: str, method: str) -> tuple[str, str]:
    """§17.1.3: a response matches the client transaction with its top-Via branch and CSeq
    method (CANCEL shares the INVITE's branch but is its own transaction)."""
    return (branch, method)


ServerKey = tuple[object, ...]


def server_key(request: Request | Response) -> ServerKey:
    """§17.2.3 matching key of the server transaction a request (or our response) belongs to.

    With an RFC 3261 branch: (branch, sent-by host, sent-by port, method) where ACK counts as
    INVITE.  Without the magic cookie (RFC 2543 peers) the key is built from Call-ID, From tag,
    CSeq number, method and the top Via; the Request-URI and To tag are compared separately
    (:meth:`ServerTransaction.matches_2543`) because a response carries no Request-URI.
    CANCEL keeps its own method, so it never collides with the INVITE it cancels.  Raises
    ParseError when the needed headers are missing or invalid.
    """
    via = request.top_via
    branch = via.branch
    method = request.cseq.method
    if isinstance(request, Request):
        method = request.method
    if method == "ACK":
        method = "INVITE"
    host = via.host.lower()
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, host, via.port, method)
    return (None, request.call_id, request.from_tag, request.cseq.seq, method, host, via.port, branch)


def with_method(key: ServerKey, method: str) -> ServerKey:
    """The same key for another method (CANCEL looks up the INVITE it cancels, §9.2)."""
    if key[0] is None:
        return (*key[:4], method, *key[5:])
    return (*key[:3], method)


# ---------------------------------------------------------------------------------- the host
class TransactionHost(Protocol):
    """What a transaction needs from its owner (the :class:`~sipcore.endpoint.Endpoint`)."""

    timers: TimerConfig

    def transmit(self, data: bytes, peer: Peer, retransmission: bool) -> None:
        """Queue bytes for the transport."""

    def schedule(self, tx: Transaction, timer: Input, deadline: float) -> None:
        """Arm ``timer`` of ``tx`` at ``deadline`` (an earlier arming of it becomes stale)."""

    def unschedule(self, token: object) -> None:
        """Forget an armed timer (its token from ``tx.timers``): stopped, or the transaction
        ended. The host must then hold no reference to the transaction for it."""

    def post(self, event: Event) -> None:
        """Hand an event to the TU."""

    def terminated(self, tx: Transaction) -> None:
        """The transaction reached Terminated: forget it."""


# ------------------------------------------------------------------------------ transactions
class Transaction:
    """Common machinery: the table walk, timers and transmission."""

    TABLE: ClassVar[Table]
    TU_INPUTS: ClassVar[frozenset[Input]]

    __slots__ = (
        "_host",
        "_interval",
        "id",
        "key",
        "last_response",
        "owner",
        "peer",
        "reliable",
        "request",
        "state",
        "timers",
    )

    def __init__(
        self, host: TransactionHost, tx_id: str, key: object, request: Request, peer: Peer
    ) -> None:
        self._host = host
        self.id = tx_id
        self.key = key
        self.request = request
        self.peer = peer
        self.reliable = peer.reliable
        self.state = State.IDLE
        self.last_response: Response | None = None
        #: The TU's handle for this transaction, carried by its events (the TU needs no table
        #: of its own from transaction ids to whatever handles them).
        self.owner: object = None
        #: Armed timers: timer -> token given by the host's heap (lazy deletion there).
        self.timers: dict[Input, object] = {}
        #: Current retransmission interval of Timer A/E/G.
        self._interval = host.timers.t1

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.request.method} {self.state.value}>"

    def handle(self, event: Input, now: float, message: Response | None = None) -> Action:
        """Apply one input: look up the transition, switch state, run the action."""
        entry = self.TABLE.get((self.state, event))
        if entry is None:  # not in the table: what that means is lookup()'s to say
            entry = lookup(self.TABLE, self.TU_INPUTS, self.state, event)
        action, next_state = entry
        self.state = next_state
        if action is not Action.IGNORE:
            getattr(self, _HANDLER_NAMES[action])(now, message)
        if next_state is State.TERMINATED:
            for token in self.timers.values():
                self._host.unschedule(token)
            self.timers.clear()
            self._host.terminated(self)
        return action

    def fire(self, timer: Input, now: float) -> None:
        """A timer armed by this transaction expired (called by the host)."""
        self.timers.pop(timer, None)
        self.handle(timer, now)

    # -- helpers
    def _start(self, timer: Input, delay: float, now: float) -> None:
        if delay <= 0:
            # A zero timer (reliable transports) fires at once, §17: "Timer K = 0" etc.
            self._stop(timer)
            self.handle(timer, now)
            return
        self._host.schedule(self, timer, now + delay)

    def _stop(self, *timers: Input) -> None:
        for timer in timers:
            token = self.timers.pop(timer, None)
            if token is not None:
                self._host.unschedule(token)

    # -- common actions
    def _timeout(self, now: float, message: Response | None) -> None:
        self._host.post(TransactionTimedOut(self.id, self.owner))

    def _report_transport_error(self, now: float, message: Response | None) -> None:
        self._host.post(TransportErrored(self.id, self.owner))

    def _terminate(self, now: float, message: Response | None) -> None:
        pass

    def _retire(self) -> None:
        """Drop the parsed messages once only retransmissions remain to absorb or pass.

        A transaction that has its final response waits out Timer D/I/J/K/L/M (up to 64*T1 =
        32 s) matching retransmissions by key only. Keeping the parsed request (and response)
        for that time holds dozens of objects per transaction: at hundreds of calls a second
        that is hundreds of thousands of live objects the garbage collector rescans, with
        pauses of 100 ms and more (measured). RFC 2543 peers (no magic-cookie branch, key[0]
        None) keep theirs: their matching compares the Request-URI and To tag.
        """
        if self.key[0] is not None:  # type: ignore[index]
            self.request = RETIRED_REQUEST


class ClientTransaction(Transaction):
    """ICT/NICT common parts: the serialized request is kept for retransmission."""

    TU_INPUTS = CLIENT_TU_INPUTS
    __slots__ = ("_data", "ack", "cancel_reason", "cancel_requested", "cancel_sent", "source")

    def __init__(
        self, host: TransactionHost, tx_id: str, key: object, request: Request, peer: Peer
    ) -> None:
        super().__init__(host, tx_id, key, request, peer)
        self._data = request.serialize()
        #: The ACK we generated for a non-2xx final (ICT only), kept to resend it.
        self.ack: bytes | None = None
        #: cancel() was called before any provisional response arrived (§9.1: wait for one).
        self.cancel_requested = False
        #: The CANCEL went out (§9.1: at most one per INVITE).
        self.cancel_sent = False
        #: Reason header value for the CANCEL (RFC 3326), if any.
        self.cancel_reason: str | None = None
        #: Where the response being handled came from (reported in ResponseReceived.peer).
        self.source = peer

    def start(self, now: float) -> None:
        """Hand the request to the transaction: first transmission and timers."""
        self.handle(In.START, now)

    def receive_response(self, response: Response, now: float, source: Peer) -> Action:
        """A response from ``source`` matched this transaction."""
        self.source = source
        return self.handle(response_input(response.status), now, response)

    def _retransmit(self) -> None:
        self._host.transmit(self._data, self.peer, True)

    def _retire(self) -> None:
        # A final response arrived: no more retransmissions of the request, no CANCEL.
        super()._retire()
        self._data = b""

    def _pass_provisional(self, now: float, message: Response | None) -> None:
        assert message is not None
        self._host.post(ResponseReceived(message, self.id, self.source, self.owner))

    def _pass_response(self, now: float, message: Response | None) -> None:
        assert message is not None
        self._host.post(ResponseReceived(message, self.id, self.source, self.owner))


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.1 with RFC 6026 §8.4."""

    TABLE = ICT_TABLE
    __slots__ = ()

    def _send_request(self, now: float, message: Response | None) -> None:
        self._host.transmit(self._data, self.peer, False)
        if not self.reliable:
            self._start(In.TIMER_A, self._interval, now)
        self._start(In.TIMER_B, 64 * self._host.timers.t1, now)

    def _retransmit_backoff(self, now: float, message: Response | None) -> None:
        self._retransmit()
        self._interval *= 2  # Timer A doubles without a cap (§17.1.1.2)
        self._start(In.TIMER_A, self._interval, now)

    def _proceed(self, now: float, message: Response | None) -> None:
        # Proceeding: no more retransmissions, and Timer B only guards Calling (§17.1.1.2) until
        # a CANCEL re-arms it (arm_cancel_guard).
        self._stop(In.TIMER_A, In.TIMER_B)
        self._pass_provisional(now, message)

    def _pass_2xx(self, now: float, message: Response | None) -> None:
        self._stop(In.TIMER_A, In.TIMER_B)
        assert message is not None
        self._host.post(ResponseReceived(message, self.id, self.source, self.owner))
        self._retire()
        self._start(In.TIMER_M, 64 * self._host.timers.t1, now)

    def _ack_and_pass(self, now: float, message: Response | None) -> None:
        assert message is not None
        self._stop(In.TIMER_A, In.TIMER_B)
        self.ack = build_ack(self.request, message).serialize()
        self._host.transmit(self.ack, self.peer, False)
        self._host.post(ResponseReceived(message, self.id, self.source, self.owner))
        self._retire()
        self._start(In.TIMER_D, 0.0 if self.reliable else self._host.timers.timer_d, now)

    def _resend_ack(self, now: float, message: Response | None) -> None:
        if self.ack is not None:
            self._host.transmit(self.ack, self.peer, True)

    def arm_cancel_guard(self, now: float) -> None:
        """§9.1: after sending CANCEL, give the INVITE 64*T1 more for a final response."""
        if self.state is State.PROCEEDING:
            self._start(In.TIMER_B, 64 * self._host.timers.t1, now)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.2."""

    TABLE = NICT_TABLE
    __slots__ = ()

    def _send_request(self, now: float, message: Response | None) -> None:
        self._host.transmit(self._data, self.peer, False)
        if not self.reliable:
            self._start(In.TIMER_E, self._interval, now)
        self._start(In.TIMER_F, 64 * self._host.timers.t1, now)

    def _retransmit_backoff(self, now: float, message: Response | None) -> None:
        self._retransmit()
        self._interval = min(2 * self._interval, self._host.timers.t2)
        self._start(In.TIMER_E, self._interval, now)

    def _retransmit_t2(self, now: float, message: Response | None) -> None:
        self._retransmit()
        self._interval = self._host.timers.t2
        self._start(In.TIMER_E, self._interval, now)

    def _pass_final(self, now: float, message: Response | None) -> None:
        assert message is not None
        self._stop(In.TIMER_E, In.TIMER_F)
        self._host.post(ResponseReceived(message, self.id, self.source, self.owner))
        self._retire()
        self._start(In.TIMER_K, 0.0 if self.reliable else self._host.timers.t4, now)


class ServerTransaction(Transaction):
    """IST/NIST common parts: the last response is kept serialized for retransmission."""

    TU_INPUTS = SERVER_TU_INPUTS
    __slots__ = ("_response_data", "merge_key", "response_peer", "send_trying", "sent_to_tag")

    def __init__(
        self,
        host: TransactionHost,
        tx_id: str,
        key: object,
        request: Request,
        peer: Peer,
        response_peer: Peer | None = None,
    ) -> None:
        super().__init__(host, tx_id, key, request, peer)
        self._response_data: bytes | None = None
        #: The To tag of the last response sent (kept when the parsed response is retired).
        self.sent_to_tag: str | None = None
        #: Where responses go (§18.2.2): the connection, or received/rport of the top Via.
        self.response_peer = response_peer if response_peer is not None else peer
        #: IST: answer 100 Trying on creation (off when the endpoint rejects at once).
        self.send_trying = True
        #: The owner's §8.2.2.2 merged-request key for this transaction, if it registered one.
        self.merge_key: tuple[str, str | None, int, str] | None = None

    def start(self, now: float) -> None:
        """The request arrived and created this transaction."""
        self.handle(In.START, now)

    def receive_request(self, now: float) -> Action:
        """The request was retransmitted: resend the last response (or ignore)."""
        return self.handle(In.REQUEST, now)

    def send_response(self, response: Response, now: float) -> Action:
        """The TU answers through the transaction (§17.2.1, §17.2.2)."""
        return self.handle(response_input(response.status), now, response)

    def matches_2543(self, request: Request) -> bool:
        """The parts of RFC 3261 §17.2.3's RFC 2543 rule that :func:`server_key` leaves out."""
        if str(request.uri) != str(self.request.uri):
            return False
        if request.method == "ACK":
            sent = self.last_response
            return sent is not None and request.to_tag == sent.to_tag
        return request.to_tag == self.request.to_tag

    @property
    def sent_data(self) -> bytes | None:
        """The wire form of the last response sent (kept for retransmissions), or None."""
        return self._response_data

    def _send(self, response: Response, retransmission: bool = False) -> None:
        self.last_response = response
        self.sent_to_tag = response.to_tag
        self._response_data = response.serialize()
        self._host.transmit(self._response_data, self.response_peer, retransmission)

    def _send_response(self, now: float, message: Response | None) -> None:
        assert message is not None
        self._send(message)

    def _retire(self) -> None:
        super()._retire()
        if self.key[0] is not None:  # type: ignore[index]
            self.last_response = None  # sent_to_tag and the serialized copy remain

    def _resend_response(self, now: float, message: Response | None) -> None:
        if self._response_data is not None:
            self._host.transmit(self._response_data, self.response_peer, True)


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.1 with RFC 6026 §7.1."""

    TABLE = IST_TABLE
    __slots__ = ("_ack",)
    _ack: Request | None

    def receive_ack(self, ack: Request, now: float) -> Action:
        """An ACK matched (non-2xx: confirms; Accepted: handed to the TU as AckReceived)."""
        self._ack = ack
        try:
            return self.handle(In.ACK, now)
        finally:
            self._ack = None  # passed on or absorbed: not kept for the rest of Timer L/I

    def _send_trying(self, now: float, message: Response | None) -> None:
        # §17.2.1: 100 Trying unless the TU answers within 200 ms; we cannot know, so at once
        # (or, with the endpoint's trying_delay, once the TU has had the request).
        if self.send_trying:
            self._send(make_response(self.request, 100))

    def handle_trying(self, now: float) -> None:
        """Send the 100 Trying that was held at creation (still Proceeding, nothing sent)."""
        self._send_trying(now, None)

    def _send_2xx(self, now: float, message: Response | None) -> None:
        assert message is not None
        self._send(message)
        self._retire()
        self._start(In.TIMER_L, 64 * self._host.timers.t1, now)

    def _send_final(self, now: float, message: Response | None) -> None:
        assert message is not None
        self._send(message)
        self._retire()
        if not self.reliable:
            self._start(In.TIMER_G, self._interval, now)
        self._start(In.TIMER_H, 64 * self._host.timers.t1, now)

    def _retransmit_response(self, now: float, message: Response | None) -> None:
        self._resend_response(now, message)
        self._interval = min(2 * self._interval, self._host.timers.t2)
        self._start(In.TIMER_G, self._interval, now)

    def _confirm(self, now: float, message: Response | None) -> None:
        self._stop(In.TIMER_G, In.TIMER_H)
        self._start(In.TIMER_I, 0.0 if self.reliable else self._host.timers.t4, now)

    def _pass_ack(self, now: float, message: Response | None) -> None:
        assert self._ack is not None
        self._host.post(AckReceived(self._ack, self.peer))


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.2."""

    TABLE = NIST_TABLE
    __slots__ = ()

    def _accept_request(self, now: float, message: Response | None) -> None:
        pass

    def _send_final(self, now: float, message: Response | None) -> None:
        assert message is not None
        self._send(message)
        self._retire()  # Completed only absorbs retransmissions for Timer J
        self._start(In.TIMER_J, 0.0 if self.reliable else 64 * self._host.timers.t1, now)


#: Stands in for the request of a transaction that has its final response (see _retire).
RETIRED_REQUEST = Request("RETIRED", "sip:retired.invalid", Headers())


# ------------------------------------------------------------------ requests built by the stack
def _copy_for(request: Request, method: str, to: str) -> Request:
    """The ACK/CANCEL shape shared by §17.1.1.3 and §9.1: same Request-URI, Call-ID, From,
    CSeq number and top Via (hence branch); Route copied; one Max-Forwards."""
    headers = Headers()
    headers.add("Via", request.headers.get_all("Via")[0])
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.get("From") or "")
    headers.add("To", to)
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq.seq} {method}")
    return Request(method, request.uri, headers)


def build_ack(request: Request, response: Response) -> Request:
    """§17.1.1.3: the ACK the ICT sends for a non-2xx final (To from the response)."""
    return _copy_for(request, "ACK", response.headers.get("To") or "")


def build_cancel(request: Request, reason: str | None = None) -> Request:
    """§9.1: CANCEL for a pending INVITE (To from the INVITE; optional RFC 3326 Reason)."""
    cancel = _copy_for(request, "CANCEL", request.headers.get("To") or "")
    if reason:
        cancel.headers.add("Reason", reason)
    return cancel
