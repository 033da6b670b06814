"""sipcore.stateless: requests read only as far as a stateless answer needs, checked against
the full parser and make_response (the stateful path's answer)."""

from __future__ import annotations

import pytest

from sipcore import stateless
from sipcore.message import Request, Response, make_response, parse_message

INVITE = (
    b"INVITE sip:101@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK-abc;rport\r\n"
    b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bK-p1, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-p2\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: \"Alice\" <sip:100@example.com>;tag=f1\r\n"
    b"To: <sip:101@example.com>\r\n"
    b"Call-ID: c1@10.0.0.5\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:100@10.0.0.5:5070>\r\n"
    b"Content-Length: 0\r\n\r\n")

SECRET = b"k" * 32


def test_peek_reads_method_echoed_fields_and_credentials() -> None:
    head = stateless.peek(INVITE)
    assert head is not None
    assert head.method == "INVITE"
    assert len(head.vias) == 2 and head.vias[0].startswith(b"SIP/2.0/UDP 10.0.0.5:5070")
    assert head.call_id == b"c1@10.0.0.5" and head.cseq == b"1 INVITE"
    assert head.to_tag is None and head.branch == "z9hG4bK-abc"
    assert not head.credentials
    with_auth = INVITE.replace(b"Max-Forwards: 70\r\n",
                               b"Proxy-Authorization: Digest username=\"100\"\r\n")
    peeked = stateless.peek(with_auth)
    assert peeked is not None and peeked.credentials


def test_compact_forms_and_tags_outside_the_uri() -> None:
    compact = (b"REGISTER sip:example.com SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
               b"f: <sip:a@example.com;tag=not-this>;tag=ft\r\n"
               b"t: <sip:a@example.com;tag=inside>\r\ni: x\r\nCSeq: 2 REGISTER\r\n\r\n")
    head = stateless.peek(compact)
    assert head is not None and head.method == "REGISTER"
    assert head.to_tag is None  # the ;tag inside <> is a URI parameter
    in_dialog = compact.replace(b"t: <sip:a@example.com;tag=inside>", b"t: sip:a@example.com;tag=tt")
    peeked = stateless.peek(in_dialog)
    assert peeked is not None and peeked.to_tag == "tt"


@pytest.mark.parametrize("data", [
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n",          # a response
    INVITE.replace(b"Call-ID: c1@10.0.0.5\r\n", b""),                        # missing Call-ID
    INVITE.replace(b"To: <sip:101@example.com>\r\n",
                   b"To: <sip:101@example.com>\r\nTo: <sip:666@example.com>\r\n"),  # two To
    INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards:\r\n 70\r\n"),    # folded
    INVITE.replace(b"\r\n", b"\n"),                                          # LF only
    INVITE.replace(b"INVITE sip:101@127.0.0.1 SIP/2.0", b"INVITE  sip:101@127.0.0.1 SIP/2.0"),
    b"INVITE sip:x SIP/2.0\r\n",                                              # no fields
    b"\xff\xfe garbage",
])
def test_what_is_not_plainly_a_request_is_left_to_the_parser(data: bytes) -> None:
    assert stateless.peek(data) is None


def test_reply_matches_the_stateful_answer() -> None:
    head = stateless.peek(INVITE)
    assert head is not None
    tag = stateless.stateless_tag(SECRET, head)
    wire = stateless.reply(head, 503, "Service Unavailable", source=("127.0.0.77", 40001),
                           to_tag=tag, headers=(("Retry-After", "5"),))
    ours = parse_message(wire)
    assert isinstance(ours, Response)
    request = parse_message(INVITE)
    assert isinstance(request, Request)
    reference = make_response(request, 503, "Service Unavailable", to_tag=tag)
    assert ours.status == 503 and ours.headers.get("Retry-After") == "5"
    assert ours.headers.get("Content-Length") == "0" and ours.body == b""
    for name in ("From", "To", "Call-ID", "CSeq"):
        assert ours.headers.get(name) == reference.headers.get(name), name
    vias = ours.vias
    assert [v.branch for v in vias] == ["z9hG4bK-abc", "z9hG4bK-p1", "z9hG4bK-p2"]
    assert vias[0].params["received"] == "127.0.0.77" and vias[0].params["rport"] == "40001"
    assert ours.to.tag == tag and tag.startswith(stateless.TAG_PREFIX)


def test_received_only_when_the_source_differs_and_no_rport() -> None:
    plain = INVITE.replace(b";rport\r\n", b"\r\n")
    head = stateless.peek(plain)
    assert head is not None
    same = parse_message(stateless.reply(head, 503, "x", source=("10.0.0.5", 5070), to_tag="t"))
    assert "received" not in same.vias[0].params and "rport" not in same.vias[0].params
    other = parse_message(stateless.reply(head, 503, "x", source=("10.9.9.9", 5070), to_tag="t"))
    assert other.vias[0].params["received"] == "10.9.9.9"


def test_reply_port_follows_rport_or_sent_by() -> None:
    head = stateless.peek(INVITE)
    assert head is not None and stateless.reply_port(head, 40001) == 40001
    no_rport = stateless.peek(INVITE.replace(b";rport\r\n", b"\r\n"))
    assert no_rport is not None and stateless.reply_port(no_rport, 40001) == 5070
    no_port = stateless.peek(INVITE.replace(b"10.0.0.5:5070;branch=z9hG4bK-abc;rport",
                                            b"10.0.0.5;branch=z9hG4bK-abc"))
    assert no_port is not None and stateless.reply_port(no_port, 40001) == 5060


def test_the_tag_is_stable_per_request_and_recognises_its_ack() -> None:
    head = stateless.peek(INVITE)
    assert head is not None
    tag = stateless.stateless_tag(SECRET, head)
    again = stateless.peek(INVITE)  # a retransmission
    assert again is not None and stateless.stateless_tag(SECRET, again) == tag
    assert stateless.stateless_tag(b"other" * 7, head) != tag
    other_call = stateless.peek(INVITE.replace(b"c1@10.0.0.5", b"c2@10.0.0.5"))
    assert other_call is not None and stateless.stateless_tag(SECRET, other_call) != tag
    # the ACK of a non-2xx final response: same branch and Call-ID, To with the answer's tag
    ack = (INVITE.replace(b"INVITE sip:", b"ACK sip:").replace(b"1 INVITE", b"1 ACK")
           .replace(b"To: <sip:101@example.com>", b"To: <sip:101@example.com>;tag=" + tag.encode()))
    ack_head = stateless.peek(ack)
    assert ack_head is not None and stateless.is_ack_of(SECRET, ack_head)
    forged = stateless.peek(ack.replace(tag.encode(), b"sl-000000000000"))
    assert forged is not None and not stateless.is_ack_of(SECRET, forged)
