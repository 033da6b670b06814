"""Transaction state machines: every (state, input) pair of all four tables, every timer A-M with
T1 scaling, ACK generation for non-2xx, and the matching keys (RFC 3261 §17, RFC 6026)."""

from __future__ import annotations

import heapq
import itertools

import pytest

from sipcore.errors import LocalProtocolError
from sipcore.message import Request, Response, make_response, parse_message
from sipcore.transaction import (
    CLIENT_TU_INPUTS,
    ICT_TABLE,
    IST_TABLE,
    NICT_TABLE,
    NIST_TABLE,
    RETIRED_REQUEST,
    SERVER_TU_INPUTS,
    TIMERS,
    AckReceived,
    Action,
    ClientTransaction,
    Event,
    Input,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
    ServerTransaction,
    State,
    Table,
    TimerConfig,
    Transaction,
    TransactionTimedOut,
    TransportErrored,
    build_ack,
    build_cancel,
    client_key,
    lookup,
    server_key,
    with_method,
)
from sipcore.transport import Peer

UDP = Peer("udp", "192.0.2.9", 5060)
TCP = Peer("tcp", "192.0.2.9", 5060, conn_id=7)


def request(method: str = "INVITE", branch: str = "z9hG4bKabc", seq: int = 1) -> Request:
    data = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "Route: <sip:proxy.example.com;lr>\r\n"
        "From: <sip:alice@example.com>;tag=from1\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: call-1@example.com\r\n"
        f"CSeq: {seq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int) -> Response:
    return make_response(req, status, to_tag=None if status == 100 else "totag")


class FakeHost:
    """A TransactionHost with a timer heap on a fake clock."""

    def __init__(self, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0) -> None:
        self.timers = TimerConfig(t1=t1, t2=t2, t4=t4)
        self.sent: list[tuple[float, bytes, bool]] = []
        self.events: list[Event] = []
        self.fired: list[tuple[float, Input]] = []
        self.ended: list[Transaction] = []
        self.now = 0.0
        self._heap: list[tuple[float, int, Transaction, Input]] = []
        self._seq = itertools.count()
        self.unscheduled: list[object] = []

    def transmit(self, data: bytes, peer: Peer, retransmission: bool) -> None:
        self.sent.append((self.now, data, retransmission))

    def schedule(self, tx: Transaction, timer: Input, deadline: float) -> None:
        seq = next(self._seq)
        tx.timers[timer] = seq
        heapq.heappush(self._heap, (deadline, seq, tx, timer))

    def unschedule(self, token: object) -> None:
        self.unscheduled.append(token)  # the heap entry goes stale (checked in run())

    def post(self, event: Event) -> None:
        self.events.append(event)

    def terminated(self, tx: Transaction) -> None:
        self.ended.append(tx)

    def run(self, until: float) -> None:
        while self._heap and self._heap[0][0] <= until:
            deadline, seq, tx, timer = heapq.heappop(self._heap)
            if tx.timers.get(timer) != seq:
                continue
            self.now = deadline
            self.fired.append((deadline, timer))
            tx.fire(timer, deadline)
        self.now = until

    def retransmit_times(self) -> list[float]:
        return [round(t, 9) for t, _, again in self.sent if again]


MACHINES: dict[str, tuple[type[Transaction], Table, frozenset[Input], str]] = {
    "ICT": (InviteClientTransaction, ICT_TABLE, CLIENT_TU_INPUTS, "INVITE"),
    "NICT": (NonInviteClientTransaction, NICT_TABLE, CLIENT_TU_INPUTS, "OPTIONS"),
    "IST": (InviteServerTransaction, IST_TABLE, SERVER_TU_INPUTS, "INVITE"),
    "NIST": (NonInviteServerTransaction, NIST_TABLE, SERVER_TU_INPUTS, "OPTIONS"),
}


def make_tx(kind: str, host: FakeHost, peer: Peer = UDP) -> Transaction:
    cls, _, _, method = MACHINES[kind]
    req = request(method)
    return cls(host, "tx1", ("k",), req, peer)


