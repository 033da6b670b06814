"""The outbound registration state machine (sipcore.uac_register) with a fake clock.

The "carrier" is a real :class:`DigestServer`: every credential we send is verified, so a test
passes only if the digest answer is right, not just present.
"""

from __future__ import annotations

import itertools

import pytest

from sipcore.digest import DigestServer, parse_auth_header
from sipcore.errors import LocalProtocolError
from sipcore.message import Request, Response, make_response, new_tag
from sipcore.transport import Peer
from sipcore.uac_register import (
    MAX_CHALLENGES,
    TABLE,
    Action,
    ChallengeRefused,
    Registration,
    RegistrationInput,
    RegistrationState,
    StateChanged,
    lookup,
    same_host,
)

St, In = RegistrationState, RegistrationInput
CARRIER = Peer("udp", "192.0.2.10", 5060)
REALM = "carrier.test"
USER, PASSWORD = "4930111", "s3cret"
CONTACT = "sip:4930111@198.51.100.1:5062"


class Carrier:
    """Answers our REGISTERs like a registrar with digest auth would."""

    def __init__(self, realm: str = REALM, *, proxy: bool = False) -> None:
        self.digest = DigestServer(realm, b"k" * 32, algorithms=("MD5",), proxy=proxy)
        self.now = 1000.0

    def challenge(self, request: Request, *, stale: bool = False) -> Response:
        return self.digest.challenge(request, "198.51.100.1", self.now, stale=stale)

    def verify_ok(self, request: Request) -> bool:
        lookup_user = {USER: _creds()}.get
        return self.digest.verify(request, "198.51.100.1", lookup_user, self.now).ok


def _creds():  # type: ignore[no-untyped-def]
    from sipcore.digest import make_credentials

    return make_credentials(USER, REALM, PASSWORD, ("MD5",))


def reply(request: Request, status: int, *headers: tuple[str, str]) -> Response:
    response = make_response(request, status, to_tag=new_tag())
    for name, value in headers:
        response.headers.add(name, value)
    return response


def make(**kw: object) -> Registration:
    args: dict[str, object] = dict(
        registrar="sip:192.0.2.10", aor=f"sip:{USER}@carrier.test", contact=CONTACT,
        peer=CARRIER, username=USER, password=PASSWORD, realm=REALM, expires=600,
        retry_base=10.0, retry_max=80.0, call_id="cid-1", from_tag="ft-1",
    )
    args.update(kw)
    return Registration(**args)  # type: ignore[arg-type]


def one(reg: Registration) -> Request:
    out = reg.requests_to_send()
    assert len(out) == 1, out
    return out[0]


def states(reg: Registration) -> list[RegistrationState]:
    return [e.state for e in reg.events() if isinstance(e, StateChanged)]


def register(reg: Registration, carrier: Carrier, now: float, *, expires: int = 120) -> None:
    """Drive a fresh (or failed) registration through challenge and 200."""
    first = one(reg)
    reg.handle_response(carrier.challenge(first), now)
    second = one(reg)
    assert carrier.verify_ok(second)
    reg.handle_response(reply(second, 200, ("Contact", f"<{CONTACT}>;expires={expires}")), now)
    assert reg.state is St.REGISTERED


# ----------------------------------------------------------------------------- happy path
def test_register_challenge_then_200_then_refresh_at_85_percent() -> None:
    reg, carrier = make(), Carrier()
    reg.start(0.0)
    first = one(reg)
    assert first.method == "REGISTER" and str(first.uri) == "sip:192.0.2.10"
    assert "Authorization" not in first.headers
    assert first.headers.get("Expires") == "600"
    assert first.cseq.seq == 1 and first.call_id == "cid-1" and first.from_tag == "ft-1"
    assert first.contacts[0].uri == reg.contact
    assert "Via" not in first.headers  # the endpoint adds one with a fresh branch

    reg.handle_response(carrier.challenge(first), 0.1)
    second = one(reg)
    assert second.cseq.seq == 2 and second.call_id == "cid-1" and second.from_tag == "ft-1"
    assert carrier.verify_ok(second), second.headers.get("Authorization")
    assert reg.state is St.REGISTERING

    reg.handle_response(reply(second, 200, ("Contact", f"<{CONTACT}>;expires=120")), 0.2)
    assert reg.state is St.REGISTERED
    assert reg.granted == 120 and reg.expires_at == pytest.approx(120.2)
    assert reg.get_timer() == pytest.approx(0.2 + 0.85 * 120)
    assert states(reg) == [St.REGISTERING, St.REGISTERED]

    reg.handle_timer(50.0)  # early: nothing
    assert reg.requests_to_send() == [] and reg.state is St.REGISTERED
    reg.handle_timer(reg.get_timer() or 0.0)
    refresh = one(reg)
    assert reg.state is St.REFRESHING
    assert refresh.cseq.seq == 3 and refresh.call_id == "cid-1" and refresh.from_tag == "ft-1"
    assert "Authorization" not in refresh.headers
    reg.handle_response(carrier.challenge(refresh), 103.0)
    again = one(reg)
    assert carrier.verify_ok(again)
    reg.handle_response(reply(again, 200, ("Expires", "60")), 103.1)
    assert reg.state is St.REGISTERED and reg.granted == 60
    assert reg.get_timer() == pytest.approx(103.1 + 51.0)


