"""Overload control: measure the event loop's lag, decide which new work to turn away (sans-IO).

Theory of operation
-------------------
Issue 12 §2: under load the server must serve its capacity and turn the rest away at once,
rather than collapse. The measure is the event loop's *lag*: a probe that asks to be woken every
``interval`` seconds is woken late by however long the loop was busy with other work
(:meth:`OverloadDetector.tick`). The lag alone misses the queue in front of the loop: it reads
a few datagrams per turn however many wait, so a kernel receive buffer of megabytes can hold
seconds of work while each turn stays short. The server therefore also passes the *queue
depth* — the bytes waiting in its SIP UDP sockets' receive buffers (Linux ``SO_MEMINFO``) —
smoothed the same way, and ``queue_threshold`` bytes of it count as overload too.

The lag is smoothed (an exponentially weighted mean, weight ``smoothing`` for a new sample,
each sample capped at twice the threshold) so one slow callback does not flip the state (with
the default 0.3 one sample moves the mean by at most 0.6 × the threshold) while lag that lasts
does within a few samples.

States (:class:`LoadState`): NORMAL → OVERLOADED when the smoothed lag reaches
``lag_threshold`` (or the queue ``queue_threshold``); OVERLOADED → NORMAL once all new work is
admitted again (``fraction`` back at 1) and the smoothed lag stayed below ``recover_below`` ×
``lag_threshold`` (and the queue below its threshold) for ``recover_after`` seconds — it
recovers by itself, with hysteresis so it does not flap.

While OVERLOADED, what creates new work — a new INVITE (no To-tag) and a REGISTER from an
untrusted source (:func:`admit`) — is admitted only in part: a share ``fraction`` of it goes on,
the rest is answered 503 with ``Retry-After: retry_after`` (:data:`Admission.REJECT`) at once,
without authentication or routing — statelessly, before the message is parsed (the server's
transport screen, sipcore/stateless.py), so that refusing costs little of the capacity the
admitted calls need. The share adapts, additive-increase / multiplicative-decrease
like a TCP window (the loss-based scheme of RFC 7339 run locally): it starts at
``start_fraction`` when the overload begins and every ``control_interval`` seconds shrinks by
``decrease`` while the smoothed lag is above ``target_lag`` (or the queue is high and still
growing: a backlog that drains, after a stall such as a long garbage-collector pass, asks for
no further cut) and grows by ``increase`` while the lag is below half of it (and the queue
below half its threshold). So the server settles at what it can carry — it keeps completing close
to its capacity instead of swinging between refusing everything and taking everything — and
with a short queue, so a refusal is quick too. A request that carries credentials is not
counted again: its unauthenticated first try was the one admitted (and challenged), and turning
it away now would waste that work. Everything else flows: in-dialog requests (a To-tag), ACK,
BYE, CANCEL, responses, and anything from a trusted peer (trunks, a load balancer in front,
``[security] trusted``), so calls in progress complete and a trunk's traffic is not refused on
our side.

With ``target_sojourn`` set, the share is steered on the *delay* of the backlog instead of its
size: the shortest time an admitted message waited in the transport's queue during a control
interval (CoDel's measure, RFC 8289). A queue that empties now and then has a minimum near zero
however large its bursts; one whose minimum stays above the target is a standing backlog. It
is not the default yet: in five same-machine runs (three of it, two of the size-based control)
it did no better (bench/results/overload.md).

Nothing here reads a clock or does I/O: every call takes ``now`` (seconds, one monotonic
clock); the server runs the probe as a task and asks :func:`admit` per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Admission", "LoadState", "OverloadDetector", "OverloadPolicy", "admit"]


@dataclass(frozen=True, slots=True)
class OverloadPolicy:
    """The numbers of an :class:`OverloadDetector` (the ``[overload]`` config table)."""

    #: Overload control on at all.
    enabled: bool = True
    #: Seconds between two lag samples.
    interval: float = 0.05
    #: Smoothed event-loop lag (seconds) at which the server is overloaded.
    lag_threshold: float = 0.1
    #: Bytes waiting in the SIP UDP receive buffers at which the server is overloaded (0: not
    #: used). 128 KiB is some 60–100 requests (kernel overhead included): ~30 ms of work.
    queue_threshold: int = 131072
    #: Back to normal once the smoothed lag stayed below this fraction of lag_threshold ...
    recover_below: float = 0.5
    #: ... for this many seconds.
    recover_after: float = 2.0
    #: Weight of a new sample in the smoothed lag (0 < smoothing <= 1).
    smoothing: float = 0.3
    #: The 503's Retry-After (seconds).
    retry_after: int = 5
    #: While overloaded: the smoothed lag the admitted share of new work is steered to.
    target_lag: float = 0.02
    #: ... or, when set, on the backlog's delay: the shortest wait (seconds) of an admitted
    #: message in the transport's queue over a control interval, CoDel-like (0, the default:
    #: steer on the lag and the queue's size; bench/results/overload.md has the comparison).
    target_sojourn: float = 0.0
    #: ... adjusted this often (seconds) ...
    control_interval: float = 0.2
    #: ... starting from this share when the overload begins ...
    start_fraction: float = 0.5
    #: ... multiplied by this while the lag is above target_lag ...
    decrease: float = 0.8
    #: ... and raised by this while the lag is below half of it ...
    increase: float = 0.05
    #: ... never below this share (some new calls always get through).
    min_fraction: float = 0.02
    #: Always overloaded (a drill, and the wire tests' hook); never recovers.
    force: bool = False


class LoadState(Enum):
    NORMAL = "normal"
    OVERLOADED = "overloaded"


class Admission(Enum):
    """What to do with one incoming request."""

    ACCEPT = "accept"
    #: Answer 503 + Retry-After at once; do nothing else with it.
    REJECT = "reject"


#: Requests that start new work (a call, a registration); in-dialog ones are never refused.
_NEW_WORK = frozenset({"INVITE", "REGISTER"})


def admit(method: str, has_to_tag: bool, trusted: bool, state: LoadState) -> Admission:
    """The admission decision for one request: REJECT only a new INVITE (no To-tag) or a
    REGISTER from an untrusted source while OVERLOADED; everything else is ACCEPTed."""
    if state is LoadState.NORMAL or trusted:
        return Admission.ACCEPT
    if method == "REGISTER" or (method in _NEW_WORK and not has_to_tag):
        return Admission.REJECT
    return Admission.ACCEPT


class OverloadDetector:
    """The lag probe's bookkeeping and the load state (see the module docstring)."""

    def __init__(self, policy: OverloadPolicy | None = None) -> None:
        self.policy = policy or OverloadPolicy()
        self.state = LoadState.OVERLOADED if self.policy.force else LoadState.NORMAL
        #: The smoothed lag (seconds) and the last raw sample.
        self.lag = 0.0
        self.last_lag = 0.0
        #: The last queue depth (bytes) and its smoothed value.
        self.queue_depth = 0
        self.queue = 0.0
        #: When the probe should wake next (None before the first tick).
        self._due: float | None = None
        #: Since when the lag has been below the recovery level (None: it is not).
        self._calm_since: float | None = None
        self.since = 0.0
        #: While overloaded: the share of new work admitted (1.0 while NORMAL); see the
        #: module docstring. ``_credit`` spreads the admitted requests evenly.
        self.fraction = 0.0 if self.policy.force else 1.0
        self._credit = 0.0
        self._controlled_at = 0.0
        self._depth_at_control = 0
        #: The shortest backlog delay reported since the last control step (None: none was),
        #: and the value the last control step steered on.
        self._sojourn: float | None = None
        self.sojourn: float | None = None
        #: Counters for statistics: state changes and requests rejected.
        self.stats: dict[str, int] = {"overloads": 0, "recoveries": 0, "rejected": 0}

    @property
    def overloaded(self) -> bool:
        return self.state is LoadState.OVERLOADED

    def tick(self, now: float, queue_depth: int = 0, sojourn: float | None = None) -> float:
        """The probe woke at ``now``: take the sample (how late it woke) and return the delay
        until it should wake next (``interval``)."""
        if self._due is not None:
            self.sample(max(0.0, now - self._due), now, queue_depth, sojourn)
        self._due = now + self.policy.interval
        return self.policy.interval

    def sample(self, lag: float, now: float, queue_depth: int = 0,
               sojourn: float | None = None) -> LoadState:
        """One lag sample (seconds) and queue depth at ``now``, with the shortest backlog
        delay since the last sample (``sojourn``, None: nothing was handed on); the state
        after it."""
        p = self.policy
        if sojourn is not None and (self._sojourn is None or sojourn < self._sojourn):
            self._sojourn = sojourn
        self.last_lag = lag
        # one sample counts at most twice the threshold: a single slow callback (a long GC
        # pause, a start-up step) never flips the state alone; sustained lag does within a
        # few samples
        self.lag += p.smoothing * (min(lag, 2 * p.lag_threshold) - self.lag)
        self.queue_depth = queue_depth
        if p.queue_threshold > 0:  # smoothed and capped like the lag: a burst is no overload
            self.queue += p.smoothing * (min(queue_depth, 2 * p.queue_threshold) - self.queue)
        if p.force or not p.enabled:
            return self.state
        queue_high = p.queue_threshold > 0 and self.queue >= p.queue_threshold
        if self.state is LoadState.NORMAL:
            if self.lag >= p.lag_threshold or queue_high:
                self.state, self.since, self._calm_since = LoadState.OVERLOADED, now, None
                self.fraction, self._credit, self._controlled_at = p.start_fraction, 0.0, now
                self._sojourn = None
                self.stats["overloads"] += 1
            return self.state
        if now - self._controlled_at >= p.control_interval:
            self._controlled_at = now
            # the shortest delay over the interval: a backlog that drains shows a minimum
            # near zero, one that stands does not (None: nothing was handed on at all)
            self.sojourn, self._sojourn = self._sojourn, None
            if p.target_sojourn > 0:
                self._steer_on_sojourn(self.sojourn or 0.0)
            else:
                self._steer_on_queue(queue_depth)
        calm = self.fraction >= 1.0 and self.lag < p.recover_below * p.lag_threshold and not (
            p.queue_threshold > 0 and self.queue >= p.recover_below * p.queue_threshold)
        if not calm:
            self._calm_since = None
        elif self._calm_since is None:
            self._calm_since = now
        if self._calm_since is not None and now - self._calm_since >= p.recover_after:
            self.state, self.since, self._calm_since = LoadState.NORMAL, now, None
            self.fraction = 1.0
            self.stats["recoveries"] += 1
        return self.state

    def _steer_on_queue(self, queue_depth: int) -> None:
        """One control step on the smoothed lag and the queue's size (``target_sojourn`` 0)."""
        p = self.policy
        queue_high = p.queue_threshold > 0 and self.queue >= p.queue_threshold
        queue_low = p.queue_threshold <= 0 or self.queue < p.queue_threshold / 2
        # a high queue that is draining (a stall's backlog: a long GC pass, a slow disk)
        # asks for no further cut: the share that drains it is not too large
        growing = queue_high and queue_depth >= self._depth_at_control
        self._depth_at_control = queue_depth
        if self.lag > p.target_lag or growing:
            self.fraction = max(p.min_fraction, self.fraction * p.decrease)
        elif self.lag < p.target_lag / 2 and queue_low:
            self.fraction = min(1.0, self.fraction + p.increase)

    def _steer_on_sojourn(self, sojourn: float) -> None:
        """One control step on the backlog's delay (CoDel-like, RFC 8289's measure): cut the
        admitted share while the shortest delay of the interval is above ``target_sojourn``
        or the loop lags, raise it while both are below half their targets. The queue's size
        does not steer here: bytes in a FIFO say nothing of how long they will take."""
        p = self.policy
        if sojourn > p.target_sojourn or self.lag > p.target_lag:
            self.fraction = max(p.min_fraction, self.fraction * p.decrease)
        elif sojourn < p.target_sojourn / 2 and self.lag < p.target_lag / 2:
            self.fraction = min(1.0, self.fraction + p.increase)

    def decide(self, method: str, has_to_tag: bool, trusted: bool, *,
               credentials: bool = False) -> Admission:
        """:func:`admit` in the current state, with the admitted share applied to new work
        (``credentials``: the request carries an Authorization / Proxy-Authorization, so its
        first try was admitted already), counting rejections."""
        if not self.policy.enabled:
            return Admission.ACCEPT
        decision = admit(method, has_to_tag, trusted, self.state)
        if decision is Admission.REJECT and not self.policy.force:
            if credentials:
                decision = Admission.ACCEPT
            else:
                self._credit += self.fraction
                if self._credit >= 1.0:
                    self._credit -= 1.0
                    decision = Admission.ACCEPT
        if decision is Admission.REJECT:
            self.stats["rejected"] += 1
        return decision