def apply(tx: Transaction, event: Input, now: float = 0.0) -> Action:
    """Feed ``event`` the way the endpoint would (with a message where one belongs)."""
    status = {Input.RESPONSE_1XX: 180, Input.RESPONSE_2XX: 200, Input.RESPONSE_FINAL: 486}
    if event in status:
        resp = response(tx.request, status[event])
        if isinstance(tx, ClientTransaction):
            return tx.receive_response(resp, now, tx.peer)
        assert isinstance(tx, ServerTransaction)
        return tx.send_response(resp, now)
    if event is Input.ACK and isinstance(tx, InviteServerTransaction):
        return tx.receive_ack(request("ACK"), now)
    if event in TIMERS:
        tx.timers.pop(event, None)
    return tx.handle(event, now)


ALL_PAIRS = [
    (kind, state, event) for kind in MACHINES for state in State for event in Input
]


@pytest.mark.parametrize(("kind", "state", "event"), ALL_PAIRS,
                         ids=[f"{k}-{s.name}-{e.name}" for k, s, e in ALL_PAIRS])  # fmt: skip
def test_every_state_input_pair(kind: str, state: State, event: Input) -> None:
    _, table, tu_inputs, _ = MACHINES[kind]
    host = FakeHost()
    tx = make_tx(kind, host)
    tx.state = state
    if isinstance(tx, ServerTransaction) and state is not State.IDLE:
        # a server transaction past IDLE has answered something already
        tx._send(response(tx.request, 180 if state is State.PROCEEDING else 486))
        host.sent.clear()
    entry = table.get((state, event))
    if entry is None:
        if event in tu_inputs:
            with pytest.raises(LocalProtocolError):
                apply(tx, event)
        else:
            assert apply(tx, event) is Action.IGNORE
            assert host.events == [] and host.sent == []
        assert tx.state is state
        return
    action, next_state = entry
    assert apply(tx, event) is action
    if next_state is State.TERMINATED:
        assert tx.state is State.TERMINATED and host.ended == [tx] and tx.timers == {}
    else:
        # zero-length timers never apply to UDP, so the state is exactly the table's
        assert tx.state is next_state


def test_lookup_spells_out_missing_pairs() -> None:
    assert lookup(ICT_TABLE, CLIENT_TU_INPUTS, State.COMPLETED, Input.RESPONSE_1XX) == (
        Action.IGNORE, State.COMPLETED)  # fmt: skip
    with pytest.raises(LocalProtocolError):
        lookup(NIST_TABLE, SERVER_TU_INPUTS, State.COMPLETED, Input.RESPONSE_2XX)


def test_every_timer_appears_in_a_table() -> None:
    used = {e for t in (ICT_TABLE, NICT_TABLE, IST_TABLE, NIST_TABLE) for (_, e) in t}
    assert set(TIMERS) <= used


# --------------------------------------------------------------------------- timers and T1 scaling
T1S = [0.5, 0.1, 1.0]


@pytest.mark.parametrize("t1", T1S)
def test_ict_timer_a_doubles_and_timer_b_times_out(t1: float) -> None:
    host = FakeHost(t1=t1, t2=8 * t1)
    tx = make_tx("ICT", host)
    assert isinstance(tx, InviteClientTransaction)
    tx.start(0.0)
    host.run(100.0)
    expected, t, interval = [], 0.0, t1
    while t + interval < 64 * t1:
        t += interval
        expected.append(round(t, 9))
        interval *= 2  # Timer A is not capped by T2
    assert host.retransmit_times() == expected
    assert len(expected) == 6
    assert (64 * t1, Input.TIMER_B) in host.fired
    assert host.events == [TransactionTimedOut("tx1")]
    assert tx.state is State.TERMINATED


@pytest.mark.parametrize("t1", T1S)
def test_ict_reliable_has_no_timer_a(t1: float) -> None:
    host = FakeHost(t1=t1)
    tx = make_tx("ICT", host, TCP)
    assert isinstance(tx, InviteClientTransaction)
    tx.start(0.0)
    host.run(100.0)
    assert host.retransmit_times() == []
    assert host.fired == [(64 * t1, Input.TIMER_B)]