def test_proxy_challenge_407_is_answered_with_proxy_authorization() -> None:
    reg, carrier = make(), Carrier(proxy=True)
    reg.start(0.0)
    reg.handle_response(carrier.challenge(one(reg)), 0.0)
    second = one(reg)
    assert "Proxy-Authorization" in second.headers and "Authorization" not in second.headers
    assert carrier.verify_ok(second)


@pytest.mark.parametrize(
    ("headers", "granted"),
    [
        ([("Contact", f"<{CONTACT}>;expires=30"), ("Expires", "90")], 30),  # contact wins
        ([("Contact", "<sip:other@203.0.113.9>;expires=5"), ("Expires", "90")], 90),
        ([("Contact", f"<{CONTACT};transport=udp>;expires=45")], 45),  # params reordered
        ([("Expires", "90")], 90),
        ([], 600),  # nothing said: what we asked for
    ],
)
def test_granted_expiry_honours_the_200(headers: list[tuple[str, str]], granted: int) -> None:
    reg = make()
    reg.start(0.0)
    reg.handle_response(reply(one(reg), 200, *headers), 1.0)
    assert reg.state is St.REGISTERED and reg.granted == granted
    assert reg.get_timer() == pytest.approx(1.0 + 0.85 * granted)


def test_short_expiry_never_refreshes_sooner_than_a_second() -> None:
    reg = make()
    reg.start(0.0)
    reg.handle_response(reply(one(reg), 200, ("Expires", "1")), 0.0)
    assert reg.get_timer() == pytest.approx(1.0)


def test_200_granting_zero_is_a_failure() -> None:
    reg = make()
    reg.start(0.0)
    reg.handle_response(reply(one(reg), 200, ("Expires", "0")), 0.0)
    assert reg.state is St.FAILED and reg.last_error is not None


# ----------------------------------------------------------------------------------- 423
def test_423_raises_expires_to_min_expires_and_retries_at_once() -> None:
    reg = make(expires=60)
    reg.start(0.0)
    reg.handle_response(reply(one(reg), 423, ("Min-Expires", "1800")), 0.0)
    again = one(reg)
    assert reg.state is St.REGISTERING and reg.expires == 1800
    assert again.headers.get("Expires") == "1800" and again.cseq.seq == 2
    reg.handle_response(reply(again, 200), 0.0)
    assert reg.granted == 1800


@pytest.mark.parametrize("min_expires", [None, "30", "60", "junk"])
def test_423_without_a_larger_min_expires_fails(min_expires: str | None) -> None:
    reg = make(expires=60)
    reg.start(0.0)
    headers = [("Min-Expires", min_expires)] if min_expires else []
    reg.handle_response(reply(one(reg), 423, *headers), 0.0)
    assert reg.state is St.FAILED and reg.requests_to_send() == []


# -------------------------------------------------------------------------------- back-off
def test_failures_back_off_exponentially_up_to_the_maximum_and_reset_on_success() -> None:
    reg, now = make(), 0.0
    reg.start(now)
    delays = []
    for status in (503, 403, 500, 404, 408, 480):
        request = one(reg)
        reg.handle_response(reply(request, status), now)
        assert reg.state is St.FAILED
        deadline = reg.get_timer()
        assert deadline is not None
        delays.append(deadline - now)
        assert reg.requests_to_send() == []
        reg.handle_timer(deadline - 0.001)
        assert reg.state is St.FAILED
        now = deadline
        reg.handle_timer(now)
        assert reg.state is St.REGISTERING
    assert delays == [10.0, 20.0, 40.0, 80.0, 80.0, 80.0]
    assert reg.failures == 6
    reg.handle_response(reply(one(reg), 200), now)
    assert reg.failures == 0 and reg.last_error is None
    reg.handle_timer(reg.get_timer() or 0.0)
    reg.handle_response(reply(one(reg), 500), now + 600)
    assert reg.get_timer() == pytest.approx(now + 600 + 10.0)


