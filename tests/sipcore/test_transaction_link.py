"""Two endpoints joined by the in-memory link (tests/sipcore/linksim.py): INVITE/ACK/BYE and
REGISTER complete under loss, duplication and delay, over UDP and TCP; CANCEL races."""

from __future__ import annotations

import pytest

from sipcore.dialog import Dialog, DialogSet, DialogState, DialogTable
from sipcore.endpoint import (
    AckReceived,
    Event,
    RequestCancelled,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from sipcore.errors import RemoteProtocolError
from sipcore.headers import Headers
from sipcore.message import Request, make_response, new_call_id, new_tag
from sipcore.transport import TransportName
from sipcore.uri import SipURI
from tests.sipcore.linksim import Net, Node


class Phone:
    """A minimal UA core on top of the endpoint: answers INVITE (after ``answer_after``
    seconds of ringing) and BYE/REGISTER; as UAC it ACKs every 2xx (retransmissions too)."""

    def __init__(self, net: Net, host: str, transport: TransportName = "udp",
                 answer_after: float | None = 0.0, **cfg: object) -> None:  # fmt: skip
        self.node = net.add(host, transport=transport, handler=self.on_event, **cfg)  # type: ignore[arg-type]
        self.net = net
        self.answer_after = answer_after
        self.table = DialogTable()
        self.sets: dict[str, DialogSet] = {}
        self.ringing: list[tuple[RequestReceived, str]] = []
        self.acks = 0
        self.finals: dict[str, int] = {}
        self.registered: list[str] = []

    @property
    def contact(self) -> str:
        return f"<sip:{self.node.host}:{self.node.port}>"

    def call(self, other: Phone) -> str:
        req = Request(
            "INVITE", f"sip:user@{other.node.host}:{other.node.port}",
            Headers([("From", f"<sip:a@{self.node.host}>;tag={new_tag()}"),
                     ("To", f"<sip:user@{other.node.host}>"), ("Call-ID", new_call_id()),
                     ("CSeq", "1 INVITE"), ("Contact", self.contact)]),
        )  # fmt: skip
        tx = self.node.send_request(req, other.node)
        self.sets[tx] = DialogSet(req, self.table)
        return tx

    def register(self, other: Phone, seq: int = 1) -> str:
        req = Request(
            "REGISTER", f"sip:{other.node.host}",
            Headers([("From", f"<sip:a@{other.node.host}>;tag={new_tag()}"),
                     ("To", f"<sip:a@{other.node.host}>"), ("Call-ID", "reg-1"),
                     ("CSeq", f"{seq} REGISTER"), ("Contact", self.contact),
                     ("Expires", "600")]),
        )  # fmt: skip
        return self.node.send_request(req, other.node)

    def bye(self, other: Phone) -> str:
        (dialog,) = [d for d in self.table if d.state is DialogState.CONFIRMED]
        return self.node.send_request(dialog.create_request("BYE"), other.node)

    def answer(self, event: RequestReceived, tag: str, status: int = 200) -> bool:
        resp = make_response(event.request, status, to_tag=tag)
        resp.headers.add("Contact", self.contact)
        if status < 300:
            dialog = Dialog.from_uas(event.request, resp)
            self.table.add(dialog)
        return self.node.send_response(resp)

    def on_event(self, node: Node, event: Event) -> None:
        if isinstance(event, RequestReceived):
            req = event.request
            try:
                dialog = self.table.dispatch_request(req)
            except RemoteProtocolError as exc:
                node.send_response(make_response(req, exc.status_hint, to_tag=new_tag()))
                return
            if req.method == "INVITE" and dialog is None:
                tag = new_tag()
                node.send_response(make_response(req, 180, to_tag=tag))
                if self.answer_after == 0.0:
                    self.answer(event, tag)
                else:
                    self.ringing.append((event, tag))
            elif req.method == "REGISTER":
                self.registered.append(req.call_id)
                node.send_response(make_response(req, 200, to_tag=new_tag()))
            else:
                node.send_response(make_response(req, 200, to_tag=new_tag()))
        elif isinstance(event, ResponseReceived):
            resp = event.response
            self.finals.setdefault(event.transaction_id, 0)
            if resp.status >= 200:
                self.finals[event.transaction_id] = resp.status
            dset = self.sets.get(event.transaction_id)
            if dset is not None:
                dialog = dset.receive_response(resp)
                if dialog is not None and 200 <= resp.status < 300:
                    peer = self.net.nodes[(resp.top_via.host, resp.top_via.port or 5060)]
                    assert peer is node
                    target = dialog.remote_target
                    assert isinstance(target, SipURI) and target.port is not None
                    dst = self.net.nodes[(target.host, target.port)]
                    node.send_request(dialog.create_ack(), dst)
        elif isinstance(event, AckReceived):
            self.acks += 1


def call_flow(net: Net, transport: TransportName = "udp") -> tuple[Phone, Phone]:
    alice = Phone(net, "10.0.0.1", transport)
    bob = Phone(net, "10.0.0.2", transport)
    invite = alice.call(bob)
    net.run(until=200.0, stop=lambda: alice.finals.get(invite) == 200 and bob.acks > 0)
    assert alice.finals.get(invite) == 200, "INVITE did not complete"
    assert bob.acks >= 1
    bye = alice.bye(bob)
    net.run(until=net.now + 60.0, stop=lambda: alice.finals.get(bye) == 200)
    assert alice.finals.get(bye) == 200, "BYE did not complete"
    assert not [d for d in alice.table if d.state is not DialogState.TERMINATED]
    assert len(bob.table) == 0  # BYE removed it
    return alice, bob


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_invite_ack_bye_clean_link(transport: TransportName) -> None:
    net = Net()
    alice, bob = call_flow(net, transport)
    assert bob.acks == 1
    retrans = sum(p.node.endpoint.statistics()["retransmissions"] for p in (alice, bob))
    assert retrans == 0
    net.run(until=1000.0)  # Timers L/M/J/K drain everything
    for p in (alice, bob):
        stats = p.node.endpoint.statistics()
        assert stats["transactions"] == 0 and stats["timers"] == 0


@pytest.mark.parametrize("seed", range(12))
def test_invite_ack_bye_under_loss(seed: int) -> None:
    net = Net(seed=seed)
    net.drop_rate = 0.3
    net.duplicate_rate = 0.2
    _, bob = call_flow(net)
    invites = [p for p in net.log if p.first_line.startswith("INVITE ")]
    received = [e for e in bob.node.events if isinstance(e, RequestReceived)]
    # retransmissions and duplicates are absorbed: the TU saw one INVITE and one BYE
    assert len([e for e in received if e.request.method == "INVITE"]) == 1
    assert len([e for e in received if e.request.method == "BYE"]) == 1
    assert len(invites) >= 1


def test_lost_ack_makes_uas_retransmit_2xx_and_uac_re_ack() -> None:
    net = Net()
    lost = {"n": 0}

    def drop_first_ack(packet: object) -> bool:
        if getattr(packet, "first_line", "").startswith("ACK ") and lost["n"] == 0:
            lost["n"] += 1
            return True
        return False

    net.drop_if = drop_first_ack  # type: ignore[assignment]
    alice, bob = call_flow(net)
    oks = [p for p in net.sent(bob.node, "SIP/2.0 200") if "INVITE" in p.data.decode()]
    assert len(oks) >= 2  # the 2xx was retransmitted by the UAS core
    assert len(net.sent(alice.node, "ACK ")) >= 2  # and ACKed again


@pytest.mark.parametrize("seed", range(8))
def test_register_under_loss(seed: int) -> None:
    net = Net(seed=seed)
    net.drop_rate = 0.4
    phone = Phone(net, "10.0.0.1")
    registrar = Phone(net, "10.0.0.2")
    txs = [phone.register(registrar, seq) for seq in (1, 2, 3)]
    net.run(until=200.0, stop=lambda: all(tx in phone.finals for tx in txs))
    outcomes = [phone.finals.get(tx) for tx in txs]
    timeouts = [e for e in phone.node.events if isinstance(e, TransactionTimedOut)]
    # each REGISTER ends exactly once: 200, or a timeout when 64*T1 of loss was too much
    for tx, status in zip(txs, outcomes, strict=True):
        assert (status == 200) != any(t.transaction_id == tx for t in timeouts)
    assert outcomes.count(200) >= 2
    seen = [e for e in registrar.node.events if isinstance(e, RequestReceived)]
    assert len(seen) == len({e.request.cseq.seq for e in seen})  # no duplicate reached the TU


def test_delay_longer_than_t1_still_one_invite_for_the_tu() -> None:
    net = Net(delay=0.8)  # RTT 1.6 s > T1: the INVITE is retransmitted before the 100 arrives
    alice, bob = call_flow(net)
    assert len(net.sent(alice.node, "INVITE ")) >= 2
    assert len([e for e in bob.node.events if isinstance(e, RequestReceived)
                and e.request.method == "INVITE"]) == 1  # fmt: skip


def test_invite_timeout_when_peer_is_gone() -> None:
    net = Net()
    alice = Phone(net, "10.0.0.1")
    ghost = Phone(net, "10.0.0.9")
    net.drop_if = lambda p: p.dst == ghost.node.address
    tx = alice.call(ghost)
    net.run(until=100.0)
    assert TransactionTimedOut(tx) in alice.node.events
    assert len(net.sent(alice.node, "INVITE ")) == 7  # 1 + 6 Timer A retransmissions
    assert net.now == pytest.approx(32.0)


# --------------------------------------------------------------------------------- CANCEL races
def test_cancel_while_ringing() -> None:
    net = Net()
    alice = Phone(net, "10.0.0.1")
    bob = Phone(net, "10.0.0.2", answer_after=None)
    tx = alice.call(bob)
    net.run(until=1.0)
    assert bob.ringing
    alice.node.endpoint.cancel(tx, net.now)
    net.run(until=10.0, stop=lambda: tx in alice.finals and alice.finals[tx] >= 200)
    assert alice.finals[tx] == 487
    event, tag = bob.ringing[0]
    assert RequestCancelled(event.transaction_id) in bob.node.events
    assert bob.answer(event, tag) is False  # the TU's late 200 loses the race
    net.run(until=100.0)
    assert not alice.table.get((alice.sets[tx].request.call_id, "x", "y"))
    assert alice.sets[tx].failed and not alice.sets[tx].early


def test_cancel_crossing_the_200() -> None:
    """The UAS answers 200 while the CANCEL is in flight: CANCEL gets 200, INVITE stays 200,
    the call is up and must be ended with BYE (§9.1)."""
    net = Net(delay=0.05)
    alice = Phone(net, "10.0.0.1")
    bob = Phone(net, "10.0.0.2", answer_after=None)
    tx = alice.call(bob)
    net.run(until=0.2)
    event, tag = bob.ringing[0]
    alice.node.endpoint.cancel(tx, net.now)  # CANCEL on the wire ...
    net.pump()
    assert bob.answer(event, tag) is True  # ... while the 200 goes the other way
    net.run(until=5.0)
    assert alice.finals[tx] == 200 and bob.acks >= 1
    assert not [e for e in bob.node.events if isinstance(e, RequestCancelled)]
    bye = alice.bye(bob)
    net.run(until=20.0, stop=lambda: bye in alice.finals)
    assert alice.finals[bye] == 200


def test_cancel_before_any_provisional_is_held() -> None:
    net = Net(delay=0.3)
    alice = Phone(net, "10.0.0.1")
    bob = Phone(net, "10.0.0.2", answer_after=None)
    tx = alice.call(bob)
    alice.node.endpoint.cancel(tx, net.now)
    net.pump()
    assert net.sent(alice.node, "CANCEL ") == []
    net.run(until=10.0, stop=lambda: alice.finals.get(tx, 0) >= 200)
    cancels = net.sent(alice.node, "CANCEL ")
    assert cancels[0].time >= 0.6  # only after the 100 came back
    assert len({c.data for c in cancels}) == 1  # the rest are Timer E retransmissions
    assert alice.finals[tx] == 487


def test_in_dialog_request_with_unknown_tag_gets_481() -> None:
    net = Net()
    alice, bob = call_flow(net)
    # alice's dialog is gone; a BYE built from it again carries tags bob no longer knows
    (dialog,) = list(alice.table)
    dialog.state = DialogState.CONFIRMED
    tx = alice.node.send_request(dialog.create_request("BYE"), bob.node)
    net.run(until=net.now + 10.0, stop=lambda: tx in alice.finals)
    assert alice.finals[tx] == 481
