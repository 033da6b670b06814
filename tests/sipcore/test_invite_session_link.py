"""The INVITE usage on real endpoints over the in-memory link (tests/sipcore/linksim.py): a TU
wired the way pbx legs would be (the endpoint retransmits the 2xx, the usage decides ACK, BYE,
refreshes and expiry) keeps a call with session timers up under loss, and ends it by the rules
when the ACK or the refresher is lost."""

from __future__ import annotations

import pytest

from sipcore.dialog import Dialog, DialogSet, DialogTable
from sipcore.endpoint import (
    AckReceived,
    AckTimedOut,
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportErrored,
)
from sipcore.errors import RemoteProtocolError
from sipcore.headers import Headers
from sipcore.invite_session import (
    AckToSend,
    ByeToSend,
    CancelToSend,
    InviteSession,
    RefreshToSend,
    RequestRefused,
    RetryToSend,
    Role,
    SdpRole,
    SessionConfig,
    SessionEnded,
    SessionState,
)
from sipcore.message import Request, make_response, new_call_id, new_tag
from sipcore.uri import SipURI
from tests.sipcore.linksim import Net, Node, Packet

SDP = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n" \
      b"m=audio 4000 RTP/AVP 0\r\n"
CONFIG = SessionConfig(session_expires=90, retransmit_2xx=False)


class Phone:
    """A UA core: one call, its InviteSession fed from the endpoint's events."""

    def __init__(self, net: Net, host: str) -> None:
        self.net = net
        self.node = net.add(host, handler=self.on_event)
        self.table = DialogTable()
        self.session: InviteSession | None = None
        self.dialog: Dialog | None = None
        self.dialog_set: DialogSet | None = None
        self.invite_tx: str | None = None
        self.ended: SessionEnded | None = None
        self.sent: list[str] = []

    @property
    def contact(self) -> str:
        return f"<sip:{self.node.host}:{self.node.port}>"

    def _to(self, dialog: Dialog) -> Node:
        target = dialog.remote_target
        assert isinstance(target, SipURI) and target.port is not None
        return self.net.nodes[(target.host, target.port)]

    # -- UAC
    def call(self, other: Phone) -> None:
        s = self.session = InviteSession(Role.UAC, CONFIG)
        headers = Headers([("From", f"<sip:a@{self.node.host}>;tag={new_tag()}"),
                           ("To", f"<sip:b@{other.node.host}>"), ("Call-ID", new_call_id()),
                           ("CSeq", "1 INVITE"), ("Contact", self.contact),
                           ("Supported", "timer"), *s.request_headers(),
                           ("Content-Type", "application/sdp")])
        invite = Request("INVITE", f"sip:b@{other.node.host}:{other.node.port}", headers, SDP)
        s.send_request(invite, self.net.now)
        self.dialog_set = DialogSet(invite, self.table, local_contact=self.contact)
        self.invite_tx = self.node.send_request(invite, other.node)

    def send_in_dialog(self, method: str, headers: tuple[tuple[str, str], ...]) -> None:
        assert self.session is not None and self.dialog is not None
        request = self.dialog.create_request(method, body=SDP if method == "INVITE" else b"",
                                             extra=[*headers, ("Supported", "timer")])
        self.session.send_request(request, self.net.now)
        self.sent.append(method)
        self.node.send_request(request, self._to(self.dialog))

    # -- events
    def drain(self) -> None:
        s = self.session
        assert s is not None
        for ev in s.events():
            if isinstance(ev, AckToSend | ByeToSend):  # to the remote target (a fork's too)
                target = ev.request.uri
                assert isinstance(target, SipURI) and target.port is not None
                self.sent.append(ev.request.method)
                self.node.send_request(ev.request, self.net.nodes[(target.host, target.port)])
            elif isinstance(ev, RefreshToSend | RetryToSend):
                self.send_in_dialog(ev.method, ev.headers)
            elif isinstance(ev, CancelToSend):
                assert self.invite_tx is not None
                self.node.endpoint.cancel(self.invite_tx, self.net.now, ev.reason)
            elif isinstance(ev, SessionEnded):
                self.ended = ev
        self.net.pump()

    def on_event(self, node: Node, event: Event) -> None:
        now = self.net.now
        if isinstance(event, RequestReceived):
            self.on_request(event)
        elif isinstance(event, ResponseReceived) and self.session is not None:
            response = event.response
            dialog = None
            if event.transaction_id == self.invite_tx and self.dialog_set is not None:
                dialog = self.dialog_set.receive_response(response)
            elif self.dialog is not None:
                self.dialog.receive_response(response)
            self.session.receive_response(response, now, dialog or self.dialog)
            if self.dialog is None and self.session.dialog is not None:
                self.dialog = self.session.dialog
            self.drain()
        elif isinstance(event, TransactionTimedOut | TransportErrored) and self.session:
            method = "INVITE" if event.transaction_id == self.invite_tx else "ANY"
            self.session.request_failed(method, now)
            self.drain()
        elif isinstance(event, AckReceived) and self.session is not None:
            self.session.receive_request(event.request, now)
            self.drain()
        elif isinstance(event, AckTimedOut) and self.session is not None:
            self.session.ack_timed_out(now)
            self.drain()

    def on_request(self, event: RequestReceived) -> None:
        req, now, node = event.request, self.net.now, self.node
        try:
            self.table.dispatch_request(req)
        except RemoteProtocolError as exc:
            node.send_response(make_response(req, exc.status_hint, to_tag=new_tag()))
            return
        if self.session is None and req.method == "INVITE":
            self.session = InviteSession(Role.UAS, CONFIG)
        s = self.session
        if s is None:
            node.send_response(make_response(req, 481))
            return
        try:
            incoming = s.receive_request(req, now)
        except RequestRefused as exc:
            resp = make_response(req, exc.status_hint, to_tag=req.to_tag or new_tag())
            for name, value in exc.headers:
                resp.headers.add(name, value)
            s.send_response(resp, now)
            node.send_response(resp)
            return
        resp = make_response(req, 200, to_tag=req.to_tag or new_tag())
        for name, value in incoming.headers:
            resp.headers.add(name, value)
        if req.method == "INVITE":
            resp.headers.add("Contact", self.contact)
            resp.body = SDP
            resp.headers.set("Content-Type", "application/sdp")
            assert incoming.sdp is SdpRole.OFFER
        if self.dialog is None and req.method == "INVITE":
            self.dialog = Dialog.from_uas(req, resp, local_contact=self.contact)
            self.table.add(self.dialog)
        if req.method != "BYE":
            s.send_response(resp, now, self.dialog)
        node.send_response(resp)
        self.drain()