def test_retry_after_is_honoured_within_the_maximum() -> None:
    reg = make(retry_max=3600.0)
    reg.start(0.0)
    reg.handle_response(reply(one(reg), 503, ("Retry-After", "120 (maintenance)")), 5.0)
    assert reg.get_timer() == pytest.approx(125.0)


@pytest.mark.parametrize("reason", ["timeout", "transport error"])
def test_transaction_failure_backs_off(reason: str) -> None:
    reg = make()
    reg.start(0.0)
    request = one(reg)
    reg.handle_failure(request.cseq.seq + 5, 1.0, reason)  # not the current request: ignored
    assert reg.state is St.REGISTERING
    reg.handle_failure(request.cseq.seq, 32.0, reason)
    assert reg.state is St.FAILED and reg.last_error == reason
    assert reg.get_timer() == pytest.approx(42.0)


def test_refresh_failure_goes_to_failed_and_retries() -> None:
    reg = make()
    reg.start(0.0)
    reg.handle_response(reply(one(reg), 200, ("Expires", "100")), 0.0)
    reg.handle_timer(85.0)
    reg.handle_failure(one(reg).cseq.seq, 117.0, "timeout")
    assert reg.state is St.FAILED and reg.expires_at is None
    reg.handle_timer(127.0)
    assert reg.state is St.REGISTERING and len(reg.requests_to_send()) == 1


# ---------------------------------------------------------------------------- digest rules
def test_stale_nonce_is_answered_with_the_new_nonce() -> None:
    reg, carrier = make(), Carrier()
    reg.start(0.0)
    reg.handle_response(carrier.challenge(one(reg)), 0.0)
    second = one(reg)
    carrier.now += 1
    reg.handle_response(carrier.challenge(second, stale=True), 0.0)
    third = one(reg)
    assert reg.state is St.REGISTERING and third.cseq.seq == 3
    nonce2 = parse_auth_header(second.headers.get("Authorization") or "").params["nonce"]
    nonce3 = parse_auth_header(third.headers.get("Authorization") or "").params["nonce"]
    assert nonce2 != nonce3
    assert len(third.headers.get_all("Authorization")) == 1
    assert carrier.verify_ok(third)


def test_credentials_rejected_are_not_sent_again() -> None:
    reg, carrier = make(), Carrier()
    reg.start(0.0)
    reg.handle_response(carrier.challenge(one(reg)), 0.0)
    second = one(reg)
    reg.handle_response(carrier.challenge(second), 0.0)  # non-stale again: wrong password
    assert reg.requests_to_send() == []
    assert reg.state is St.FAILED
    refused = [e for e in reg.events() if isinstance(e, ChallengeRefused)]
    assert len(refused) == 1 and "rejected" in refused[0].reason


def test_a_carrier_that_says_stale_forever_is_cut_off() -> None:
    reg, carrier = make(), Carrier()
    reg.start(0.0)
    request = one(reg)
    answered = 0
    for _ in range(10):
        carrier.now += 1
        reg.handle_response(carrier.challenge(request, stale=answered > 0), 0.0)
        out = reg.requests_to_send()
        if not out:
            break
        request = out[0]
        answered += 1
    assert answered == MAX_CHALLENGES
    assert reg.state is St.FAILED
    assert any(isinstance(e, ChallengeRefused) for e in reg.events())


def test_wrong_realm_gets_no_credentials() -> None:
    reg, evil = make(), Carrier(realm="evil.test")
    reg.start(0.0)
    reg.handle_response(evil.challenge(one(reg)), 0.0)
    assert reg.requests_to_send() == []
    assert reg.state is St.FAILED
    refused = [e for e in reg.events() if isinstance(e, ChallengeRefused)]
    assert len(refused) == 1 and "evil.test" in refused[0].reason and refused[0].status == 401
    # the retry goes out without credentials, and a wrong realm again gets nothing
    reg.handle_timer(reg.get_timer() or 0.0)
    retry = one(reg)
    assert "Authorization" not in retry.headers
    reg.handle_response(evil.challenge(retry), 20.0)
    assert reg.requests_to_send() == [] and reg.failures == 2


