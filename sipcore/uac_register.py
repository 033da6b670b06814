"""Outbound registration (the UAC side of RFC 3261 §10), sans-IO: one binding at one registrar.

Theory of operation
-------------------
A :class:`Registration` keeps one contact bound at a registrar (a SIP trunk's carrier, an
upstream proxy). It builds the REGISTER requests, reads the responses and keeps one deadline;
the caller sends what :meth:`Registration.requests_to_send` hands out, feeds back the final
responses (:meth:`Registration.handle_response`) and transaction failures
(:meth:`Registration.handle_failure`) of the *current* request, and calls
:meth:`Registration.handle_timer` at :meth:`Registration.get_timer` — the aioquic pattern.

* Every request of one registration shares Call-ID and From tag; CSeq increases by one per
  request (RFC 3261 §10.2.4 SHOULD). Only a response to the newest request counts (matched by
  Call-ID and CSeq), so a late answer to a superseded request changes nothing.
* A 401/407 is answered with :class:`~sipcore.digest.DigestClient` under the realm configured
  for this registrar only, and only when the response came from the host we sent to (when the
  caller knows the source). Anything else — another realm, another source, a second non-stale
  challenge after our credentials, more than :data:`MAX_CHALLENGES` challenges to one attempt —
  is refused: :class:`ChallengeRefused` is posted, no credentials leave, and the attempt counts
  as failed (SECURITY.md: "a B2BUA answered an attacker's 401 with a trunk's credentials").
  ``stale=true`` with a fresh nonce is answered again (RFC 7616 §3.3).
* A 2xx grants the expiry of our contact's ``expires`` parameter, else the Expires header, else
  the one we asked for (§10.2.4); the refresh is sent after ``refresh_fraction`` of it (85 %).
* 423 Interval Too Brief: ask again at once with the Min-Expires (§10.2.8) when it is larger.
* Any other failure (3xx–6xx, a refused challenge, a transaction timeout or transport error, a
  2xx granting nothing) schedules a new attempt with exponential back-off
  (``retry_base`` · 2^(n-1), at most ``retry_max``; a Retry-After in the response wins, RFC 3261
  §20.33) — the shape of RFC 5626 §4.5.
* :meth:`Registration.stop` removes our binding (Expires: 0) when one may exist; the machine ends
  in ``STOPPED`` after that request's outcome, whatever it is.

States and inputs are enums and every transition is one entry of :data:`TABLE`. A missing pair
with an input from the caller (``START``/``STOP``) raises
:class:`~sipcore.errors.LocalProtocolError` and changes nothing; with a network or timer input it
is ignored and changes nothing.

No I/O and no clock here: every entry point takes ``now``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from sipcore.digest import DigestClient
from sipcore.enums import FastEnum
from sipcore.errors import LocalProtocolError, ParseError
from sipcore.headers import Headers
from sipcore.message import Request, Response, new_call_id, new_tag
from sipcore.transport import Peer
from sipcore.uri import SipURI, parse_uri, uri_equal

__all__ = [
    "MAX_CHALLENGES",
    "TABLE",
    "Action",
    "ChallengeRefused",
    "Registration",
    "RegistrationEvent",
    "RegistrationInput",
    "RegistrationState",
    "StateChanged",
    "lookup",
    "same_host",
]

#: Challenges answered within one attempt: the first one and up to two ``stale=true`` ones.
MAX_CHALLENGES = 3
#: Largest expiry we ask for after a 423 (a registrar demanding more is refused).
MAX_EXPIRES = 2**31 - 1
#: Never refresh sooner than this after a 2xx, however short the granted expiry.
MIN_REFRESH_DELAY = 1.0


class RegistrationState(FastEnum):
    """Where a registration is (``health`` folds these into registering/registered/failed)."""

    IDLE = "idle"  # created, not started
    REGISTERING = "registering"  # a REGISTER is out, no binding yet (first attempt or retry)
    REGISTERED = "registered"  # bound; the refresh deadline is armed
    REFRESHING = "refreshing"  # bound, and the refresh REGISTER is out
    FAILED = "failed"  # the last attempt failed; the retry deadline is armed
    UNREGISTERING = "unregistering"  # REGISTER with Expires: 0 is out
    STOPPED = "stopped"  # nothing out, nothing armed


class RegistrationInput(FastEnum):
    """What can happen to a registration."""

    START = "start"  # caller
    STOP = "stop"  # caller
    TIMER = "timer"  # refresh (REGISTERED) or retry (FAILED) deadline
    SUCCEEDED = "succeeded"  # 2xx granting a positive expiry
    CHALLENGED = "challenged"  # 401/407 we answered (the authorized request is prepared)
    INTERVAL_TOO_BRIEF = "interval_too_brief"  # 423 with a usable Min-Expires
    FAILED = "failed"  # anything else final, a timeout, a transport error, a refused challenge


class Action(FastEnum):
    """What a transition does; each has one handler method on :class:`Registration`."""

    IGNORE = "ignore"
    SEND_REGISTER = "send_register"  # a new attempt (first, refresh, retry, after 423)
    SEND_AUTHORIZED = "send_authorized"  # the prepared answer to a challenge
    SEND_UNREGISTER = "send_unregister"
    BIND = "bind"  # remember the grant, arm the refresh
    SCHEDULE_RETRY = "schedule_retry"  # count the failure, arm the back-off
    FINISH = "finish"  # forget everything out and armed


St, In, A = RegistrationState, RegistrationInput, Action

#: The whole machine: ``(state, input) -> (action, next state)``.
TABLE: dict[tuple[RegistrationState, RegistrationInput], tuple[Action, RegistrationState]] = {
    (St.IDLE, In.START): (A.SEND_REGISTER, St.REGISTERING),
    (St.IDLE, In.STOP): (A.FINISH, St.STOPPED),
    (St.REGISTERING, In.START): (A.IGNORE, St.REGISTERING),
    (St.REGISTERING, In.STOP): (A.SEND_UNREGISTER, St.UNREGISTERING),
    (St.REGISTERING, In.SUCCEEDED): (A.BIND, St.REGISTERED),
    (St.REGISTERING, In.CHALLENGED): (A.SEND_AUTHORIZED, St.REGISTERING),
    (St.REGISTERING, In.INTERVAL_TOO_BRIEF): (A.SEND_REGISTER, St.REGISTERING),
    (St.REGISTERING, In.FAILED): (A.SCHEDULE_RETRY, St.FAILED),
    (St.REGISTERED, In.START): (A.IGNORE, St.REGISTERED),
    (St.REGISTERED, In.STOP): (A.SEND_UNREGISTER, St.UNREGISTERING),
    (St.REGISTERED, In.TIMER): (A.SEND_REGISTER, St.REFRESHING),
    (St.REFRESHING, In.START): (A.IGNORE, St.REFRESHING),
    (St.REFRESHING, In.STOP): (A.SEND_UNREGISTER, St.UNREGISTERING),
    (St.REFRESHING, In.SUCCEEDED): (A.BIND, St.REGISTERED),
    (St.REFRESHING, In.CHALLENGED): (A.SEND_AUTHORIZED, St.REFRESHING),
    (St.REFRESHING, In.INTERVAL_TOO_BRIEF): (A.SEND_REGISTER, St.REFRESHING),
    (St.REFRESHING, In.FAILED): (A.SCHEDULE_RETRY, St.FAILED),
    (St.FAILED, In.START): (A.IGNORE, St.FAILED),
    # The failed attempt may have left no binding we know of: nothing to remove.
    (St.FAILED, In.STOP): (A.FINISH, St.STOPPED),
    (St.FAILED, In.TIMER): (A.SEND_REGISTER, St.REGISTERING),
    (St.UNREGISTERING, In.STOP): (A.IGNORE, St.UNREGISTERING),
    (St.UNREGISTERING, In.CHALLENGED): (A.SEND_AUTHORIZED, St.UNREGISTERING),
    (St.UNREGISTERING, In.SUCCEEDED): (A.FINISH, St.STOPPED),
    (St.UNREGISTERING, In.INTERVAL_TOO_BRIEF): (A.FINISH, St.STOPPED),
    (St.UNREGISTERING, In.FAILED): (A.FINISH, St.STOPPED),
    (St.STOPPED, In.START): (A.SEND_REGISTER, St.REGISTERING),
    (St.STOPPED, In.STOP): (A.IGNORE, St.STOPPED),
}

#: States with a request out whose outcome counts.
_AWAITING_RESPONSE = frozenset({St.REGISTERING, St.REFRESHING, St.UNREGISTERING})

#: Inputs from the caller: a missing pair with one of these is the caller's mistake.
CALLER_INPUTS = frozenset({In.START, In.STOP})


def lookup(
    state: RegistrationState, event: RegistrationInput
) -> tuple[Action, RegistrationState]:
    """The transition for ``(state, event)``, with the defined meaning of a missing pair
    (see the module docstring)."""
    entry = TABLE.get((state, event))
    if entry is not None:
        return entry
    if event in CALLER_INPUTS:
        raise LocalProtocolError(f"{event.value} is not allowed while {state.value}")
    return (A.IGNORE, state)


# ---------------------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class StateChanged:
    """The registration moved to ``state``; ``reason`` says why (for logs and /health)."""

    state: RegistrationState
    reason: str
    #: Seconds granted by the registrar (set when ``state`` is REGISTERED).
    expires: int | None = None


@dataclass(frozen=True, slots=True)
class ChallengeRefused:
    """We did not answer a 401/407 (wrong realm, wrong source, credentials rejected, loop).

    A security event: log it. ``status`` is the challenge's status code.
    """

    reason: str
    status: int
    source: Peer | None = None


RegistrationEvent = StateChanged | ChallengeRefused

_DIGITS = re.compile(r"\s*([0-9]{1,10})")


def _delta_seconds(value: str | None) -> int | None:
    """The leading delta-seconds of Min-Expires / Retry-After (comments and params ignored)."""
    if value is None:
        return None
    m = _DIGITS.match(value)
    return int(m.group(1)) if m else None


def same_host(a: str, b: str) -> bool:
    """True when two host spellings name the same address (IPv6 brackets and zero
    compression, letter case of names)."""

    def norm(host: str) -> str:
        host = host.strip().lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            return host

    return norm(a) == norm(b)


class Registration:
    """One binding kept at one registrar (see the module docstring).

    ``registrar`` is the Request-URI (``sip:carrier.example``), ``aor`` the address-of-record
    written in From and To, ``contact`` our Contact URI, ``peer`` where the requests go (also
    the only host whose challenges we answer). ``username``/``password``/``realm`` are the
    digest credentials; an empty ``realm`` means no challenge is ever answered.
    """

    def __init__(
        self,
        *,
        registrar: str,
        aor: str,
        contact: str,
        peer: Peer,
        username: str,
        password: str,
        realm: str,
        expires: int = 3600,
        refresh_fraction: float = 0.85,
        retry_base: float = 30.0,
        retry_max: float = 1800.0,
        digest: DigestClient | None = None,
        call_id: str | None = None,
        from_tag: str | None = None,
        user_agent: str | None = None,
        on_trace: Callable[[dict[str, object]], None] | None = None,
    ) -> None:
        if not 0.0 < refresh_fraction < 1.0:
            raise LocalProtocolError("refresh_fraction must be between 0 and 1")
        if expires <= 0:
            raise LocalProtocolError("expires must be positive")
        self.registrar = _sip_uri(registrar, "registrar")
        self.aor = _sip_uri(aor, "aor")
        self.contact = _sip_uri(contact, "contact")
        self.peer = peer
        self.username = username
        self.password = password
        self.realm = realm
        #: The expiry we ask for (raised by a 423's Min-Expires).
        self.expires = expires
        self.refresh_fraction = refresh_fraction
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.digest = digest if digest is not None else DigestClient()
        self.call_id = call_id or new_call_id()
        self.from_tag = from_tag or new_tag()
        self.user_agent = user_agent
        self._trace = on_trace
        self.state = RegistrationState.IDLE
        self._cseq = 0
        #: The newest request handed out (the only one whose outcome counts).
        self._current: Request | None = None
        #: The answer to a challenge, prepared while classifying the response.
        self._prepared: Request | None = None
        self._challenges = 0
        self._deadline: float | None = None
        self._out: list[Request] = []
        self._events: list[RegistrationEvent] = []
        #: Consecutive failed attempts (reset by a success).
        self.failures = 0
        #: Seconds granted by the last 2xx, and when that binding ends.
        self.granted: int | None = None
        self.expires_at: float | None = None
        #: Why the last attempt failed (for /health), None after a success.
        self.last_error: str | None = None
        self._retry_after: float | None = None
        self._reason = ""

    # ------------------------------------------------------------------------ caller's interface
    def start(self, now: float) -> None:
        """Begin registering (again, after :meth:`stop`)."""
        self._feed(In.START, now, "started")

    def stop(self, now: float) -> None:
        """Remove our binding (when one may exist) and end in ``STOPPED``."""
        self._feed(In.STOP, now, "stopped")

    @property
    def cseq(self) -> int:
        """CSeq number of the newest request (0 before the first)."""
        return self._cseq

    def requests_to_send(self) -> list[Request]:
        """REGISTER requests to send to :attr:`peer`, each in a new client transaction.

        They carry no Via: the endpoint adds its own with a fresh branch.
        """
        out, self._out = self._out, []
        return out

    def events(self) -> list[RegistrationEvent]:
        """Events posted since the last call."""
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        """The next deadline (refresh or retry), or None."""
        return self._deadline

    def handle_timer(self, now: float) -> None:
        """Call at (or after) :meth:`get_timer`; earlier calls do nothing."""
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        reason = "refresh" if self.state is St.REGISTERED else "retry"
        self._feed(In.TIMER, now, reason)

    def handle_response(self, response: Response, now: float, source: Peer | None = None) -> None:
        """A final response to one of our requests (provisional ones are ignored).

        ``source`` is where it came from when the caller knows it; a challenge from any host
        but :attr:`peer`'s is refused.
        """
        if (
            response.status < 200
            or self.state not in _AWAITING_RESPONSE
            or not self._is_current(response)
        ):
            return
        event, reason = self._classify(response, source, now)
        self._feed(event, now, reason)

    def handle_failure(self, cseq: int, now: float, reason: str = "timeout") -> None:
        """The transaction of the request with ``cseq`` timed out or its transport failed."""
        if self._current is None or cseq != self._cseq or self.state not in _AWAITING_RESPONSE:
            return
        self._feed(In.FAILED, now, reason)

    # ------------------------------------------------------------------------------- machinery
    def _is_current(self, response: Response) -> bool:
        if self._current is None:
            return False
        try:
            cseq = response.cseq
            return (
                response.call_id == self.call_id
                and cseq.seq == self._cseq
                and cseq.method == "REGISTER"
            )
        except ParseError:
            return False

    def _feed(self, event: RegistrationInput, now: float, reason: str) -> None:
        action, next_state = lookup(self.state, event)
        self._emit_trace("register.input", input=event.value, state=self.state.value,
                         action=action.value, reason=reason)
        if action is A.IGNORE:
            return
        previous = self.state
        self._reason = reason
        getattr(self, "_" + action.value)(now)
        self.state = next_state
        if next_state is not previous or action is A.BIND:
            self._events.append(StateChanged(next_state, reason,
                                             self.granted if next_state is St.REGISTERED else None))

    def _classify(
        self, response: Response, source: Peer | None, now: float
    ) -> tuple[RegistrationInput, str]:
        status = response.status
        self._retry_after = None
        if 200 <= status < 300:
            if self.state is St.UNREGISTERING:
                return In.SUCCEEDED, f"{status}: binding removed"
            granted = self._granted(response)
            if granted is None or granted <= 0:
                return In.FAILED, f"{status} without a usable expiry"
            self.granted = granted
            return In.SUCCEEDED, f"{status} {response.reason}"
        if status in (401, 407):
            refused = self._answer(response, source)
            if refused is not None:
                self._events.append(ChallengeRefused(refused, status, source))
                return In.FAILED, f"challenge refused: {refused}"
            return In.CHALLENGED, f"{status} challenge"
        if status == 423:
            minimum = _delta_seconds(response.headers.get("Min-Expires"))
            if minimum is None or minimum <= self.expires or minimum > MAX_EXPIRES:
                return In.FAILED, "423 without a usable Min-Expires"
            self.expires = minimum
            return In.INTERVAL_TOO_BRIEF, f"423: Min-Expires {minimum}"
        after = _delta_seconds(response.headers.get("Retry-After"))
        if after is not None:
            self._retry_after = float(after)
        return In.FAILED, f"{status} {response.reason}"

    def _answer(self, response: Response, source: Peer | None) -> str | None:
        """Prepare the answer to a challenge; the refusal reason when we must not answer."""
        if self._current is None:
            return "no request outstanding"
        if source is not None and not same_host(source.host, self.peer.host):
            return f"challenge from {source.host}, the request went to {self.peer.host}"
        if not self.realm:
            return "no realm configured for this registrar"
        if self._challenges >= MAX_CHALLENGES:
            return f"more than {MAX_CHALLENGES} challenges to one attempt"
        try:
            authorized = self.digest.authorize(
                self._current, response, self.username, self.password, realm=self.realm
            )
        except ParseError as exc:
            return exc.reason
        except LocalProtocolError as exc:
            return str(exc)
        self._challenges += 1
        self._prepared = authorized
        return None

    def _granted(self, response: Response) -> int | None:
        """The expiry granted to our contact (§10.2.4): its ``expires`` parameter, else the
        Expires header, else what we asked for."""
        try:
            contacts = response.contacts
        except ParseError:
            contacts = []
        for entry in contacts:
            if _contact_matches(entry.uri, self.contact):
                value = entry.params.get("expires")
                if value is not None:
                    return _delta_seconds(value)
                break
        try:
            header = response.expires
        except ParseError:
            header = None
        return header if header is not None else self.expires

    def _new_request(self, expires: int) -> Request:
        self._cseq += 1
        headers = Headers()
        headers.add("From", f"<{self.aor}>;tag={self.from_tag}")
        headers.add("To", f"<{self.aor}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self._cseq} REGISTER")
        headers.add("Contact", f"<{self.contact}>")
        headers.add("Expires", str(expires))
        headers.add("Max-Forwards", "70")
        if self.user_agent:
            headers.add("User-Agent", self.user_agent)
        headers.add("Content-Length", "0")
        return Request("REGISTER", self.registrar.copy(), headers)

    def _hand_out(self, request: Request) -> None:
        self._current = request
        self._out.append(request)

    def _emit_trace(self, event: str, **fields: object) -> None:
        if self._trace is not None:
            record: dict[str, object] = {"event": event, "call_id": self.call_id}
            record.update(fields)
            self._trace(record)

    # ------------------------------------------------------------------------- action handlers
    def _send_register(self, now: float) -> None:
        self._challenges = 0
        self._deadline = None
        self._hand_out(self._new_request(self.expires))

    def _send_authorized(self, now: float) -> None:
        prepared = self._prepared
        assert prepared is not None  # set by _classify right before CHALLENGED
        self._prepared = None
        # §22.2: the answer is a new transaction — CSeq + 1, and a new branch (the endpoint
        # adds a fresh Via because we remove ours).
        self._cseq += 1
        prepared.headers.remove("Via")
        prepared.headers.set("CSeq", f"{self._cseq} REGISTER")
        self._hand_out(prepared)

    def _send_unregister(self, now: float) -> None:
        self._challenges = 0
        self._deadline = None
        self._hand_out(self._new_request(0))

    def _bind(self, now: float) -> None:
        granted = self.granted
        assert granted is not None
        self.failures = 0
        self.last_error = None
        self.expires_at = now + granted
        self._deadline = now + max(MIN_REFRESH_DELAY, granted * self.refresh_fraction)

    def _schedule_retry(self, now: float) -> None:
        self.failures += 1
        self.last_error = self._reason
        self.granted = None
        self.expires_at = None
        delay = min(self.retry_max, self.retry_base * 2 ** min(self.failures - 1, 30))
        if self._retry_after is not None:
            delay = min(self.retry_max, max(self._retry_after, MIN_REFRESH_DELAY))
        self._deadline = now + delay

    def _finish(self, now: float) -> None:
        self._current = None
        self._prepared = None
        self._deadline = None
        self.granted = None
        self.expires_at = None


def _sip_uri(text: str, what: str) -> SipURI:
    try:
        uri = parse_uri(text)
    except ParseError as exc:
        raise LocalProtocolError(f"bad {what} URI {text!r}: {exc.reason}") from None
    if not isinstance(uri, SipURI):
        raise LocalProtocolError(f"{what} must be a sip: or sips: URI, not {text!r}")
    return uri


def _contact_matches(candidate: object, ours: object) -> bool:
    """Is a Contact of the 2xx ours? §19.1.4 equality, or the same user@host:port (registrars
    drop or reorder URI parameters)."""
    if not isinstance(candidate, SipURI) or not isinstance(ours, SipURI):
        return False
    if uri_equal(candidate, ours):
        return True
    return (
        candidate.user == ours.user
        and same_host(candidate.host, ours.host)
        and (candidate.port or 5060) == (ours.port or 5060)
    )

