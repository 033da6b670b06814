"""RFC 6665 subscriptions (sipcore.subscription) and the RFC 3842 body (sipcore.message_summary):
every table pair, the defined meaning of a missing pair, the notifier's and the subscriber's
timers with explicit ``now``, the SUBSCRIBE screening."""

from __future__ import annotations

import pytest

from sipcore.errors import LocalProtocolError, ParseError
from sipcore.message import Request, parse_message
from sipcore.message_summary import Counts, build, parse
from sipcore.subscription import (
    NOTIFIER_LOCAL,
    NOTIFIER_TABLE,
    SUBSCRIBER_LOCAL,
    SUBSCRIBER_TABLE,
    Notifier,
    SubAction,
    SubInput,
    Subscriber,
    SubState,
    check_subscribe,
    lookup,
    parse_subscription_state,
)

PACKAGES = {"message-summary": 3600}


def state_of(machine: Notifier | Subscriber) -> SubState:
    """The state, read through a call (mypy would narrow the attribute between checks)."""
    return machine.state


def subscribe(event: str | None = "message-summary", expires: str | None = "600") -> Request:
    lines = ["SUBSCRIBE sip:100@pbx.test SIP/2.0", "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",
             "From: <sip:100@pbx.test>;tag=a", "To: <sip:100@pbx.test>", "Call-ID: c1",
             "CSeq: 1 SUBSCRIBE", "Max-Forwards: 70"]
    if event is not None:
        lines.append(f"Event: {event}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    req = parse_message(("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode())
    assert isinstance(req, Request)
    return req


@pytest.mark.parametrize(("table", "local"), [(NOTIFIER_TABLE, NOTIFIER_LOCAL),
                                              (SUBSCRIBER_TABLE, SUBSCRIBER_LOCAL)])
def test_every_pair_is_defined(table: object, local: frozenset[SubInput]) -> None:
    assert isinstance(table, dict)
    for state in SubState:
        for event in SubInput:
            entry = table.get((state, event))
            if entry is not None:
                assert lookup(table, local, state, event) == entry
            elif event in local:
                with pytest.raises(LocalProtocolError):
                    lookup(table, local, state, event)
            else:
                assert lookup(table, local, state, event) == (SubAction.IGNORE, state)


def test_screening() -> None:
    assert check_subscribe(subscribe(), PACKAGES).status == 200
    assert check_subscribe(subscribe(), PACKAGES).expires == 600
    bad = check_subscribe(subscribe("presence"), PACKAGES)
    assert bad.status == 489 and ("Allow-Events", "message-summary") in bad.headers
    assert check_subscribe(subscribe(None), PACKAGES).status == 400
    brief = check_subscribe(subscribe(expires="10"), PACKAGES, min_expires=60)
    assert brief.status == 423 and ("Min-Expires", "60") in brief.headers
    assert check_subscribe(subscribe(expires="0"), PACKAGES).expires == 0
    assert check_subscribe(subscribe(expires=None), PACKAGES).expires == 3600
    assert check_subscribe(subscribe(expires="99999"), PACKAGES, max_expires=7200).expires == 7200
    assert check_subscribe(subscribe("Message-Summary;id=4"), PACKAGES).status == 200
    assert check_subscribe(subscribe(expires="soon"), PACKAGES).status == 400


def test_notifier_life() -> None:
    n = Notifier()
    step = n.subscribe(600, now=1000.0)
    assert (step.action, step.status, step.subscription_state) == (
        SubAction.ACCEPT, 200, "active;expires=600")
    assert state_of(n) is SubState.ACTIVE
    change = n.changed(now=1100.0)
    assert change.action is SubAction.NOTIFY and change.subscription_state == "active;expires=500"
    assert n.poll(1599.0).action is SubAction.IGNORE
    refresh = n.subscribe(300, now=1500.0)
    assert refresh.action is SubAction.ACCEPT and n.expires_at == 1800.0
    assert n.poll(1799.0).action is SubAction.IGNORE
    expired = n.poll(1800.0)
    assert expired.action is SubAction.FINAL_NOTIFY
    assert expired.subscription_state == "terminated;reason=timeout"
    assert state_of(n) is SubState.TERMINATED
    assert n.changed(1900.0).action is SubAction.IGNORE
    assert n.subscribe(600, 1900.0).status == 481