def test_no_realm_configured_answers_nothing() -> None:
    reg, carrier = make(realm=""), Carrier()
    reg.start(0.0)
    reg.handle_response(carrier.challenge(one(reg)), 0.0)
    assert reg.requests_to_send() == [] and reg.state is St.FAILED


def test_challenge_from_another_source_is_refused() -> None:
    reg, carrier = make(), Carrier()
    reg.start(0.0)
    request = one(reg)
    attacker = Peer("udp", "203.0.113.66", 5060)
    reg.handle_response(carrier.challenge(request), 0.0, attacker)
    assert reg.requests_to_send() == []
    refused = [e for e in reg.events() if isinstance(e, ChallengeRefused)]
    assert refused and refused[0].source == attacker and "203.0.113.66" in refused[0].reason


def test_challenge_from_the_carrier_host_on_another_port_is_answered() -> None:
    reg, carrier = make(), Carrier()
    reg.start(0.0)
    reg.handle_response(carrier.challenge(one(reg)), 0.0, Peer("udp", "192.0.2.10", 5080))
    assert carrier.verify_ok(one(reg))


def test_same_host_normalises_ipv6_and_case() -> None:
    assert same_host("[2001:DB8::1]", "2001:db8:0::1")
    assert same_host("Carrier.Example", "carrier.example")
    assert not same_host("192.0.2.1", "192.0.2.10")


# ----------------------------------------------------------------------- stale responses
def test_responses_to_old_requests_or_other_calls_are_ignored() -> None:
    reg, carrier = make(), Carrier()
    reg.start(0.0)
    first = one(reg)
    reg.handle_response(carrier.challenge(first), 0.0)
    second = one(reg)
    reg.handle_response(reply(first, 200), 0.0)  # late answer to CSeq 1
    assert reg.state is St.REGISTERING
    other = reply(second, 200)
    other.headers.set("Call-ID", "someone-else")
    reg.handle_response(other, 0.0)
    assert reg.state is St.REGISTERING
    reg.handle_response(reply(second, 100), 0.0)
    reg.handle_response(reply(second, 180), 0.0)
    assert reg.state is St.REGISTERING and reg.requests_to_send() == []
    reg.handle_response(reply(second, 200), 0.0)
    assert reg.state is St.REGISTERED
    reg.handle_response(reply(second, 500), 1.0)  # a retransmission-like late final
    assert reg.state is St.REGISTERED


# ----------------------------------------------------------------------------- stopping
def test_stop_when_registered_unregisters_with_auth() -> None:
    reg, carrier = make(), Carrier()
    reg.start(0.0)
    register(reg, carrier, 0.0)
    reg.events()
    reg.stop(10.0)
    bye = one(reg)
    assert reg.state is St.UNREGISTERING
    assert bye.headers.get("Expires") == "0" and bye.contacts[0].uri == reg.contact
    assert reg.get_timer() is None
    reg.handle_response(carrier.challenge(bye), 10.0)
    authed = one(reg)
    assert authed.headers.get("Expires") == "0" and carrier.verify_ok(authed)
    reg.handle_response(reply(authed, 200), 10.1)
    assert reg.state is St.STOPPED and reg.get_timer() is None
    assert states(reg) == [St.UNREGISTERING, St.STOPPED]


def test_stop_while_registering_unregisters_and_ignores_the_late_answer() -> None:
    reg = make()
    reg.start(0.0)
    first = one(reg)
    reg.stop(0.5)
    bye = one(reg)
    assert bye.headers.get("Expires") == "0" and bye.cseq.seq == 2
    reg.handle_response(reply(first, 200), 0.6)
    assert reg.state is St.UNREGISTERING
    reg.handle_failure(bye.cseq.seq, 32.5, "timeout")
    assert reg.state is St.STOPPED


@pytest.mark.parametrize("status", [403, 423, 500])
def test_unregister_ends_stopped_whatever_the_answer(status: int) -> None:
    reg = make()
    reg.start(0.0)
    reg.handle_response(reply(one(reg), 200), 0.0)
    reg.stop(1.0)
    reg.handle_response(reply(one(reg), status), 1.0)
    assert reg.state is St.STOPPED and reg.requests_to_send() == []


