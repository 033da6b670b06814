"""Overload control: measure the event loop's lag, decide which new work to turn away (sans-IO).

Theory of operation
-------------------
Issue 12 §2: under load the server must serve its capacity and turn the rest away at once,
rather than collapse. The measure is the event loop's *lag*: a probe that asks to be woken every
``interval`` seconds is woken late by however long the loop was busy with other work
(:meth:`OverloadDetector.tick`). The lag is smoothed (an exponentially weighted mean, weight
``smoothing`` for a new sample, each sample capped at twice the threshold) so one slow callback
does not flip the state (with the default 0.3 one sample moves the mean by at most 0.6 × the
threshold) while lag that lasts does within a few samples; an optional
``queue_depth`` (events waiting to be handled) counts as well when ``queue_threshold`` is set.

States (:class:`LoadState`): NORMAL → OVERLOADED when the smoothed lag reaches
``lag_threshold`` (or the queue ``queue_threshold``); OVERLOADED → NORMAL once the smoothed lag
stayed below ``recover_below`` × ``lag_threshold`` (and the queue below its threshold) for
``recover_after`` seconds — it recovers by itself, with hysteresis so it does not flap.

While OVERLOADED, :func:`admit` turns away what creates new work — a new INVITE (no To-tag) and
a REGISTER from an untrusted source — with 503 and ``Retry-After: retry_after``
(:data:`Admission.REJECT`), answered at once without authentication or routing. Everything
else flows: in-dialog requests (a To-tag), ACK, BYE, CANCEL, responses, and anything from a
trusted peer (trunks, a load balancer in front, ``[security] trusted``), so calls in progress
complete and a trunk's traffic is not refused on our side.

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
    #: Events waiting to be handled at which the server is overloaded (0: not used).
    queue_threshold: int = 0
    #: Back to normal once the smoothed lag stayed below this fraction of lag_threshold ...
    recover_below: float = 0.5
    #: ... for this many seconds.
    recover_after: float = 2.0
    #: Weight of a new sample in the smoothed lag (0 < smoothing <= 1).
    smoothing: float = 0.3
    #: The 503's Retry-After (seconds).
    retry_after: int = 5
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
        self.queue_depth = 0
        #: When the probe should wake next (None before the first tick).
        self._due: float | None = None
        #: Since when the lag has been below the recovery level (None: it is not).
        self._calm_since: float | None = None
        self.since = 0.0
        #: Counters for statistics: state changes and requests rejected.
        self.stats: dict[str, int] = {"overloads": 0, "recoveries": 0, "rejected": 0}

    @property
    def overloaded(self) -> bool:
        return self.state is LoadState.OVERLOADED

    def tick(self, now: float, queue_depth: int = 0) -> float:
        """The probe woke at ``now``: take the sample (how late it woke) and return the delay
        until it should wake next (``interval``)."""
        if self._due is not None:
            self.sample(max(0.0, now - self._due), now, queue_depth)
        self._due = now + self.policy.interval
        return self.policy.interval

    def sample(self, lag: float, now: float, queue_depth: int = 0) -> LoadState:
        """One lag sample (seconds) and queue depth at ``now``; the state after it."""
        p = self.policy
        self.last_lag = lag
        # one sample counts at most twice the threshold: a single slow callback (a long GC
        # pause, a start-up step) never flips the state alone; sustained lag does within a
        # few samples
        self.lag += p.smoothing * (min(lag, 2 * p.lag_threshold) - self.lag)
        self.queue_depth = queue_depth
        if p.force or not p.enabled:
            return self.state
        queue_high = p.queue_threshold > 0 and queue_depth >= p.queue_threshold
        if self.state is LoadState.NORMAL:
            if self.lag >= p.lag_threshold or queue_high:
                self.state, self.since, self._calm_since = LoadState.OVERLOADED, now, None
                self.stats["overloads"] += 1
            return self.state
        calm = self.lag < p.recover_below * p.lag_threshold and not (
            p.queue_threshold > 0 and queue_depth >= p.recover_below * p.queue_threshold)
        if not calm:
            self._calm_since = None
        elif self._calm_since is None:
            self._calm_since = now
        if self._calm_since is not None and now - self._calm_since >= p.recover_after:
            self.state, self.since, self._calm_since = LoadState.NORMAL, now, None
            self.stats["recoveries"] += 1
        return self.state

    def decide(self, method: str, has_to_tag: bool, trusted: bool) -> Admission:
        """:func:`admit` in the current state, counting rejections."""
        if not self.policy.enabled:
            return Admission.ACCEPT
        decision = admit(method, has_to_tag, trusted, self.state)
        if decision is Admission.REJECT:
            self.stats["rejected"] += 1
        return decision