@pytest.mark.parametrize("peer", [UDP, TCP], ids=["udp", "tcp"])
def test_ict_non_2xx_generates_ack_and_timer_d(peer: Peer) -> None:
    host = FakeHost()
    tx = make_tx("ICT", host, peer)
    assert isinstance(tx, InviteClientTransaction)
    tx.start(0.0)
    host.now = 0.2
    invite = tx.request
    final = response(invite, 486)
    tx.receive_response(final, 0.2, tx.peer)
    ack = parse_message(host.sent[-1][1])
    assert isinstance(ack, Request) and ack.method == "ACK"
    # §17.1.1.3: same branch and Request-URI, To with the response's tag, CSeq number kept
    assert ack.top_via.branch == invite.top_via.branch
    assert str(ack.uri) == str(invite.uri)
    assert ack.to_tag == "totag" and ack.cseq.seq == 1 and ack.cseq.method == "ACK"
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert tx.request is RETIRED_REQUEST  # only retransmissions left: parsed request dropped
    assert len(ack.vias) == 1
    assert host.events == [ResponseReceived(final, "tx1", tx.peer)]
    if peer.reliable:
        assert tx.state is State.TERMINATED  # Timer D = 0
        return
    assert tx.state.value == "completed"
    # retransmitted final -> same ACK again, not passed up
    tx.receive_response(final, 1.0, tx.peer)
    assert host.sent[-1][1] == host.sent[-2][1] and len(host.events) == 1
    host.run(100.0)
    assert (0.2 + 32.0, Input.TIMER_D) in host.fired
    assert tx.state is State.TERMINATED


@pytest.mark.parametrize("t1", T1S)
def test_ict_2xx_goes_to_accepted_until_timer_m(t1: float) -> None:
    host = FakeHost(t1=t1)
    tx = make_tx("ICT", host)
    assert isinstance(tx, InviteClientTransaction)
    tx.start(0.0)
    ok = response(tx.request, 200)
    tx.receive_response(ok, 0.0, tx.peer)
    assert tx.state.value == "accepted"
    tx.receive_response(ok, 1.0, tx.peer)  # retransmitted 2xx reaches the TU (RFC 6026 §8.4)
    assert host.events == [ResponseReceived(ok, "tx1", tx.peer)] * 2
    assert not any(b"ACK" in d.split(b"\r\n")[0] for _, d, _ in host.sent)  # TU ACKs a 2xx
    host.run(1000.0)
    assert host.fired == [(64 * t1, Input.TIMER_M)]
    assert tx.state is State.TERMINATED


def test_ict_provisional_stops_retransmissions_and_timer_b() -> None:
    host = FakeHost()
    tx = make_tx("ICT", host)
    assert isinstance(tx, InviteClientTransaction)
    tx.start(0.0)
    host.run(0.7)
    tx.receive_response(response(tx.request, 180), 0.7, tx.peer)
    host.run(1000.0)
    assert host.retransmit_times() == [0.5]
    assert tx.state.value == "proceeding"
    tx.arm_cancel_guard(10.0)  # §9.1 after a CANCEL
    host.run(1000.0)
    assert host.fired[-1] == (10.0 + 32.0, Input.TIMER_B)
    assert tx.state is State.TERMINATED


def _nict_expected(t1: float, t2: float, provisional_at: float | None = None) -> list[float]:
    out: list[float] = []
    t, interval = 0.0, t1
    while True:
        if provisional_at is not None and t >= provisional_at:
            interval = t2
        if t + interval >= 64 * t1:
            return out
        t += interval
        out.append(round(t, 9))
        interval = min(2 * interval, t2)


@pytest.mark.parametrize("t1", T1S)
def test_nict_timer_e_capped_at_t2_and_timer_f(t1: float) -> None:
    t2 = 8 * t1
    host = FakeHost(t1=t1, t2=t2)
    tx = make_tx("NICT", host)
    assert isinstance(tx, NonInviteClientTransaction)
    tx.start(0.0)
    host.run(1000.0)
    assert host.retransmit_times() == _nict_expected(t1, t2)
    assert host.retransmit_times()[:4] == [round(x * t1, 9) for x in (1, 3, 7, 15)]
    assert host.fired[-1] == (64 * t1, Input.TIMER_F)
    assert host.events == [TransactionTimedOut("tx1")]


