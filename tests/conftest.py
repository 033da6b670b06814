"""Shared test configuration."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI gets more examples than a developer's quick run; both are bounded.
settings.register_profile(
    "ci", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# ------------------------------------------------------------------ call-control fakes (no SIP)
# Shared by tests/pbx and tests/features: a leg that only moves along the real leg table, and a
# media graph that records what call control connected.

from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from media.port import Frame  # noqa: E402
from pbx.callcontrol import Call, CallRecord, Leg, LegInput, Target  # noqa: E402


class Port:
    """A silent media port."""

    sample_rate = 8000
    telephone_event_pt: int | None = 101

    def get_frame(self) -> Frame | None:
        return None

    def put_frame(self, frame: Frame) -> None:
        pass


class FakeLink:
    """A link, bridge or conference of :class:`FakeGraph` (``kind`` says which)."""

    relays_events = False
    mute_dtmf: tuple[bool, bool] | None = None

    def __init__(self, kind: str, a: Any, b: Any, graph: FakeGraph) -> None:
        self.kind, self.a, self.b, self.graph = kind, a, b, graph
        self.closed = False
        self.members: list[Any] = []
        graph.live.append(self)

    def add(self, port: Any) -> None:
        self.members.append(port)

    def remove(self, port: Any) -> None:
        self.members.remove(port)

    def close(self) -> None:
        self.closed = True
        if self in self.graph.live:
            self.graph.live.remove(self)


class FakeGraph:
    """Records the live links; ``decoded`` lists the bridges asked to decode."""

    def __init__(self) -> None:
        self.live: list[FakeLink] = []
        self.decoded: list[FakeLink] = []

    def bridge(self, a: Any, b: Any, *, decode: bool = False,
               mute_dtmf: tuple[bool, bool] | None = None) -> FakeLink:
        link = FakeLink("bridge", a, b, self)
        link.mute_dtmf = mute_dtmf
        if decode or mute_dtmf is not None:
            self.decoded.append(link)
        return link

    def link(self, source: Any, sink: Any, *, fill_silence: bool = False) -> FakeLink:
        return FakeLink("link", source, sink, self)

    def conference(self, sample_rate: int) -> FakeLink:
        return FakeLink("conference", None, None, self)


class FakeLeg(Leg):
    """A leg whose commands are logged and move it along the real leg table; the far end's
    answers are driven by the test (``far_*`` helpers)."""

    def __init__(self, call: Call | None, direction: str = "outbound",
                 target: Target | None = None, party: str = "") -> None:
        super().__init__(call, party=party, target=target)
        self.direction = direction
        self.media = Port()
        self.log: list[tuple[str, object]] = []
        if direction == "inbound":
            self.transition(LegInput.START)

    # commands
    def start(self) -> None:
        self.transition(LegInput.START)
        self.log.append(("start", None))

    def progress(self, *, early_media: bool) -> None:
        self.transition(LegInput.PROGRESS, status=183 if early_media else 180)
        self.log.append(("progress", early_media))

    def answer(self) -> None:
        self.log.append(("answer", None))
        # our 2xx, and the caller's ACK right behind it
        self.transition(LegInput.ANSWER)
        self.transition(LegInput.CONFIRM)

    def reject(self, status: int, reason: str | None = None) -> None:
        self.log.append(("reject", status))
        self.final_status = status
        self.transition(LegInput.ABANDON)

    def cancel(self, reason: str | None = None) -> None:
        self.log.append(("cancel", reason))
        self.transition(LegInput.ABANDON)

    def hangup(self, cause: str = "normal") -> None:
        self.log.append(("hangup", cause))
        if self.answered:
            self.transition(LegInput.END, cause=cause, remote=False)
        elif self.direction == "inbound":
            self.reject(500 if cause == "error" else 480)
        else:
            self.cancel()

    def send_dtmf(self, digits: str) -> None:
        self.log.append(("dtmf", digits))

    def close_media(self) -> None:
        self.log.append(("close_media", None))

    # the far end
    def far_ringing(self, status: int = 180, early_media: bool = False) -> None:
        self.transition(LegInput.PROGRESS, status=status, early_media=early_media)

    def far_answer(self) -> None:
        self.transition(LegInput.ANSWER)
        self.transition(LegInput.CONFIRM)

    def far_fail(self, status: int, reason: str = "") -> None:
        self.transition(LegInput.FAIL, status=status, reason=reason)

    def far_hangup(self) -> None:
        self.transition(LegInput.END, cause="bye", remote=True)


def log_of(leg: Leg | None) -> list[tuple[str, object]]:
    """A fake leg's command log."""
    assert isinstance(leg, FakeLeg)
    return leg.log


CallMaker = Callable[..., tuple[Call, FakeGraph, list[FakeLeg]]]


def new_fake_call(records: list[CallRecord] | None = None, *, caller: str = "100",
                  callee: str = "101") -> tuple[Call, FakeGraph, list[FakeLeg]]:
    """A call from a fake inbound leg; the legs it creates are fakes, listed as created."""
    graph = FakeGraph()
    created: list[FakeLeg] = []

    def factory(call: Call, target: Target) -> Leg:
        leg = FakeLeg(call, target=target, party=target.label)
        created.append(leg)
        return leg

    leg = FakeLeg(None, "inbound", party=caller)
    record = CallRecord("cid", "internal", caller, callee, started=0.0)
    call = Call(leg, graph=graph, leg_factory=factory, record=record,
                hold_source=lambda rate: Port(), ringback_source=lambda rate: Port(),
                on_record=(records.append if records is not None else None))
    return call, graph, created


@pytest.fixture
def make_call() -> CallMaker:
    """:func:`new_fake_call` as a fixture."""
    return new_fake_call