def run(net: Net, phones: list[Phone], until: float) -> None:
    """Advance the network and the sessions' timers together on the fake clock."""
    net.pump()
    while True:
        deadlines = {p: d for p in phones if p.session is not None
                     and (d := p.session.next_deadline()) is not None}
        t_net = net.next_time()
        times = [t for t in (t_net, *deadlines.values()) if t is not None]
        if not times or min(times) > until:
            net.now = max(net.now, until)
            return
        t = min(times)
        if t_net is not None and t_net <= t:
            net.step()
            continue
        net.now = max(net.now, t)
        for phone, deadline in deadlines.items():
            if deadline <= net.now and phone.session is not None:
                phone.session.handle_timer(net.now)
                phone.drain()


def setup(net: Net) -> tuple[Phone, Phone]:
    alice, bob = Phone(net, "10.0.0.1"), Phone(net, "10.0.0.2")
    alice.call(bob)
    run(net, [alice, bob], 40.0)
    assert alice.session is not None and bob.session is not None
    return alice, bob


@pytest.mark.parametrize("seed", range(6))
def test_call_with_session_timer_survives_loss_then_bye(seed: int) -> None:
    net = Net(seed=seed)
    net.drop_rate = 0.15
    net.duplicate_rate = 0.15
    alice, bob = setup(net)
    assert alice.session is not None and bob.session is not None
    assert alice.session.state is SessionState.CONFIRMED
    assert bob.session.state is SessionState.CONFIRMED
    # 90 s, refreshed by alice (the UAC supports timer): every 45 s for ten minutes
    assert (alice.session.interval, alice.session.we_refresh) == (90, True)
    net.drop_rate = 0.05  # a refresh may still fail twice in a row at 15 %; keep it rare
    run(net, [alice, bob], 600.0)
    assert alice.ended is None and bob.ended is None, (alice.ended, bob.ended)
    assert alice.sent.count("INVITE") >= 10
    net.drop_rate = 0.0
    alice.session.hangup(net.now)
    alice.drain()
    run(net, [alice, bob], net.now + 40.0)
    assert alice.ended == SessionEnded("hangup", False)
    assert bob.ended == SessionEnded("bye", True)


def test_lost_acks_make_the_uas_bye_after_64_t1() -> None:
    net = Net()

    def no_acks(packet: Packet) -> bool:
        return packet.first_line.startswith("ACK ")

    net.drop_if = no_acks
    alice, bob = Phone(net, "10.0.0.1"), Phone(net, "10.0.0.2")
    alice.call(bob)
    run(net, [alice, bob], 60.0)
    assert bob.ended == SessionEnded("ack-timeout", False)
    assert alice.ended == SessionEnded("bye", True)
    oks = [p for p in net.sent(bob.node, "SIP/2.0 200") if b"INVITE" in p.data]
    assert len(oks) >= 10  # the endpoint retransmitted the 2xx; alice ACKed every one
    assert len(net.sent(alice.node, "ACK ")) == len(oks)


def test_vanished_refresher_is_byed_before_expiry() -> None:
    net = Net()
    alice, bob = setup(net)  # answered at t = 0.02; the clock is at 40 s now

    def alice_gone(packet: Packet) -> bool:
        return packet.src == alice.node.address

    net.drop_if = alice_gone
    run(net, [alice, bob], 200.0)
    # alice's refresh at 45 s never arrives; bob BYEs at 90 - min(32, 90/3) = 60 s, and so
    # does alice (her refresh had no answer by then either)
    assert bob.ended == SessionEnded("session-expired", False)
    assert alice.ended == SessionEnded("session-expired", False)
    assert alice.sent.count("INVITE") == 1
    (bye,) = [p for p in net.sent(bob.node, "BYE ")][:1]
    assert 60.0 <= bye.time < 60.1