def test_nict_proceeding_retransmits_every_t2() -> None:
    host = FakeHost(t1=0.5, t2=4.0)
    tx = make_tx("NICT", host)
    assert isinstance(tx, NonInviteClientTransaction)
    tx.start(0.0)
    host.run(0.6)
    tx.receive_response(response(tx.request, 100), 0.6, tx.peer)
    host.run(1000.0)
    # after the first retransmission at 0.5 the next E fires at 1.5 (armed before the 1xx),
    # then every T2
    times = host.retransmit_times()
    assert times[:2] == [0.5, 1.5]
    assert all(round(b - a, 9) == 4.0 for a, b in itertools.pairwise(times[1:]))
    assert host.fired[-1] == (32.0, Input.TIMER_F)


@pytest.mark.parametrize(("peer", "k"), [(UDP, 5.0), (TCP, 0.0)], ids=["udp", "tcp"])
def test_nict_timer_k(peer: Peer, k: float) -> None:
    host = FakeHost(t4=5.0)
    tx = make_tx("NICT", host, peer)
    assert isinstance(tx, NonInviteClientTransaction)
    tx.start(0.0)
    final = response(tx.request, 200)
    tx.receive_response(final, 1.0, tx.peer)
    if k == 0.0:
        assert tx.state is State.TERMINATED
        return
    tx.receive_response(final, 2.0, tx.peer)  # absorbed in Completed
    assert host.events == [ResponseReceived(final, "tx1", tx.peer)]
    host.run(100.0)
    assert host.fired[-1] == (6.0, Input.TIMER_K)


@pytest.mark.parametrize("t1", T1S)
def test_ist_timer_g_h_and_100_trying(t1: float) -> None:
    t2 = 8 * t1
    host = FakeHost(t1=t1, t2=t2)
    tx = make_tx("IST", host)
    assert isinstance(tx, InviteServerTransaction)
    tx.start(0.0)
    assert parse_message(host.sent[0][1]).status == 100  # type: ignore[union-attr]
    tx.receive_request(0.1)  # retransmitted INVITE -> 100 again
    assert host.sent[-1][1] == host.sent[0][1]
    host.sent.clear()
    tx.send_response(response(tx.request, 486), 0.0)
    host.run(1000.0)
    assert host.retransmit_times() == _nict_expected(t1, t2)  # same T1..T2 schedule as E
    assert host.fired[-1] == (64 * t1, Input.TIMER_H)
    assert host.events == [TransactionTimedOut("tx1")]


@pytest.mark.parametrize(("peer", "i"), [(UDP, 5.0), (TCP, 0.0)], ids=["udp", "tcp"])
def test_ist_ack_confirms_and_timer_i(peer: Peer, i: float) -> None:
    host = FakeHost(t4=5.0)
    tx = make_tx("IST", host, peer)
    assert isinstance(tx, InviteServerTransaction)
    tx.start(0.0)
    tx.send_response(response(tx.request, 404), 0.0)
    tx.receive_ack(request("ACK"), 0.3)
    if i == 0.0:
        assert tx.state is State.TERMINATED
        assert host.retransmit_times() == []
        return
    assert tx.state is State.CONFIRMED
    assert tx.receive_ack(request("ACK"), 0.4) is Action.IGNORE
    host.run(100.0)
    assert host.retransmit_times() == []  # G stopped by the ACK before it fired
    assert host.fired == [(5.3, Input.TIMER_I)]
    assert host.events == []


@pytest.mark.parametrize("t1", T1S)
def test_ist_accepted_timer_l_absorbs_invite_and_passes_ack(t1: float) -> None:
    host = FakeHost(t1=t1)
    tx = make_tx("IST", host)
    assert isinstance(tx, InviteServerTransaction)
    tx.start(0.0)
    invite = tx.request
    tx.send_response(response(invite, 200), 0.0)
    assert tx.request is RETIRED_REQUEST and tx.sent_to_tag == "totag"
    sent = len(host.sent)
    assert tx.receive_request(0.1) is Action.IGNORE and len(host.sent) == sent
    ack = request("ACK")
    tx.receive_ack(ack, 0.2)
    assert host.events == [AckReceived(ack, UDP)]
    tx.send_response(response(invite, 200), 0.5)  # the TU's own 2xx retransmission
    assert len(host.sent) == sent + 1
    host.run(1000.0)
    assert host.fired == [(64 * t1, Input.TIMER_L)]


