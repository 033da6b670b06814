"""The sans-IO SIP endpoint: transport layer (§18) + transaction layer (§17) + the checks every
UAS core makes before its TU sees a request (§8.2, §9.2, §11, §16.3).

Theory of operation
-------------------
The asyncio adapter (``sipcore.aio``) owns the sockets and one timer handle and drives an
:class:`Endpoint` the aioquic way: it feeds every received message to
:meth:`Endpoint.receive_datagram` (one UDP datagram, one WebSocket message or one framed stream
message), drains :meth:`Endpoint.data_to_send` and :meth:`Endpoint.events`, and re-arms its timer
from :meth:`Endpoint.get_timer`, calling :meth:`Endpoint.handle_timer` when it expires.  Nothing
here reads a clock: every entry point takes ``now``.

On receipt (§18.2.1) the endpoint parses the message, stamps ``received``/``rport`` on the top Via
(RFC 3581) and matches it to a transaction (:mod:`sipcore.transaction`).  Retransmissions are
absorbed by the transactions.  A new request is checked in the order of §8.2: Max-Forwards 0
(483), a request that looped back to us (482), method (405 + Allow), merged requests (§8.2.2.2,
482), Require (420 + Unsupported), Content-Type (415 + Accept); OPTIONS is answered here (§11.2)
when ``answer_options`` is set, CANCEL is answered here (§9.2: 200, then 487 for the INVITE and a
:class:`RequestCancelled` event; 481 when nothing matches).  Everything else reaches the TU as
:class:`RequestReceived`.  The ACK for a 2xx is outside any transaction and reaches the TU as
:class:`AckReceived`.  ``RemoteProtocolError`` from anywhere below becomes a response in exactly
one place (:meth:`Endpoint.receive_datagram`); a message too broken for a response is dropped
and counted.  Nothing raised on network input leaves this class.

Responses go back over the connection the request came on (``Peer.conn_id``) for reliable
transports, else to the source address and, with ``rport``, the source port (§18.2.2, RFC 3581).

The UAS core's duty to retransmit a 2xx to INVITE until the ACK arrives (§13.3.1.4, T1 doubling
to T2, give up after 64*T1) is done here too (``retransmit_2xx``), so that no TU has to; giving up
posts :class:`AckTimedOut` (the TU should then send BYE).

Timers live in one heap with lazy deletion: a transaction forgets a timer by dropping its token,
the heap entry is skipped when it surfaces, and the heap is compacted when stale entries dominate.
"""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sipcore.errors import LocalProtocolError, ParseError, RemoteProtocolError
from sipcore.headers import canonical_name
from sipcore.message import (
    Request,
    Response,
    Via,
    make_response,
    new_branch,
    new_tag,
    parse_message,
    parse_via,
)
from sipcore.transaction import (
    MAGIC_COOKIE,
    AckReceived,
    AckTimedOut,
    ClientTransaction,
    Event,
    ForeignChallengeDropped,
    Input,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    RequestCancelled,
    RequestReceived,
    ResponseReceived,
    ServerKey,
    ServerTransaction,
    State,
    TimerConfig,
    Transaction,
    TransactionTimedOut,
    TransportErrored,
    build_cancel,
    server_key,
    with_method,
)
from sipcore.transport import Peer

__all__ = [
    "AckReceived",
    "AckTimedOut",
    "Endpoint",
    "EndpointConfig",
    "Event",
    "ForeignChallengeDropped",
    "RequestCancelled",
    "RequestReceived",
    "ResponseReceived",
    "TransactionTimedOut",
    "TransportErrored",
    "came_from",
]