def test_stop_when_failed_or_idle_sends_nothing_and_start_again_works() -> None:
    reg = make()
    reg.stop(0.0)
    assert reg.state is St.STOPPED and reg.requests_to_send() == []
    reg.start(1.0)
    reg.handle_response(reply(one(reg), 500), 1.0)
    reg.stop(2.0)
    assert reg.state is St.STOPPED and reg.requests_to_send() == [] and reg.get_timer() is None
    reg.start(3.0)
    assert reg.state is St.REGISTERING and len(reg.requests_to_send()) == 1


def test_start_while_unregistering_is_a_local_error() -> None:
    reg = make()
    reg.start(0.0)
    reg.handle_response(reply(one(reg), 200), 0.0)
    reg.stop(1.0)
    with pytest.raises(LocalProtocolError):
        reg.start(1.5)
    assert reg.state is St.UNREGISTERING


def test_bad_configuration_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        make(registrar="tel:+4930")
    with pytest.raises(LocalProtocolError):
        make(contact="not a uri")
    with pytest.raises(LocalProtocolError):
        make(expires=0)
    with pytest.raises(LocalProtocolError):
        make(refresh_fraction=1.0)


# -------------------------------------------------------------------------- the whole table
def test_every_action_has_a_handler() -> None:
    reg = make()
    for action in Action:
        if action is not Action.IGNORE:
            assert callable(getattr(reg, "_" + action.value))


@pytest.mark.parametrize(("state", "event"), list(itertools.product(St, In)),
                         ids=lambda v: v.value)
def test_lookup_defines_every_pair(state: RegistrationState, event: RegistrationInput) -> None:
    if (state, event) in TABLE:
        action, next_state = lookup(state, event)
        assert (action, next_state) == TABLE[(state, event)]
    elif event in (In.START, In.STOP):
        with pytest.raises(LocalProtocolError):
            lookup(state, event)
    else:
        assert lookup(state, event) == (Action.IGNORE, state)


def drive_to(state: RegistrationState, carrier: Carrier) -> Registration:
    reg = make()
    if state is St.IDLE:
        return reg
    reg.start(0.0)
    if state is St.REGISTERING:
        return reg
    if state is St.FAILED:
        reg.handle_response(reply(one(reg), 500), 0.0)
        return reg
    reg.handle_response(reply(one(reg), 200, ("Expires", "100")), 0.0)
    if state is St.REGISTERED:
        return reg
    if state is St.REFRESHING:
        reg.handle_timer(85.0)
        return reg
    reg.stop(1.0)
    if state is St.UNREGISTERING:
        return reg
    reg.handle_response(reply(one(reg), 200), 1.0)
    assert state is St.STOPPED
    return reg


@pytest.mark.parametrize(("state", "event"), list(itertools.product(St, In)),
                         ids=lambda v: v.value)
def test_every_pair_through_the_public_api(
    state: RegistrationState, event: RegistrationInput
) -> None:
    """Drive the machine into ``state``, deliver ``event`` the way the network, the clock or
    the caller would, and compare with the table."""
    carrier = Carrier()
    reg = drive_to(state, carrier)
    assert reg.state is state
    reg.requests_to_send()
    reg.events()
    current = reg._current  # the request a response would answer
    try:
        _, expected = lookup(state, event)
    except LocalProtocolError:
        with pytest.raises(LocalProtocolError):
            _deliver(reg, event, current, carrier)
        assert reg.state is state
        return
    _deliver(reg, event, current, carrier)
    if event is In.TIMER and reg.get_timer() is None and state not in (St.REGISTERED, St.FAILED):
        expected = state  # no deadline armed in this state: the clock cannot produce TIMER
    assert reg.state is expected


def _deliver(reg: Registration, event: RegistrationInput, current: Request | None,
             carrier: Carrier) -> None:
    now = 50.0
    if event is In.START:
        reg.start(now)
    elif event is In.STOP:
        reg.stop(now)
    elif event is In.TIMER:
        reg.handle_timer(max(now, reg.get_timer() or now))
    elif current is not None:
        response = {
            In.SUCCEEDED: lambda r: reply(r, 200, ("Expires", "100")),
            In.CHALLENGED: carrier.challenge,
            In.INTERVAL_TOO_BRIEF: lambda r: reply(r, 423, ("Min-Expires", "99999")),
            In.FAILED: lambda r: reply(r, 500),
        }[event](current)
        reg.handle_response(response, now)