@pytest.mark.parametrize(("peer", "j"), [(UDP, 32.0), (TCP, 0.0)], ids=["udp", "tcp"])
def test_nist_timer_j_and_absorption(peer: Peer, j: float) -> None:
    host = FakeHost()
    tx = make_tx("NIST", host, peer)
    assert isinstance(tx, NonInviteServerTransaction)
    tx.start(0.0)
    assert tx.receive_request(0.1) is Action.IGNORE and host.sent == []  # Trying: discard
    tx.send_response(response(tx.request, 180), 0.2)
    tx.receive_request(0.3)
    assert host.sent[-1] == (0.0, host.sent[0][1], True)
    tx.send_response(response(tx.request, 200), 1.0)
    if j == 0.0:
        assert tx.state is State.TERMINATED
        return
    tx.receive_request(2.0)
    assert parse_message(host.sent[-1][1]).status == 200  # type: ignore[union-attr]
    with pytest.raises(LocalProtocolError):
        tx.send_response(response(tx.request, 500), 3.0)
    host.run(1000.0)
    assert host.fired == [(1.0 + j, Input.TIMER_J)]


@pytest.mark.parametrize("kind", ["ICT", "NICT", "IST", "NIST"])
def test_transport_error_is_reported(kind: str) -> None:
    host = FakeHost()
    tx = make_tx(kind, host)
    tx.handle(Input.START, 0.0)
    if isinstance(tx, ServerTransaction):
        tx.send_response(response(tx.request, 180), 0.0)
    tx.handle(Input.TRANSPORT_ERROR, 0.1)
    assert TransportErrored("tx1") in host.events
    assert tx.state is State.TERMINATED


# ------------------------------------------------------------------------------------ matching
def test_server_key_rfc3261() -> None:
    inv = request("INVITE")
    assert server_key(inv) == server_key(request("ACK"))  # ACK matches the INVITE
    assert server_key(request("CANCEL")) != server_key(inv)  # CANCEL is its own transaction
    assert with_method(server_key(request("CANCEL")), "INVITE") == server_key(inv)
    assert server_key(request("INVITE", branch="z9hG4bKother")) != server_key(inv)
    # a response carries the same key
    assert server_key(make_response(inv, 180)) == server_key(inv)


def test_server_key_rfc2543_fallback() -> None:
    inv = request("INVITE", branch="old1")
    key = server_key(inv)
    assert key[0] is None
    assert server_key(request("ACK", branch="old1")) == key
    assert with_method(server_key(request("CANCEL", branch="old1")), "INVITE") == key
    assert server_key(request("INVITE", branch="old1", seq=2)) != key
    assert server_key(make_response(inv, 486)) == key
    host = FakeHost()
    tx = InviteServerTransaction(host, "t", key, inv, UDP)
    tx.start(0.0)
    tx.send_response(make_response(inv, 486, to_tag="t9"), 0.0)
    assert tx.matches_2543(inv)
    ack = request("ACK", branch="old1")
    assert not tx.matches_2543(ack)  # no To tag: not the ACK for our response
    ack.headers.set("To", "<sip:bob@example.com>;tag=t9")
    assert tx.matches_2543(ack)


def test_client_key_and_built_cancel() -> None:
    inv = request("INVITE")
    cancel = build_cancel(inv, 'SIP;cause=200;text="Call completed elsewhere"')
    assert client_key(cancel.top_via.branch or "", cancel.cseq.method) == ("z9hG4bKabc", "CANCEL")
    assert cancel.cseq.seq == 1 and cancel.to_tag is None
    assert (cancel.headers.get("Reason") or "").startswith("SIP;cause=200")
    assert str(cancel.uri) == str(inv.uri)
    ack = build_ack(inv, make_response(inv, 404, to_tag="x"))
    assert ack.to_tag == "x" and ack.call_id == inv.call_id


def test_timer_config_validation() -> None:
    with pytest.raises(ValueError):
        TimerConfig(t1=0.0)
    with pytest.raises(ValueError):
        TimerConfig(t1=1.0, t2=0.5)
