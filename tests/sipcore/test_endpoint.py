"""The sans-IO Endpoint: the checks it answers itself (483, 482, 420, 405, 415, OPTIONS, 400,
481), Via stamping and response routing, retransmission absorption, CANCEL (both sides), the
2xx retransmission of the UAS core, the RFC 2543 fallback, and Hypothesis: network input never
raises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipcore.endpoint import (
    AckReceived,
    AckTimedOut,
    Endpoint,
    EndpointConfig,
    ForeignChallengeDropped,
    RequestCancelled,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportErrored,
    came_from,
)
from sipcore.errors import LocalProtocolError
from sipcore.headers import Headers
from sipcore.message import Request, Response, make_response, parse_message
from sipcore.transaction import Input, State
from sipcore.transport import Peer

ME = ("192.0.2.100", 5060)
SRC = Peer("udp", "203.0.113.7", 40000)


def config(**kw: object) -> EndpointConfig:
    base: dict[str, object] = {
        "sent_by": {"udp": ME, "tcp": ME},
        "allow": frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER"}),
        "supported": frozenset({"replaces", "timer"}),
        "accept": frozenset({"application/sdp"}),
    }
    base.update(kw)
    return EndpointConfig(**base)  # type: ignore[arg-type]


def raw(
    method: str = "OPTIONS",
    *,
    branch: str = "z9hG4bKx1",
    via: str = "10.0.0.5:5060",
    rport: bool = True,
    to_tag: str | None = None,
    extra: str = "",
    body: bytes = b"",
    seq: int = 1,
    call_id: str = "call-1",
    from_tag: str = "f1",
    uri: str = "sip:pbx@192.0.2.100",
    max_forwards: int = 70,
) -> bytes:
    to = "<sip:pbx@192.0.2.100>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via};branch={branch}{';rport' if rport else ''}\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        f"From: <sip:alice@example.com>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {seq} {method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def responses(ep: Endpoint) -> list[tuple[Response, Peer]]:
    out = []
    for data, peer in ep.data_to_send():
        msg = parse_message(data)
        assert isinstance(msg, Response)
        out.append((msg, peer))
    return out


def only_response(ep: Endpoint) -> Response:
    got = responses(ep)
    assert len(got) == 1, got
    return got[0][0]


# ---------------------------------------------------------------------- answered by the endpoint
def test_options_answered_with_capabilities() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("OPTIONS"), SRC, 0.0)
    resp = only_response(ep)
    assert resp.status == 200
    assert set(resp.headers.get_all("Allow")) == {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER"}  # fmt: skip
    assert resp.headers.get_all("Accept") == ["application/sdp"]
    assert set(resp.headers.get_all("Supported")) == {"replaces", "timer"}
    assert resp.to_tag is not None
    assert ep.events() == []


def test_options_to_tu_when_not_answering() -> None:
    ep = Endpoint(config(answer_options=False, allow=frozenset({"OPTIONS"})))
    ep.receive_datagram(raw("OPTIONS"), SRC, 0.0)
    (event,) = ep.events()
    assert isinstance(event, RequestReceived) and event.request.method == "OPTIONS"


def test_max_forwards_zero_is_483() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("INVITE", max_forwards=0), SRC, 0.0)
    assert only_response(ep).status == 483  # and no 100 Trying before it
    assert ep.events() == []


def test_method_not_allowed_is_405_with_allow() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("SUBSCRIBE"), SRC, 0.0)
    resp = only_response(ep)
    assert resp.status == 405 and "INVITE" in resp.headers.get_all("Allow")


def test_unsupported_require_is_420_with_unsupported() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("REGISTER", extra="Require: timer, 100rel, foo\r\n"), SRC, 0.0)
    resp = only_response(ep)
    assert resp.status == 420 and resp.headers.get_all("Unsupported") == ["100rel", "foo"]


def test_unsupported_content_type_is_415_with_accept() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(
        raw("INVITE", extra="Content-Type: text/html\r\n", body=b"<html/>"), SRC, 0.0
    )
    resp = only_response(ep)
    assert resp.status == 415 and resp.headers.get_all("Accept") == ["application/sdp"]
    ep.receive_datagram(
        raw("INVITE", branch="z9hG4bKx2", seq=2, extra="Content-Type: Application/SDP\r\n",
            body=b"v=0\r\n"), SRC, 0.0)  # fmt: skip
    assert isinstance(ep.events()[0], RequestReceived)


def test_merged_request_is_482() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("INVITE", branch="z9hG4bKa"), SRC, 0.0)
    ep.data_to_send()
    # the same request forked back to us along another path: new branch, same From tag/Call-ID/CSeq
    ep.receive_datagram(raw("INVITE", branch="z9hG4bKb", via="10.0.0.6:5060"), SRC, 0.1)
    resp = only_response(ep)
    assert resp.status == 482 and resp.reason == "Merged Request"
    assert len([e for e in ep.events() if isinstance(e, RequestReceived)]) == 1


def test_looped_request_is_482() -> None:
    ep = Endpoint(config(answer_options=False, allow=frozenset({"OPTIONS"})))
    req = Request("OPTIONS", "sip:pbx@192.0.2.100", Headers([
        ("From", "<sip:pbx@192.0.2.100>;tag=me"), ("To", "<sip:pbx@192.0.2.100>"),
        ("Call-ID", "loop"), ("CSeq", "1 OPTIONS")]))  # fmt: skip
    ep.send_request(req, Peer("udp", "192.0.2.200", 5060), 0.0)
    ((data, _),) = ep.data_to_send()
    # a proxy sent our own request back to us, with its Via on top
    looped = data.replace(b"Via: ", b"Via: SIP/2.0/UDP 192.0.2.200;branch=z9hG4bKp1\r\nVia: ", 1)
    ep.receive_datagram(looped, Peer("udp", "192.0.2.200", 5060), 0.1)
    resp = only_response(ep)
    assert resp.status == 482 and resp.reason == "Loop Detected"


def test_unparseable_request_gets_400_with_reason() -> None:
    ep = Endpoint(config())
    bad = raw("INVITE", extra="Expires: soon\r\nContact: <sip:a@b\r\n")
    ep.receive_datagram(bad, SRC, 0.0)
    resp = only_response(ep)
    assert resp.status == 400 and "Contact" in resp.reason
    assert resp.call_id == "call-1" and resp.cseq.method == "INVITE"
    assert resp.to_tag is not None
    assert ep.statistics()["rejected"] == 1 and ep.events() == []


def test_garbage_start_line_400_reason_and_drop() -> None:
    ep = Endpoint(config())
    # request whose CSeq is invalid: the parser names it; we can still not build a response
    # from the parsed message, so the salvage path answers with the parser's reason
    ep.receive_datagram(raw("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), SRC, 0.0)
    resp = only_response(ep)
    assert resp.status == 400 and "CSeq" in resp.reason
    ep.receive_datagram(b"\x00\xffgarbage", SRC, 0.0)
    ep.receive_datagram(b"SIP/2.0 200 OK\r\nbroken", SRC, 0.0)
    assert ep.data_to_send() == []
    assert ep.statistics()["dropped"] == 2


def test_never_answers_a_broken_ack() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("ACK").replace(b"CSeq: 1 ACK", b"CSeq: x ACK"), SRC, 0.0)
    assert ep.data_to_send() == []


# ------------------------------------------------------------------- Via stamping and routing
def test_received_and_rport_stamped_and_response_goes_to_source() -> None:
    ep = Endpoint(config(answer_options=False, allow=frozenset({"OPTIONS"})))
    ep.receive_datagram(raw("OPTIONS", via="10.0.0.5:5062"), SRC, 0.0)
    (event,) = ep.events()
    assert isinstance(event, RequestReceived)
    via = event.request.top_via
    assert via.received == "203.0.113.7" and via.rport == 40000
    ep.send_response(make_response(event.request, 200, to_tag="x"), 0.1)
    ((resp, peer),) = responses(ep)
    assert peer == SRC and resp.top_via.rport == 40000


def test_without_rport_response_goes_to_sent_by_port() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("OPTIONS", via="10.0.0.5:5070", rport=False), SRC, 0.0)
    ((resp, peer),) = responses(ep)
    assert peer == Peer("udp", "203.0.113.7", 5070)
    assert resp.top_via.received == "203.0.113.7" and not resp.top_via.has_rport


def test_reliable_transport_answers_on_the_same_connection() -> None:
    ep = Endpoint(config())
    src = Peer("tcp", "203.0.113.7", 51000, conn_id=42)
    ep.receive_datagram(raw("OPTIONS"), src, 0.0)
    ((_, peer),) = responses(ep)
    assert peer == src


# ------------------------------------------------------------------------- retransmissions
def test_request_retransmission_absorbed_and_answered_again() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("REGISTER"), SRC, 0.0)
    (event,) = ep.events()
    assert isinstance(event, RequestReceived)
    ep.receive_datagram(raw("REGISTER"), SRC, 0.2)  # before the TU answered: discarded
    assert ep.events() == [] and ep.data_to_send() == []
    ep.send_response(make_response(event.request, 200, to_tag="t"), 0.3)
    first = ep.data_to_send()
    ep.receive_datagram(raw("REGISTER"), SRC, 1.0)
    assert ep.data_to_send() == first
    assert ep.events() == []
    assert ep.statistics()["retransmissions_received"] == 2


def test_uas_retransmits_2xx_until_ack() -> None:
    ep = Endpoint(config(t1=0.5, t2=4.0))
    ep.receive_datagram(raw("INVITE"), SRC, 0.0)
    (event,) = ep.events()
    assert isinstance(event, RequestReceived)
    ep.data_to_send()
    ok = make_response(event.request, 200, to_tag="uas1")
    ep.send_response(ok, 0.0)
    assert len(ep.data_to_send()) == 1
    times = []
    now = 0.0
    while (t := ep.get_timer()) is not None and t < 4.0:
        now = t
        ep.handle_timer(now)
        if ep.data_to_send():
            times.append(now)
    assert times == [0.5, 1.5, 3.5]
    ack = raw("ACK", branch="z9hG4bKack", to_tag="uas1")
    ep.receive_datagram(ack, SRC, 3.6)
    (ev,) = ep.events()
    assert isinstance(ev, AckReceived)
    ep.handle_timer(40.0)
    assert ep.data_to_send() == [] and ep.events() == []


def test_uas_2xx_without_ack_times_out() -> None:
    ep = Endpoint(config(t1=0.5))
    ep.receive_datagram(raw("INVITE"), SRC, 0.0)
    (event,) = ep.events()
    assert isinstance(event, RequestReceived)
    ep.send_response(make_response(event.request, 200, to_tag="uas1"), 0.0)
    for _ in range(100):
        t = ep.get_timer()
        if t is None:
            break
        ep.handle_timer(t)
    assert AckTimedOut(event.transaction_id) in ep.events()
    assert ep.statistics()["transactions"] == 0 and ep.get_timer() is None


# -------------------------------------------------------------------------------- CANCEL (UAS)
def test_cancel_gives_200_and_487_and_event() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("INVITE"), SRC, 0.0)
    (event,) = ep.events()
    assert isinstance(event, RequestReceived)
    ep.send_response(make_response(event.request, 180, to_tag="tt"), 0.1)
    ep.data_to_send()
    ep.receive_datagram(raw("CANCEL"), SRC, 0.2)
    got = {r.cseq.method: r for r, _ in responses(ep)}
    assert got["CANCEL"].status == 200 and got["INVITE"].status == 487
    assert got["CANCEL"].to_tag == got["INVITE"].to_tag == "tt"
    assert ep.events() == [RequestCancelled(event.transaction_id)]
    # the TU's 200 raced with the CANCEL: it is refused, not raised
    assert ep.send_response(make_response(event.request, 200, to_tag="tt"), 0.3) is False
    # the ACK for the 487 is absorbed by the INVITE server transaction
    ep.receive_datagram(raw("ACK", to_tag="tt"), SRC, 0.4)
    assert ep.events() == [] and ep.data_to_send() == []


def test_cancel_after_final_only_200() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("INVITE"), SRC, 0.0)
    (event,) = ep.events()
    assert isinstance(event, RequestReceived)
    ep.send_response(make_response(event.request, 486, to_tag="tt"), 0.1)
    ep.data_to_send()
    ep.receive_datagram(raw("CANCEL"), SRC, 0.2)
    assert [r.status for r, _ in responses(ep)] == [200]
    assert ep.events() == []


def test_cancel_without_match_is_481() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("CANCEL", branch="z9hG4bKnothing"), SRC, 0.0)
    assert only_response(ep).status == 481


# -------------------------------------------------------------------------------- CANCEL (UAC)
def invite_request() -> Request:
    return Request("INVITE", "sip:bob@192.0.2.200", Headers([
        ("From", "<sip:pbx@192.0.2.100>;tag=me"), ("To", "<sip:bob@192.0.2.200>"),
        ("Call-ID", "uac-1"), ("CSeq", "7 INVITE"), ("Contact", "<sip:pbx@192.0.2.100>")]))  # fmt: skip


BOB = Peer("udp", "192.0.2.200", 5060)


def test_uac_cancel_waits_for_provisional() -> None:
    ep = Endpoint(config())
    tx = ep.send_request(invite_request(), BOB, 0.0)
    ((data, peer),) = ep.data_to_send()
    inv = parse_message(data)
    assert isinstance(inv, Request) and peer == BOB
    assert inv.top_via.has_rport and inv.headers.get("Max-Forwards") == "70"
    ep.cancel(tx, 0.1, reason='SIP;cause=200;text="Call completed elsewhere"')
    assert ep.data_to_send() == []  # §9.1: not before a provisional response
    ep.receive_datagram(make_response(inv, 180, to_tag="b1").serialize(), BOB, 0.2)
    ((cdata, _),) = ep.data_to_send()
    cancel = parse_message(cdata)
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.top_via.branch == inv.top_via.branch and cancel.cseq.seq == 7
    assert cancel.headers.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    ep.receive_datagram(make_response(cancel, 200, to_tag="b1").serialize(), BOB, 0.3)
    ep.receive_datagram(make_response(inv, 487, to_tag="b1").serialize(), BOB, 0.3)
    statuses = [e.response.status for e in ep.events() if isinstance(e, ResponseReceived)]
    assert statuses == [180, 200, 487]
    ((adata, _),) = ep.data_to_send()
    assert adata.startswith(b"ACK ")


def test_uac_cancel_guard_times_out_invite() -> None:
    ep = Endpoint(config(t1=0.5))
    tx = ep.send_request(invite_request(), BOB, 0.0)
    ((data, _),) = ep.data_to_send()
    inv = parse_message(data)
    assert isinstance(inv, Request)
    ep.receive_datagram(make_response(inv, 180, to_tag="b1").serialize(), BOB, 0.1)
    ep.cancel(tx, 1.0)
    for _ in range(200):
        t = ep.get_timer()
        if t is None:
            break
        ep.handle_timer(t)
    events = ep.events()
    assert TransactionTimedOut(tx) in events  # §9.1: gave up 64*T1 after the CANCEL


def test_cancel_of_non_invite_is_local_error() -> None:
    ep = Endpoint(config())
    req = Request("OPTIONS", "sip:bob@192.0.2.200", Headers([
        ("From", "<sip:pbx@192.0.2.100>;tag=me"), ("To", "<sip:bob@192.0.2.200>"),
        ("Call-ID", "o"), ("CSeq", "1 OPTIONS")]))  # fmt: skip
    tx = ep.send_request(req, BOB, 0.0)
    with pytest.raises(LocalProtocolError):
        ep.cancel(tx, 0.1)
    ep.cancel("unknown", 0.1)  # ignored


@pytest.mark.parametrize("headers", [
    [("To", "<sip:bob@192.0.2.200>")],  # no From
    [("From", "<sip:pbx@192.0.2.100>;tag=me"), ("From", "<sip:x@y>;tag=2"),
     ("To", "<sip:bob@192.0.2.200>")],  # two
    [("From", "<sip:pbx@192.0.2.100>;tag=me"), ("To", "<sip:bob@192.0.2.200")],  # bad To
])  # fmt: skip
def test_own_request_needs_one_good_from_and_to(headers: list[tuple[str, str]]) -> None:
    """Values already seen good are not parsed again, but a missing, repeated or bad From/To
    in a request we send is still refused (LocalProtocolError), before anything goes out."""
    ep = Endpoint(config())
    good = [("From", "<sip:pbx@192.0.2.100>;tag=me"), ("To", "<sip:bob@192.0.2.200>")]
    for _ in range(2):  # the second time from the memo of good values
        ep.send_request(Request("OPTIONS", "sip:bob@192.0.2.200", Headers(
            [*good, ("Call-ID", "o"), ("CSeq", "1 OPTIONS")])), BOB, 0.0)
    ep.data_to_send()
    with pytest.raises(LocalProtocolError, match="incomplete request"):
        ep.send_request(Request("OPTIONS", "sip:bob@192.0.2.200", Headers(
            [*headers, ("Call-ID", "p"), ("CSeq", "1 OPTIONS")])), BOB, 0.0)
    assert ep.data_to_send() == []


def test_stray_response_counted() -> None:
    ep = Endpoint(config())
    inv = parse_message(raw("INVITE"))
    assert isinstance(inv, Request)
    ep.receive_datagram(make_response(inv, 200, to_tag="x").serialize(), SRC, 0.0)
    assert ep.events() == [] and ep.statistics()["stray_responses"] == 1


def test_transport_failure_reported() -> None:
    ep = Endpoint(config())
    peer = Peer("tcp", "192.0.2.200", 5060, conn_id=3)
    tx = ep.send_request(invite_request(), peer, 0.0)
    ep.transport_failed(peer, 0.5)
    assert ep.events() == [TransportErrored(tx)]
    assert ep.statistics()["transactions"] == 0


# ------------------------------------------------------------------------------ RFC 2543 peers
def test_rfc2543_fallback_matching() -> None:
    ep = Endpoint(config())
    old = dict(branch="1", rport=False)
    ep.receive_datagram(raw("INVITE", **old), SRC, 0.0)  # type: ignore[arg-type]
    (event,) = ep.events()
    assert isinstance(event, RequestReceived)
    ep.data_to_send()
    ep.receive_datagram(raw("INVITE", **old), SRC, 0.1)  # type: ignore[arg-type]
    assert [r.status for r, _ in responses(ep)] == [100] and ep.events() == []
    # different Request-URI, same everything else: not the same transaction
    ep.receive_datagram(raw("INVITE", uri="sip:other@192.0.2.100", **old), SRC, 0.1)  # type: ignore[arg-type]
    assert only_response(ep).status == 482
    ep.receive_datagram(raw("CANCEL", **old), SRC, 0.2)  # type: ignore[arg-type]
    assert sorted(r.status for r, _ in responses(ep)) == [200, 487]
    assert [type(e) for e in ep.events()] == [RequestCancelled]
    ep.receive_datagram(raw("ACK", to_tag="wrong", **old), SRC, 0.3)  # type: ignore[arg-type]
    acks = ep.events()
    assert len(acks) == 1 and isinstance(acks[0], AckReceived)  # not ours: goes to the TU


# ------------------------------------------------------------------------------------ Hypothesis
def _mutations() -> st.SearchStrategy[bytes]:
    methods = st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "FOO"])
    good = st.builds(
        lambda m, b, s, t, mf: raw(m, branch=b, seq=s, to_tag=t, max_forwards=mf),
        methods,
        st.sampled_from(["z9hG4bKa", "z9hG4bKb", "1", "2"]),
        st.integers(1, 3),
        st.sampled_from([None, "t1", "t2"]),
        st.sampled_from([0, 1, 70]),
    )
    resp = st.builds(
        lambda s, b, m: (
            f"SIP/2.0 {s} X\r\nVia: SIP/2.0/UDP 192.0.2.100:5060;branch={b}\r\n"
            f"From: <sip:a@b>;tag=x\r\nTo: <sip:c@d>;tag=y\r\nCall-ID: c\r\nCSeq: 1 {m}\r\n\r\n"
        ).encode(),
        st.integers(100, 699),
        st.sampled_from(["z9hG4bKa", "z9hG4bK1"]),
        st.sampled_from(["INVITE", "CANCEL", "OPTIONS"]),
    )
    flipped = st.tuples(good, st.integers(0, 400), st.binary(min_size=1, max_size=3)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]):]
    )
    return st.one_of(good, resp, flipped, st.binary(max_size=200))


ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("recv"), _mutations(), st.sampled_from([SRC, Peer("tcp", "1.2.3.4", 5, 1)])),
        st.tuples(st.just("time"), st.floats(0, 40)),
        st.tuples(st.just("answer"), st.sampled_from([100, 180, 200, 404, 487])),
        st.tuples(st.just("invite"), st.booleans()),
        st.tuples(st.just("cancel"), st.booleans()),
        st.tuples(st.just("fail"), st.booleans()),
    ),
    max_size=30,
)


@given(ACTIONS)
def test_random_event_sequences_never_raise(actions: list[tuple[object, ...]]) -> None:
    ep = Endpoint(config())
    now = 0.0
    pending: list[Request] = []
    client: list[str] = []
    for action in actions:
        kind = action[0]
        if kind == "recv":
            data, peer = action[1], action[2]
            assert isinstance(data, bytes) and isinstance(peer, Peer)
            ep.receive_datagram(data, peer, now)
        elif kind == "time":
            assert isinstance(action[1], float)
            now += action[1]
            ep.handle_timer(now)
        elif kind == "answer" and pending:
            status = action[1]
            assert isinstance(status, int)
            ep.send_response(make_response(pending[-1], status, to_tag="me"), now)
        elif kind == "invite":
            client.append(ep.send_request(invite_request(), BOB, now))
        elif kind == "cancel" and client:
            ep.cancel(client[-1], now)
        elif kind == "fail":
            ep.transport_failed(SRC, now)
        for event in ep.events():
            if isinstance(event, RequestReceived):
                pending.append(event.request)
        ep.data_to_send()
        t = ep.get_timer()
        assert t is None or t >= 0
    stats = ep.statistics()
    assert stats["internal_errors"] == 0
    # everything ends once the TU has answered what it was given: after 10 minutes of silence
    # no transaction and no timer is left
    for req in pending:
        ep.send_response(make_response(req, 500, to_tag="me"), now)
    if any(ep.transaction(tx) is not None for tx in client):
        ep.transport_failed(BOB, now)
    ep.handle_timer(now + 600.0)
    assert ep.statistics()["transactions"] == 0 and ep.get_timer() is None


@pytest.mark.parametrize("status", [401, 407])
def test_challenge_from_another_address_never_reaches_the_transaction(status: int) -> None:
    """SECURITY.md "credential leaks": a 401/407 with our branch from anywhere but where the
    INVITE went is reported as ForeignChallengeDropped (no ACK to anybody); the transaction
    still takes the real answer, whose ResponseReceived names its source."""
    ep = Endpoint(config())
    tx = ep.send_request(invite_request(), BOB, 0.0)
    ((data, _),) = ep.data_to_send()
    inv = parse_message(data)
    assert isinstance(inv, Request)
    challenge = make_response(inv, status, to_tag="x1")
    for forger in (Peer("udp", "198.51.100.66", BOB.port), Peer("udp", BOB.host, BOB.port + 1),
                   Peer("tcp", BOB.host, BOB.port, conn_id=3)):
        ep.receive_datagram(challenge.serialize(), forger, 0.1)
        (event,) = ep.events()
        assert isinstance(event, ForeignChallengeDropped)
        assert (event.transaction_id, event.peer, event.sent_to) == (tx, forger, BOB)
        assert event.response.status == status
        assert ep.data_to_send() == []  # not even an ACK
    assert ep.statistics()["foreign_challenges"] == 3
    real = Peer("udp", f"::ffff:{BOB.host}", BOB.port)  # a dual-stack socket's spelling
    ep.receive_datagram(challenge.serialize(), real, 0.2)
    (event,) = ep.events()
    assert isinstance(event, ResponseReceived) and event.peer == real
    assert event.transaction_id == tx and event.response.status == status
    ((ack, _),) = ep.data_to_send()
    assert ack.startswith(b"ACK ")


def test_came_from_compares_connection_address_and_port() -> None:
    sent = Peer("tcp", "192.0.2.5", 5060, conn_id=4)
    assert came_from(sent, Peer("tcp", "192.0.2.5", 5060, conn_id=4))
    assert not came_from(sent, Peer("tcp", "192.0.2.5", 5060, conn_id=5))
    fresh = Peer("tcp", "192.0.2.5", 5060)  # "open a new connection": compare the address
    assert came_from(fresh, Peer("tcp", "192.0.2.5", 5060, conn_id=9))
    assert not came_from(fresh, Peer("tcp", "192.0.2.6", 5060, conn_id=9))
    assert not came_from(fresh, Peer("udp", "192.0.2.5", 5060))
    assert came_from(Peer("udp", "[2001:db8::1]", 5060), Peer("udp", "2001:db8:0::1", 5060))
    # a DNS name was resolved by the transport: the TU has to judge (trunks do)
    assert came_from(Peer("udp", "carrier.example", 5060), Peer("udp", "192.0.2.9", 5060))


# ----------------------------------------------------------------- 100 Trying held for the TU
def test_held_trying_spared_when_the_tu_answers_at_once() -> None:
    """With trying_delay 0 an INVITE the TU answers in the same round (a 407 challenge) gets
    only that answer; one the TU leaves pending gets its 100 when the endpoint is flushed;
    a retransmission of an answered INVITE is answered with the final response."""
    ep = Endpoint(config(trying_delay=0.0))
    ep.receive_datagram(raw("INVITE", branch="z9hG4bKa"), SRC, 0.0)
    assert ep.data_to_send() == []  # nothing yet: the TU has not seen it
    (challenged,) = ep.events()
    assert isinstance(challenged, RequestReceived)
    ep.send_response(make_response(challenged.request, 407, to_tag="t1"), 0.0)
    assert ep.flush_trying(0.0) is False
    assert [r.status for r, _ in responses(ep)] == [407]

    ep.receive_datagram(raw("INVITE", branch="z9hG4bKb", call_id="call-2"), SRC, 0.1)
    assert len(ep.events()) == 1
    assert ep.flush_trying(0.1) is True
    assert [r.status for r, _ in responses(ep)] == [100]
    assert ep.flush_trying(0.2) is False  # once
    ep.receive_datagram(raw("INVITE", branch="z9hG4bKb", call_id="call-2"), SRC, 0.3)
    assert [r.status for r, _ in responses(ep)] == [100]  # retransmission: the 100 again


def test_trying_delay_waits_for_the_tus_provisional() -> None:
    """With trying_delay the held 100 goes out only when the TU has sent nothing by then; a
    relayed 180 within the delay means no 100 at all; a retransmitted INVITE gets it at once."""
    ep = Endpoint(config(trying_delay=0.2))
    ep.receive_datagram(raw("INVITE", branch="z9hG4bKa", call_id="slow"), SRC, 0.0)
    ep.receive_datagram(raw("INVITE", branch="z9hG4bKb", call_id="fast"), SRC, 0.05)
    ep.receive_datagram(raw("INVITE", branch="z9hG4bKc", call_id="retx"), SRC, 0.06)
    (_slow, fast, retx) = ep.events()
    assert isinstance(fast, RequestReceived) and isinstance(retx, RequestReceived)
    assert ep.flush_trying(0.06) is False and responses(ep) == []
    assert ep.get_timer() == 0.2  # the first held 100 is due 200 ms after its INVITE
    ep.send_response(make_response(fast.request, 180, to_tag="t2"), 0.1)
    ep.receive_datagram(raw("INVITE", branch="z9hG4bKc", call_id="retx"), SRC, 0.15)
    assert [(r.status, r.call_id) for r, _ in responses(ep)] == [(180, "fast"), (100, "retx")]
    ep.handle_timer(0.2)
    assert [(r.status, r.call_id) for r, _ in responses(ep)] == [(100, "slow")]
    ep.handle_timer(0.3)  # "fast" was answered by its 180, "retx" had its 100: nothing more
    assert responses(ep) == []
    ep.receive_datagram(raw("INVITE", branch="z9hG4bKb", call_id="fast"), SRC, 0.5)
    assert [r.status for r, _ in responses(ep)] == [180]  # a retransmission: the last response


def test_trying_is_immediate_by_default() -> None:
    ep = Endpoint(config())
    ep.receive_datagram(raw("INVITE"), SRC, 0.0)
    assert [r.status for r, _ in responses(ep)] == [100]
    assert ep.flush_trying(0.0) is False


def test_broken_ack_for_a_2xx_is_dropped_not_passed_on() -> None:
    """An ACK outside any transaction goes to the TU only when its core headers parse (it is
    validated on that path; nothing is ever answered to an ACK); a good one is passed on."""
    ep = Endpoint(config())
    bad = raw("ACK", branch="z9hG4bKack1", to_tag="t1").replace(
        b"To: <sip:pbx@192.0.2.100>;tag=t1", b"To: <sip:pbx@192.0.2.100;tag=t1")
    ep.receive_datagram(bad, SRC, 0.0)
    assert ep.events() == [] and ep.data_to_send() == []
    assert ep.statistics()["dropped"] == 1
    ep.receive_datagram(raw("ACK", branch="z9hG4bKack2", to_tag="t1"), SRC, 0.1)
    (event,) = ep.events()
    assert isinstance(event, AckReceived) and event.request.to_tag == "t1"


def test_ack_for_a_non_2xx_is_absorbed_without_parsing_from_and_to() -> None:
    """The ACK for our 407 matches its INVITE transaction by branch and is absorbed (§17.2.1);
    its From/To are not needed for that, so an odd one does not stop the confirmation."""
    ep = Endpoint(config())
    ep.receive_datagram(raw("INVITE", branch="z9hG4bKinv"), SRC, 0.0)
    (invite,) = ep.events()
    assert isinstance(invite, RequestReceived)
    ep.send_response(make_response(invite.request, 407, to_tag="t7"), 0.0)
    ep.data_to_send()
    ack = raw("ACK", branch="z9hG4bKinv", to_tag="t7").replace(
        b"From: <sip:alice@example.com>", b"From: <sip:alice@example.com")
    ep.receive_datagram(ack, SRC, 0.1)
    assert ep.events() == [] and ep.data_to_send() == []
    tx = ep.transaction(invite.transaction_id)
    assert tx is not None and tx.state is State.CONFIRMED  # no more 407 retransmissions


def test_stopped_timers_hold_nothing() -> None:
    """A stopped timer leaves at most a stale (deadline, token) pair in the heap: the endpoint
    keeps no reference to its owner, so a finished transaction is freed at once rather than
    when the timer's 32 s deadline comes round (at hundreds of calls a second that is tens of
    thousands of objects)."""
    ep = Endpoint(config())
    req = Request("OPTIONS", "sip:bob@192.0.2.200", Headers([
        ("From", "<sip:pbx@192.0.2.100>;tag=me"), ("To", "<sip:bob@192.0.2.200>"),
        ("Call-ID", "t"), ("CSeq", "1 OPTIONS")]))  # fmt: skip
    tx_id = ep.send_request(req, BOB, 0.0)
    tx = ep.transaction(tx_id)
    assert tx is not None and set(tx.timers) == {Input.TIMER_E, Input.TIMER_F}
    assert ep.statistics()["timers"] == 2
    (sent, _), = ep.data_to_send()
    request = parse_message(sent)
    assert isinstance(request, Request)
    ep.receive_datagram(make_response(request, 200, to_tag="b").serialize(), BOB, 0.1)
    assert set(tx.timers) == {Input.TIMER_K}  # E and F stopped, K (T4) armed
    assert ep.statistics()["timers"] == 1
    assert [timer for owner, timer in ep._armed.values() if owner is tx] == [Input.TIMER_K]
    ep.handle_timer(0.1 + 5.0)  # Timer K: terminated
    assert ep.transaction(tx_id) is None and ep.statistics()["timers"] == 0
    assert not any(tx in entry for entry in ep._heap)  # only (deadline, token) pairs
    assert ep.get_timer() is None  # the stale F entry was dropped, nothing is due