def test_notifier_unsubscribe_fetch_failure_shutdown() -> None:
    n = Notifier()
    n.subscribe(600, 0.0)
    bye = n.subscribe(0, 10.0)
    assert (bye.action, bye.status) == (SubAction.FINAL_NOTIFY, 200)
    assert bye.subscription_state is not None and bye.subscription_state.startswith("terminated")
    fetch = Notifier().subscribe(0, 0.0)
    assert fetch.action is SubAction.FINAL_NOTIFY
    failed = Notifier()
    failed.subscribe(600, 0.0)
    assert failed.notify_failed().action is SubAction.END
    assert state_of(failed) is SubState.TERMINATED
    down = Notifier()
    down.subscribe(600, 0.0)
    assert down.shutdown().subscription_state == "terminated;reason=deactivated"
    assert down.shutdown().action is SubAction.IGNORE
    with pytest.raises(LocalProtocolError):
        Notifier().changed(0.0)  # nothing to notify before it is accepted


def test_subscriber_life() -> None:
    s = Subscriber(600)
    assert s.start().action is SubAction.SEND_SUBSCRIBE and state_of(s) is SubState.PENDING
    with pytest.raises(LocalProtocolError):
        s.start()
    assert s.response(200, 600, now=0.0).action is SubAction.ARM_REFRESH
    assert s.refresh_at == pytest.approx(540.0) and s.expires_at == 600.0
    assert s.notify("active;expires=600", 1.0).status == 200
    assert s.poll(100.0).action is SubAction.IGNORE
    due = s.poll(541.0)
    assert due.action is SubAction.SEND_SUBSCRIBE and due.expires == 600
    s.response(200, 120, now=541.0)  # the notifier granted less
    assert s.refresh_at == pytest.approx(541.0 + 88.0)
    assert s.notify(None, 2.0).status == 400
    assert s.unsubscribe().action is SubAction.SEND_UNSUBSCRIBE
    assert state_of(s) is SubState.TERMINATING
    end = s.notify("terminated;reason=timeout", 600.0)
    assert end.action is SubAction.ACCEPT_FINAL_NOTIFY and state_of(s) is SubState.TERMINATED


def test_subscriber_rejected_and_expired() -> None:
    s = Subscriber(600)
    s.start()
    assert s.response(489, None, 0.0).action is SubAction.END
    t = Subscriber(60)
    t.start()
    t.response(202, None, 0.0)
    assert t.expires_at == 60.0
    t.poll(54.0)  # the refresh is due; nobody sent it
    assert t.poll(60.0).action is SubAction.END and state_of(t) is SubState.TERMINATED


def test_subscription_state_header() -> None:
    assert parse_subscription_state("Active ; expires=30") == ("active", {"expires": "30"})
    assert parse_subscription_state("terminated;reason=noresource") == (
        "terminated", {"reason": "noresource"})
    with pytest.raises(ParseError):
        parse_subscription_state("  ")


def test_message_summary_build_and_parse() -> None:
    body = build(True, Counts(2, 8, 0, 2), account="sip:alice@vmail.example.com")
    assert body == (b"Messages-Waiting: yes\r\nMessage-Account: sip:alice@vmail.example.com\r\n"
                    b"Voice-Message: 2/8 (0/2)\r\n")
    got = parse(body)
    assert got.waiting and got.account == "sip:alice@vmail.example.com"
    assert got.voice == Counts(2, 8, 0, 2)
    assert parse(build(False)).waiting is False
    assert parse(build(False)).voice == Counts()


def test_message_summary_rfc3842_example() -> None:
    # RFC 3842 §5.2, with optional message headers after the blank line
    text = ("Messages-Waiting: yes\r\nMessage-Account: sip:alice@vmail.example.com\r\n"
            "Voice-Message: 4/8 (1/2)\r\nFax-Message: 1/0\r\n\r\n"
            "To: <alice@atlanta.example.com>\r\nFrom: <bob@biloxi.example.com>\r\n")
    got = parse(text)
    assert got.voice == Counts(4, 8, 1, 2)
    assert got.classes["fax-message"] == Counts(1, 0)
    assert parse("messages-waiting: NO\nvoice-message: 0/1\n").voice == Counts(0, 1)


@pytest.mark.parametrize("bad", ["Voice-Message: 1/0\r\n", "Messages-Waiting: maybe\r\n",
                                 "Messages-Waiting: yes\r\nVoice-Message: lots\r\n",
                                 "garbage\r\n"])
def test_message_summary_refuses(bad: str) -> None:
    with pytest.raises(ParseError):
        parse(bad)
