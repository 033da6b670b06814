"""Call control without SIP: fake legs and a fake media graph drive Call/Leg/Bridge, the ring
operation, the per-call supervisor, and the feature chains."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from features.base import BaseFeature, CallContext, Continue, Decision, Reject, Ring, Setting
from features.registry import FeatureRegistry, default_registry
from features.ringing import OrdinaryRinging
from media.port import Frame
from pbx.callcontrol import (
    COMPLETED_ELSEWHERE,
    LEG_TABLE,
    Bridge,
    Call,
    CallRecord,
    DtmfReceived,
    Leg,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegHeld,
    LegInput,
    LegProgressed,
    LegResumed,
    LegState,
    RingOutcome,
    Target,
    leg_transition,
    supervise,
)


class Port:
    sample_rate = 8000

    def get_frame(self) -> Frame | None:
        return None

    def put_frame(self, frame: Frame) -> None:
        pass


class FakeLink:
    def __init__(self, kind: str, a: Any, b: Any, graph: FakeGraph) -> None:
        self.kind, self.a, self.b, self.graph = kind, a, b, graph
        self.closed = False
        graph.live.append(self)

    def close(self) -> None:
        self.closed = True
        if self in self.graph.live:
            self.graph.live.remove(self)


class FakeGraph:
    def __init__(self) -> None:
        self.live: list[FakeLink] = []

    def bridge(self, a: Any, b: Any) -> FakeLink:
        return FakeLink("bridge", a, b, self)

    def link(self, source: Any, sink: Any, *, fill_silence: bool = False) -> FakeLink:
        return FakeLink("link", source, sink, self)


class FakeLeg(Leg):
    def __init__(self, call: Call | None, direction: str = "outbound", target: Target | None = None,
                 party: str = "") -> None:
        super().__init__(call, party=party, target=target)
        self.direction = direction
        self.media = Port()
        self.log: list[tuple[str, object]] = []
        if direction == "inbound":
            self.apply(LegInput.START)

    def start(self) -> None:
        self.apply(LegInput.START)
        self.log.append(("start", None))

    def progress(self, *, early_media: bool) -> None:
        self.apply(LegInput.PROGRESS)
        self.log.append(("progress", early_media))

    def answer(self) -> None:
        self.log.append(("answer", None))
        if self.apply(LegInput.ANSWER):
            self.post(LegAnswered(self))

    def reject(self, status: int, reason: str | None = None) -> None:
        self.log.append(("reject", status))
        self.apply(LegInput.FAIL)

    def cancel(self, reason: str | None = None) -> None:
        self.log.append(("cancel", reason))
        self.apply(LegInput.FAIL)

    def hangup(self, cause: str = "normal") -> None:
        self.log.append(("hangup", cause))
        if self.answered:
            self.apply(LegInput.END)
        elif self.direction == "inbound":
            self.reject(500 if cause == "error" else 480)
        else:
            self.cancel()

    def send_dtmf(self, digits: str) -> None:
        self.log.append(("dtmf", digits))

    def close_media(self) -> None:
        self.log.append(("close_media", None))


def log_of(leg: Leg) -> list[tuple[str, object]]:
    assert isinstance(leg, FakeLeg)
    return leg.log


def make_call(records: list[CallRecord] | None = None) -> tuple[Call, FakeGraph, list[FakeLeg]]:
    graph = FakeGraph()
    created: list[FakeLeg] = []

    def factory(call: Call, target: Target) -> Leg:
        leg = FakeLeg(call, target=target, party=target.label)
        created.append(leg)
        return leg

    caller = FakeLeg(None, "inbound", party="100")
    record = CallRecord("cid", "internal", "100", "101", started=0.0)
    call = Call(caller, graph=graph, leg_factory=factory, record=record,
                hold_source=lambda rate: Port(), ringback_source=lambda rate: Port(),
                on_record=(records.append if records is not None else None))
    return call, graph, created


TARGETS = (Target("device", "101", "sip:a", "a"), Target("device", "101", "sip:b", "b"))


def test_leg_table_all_pairs() -> None:
    for state, event in itertools.product(LegState, LegInput):
        nxt = leg_transition(state, event)
        assert nxt == LEG_TABLE.get((state, event))
        if state is LegState.ENDED:
            assert nxt is None  # an ended leg ignores everything
    # every non-final state can end
    for state in (LegState.IDLE, LegState.CALLING, LegState.EARLY):
        assert leg_transition(state, LegInput.FAIL) is LegState.ENDED
    assert leg_transition(LegState.ANSWERED, LegInput.FAIL) is None
    assert leg_transition(LegState.ANSWERED, LegInput.END) is LegState.ENDED


async def test_ring_first_answer_wins_and_others_get_reason() -> None:
    call, graph, legs = make_call()

    async def drive() -> None:
        await asyncio.sleep(0)
        a, b = legs
        a.apply(LegInput.PROGRESS)
        call.post(LegProgressed(a, 180, early_media=False))
        await asyncio.sleep(0.01)
        b.apply(LegInput.ANSWER)
        call.post(LegAnswered(b))

    task = asyncio.create_task(drive())
    result = await call.ring(TARGETS, timeout=5)
    await task
    a, b = legs
    assert result.outcome is RingOutcome.ANSWERED and result.leg is b
    assert ("cancel", COMPLETED_ELSEWHERE) in a.log
    assert ("progress", True) in log_of(call.caller)  # 183 with our ringback
    assert not graph.live  # ringback stopped when ring() returned


async def test_ring_relays_early_media_instead_of_ringback() -> None:
    call, graph, legs = make_call()

    async def drive() -> None:
        await asyncio.sleep(0)
        legs[0].apply(LegInput.PROGRESS)
        call.post(LegProgressed(legs[0], 183, early_media=True))
        await asyncio.sleep(0.01)
        kinds = [link.kind for link in graph.live]
        assert kinds == ["bridge"], kinds
        call.post(LegFailed(legs[0], 486))
        call.post(LegFailed(legs[1], 480))

    task = asyncio.create_task(drive())
    result = await call.ring(TARGETS, timeout=5)
    await task
    assert result.outcome is RingOutcome.BUSY and result.status == 486
    assert not graph.live


async def test_ring_timeout_cancels_everyone() -> None:
    call, _, legs = make_call()
    result = await call.ring(TARGETS, timeout=0.05)
    assert result.outcome is RingOutcome.NO_ANSWER and result.status == 480
    assert all(("cancel", None) in leg.log for leg in legs)


async def test_ring_caller_gone() -> None:
    call, _, legs = make_call()

    async def drive() -> None:
        await asyncio.sleep(0)
        call.caller.apply(LegInput.FAIL)
        call.post(LegFailed(call.caller, 487))

    task = asyncio.create_task(drive())
    result = await call.ring(TARGETS, timeout=5)
    await task
    assert result.outcome is RingOutcome.CALLER_GONE
    assert all(leg.ended for leg in legs)


async def test_supervisor_releases_a_failing_call_only() -> None:
    records: list[CallRecord] = []
    bad, _, bad_legs = make_call(records)
    good, _, _ = make_call()

    async def broken(call: Call) -> None:
        call.add_leg(TARGETS[0]).start()
        raise RuntimeError("feature bug")

    async def fine(call: Call) -> None:
        await asyncio.sleep(0.05)
        assert bad.released and not call.released  # the other call is untouched
        call.caller.answer()

    await asyncio.gather(supervise(bad, broken, on_error=lambda c, e: None), supervise(good, fine))
    assert ("reject", 500) in log_of(bad.caller)  # the unanswered caller got 5xx
    assert ("cancel", None) in bad_legs[0].log  # the ringing target got CANCEL
    assert ("close_media", None) in log_of(bad.caller)
    assert bad.released and records[-1].ended is not None and records[-1].status == 500
    assert good.released and ("hangup", "normal") in log_of(good.caller)
    assert not any(e[0] == "reject" for e in log_of(good.caller))


async def test_bridge_hold_plays_music_to_the_other_side() -> None:
    call, graph, _ = make_call()
    callee = call.add_leg(TARGETS[0])
    bridge = call.bridge(call.caller, callee)
    assert [link.kind for link in graph.live] == ["bridge"]
    call.post(LegHeld(callee))
    call.post(DtmfReceived(call.caller, "5"))
    call.post(LegResumed(callee))
    callee.apply(LegInput.START)
    callee.apply(LegInput.ANSWER)
    callee.apply(LegInput.END)
    call.post(LegEnded(callee, "bye"))
    holds: list[list[str]] = []
    orig = Bridge.rebuild

    def spy(self: Bridge) -> None:
        orig(self)
        holds.append(self.music_on_hold_to)

    Bridge.rebuild = spy  # type: ignore[method-assign]
    try:
        ended = await call.wait_hangup(bridge)
    finally:
        Bridge.rebuild = orig  # type: ignore[method-assign]
    assert ended is callee
    assert holds == [[call.caller.id], []]  # MOH to the caller while the callee held
    assert ("dtmf", "5") in log_of(callee)  # digits relayed to the other leg


async def test_collect_dtmf_keeps_other_events() -> None:
    call, _, _ = make_call()
    for d in "12#":
        call.post(DtmfReceived(call.caller, d))
    other = FakeLeg(call)
    call.post(LegEnded(other, "bye"))
    assert await call.collect_dtmf(call.caller, max_digits=5, timeout=0.2) == "12"
    assert isinstance(await call.next_event(0.1), LegEnded)


# --------------------------------------------------------------------------------- features


class Dnd(BaseFeature):
    name = "dnd"
    priority = 100
    settings_schema = {"on": Setting(bool, False)}

    async def on_terminate(self, ctx: CallContext) -> Decision:
        return Reject(486) if ctx.setting(self, "on") else Continue()


async def test_chain_runs_in_priority_order() -> None:
    registry = FeatureRegistry([OrdinaryRinging(12.0), Dnd()])
    assert [f.name for f in registry.chain("on_terminate")] == ["dnd", "ringing"]
    devices = (TARGETS[0],)
    ctx = CallContext("100", "101", devices=devices)
    assert await registry.run_chain("on_terminate", ctx) == Ring(devices, 12.0)
    ctx.settings = {"dnd": {"on": True}}
    assert await registry.run_chain("on_terminate", ctx) == Reject(486)
    assert isinstance(await registry.run_chain("on_terminate", CallContext("100", "101")),
                      Continue)
    with pytest.raises(ValueError):
        registry.register(Dnd())


async def test_ringing_default_is_four_rings_and_user_setting_wins() -> None:
    ringing = default_registry().get("ringing")
    assert isinstance(ringing, OrdinaryRinging)
    ctx = CallContext("100", "101", devices=TARGETS)
    decision = await ringing.on_terminate(ctx)
    assert decision == Ring(TARGETS, 20.0)
    ctx.settings = {"ringing": {"ring_timeout": 7.5}}
    assert await ringing.on_terminate(ctx) == Ring(TARGETS, 7.5)
    assert ringing.settings_schema["ring_timeout"].coerce(30) == 30.0
    with pytest.raises(ValueError):
        ringing.settings_schema["ring_timeout"].coerce(1)


async def test_ring_answer_in_the_same_batch_as_ringing() -> None:
    """A 180 and a 200 read in one batch: the leg is already answered when ring() reads the
    LegProgressed; the LegAnswered behind it must still win the ring."""
    call, _, legs = make_call()

    async def drive() -> None:
        await asyncio.sleep(0)
        a = legs[0]
        a.apply(LegInput.PROGRESS)
        a.apply(LegInput.ANSWER)
        call.post(LegProgressed(a, 180, early_media=False))
        call.post(LegAnswered(a))

    task = asyncio.create_task(drive())
    result = await call.ring(TARGETS[:1], timeout=5)
    await task
    assert result.outcome is RingOutcome.ANSWERED and result.leg is legs[0]