DEFAULT_ALLOW = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "UPDATE", "INFO", "REFER",
    "NOTIFY", "SUBSCRIBE", "MESSAGE",
})  # fmt: skip
DEFAULT_ACCEPT = frozenset({
    "application/sdp", "text/plain", "message/sipfrag", "application/dtmf-relay",
    "application/simple-message-summary", "application/pidf+xml", "message/cpim",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """Configuration of an :class:`Endpoint` (frozen).

    ``sent_by`` maps a transport name (``"udp"``, ``"tcp"``, ``"tls"``, ``"ws"``, ``"wss"``) to
    the ``(host, port)`` we write into our Via headers for it.
    """

    sent_by: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    user_agent: str = "asyncpbx"
    #: Methods the TU handles (ACK and CANCEL are always handled; OPTIONS when answer_options).
    allow: frozenset[str] = DEFAULT_ALLOW
    #: Option tags we support (Require check, §8.2.2.3) and advertise in Supported.
    supported: frozenset[str] = frozenset()
    #: Content types accepted in request bodies (§8.2.3), lower-case ``type/subtype``.
    accept: frozenset[str] = DEFAULT_ACCEPT
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    #: Answer OPTIONS here with 200 + Allow/Accept/Supported (§11.2).
    answer_options: bool = True
    #: Retransmit 2xx to INVITE until ACK (§13.3.1.4) and post AckTimedOut after 64*T1.
    retransmit_2xx: bool = True
    #: Hold an INVITE's 100 Trying for the TU (see :meth:`Endpoint.flush_trying`); §17.2.1
    #: asks for the 100 only when the TU will not respond within 200 ms. ``None``: the 100
    #: goes out when the transaction starts. ``0``: once the TU has seen the request — a TU
    #: that answers at once (a 407 challenge, a 404, a 486) spares the peer a useless 100 and
    #: us a message. ``> 0`` (at most 0.2): that long after the INVITE arrived, unless the TU
    #: sent a provisional or final response by then — a B2BUA relaying the callee's 180/183
    #: within that time sends no 100 at all. A retransmitted INVITE gets a held 100 at once.
    trying_delay: float | None = None


class _Pending2xx:
    """A 2xx to INVITE waiting for its ACK (§13.3.1.4).  Timer G/H shapes: retransmit at T1
    doubling to T2 (unreliable only), give up after 64*T1."""

    __slots__ = ("data", "interval", "key", "owner", "peer", "timers", "tx_id")

    def __init__(self, key: tuple[str, str | None, str | None, int], tx_id: str,
                 data: bytes, peer: Peer, interval: float, owner: object) -> None:  # fmt: skip
        self.key = key
        self.tx_id = tx_id
        self.owner = owner
        self.data = data
        self.peer = peer
        self.interval = interval
        self.timers: dict[Input, object] = {}


_Timed = Transaction | _Pending2xx
_REQUEST_LINE = re.compile(r"([A-Za-z0-9.!%*_+`'~-]+) +\S+ +SIP/2\.0 *$")
_CSEQ = re.compile(r"\s*\d{1,10}\s+[A-Za-z0-9.!%*_+`'~-]+\s*$")
_UNSAFE_REASON = re.compile(r"[^\x20-\x7e]")
# what a salvaged 400 never echoes from the request: control characters (UTF-8 is echoed as
# received, byte for byte)
_UNSAFE_ECHO = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STAT_KEYS = (
    "received", "sent", "retransmissions", "retransmissions_received", "parse_errors",
    "requests_received", "responses_received", "responses_sent", "stray_responses",
    "dropped", "internal_errors", "late_responses", "timeouts", "transport_errors",
    "rejected", "cancels_received", "acks_received", "ack_timeouts",
    "responses_received_1xx", "responses_received_2xx", "responses_received_3xx",
    "responses_received_4xx", "responses_received_5xx", "responses_received_6xx",
    "responses_sent_1xx", "responses_sent_2xx", "responses_sent_3xx",
    "responses_sent_4xx", "responses_sent_5xx", "responses_sent_6xx",
    "foreign_challenges",
)  # fmt: skip


def came_from(sent_to: Peer, source: Peer) -> bool:
    """Could a response from ``source`` come from where we sent the request (``sent_to``)?

    The same connection when both name one (TCP/TLS/WS), else the same transport, address and
    port. A ``sent_to`` host that is a DNS name cannot be compared here (the transport resolved
    it): True, and a TU that cares (trunks) checks the source against what it knows.
    """
    if sent_to.conn_id is not None and source.conn_id is not None:
        return sent_to.conn_id == source.conn_id
    if sent_to.transport != source.transport or sent_to.port != source.port:
        return False
    expected = _ip(sent_to.host)
    return expected is None or expected == _ip(source.host)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:a.b.c.d from a dual-stack socket
    return address


def _clean_reason(reason: str) -> str:
    """A reason phrase safe for a status line (no CR/LF or control characters)."""
    return _UNSAFE_REASON.sub("?", reason)[:100].strip() or "Bad Request"


class Endpoint:
    """The sans-IO SIP endpoint (see the module docstring)."""

    def __init__(
        self,
        config: EndpointConfig,
        *,
        trace: Callable[[dict[str, object]], None] | None = None,
    ) -> None:
        self.config = config
        self.timers = TimerConfig(config.t1, config.t2, config.t4, config.timer_d)
        self._trace = trace
        self._out: list[tuple[bytes, Peer]] = []
        self._events: list[Event] = []
        #: (deadline, token) in deadline order; the token names an entry of _armed unless the
        #: timer was stopped since (lazy deletion). The heap itself holds no transaction: a
        #: stopped timer's owner is freed at once instead of lingering up to 64*T1 = 32 s, and
        #: tuples of a float and an int are not even tracked by the garbage collector.
        self._heap: list[tuple[float, int]] = []
        #: token -> (owner, timer) of every armed timer
        self._armed: dict[int, tuple[_Timed, Input]] = {}
        self._seq = 0
        self._next_id = 0
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._server: dict[ServerKey, ServerTransaction] = {}
        self._by_id: dict[str, Transaction] = {}
        #: (Call-ID, From tag, CSeq number, method) -> server tx, for §8.2.2.2 merged requests.
        self._merge: dict[tuple[str, str | None, int, str], ServerTransaction] = {}
        self._pending_2xx: dict[tuple[str, str | None, str | None, int], _Pending2xx] = {}
        #: (due time, tx) of new INVITEs whose 100 Trying waits for the TU (trying_delay);
        #: one fixed delay, so appended in due order.
        self._trying_due: deque[tuple[float, InviteServerTransaction]] = deque()
        self._local: set[tuple[str, int | None]] = set()
        for host, port in config.sent_by.values():
            self._local.add((host.lower(), port))
        allow = set(config.allow) | {"ACK", "CANCEL"}
        if config.answer_options:
            allow.add("OPTIONS")
        self._allow_set = frozenset(allow)
        self._allow = ", ".join(sorted(allow))
        self._accept = ", ".join(sorted(config.accept))
        self._supported = ", ".join(sorted(config.supported))
        self._stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)

    # ================================================================== the adapter's interface
    def receive_datagram(self, data: bytes, peer: Peer, now: float) -> None:
        """Feed one whole message received from ``peer``.  Never raises."""
        self._stats["received"] += 1
        try:
            message = parse_message(data)
        except ParseError as exc:
            self._stats["parse_errors"] += 1
            self._emit_trace("sip.parse_error", reason=exc.reason, host=peer.host)
            self._answer_unparseable(data, exc.reason, peer)
            return
        try:
            if isinstance(message, Request):
                self._receive_request(message, peer, now)
            else:
                self._receive_response(message, peer, now)
        except RemoteProtocolError as exc:
            # The one place where a remote protocol error becomes a response (DESIGN.md §4).
            if isinstance(message, Request):
                self._reject_stateless(message, data, exc, peer)
            else:
                self._stats["dropped"] += 1
        except Exception as exc:  # defence in depth: network input must never crash us
            self._stats["internal_errors"] += 1
            self._emit_trace("sip.internal_error", error=repr(exc), host=peer.host)

    def set_sent_by(self, transport: str, host: str, port: int) -> None:
        """Record the address actually bound for ``transport`` (a listener on port 0 learns
        its port only once bound): our Via sent-by and the §8.2.2.2 loop check use it."""
        sent_by = dict(self.config.sent_by)
        old = sent_by.get(transport)
        sent_by[transport] = (host, port)
        self.config = dataclasses.replace(self.config, sent_by=sent_by)
        if old is not None and old not in sent_by.values():
            self._local.discard((old[0].lower(), old[1]))
        self._local.add((host.lower(), port))

    def transport_failed(self, peer: Peer, now: float) -> None:
        """The transport to ``peer`` failed (connection lost, ICMP error, send error)."""
        for tx in list(self._by_id.values()):
            target = tx.response_peer if isinstance(tx, ServerTransaction) else tx.peer
            if (tx.peer == peer or target == peer) and tx.state is not State.TERMINATED:
                tx.handle(Input.TRANSPORT_ERROR, now)
        for pending in list(self._pending_2xx.values()):
            if pending.peer == peer:
                self._stop_2xx(pending)

    def send_request(self, request: Request, peer: Peer, now: float, *,
                     owner: object = None) -> str:
        """Send ``request`` to ``peer`` through a new client transaction; return its id.
        The transaction's events carry ``owner`` (whatever the TU routes them by).

        Adds our top Via (sent-by of ``peer.transport``, a fresh branch, ``rport``) when the
        request has none, Max-Forwards 70 and User-Agent when missing.  An ACK (for a 2xx,
        §13.2.2.4) is sent without a transaction; its returned id names nothing.
        Raises LocalProtocolError for a request we must not send.
        """
        headers = request.headers
        if "Via" not in headers:
            sent_by = self.config.sent_by.get(peer.transport)
            if sent_by is None:
                raise LocalProtocolError(f"no sent-by configured for transport {peer.transport}")
            branch = new_branch()
            headers.insert(
                "Via",
                f"SIP/2.0/{peer.via_transport} {sent_by[0]}:{sent_by[1]};branch={branch};rport",
            )
        else:
            try:
                got = request.top_via.branch
            except ParseError as exc:
                raise LocalProtocolError(f"bad Via in our own request: {exc.reason}") from None
            if got is None or not got.startswith(MAGIC_COOKIE):
                raise LocalProtocolError("our requests need an RFC 3261 branch")
            branch = got
        if "Max-Forwards" not in headers:
            headers.add("Max-Forwards", "70")
        if self.config.user_agent and "User-Agent" not in headers:
            headers.add("User-Agent", self.config.user_agent)
        try:
            cseq = request.cseq
            request.call_id  # noqa: B018 - validated here so the transaction cannot fail later
            request.from_  # noqa: B018 (From/To texts already seen are not parsed again)
            request.to  # noqa: B018
        except ParseError as exc:
            raise LocalProtocolError(f"incomplete request: {exc.reason}") from None
        if cseq.method != request.method:
            raise LocalProtocolError("CSeq method does not match the request method")
        tx_id = self._new_id()
        if request.method == "ACK":
            self._transmit(request.serialize(), peer, False)
            return tx_id
        key = (branch, request.method)
        if key in self._client:
            raise LocalProtocolError("branch already in use by a client transaction")
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        tx = cls(self, tx_id, key, request, peer)
        tx.owner = owner
        self._client[key] = tx
        self._by_id[tx_id] = tx
        tx.start(now)
        return tx_id

    def send_response(
        self, response: Response, now: float, *, transaction_id: str | None = None
    ) -> bool:
        """Send ``response`` through the server transaction of the request it answers.

        The transaction is found from the response's top Via and CSeq (or ``transaction_id``).
        Returns False (and counts ``late_responses``) when that transaction is gone or no longer
        accepts this response, e.g. after a CANCEL already answered the INVITE with 487; a 2xx to
        INVITE whose transaction has ended is still sent statelessly (§13.3.1.4).
        """
        tx: Transaction | None
        if transaction_id is not None:
            tx = self._by_id.get(transaction_id)
        else:
            try:
                key = server_key(response)
            except ParseError as exc:
                raise LocalProtocolError(f"response without usable Via/CSeq: {exc.reason}") from None
            tx = self._server.get(key)
        if not isinstance(tx, ServerTransaction):
            if 200 <= response.status < 300 and response.cseq.method == "INVITE":
                target = self._via_target(response)
                if target is not None:
                    self._count_sent(response.status)
                    self._transmit(response.serialize(), target, True)
                    return True
            self._late(response, "no transaction")
            return False
        try:
            tx.send_response(response, now)
        except LocalProtocolError:
            self._late(response, tx.state.value)
            return False
        self._count_sent(response.status)
        if (
            200 <= response.status < 300
            and isinstance(tx, InviteServerTransaction)
            and self.config.retransmit_2xx
        ):
            self._start_2xx(tx, response, now)
        return True

    def flush_trying(self, now: float) -> bool:
        """Send the held 100 Trying of every new INVITE that is due (``trying_delay`` after it
        arrived) and the TU has not answered yet (with a ``trying_delay``: call after the TU
        handled the events of this round; :meth:`handle_timer` calls it too). True when
        something was queued for :meth:`data_to_send`."""
        due = self._trying_due
        sent = False
        while due and due[0][0] <= now:
            sent = self._send_held_trying(due.popleft()[1], now) or sent
        return sent

    @staticmethod
    def _send_held_trying(tx: InviteServerTransaction, now: float) -> bool:
        if tx.send_trying or tx.state is not State.PROCEEDING or tx.last_response is not None:
            return False
        tx.send_trying = True
        tx.handle_trying(now)
        return True

    def cancel(self, transaction_id: str, now: float, reason: str | None = None) -> None:
        """Cancel a pending INVITE client transaction (§9.1).

        Before any provisional response the CANCEL is held until one arrives; after a final
        response it is not sent at all.  ``reason`` becomes a Reason header (RFC 3326), e.g.
        ``'SIP;cause=200;text="Call completed elsewhere"'``.  Unknown or finished transactions are
        ignored (the race with a final response is normal); a non-INVITE one is an error.
        """
        tx = self._by_id.get(transaction_id)
        if tx is None:
            return
        if not isinstance(tx, InviteClientTransaction):
            raise LocalProtocolError("only INVITE client transactions can be cancelled")
        if tx.cancel_requested:
            return
        tx.cancel_requested = True
        tx.cancel_reason = reason
        if tx.state is State.PROCEEDING:
            self._send_cancel(tx, now)

    def data_to_send(self) -> list[tuple[bytes, Peer]]:
        """Drain the datagrams/messages to transmit, in order."""
        out = self._out
        self._out = []
        return out

    def events(self) -> list[Event]:
        """Drain the events for the TU, in order."""
        out = self._events
        self._events = []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline at which :meth:`handle_timer` must be called, or None."""
        heap = self._heap
        armed = self._armed
        trying = self._trying_due[0][0] if self._trying_due else None
        while heap:
            at, seq = heap[0]
            if seq in armed:
                return at if trying is None or at < trying else trying
            heapq.heappop(heap)
        return trying

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        heap = self._heap
        armed = self._armed
        while heap and heap[0][0] <= now:
            entry = armed.pop(heapq.heappop(heap)[1], None)
            if entry is None:
                continue  # stopped since
            target, timer = entry
            if isinstance(target, _Pending2xx):
                self._fire_2xx(target, timer, now)
            else:
                try:
                    target.fire(timer, now)
                except Exception as exc:  # a bug must not stop the other timers
                    self._stats["internal_errors"] += 1
                    self._emit_trace("sip.internal_error", error=repr(exc), where="timer")
        self.flush_trying(now)

    def statistics(self) -> dict[str, int]:
        """Counters (received, sent, retransmissions, parse_errors, responses by class...) and
        the gauges ``transactions`` and ``timers``."""
        stats = dict(self._stats)
        stats["transactions"] = len(self._by_id)
        stats["timers"] = len(self._armed)
        return stats

    def set_owner(self, transaction_id: str, owner: object) -> bool:
        """Give a live (server) transaction to ``owner``: its later events (RequestCancelled,
        AckTimedOut for its 2xx) carry it. False when the transaction is gone."""
        tx = self._by_id.get(transaction_id)
        if tx is None:
            return False
        tx.owner = owner
        return True

    def transaction(self, transaction_id: str) -> Transaction | None:
        """The live transaction with that id (for inspection and tests), or None."""
        return self._by_id.get(transaction_id)

    # ============================================================ TransactionHost (for transactions)
    def transmit(self, data: bytes, peer: Peer, retransmission: bool) -> None:
        """Queue bytes for the adapter."""
        self._transmit(data, peer, retransmission)

    def schedule(self, tx: Transaction, timer: Input, deadline: float) -> None:
        """Arm a transaction timer."""
        self._schedule(tx, timer, deadline)

    def unschedule(self, token: object) -> None:
        """Forget an armed timer (stopped, or its transaction ended)."""
        self._armed.pop(token, None)  # type: ignore[call-overload]

    def post(self, event: Event) -> None:
        """Queue an event for the TU."""
        if isinstance(event, TransactionTimedOut):
            self._stats["timeouts"] += 1
            self._emit_trace("sip.tx.timeout", transaction_id=event.transaction_id)
        elif isinstance(event, TransportErrored):
            self._stats["transport_errors"] += 1
            self._emit_trace("sip.tx.transport_error", transaction_id=event.transaction_id)
        self._events.append(event)

    def terminated(self, tx: Transaction) -> None:
        """Forget a terminated transaction."""
        self._by_id.pop(tx.id, None)
        if isinstance(tx, ClientTransaction):
            if self._client.get(tx.key) is tx:  # type: ignore[call-overload]
                del self._client[tx.key]
            return
        assert isinstance(tx, ServerTransaction)
        if self._server.get(tx.key) is tx:  # type: ignore[call-overload]
            del self._server[tx.key]
        mkey = tx.merge_key
        if mkey is not None and self._merge.get(mkey) is tx:
            del self._merge[mkey]

    # ========================================================================= receive paths
    def _receive_request(self, request: Request, peer: Peer, now: float) -> None:
        self._stats["requests_received"] += 1
        # Parse the core headers now (Via, From, To, Call-ID, CSeq, Max-Forwards, Contact,
        # Expires) so that a broken one is answered 400 here and never surprises the TU.
        # Stamp first: a header mutation clears the message's parsed-header cache, so doing it
        # after validate() would parse everything twice.
        method = request.method
        if method == "ACK":
            # Nothing answers an ACK, so nothing echoes its Via: it is not stamped; and it is
            # validated only when it goes on to the TU (see _receive_ack).
            self._receive_ack(request, server_key(request), peer, now)
            return
        via = self._stamp_via(request, peer)
        request.validate()
        key = server_key(request)
        tx = self._server.get(key)
        if tx is not None:
            if key[0] is not None or tx.matches_2543(request):
                self._stats["retransmissions_received"] += 1
                # a held 100 Trying goes now: the UAC is already retransmitting
                if not (isinstance(tx, InviteServerTransaction)
                        and self._send_held_trying(tx, now)):
                    tx.receive_request(now)
                return
            # RFC 2543 key collision with another request: same Call-ID/From tag/CSeq/Via.
            raise RemoteProtocolError("Merged Request", 482)
        response_peer = self._response_peer(via, peer)
        if method == "CANCEL":
            self._receive_cancel(request, key, peer, response_peer, now)
            return
        reject = self._check_new_request(request, method)
        is_invite = method == "INVITE"
        cls = InviteServerTransaction if is_invite else NonInviteServerTransaction
        tx = cls(self, self._new_id(), key, request, peer, response_peer)
        self._server[key] = tx
        self._by_id[tx.id] = tx
        if request.to_tag is None:
            tx.merge_key = (request.call_id, request.from_tag, request.cseq.seq, method)
            self._merge[tx.merge_key] = tx
        if reject is not None:
            status, reason, extra = reject
            tx.send_trying = False
            tx.start(now)
            self._respond(tx, status, reason, extra, now)
            return
        delay = self.config.trying_delay
        if delay is not None and isinstance(tx, InviteServerTransaction):
            tx.send_trying = False
            self._trying_due.append((now + delay, tx))
        tx.start(now)
        if method == "OPTIONS" and self.config.answer_options:
            self._respond(tx, 200, None, self._capabilities(), now)
            return
        self._events.append(RequestReceived(request, peer, tx.id))

    def _check_new_request(
        self, request: Request, method: str
    ) -> tuple[int, str | None, list[tuple[str, str]]] | None:
        """The §8.2 / §16.3 checks, in RFC order; None when the TU should see the request."""
        options_here = method == "OPTIONS" and self.config.answer_options
        mf = request.max_forwards
        if mf == 0 and not options_here:
            return (483, None, [])
        vias = request.vias
        for v in vias:
            # A request that carries a Via of ours with the branch of one of our client
            # transactions went out from us and came back: a loop (§16.3 step 4, §8.2.2.2).
            b = v.branch
            if (
                b is not None
                and (b, method) in self._client
                and (v.host.lower(), v.port) in self._local
            ):
                return (482, "Loop Detected", [])
        if method not in self._allow_set:
            return (405, None, [("Allow", self._allow)])
        if request.to_tag is None:
            other = self._merge.get(
                (request.call_id, request.from_tag, request.cseq.seq, method)
            )
            if other is not None and other.state is not State.TERMINATED:
                return (482, "Merged Request", [])
        required = request.headers.get_all("Require")
        if required:
            unsupported = [t for t in required if t.lower() not in self.config.supported]
            if unsupported:
                return (420, None, [("Unsupported", ", ".join(unsupported))])
        if request.body:
            ctype = request.content_type
            if ctype is None:
                return (400, "Missing Content-Type", [])
            if ctype not in self.config.accept:
                return (415, None, [("Accept", self._accept)])
        return None

    def _receive_ack(self, request: Request, key: ServerKey, peer: Peer, now: float) -> None:
        self._stats["acks_received"] += 1
        tx = self._server.get(key)
        if isinstance(tx, InviteServerTransaction) and (
            key[0] is not None or tx.matches_2543(request)
        ):
            if tx.state is not State.ACCEPTED:
                tx.receive_ack(request, now)  # ACK for our non-2xx: absorbed (§17.2.1)
                return
            request.validate()
            self._stop_2xx_for(request)
            tx.receive_ack(request, now)  # RFC 6026 Accepted: to the TU
            return
        request.validate()  # a broken ACK is dropped here, never handed to the TU
        self._stop_2xx_for(request)
        self._events.append(AckReceived(request, peer))

    def _receive_cancel(
        self, request: Request, key: ServerKey, peer: Peer, response_peer: Peer, now: float
    ) -> None:
        self._stats["cancels_received"] += 1
        invite = self._server.get(with_method(key, "INVITE"))
        tx = NonInviteServerTransaction(self, self._new_id(), key, request, peer, response_peer)
        self._server[key] = tx
        self._by_id[tx.id] = tx
        tx.start(now)
        if not isinstance(invite, InviteServerTransaction) or (
            key[0] is None and str(invite.request.uri) != str(request.uri)
        ):
            self._respond(tx, 481, None, [], now)
            return
        # §9.2: the To tag of the 200 (CANCEL) and of the 487 (INVITE) should be the same.
        tag = invite.sent_to_tag or new_tag()
        self._respond(tx, 200, None, [], now, to_tag=tag)
        if invite.state is State.PROCEEDING:
            response = make_response(invite.request, 487, to_tag=tag)
            self._add_server(response)
            invite.send_response(response, now)
            self._count_sent(487)
            self._events.append(RequestCancelled(invite.id, invite.owner))

    def _receive_response(self, response: Response, peer: Peer, now: float) -> None:
        self._stats["responses_received"] += 1
        status = response.status
        if 100 <= status < 700:
            self._stats[f"responses_received_{status // 100}xx"] += 1
        branch = response.top_via.branch
        tx = self._client.get((branch, response.cseq.method)) if branch else None
        if tx is None:
            # §18.1.2 would hand strays to the core; with RFC 6026 a 2xx stray after Timer M
            # has no one to go to, so it is dropped (and counted).
            self._stats["stray_responses"] += 1
            self._emit_trace("sip.stray_response", status=status, branch=branch)
            return
        if status in (401, 407) and not came_from(tx.peer, peer):
            # Answering it would hand credentials to whoever sent it, and letting it complete
            # the transaction would let anyone who learnt the branch block the real answer:
            # the transaction never sees it; the TU hears of it for its security log.
            self._stats["foreign_challenges"] += 1
            self._emit_trace("sip.foreign_challenge", status=status, host=peer.host,
                             sent_to=tx.peer.host)
            self._events.append(ForeignChallengeDropped(response, tx.id, peer, tx.peer))
            return
        tx.receive_response(response, now, peer)
        if (
            status < 200
            and isinstance(tx, InviteClientTransaction)
            and tx.cancel_requested
            and not tx.cancel_sent
            and tx.state is State.PROCEEDING
        ):
            self._send_cancel(tx, now)

    # ============================================================================== helpers
    def _new_id(self) -> str:
        self._next_id += 1
        return f"t{self._next_id}"

    def _transmit(self, data: bytes, peer: Peer, retransmission: bool) -> None:
        self._out.append((data, peer))
        self._stats["sent"] += 1
        if retransmission:
            self._stats["retransmissions"] += 1

    def _schedule(self, target: _Timed, timer: Input, deadline: float) -> None:
        self._seq += 1
        seq = self._seq
        armed = self._armed
        old = target.timers.get(timer)
        if old is not None:  # re-armed: the earlier arming is stale
            armed.pop(old, None)  # type: ignore[call-overload]
        target.timers[timer] = seq
        armed[seq] = (target, timer)
        heap = self._heap
        heapq.heappush(heap, (deadline, seq))
        # Lazy deletion leaves stale entries behind; compact when they dominate.
        if len(heap) > 4096 and len(heap) > 8 * len(armed):
            self._heap = [e for e in heap if e[1] in armed]
            heapq.heapify(self._heap)

    def _emit_trace(self, event: str, **fields: object) -> None:
        if self._trace is not None:
            record: dict[str, object] = {"event": event}
            record.update(fields)
            self._trace(record)

    def _count_sent(self, status: int) -> None:
        self._stats["responses_sent"] += 1
        if 100 <= status < 700:
            self._stats[f"responses_sent_{status // 100}xx"] += 1

    def _late(self, response: Response, why: str) -> None:
        self._stats["late_responses"] += 1
        self._emit_trace("sip.tx.late_response", status=response.status, why=why)

    def _stamp_via(self, request: Request, peer: Peer) -> Via:
        """§18.2.1 + RFC 3581: add received (and rport's value) to the top Via."""
        via = request.top_via.copy()
        if via.has_rport or via.host != peer.host:
            via.params["received"] = peer.host
            if via.has_rport:
                via.params["rport"] = str(peer.port)
            # in place, and the stamped Via stays parsed (validate() need not parse it again)
            request.replace_top_via(via)
        return via

    def _response_peer(self, via: Via, peer: Peer) -> Peer:
        """§18.2.2: same connection for reliable transports; else source address, and the
        source port when rport was asked for, else the sent-by port (default 5060)."""
        if peer.reliable:
            return peer
        if via.has_rport:
            return peer
        port = via.port or 5060
        return peer if port == peer.port else Peer(peer.transport, peer.host, port)

    def _via_target(self, response: Response) -> Peer | None:
        """Where a response goes when we have no transaction: from its top Via (§18.2.2)."""
        try:
            via = response.top_via
        except ParseError:
            return None
        transport = via.transport.lower()
        if transport not in ("udp", "tcp", "tls", "ws", "wss"):
            return None
        host = via.received or via.host
        port = via.rport or via.port or (5061 if transport == "tls" else 5060)
        return Peer(transport, host, port)  # type: ignore[arg-type]

    def _add_server(self, response: Response) -> None:
        if "Server" not in response.headers and self.config.user_agent:
            response.headers.add("Server", self.config.user_agent)

    def _capabilities(self) -> list[tuple[str, str]]:
        extra = [("Allow", self._allow), ("Accept", self._accept)]
        if self._supported:
            extra.append(("Supported", self._supported))
        return extra

    def _respond(
        self,
        tx: ServerTransaction,
        status: int,
        reason: str | None,
        extra: list[tuple[str, str]],
        now: float,
        to_tag: str | None = None,
    ) -> None:
        """A response generated by the endpoint itself, through the transaction."""
        request = tx.request
        tag = to_tag if to_tag is not None else (None if request.to_tag else new_tag())
        response = make_response(request, status, reason, to_tag=tag)
        for name, value in extra:
            response.headers.add(name, value)
        self._add_server(response)
        self._stats["rejected"] += status >= 300
        tx.send_response(response, now)
        self._count_sent(status)

    def _reject_stateless(
        self, request: Request, data: bytes, exc: RemoteProtocolError, peer: Peer
    ) -> None:
        """Answer a request that broke the rules before any transaction existed for it."""
        if request.method == "ACK":  # an ACK is never answered (§17)
            self._stats["dropped"] += 1
            return
        try:
            response = make_response(
                request, exc.status_hint, _clean_reason(exc.reason),
                to_tag=None if request.to_tag else new_tag(),
            )  # fmt: skip
            self._add_server(response)
            target = self._response_peer(request.top_via, peer)
            data_out = response.serialize()
        except ParseError:
            self._answer_unparseable(data, exc.reason, peer)
            return
        self._stats["rejected"] += 1
        self._count_sent(exc.status_hint)
        self._transmit(data_out, target, False)

    def _answer_unparseable(self, data: bytes, reason: str, peer: Peer) -> None:
        """400 with the ParseError reason when the start line is a request and a Via can be
        found (From, To, Call-ID and CSeq are copied when present); otherwise the message is
        dropped."""
        try:
            out = self._salvage_400(data, reason, peer)
        except (ParseError, ValueError, IndexError):
            out = None
        if out is None:
            self._stats["dropped"] += 1
            return
        payload, target = out
        self._stats["rejected"] += 1
        self._count_sent(400)
        self._transmit(payload, target, False)

    def _salvage_400(self, data: bytes, reason: str, peer: Peer) -> tuple[bytes, Peer] | None:
        end = data.find(b"\r\n\r\n")
        head = data[: end if end >= 0 else 16384][:16384].decode("latin-1")
        lines = head.splitlines()
        if not lines:
            return None
        match = _REQUEST_LINE.match(lines[0])
        if match is None or match.group(1) == "ACK":
            return None
        found: dict[str, list[str]] = {"Via": [], "From": [], "To": [], "Call-ID": [], "CSeq": []}
        current: str | None = None
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and current is not None:
                found[current][-1] += " " + line.strip()  # header folding
                continue
            name, sep, value = line.partition(":")
            canon = canonical_name(name.strip()) if sep else ""
            if canon in found:
                found[canon].append(value.strip())
                current = canon
            else:
                current = None
        # Via is needed to route the answer; From, To, Call-ID and CSeq are echoed when present
        # (a request missing some is answered 400 naming them, RFC 4475 §3.3.1).
        if not found["Via"] or (found["CSeq"] and not _CSEQ.match(found["CSeq"][0])):
            return None
        vias = [v.strip() for value in found["Via"] for v in value.split(",") if v.strip()]
        if not vias or any(_UNSAFE_ECHO.search(v) for values in found.values() for v in values):
            return None
        top = parse_via(vias[0]).copy()
        top.params["received"] = peer.host
        if top.has_rport:
            top.params["rport"] = str(peer.port)
        target = self._response_peer(top, peer)
        out = [f"SIP/2.0 400 {_clean_reason(reason)}", f"Via: {top}"]
        out += [f"Via: {v}" for v in vias[1:]]
        if found["From"]:
            out.append(f"From: {found['From'][0]}")
        if found["To"]:
            to = found["To"][0]
            if ";tag=" not in to.replace(" ", "").lower():
                to += f";tag={new_tag()}"
            out.append(f"To: {to}")
        out += [f"{name}: {found[name][0]}" for name in ("Call-ID", "CSeq") if found[name]]
        if self.config.user_agent:
            out.append(f"Server: {self.config.user_agent}")
        out.append("Content-Length: 0")
        return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1"), target

    # ---------------------------------------------------------------------------- CANCEL (UAC)
    def _send_cancel(self, invite: InviteClientTransaction, now: float) -> None:
        invite.cancel_sent = True
        request = build_cancel(invite.request, invite.cancel_reason)
        if self.config.user_agent:
            request.headers.add("User-Agent", self.config.user_agent)
        key = (invite.key[0], "CANCEL")  # type: ignore[index]
        if key in self._client:
            return
        tx = NonInviteClientTransaction(self, self._new_id(), key, request, invite.peer)
        self._client[key] = tx
        self._by_id[tx.id] = tx
        tx.start(now)
        invite.arm_cancel_guard(now)

    # ------------------------------------------------------------- 2xx retransmission (UAS core)
    def _start_2xx(self, tx: InviteServerTransaction, response: Response, now: float) -> None:
        # The response echoes Call-ID, From and CSeq (the request itself is retired by now).
        key = (response.call_id, response.from_tag, response.to_tag, response.cseq.seq)
        old = self._pending_2xx.get(key)
        if old is not None:
            self._stop_2xx(old)
        # the transaction has just sent it (called right after): retransmit those very bytes
        data = tx.sent_data or response.serialize()
        pending = _Pending2xx(key, tx.id, data, tx.response_peer, self.timers.t1, tx.owner)
        self._pending_2xx[key] = pending
        if not tx.reliable:
            self._schedule(pending, Input.TIMER_G, now + self.timers.t1)
        self._schedule(pending, Input.TIMER_H, now + 64 * self.timers.t1)

    def _fire_2xx(self, pending: _Pending2xx, timer: Input, now: float) -> None:
        pending.timers.pop(timer, None)
        if timer is Input.TIMER_G:
            self._transmit(pending.data, pending.peer, True)
            pending.interval = min(2 * pending.interval, self.timers.t2)
            self._schedule(pending, Input.TIMER_G, now + pending.interval)
            return
        self._stop_2xx(pending)
        self._stats["ack_timeouts"] += 1
        self._emit_trace("sip.tx.ack_timeout", transaction_id=pending.tx_id)
        self._events.append(AckTimedOut(pending.tx_id, pending.owner))

    def _stop_2xx(self, pending: _Pending2xx) -> None:
        for token in pending.timers.values():
            self._armed.pop(token, None)  # type: ignore[call-overload]
        pending.timers.clear()
        if self._pending_2xx.get(pending.key) is pending:
            del self._pending_2xx[pending.key]

    def _stop_2xx_for(self, ack: Request) -> None:
        if self._pending_2xx:
            key = (ack.call_id, ack.from_tag, ack.to_tag, ack.cseq.seq)
            pending = self._pending_2xx.get(key)
            if pending is not None:
                self._stop_2xx(pending)
