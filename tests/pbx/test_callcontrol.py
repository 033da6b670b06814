"""Call control without SIP: fake legs and a fake media graph drive Call/Leg/Bridge, the ring
operation, the per-call supervisor, and the feature chains."""

from __future__ import annotations

import asyncio

import pytest

from pbx.callcontrol import (
    COMPLETED_ELSEWHERE,
    Bridge,
    Call,
    CallRecord,
    DtmfReceived,
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
    supervise,
)
from tests.conftest import FakeLeg, log_of
from tests.conftest import new_fake_call as make_call

TARGETS = (Target("device", "101", "sip:a", "a"), Target("device", "101", "sip:b", "b"))


def test_an_ended_leg_ignores_everything_and_posts_nothing() -> None:
    call, _, _ = make_call()
    leg = FakeLeg(call)
    leg.start()
    leg.far_fail(486)
    assert [type(e) for e in call.events] == [LegFailed] and leg.ended
    for event in LegInput:
        assert leg.transition(event) is False
    assert len(call.events) == 1


def test_each_change_posts_the_event_its_action_names() -> None:
    call, _, _ = make_call()
    leg = FakeLeg(call)
    leg.start()
    assert not call.events  # sending the INVITE tells nobody
    leg.far_ringing(183, early_media=True)
    leg.far_ringing(180)
    assert call.events.popleft() == LegProgressed(leg, 183, True)
    assert call.events.popleft() == LegProgressed(leg, 180, False)
    assert leg.transition(LegInput.ANSWER) and leg.state is LegState.ANSWERING
    assert not call.events and not leg.answered  # the 2xx alone does not make it up
    assert leg.transition(LegInput.FAIL) is False  # a late failure cannot undo a 2xx
    assert leg.transition(LegInput.CONFIRM)
    assert call.events.popleft() == LegAnswered(leg) and leg.answered
    leg.far_hangup()
    assert call.events.popleft() == LegEnded(leg, "bye", True) and leg.ended


def test_abandoning_an_unanswered_leg_is_silent_and_final() -> None:
    call, _, _ = make_call()
    leg = FakeLeg(call)
    leg.start()
    leg.cancel()
    assert leg.ended and not call.events
    leg.far_answer()  # a 2xx that crossed our CANCEL changes nothing
    assert leg.ended and not call.events
    # an answering (2xx sent, no ACK) leg cannot be abandoned, only ended
    other = FakeLeg(call, "inbound")
    other.transition(LegInput.ANSWER)
    assert other.transition(LegInput.ABANDON) is False
    assert other.transition(LegInput.END, cause="ack-timeout", remote=False)
    assert call.events.popleft() == LegEnded(other, "ack-timeout", False)


async def test_ring_first_answer_wins_and_others_get_reason() -> None:
    call, graph, legs = make_call()

    async def drive() -> None:
        await asyncio.sleep(0)
        a, b = legs
        a.far_ringing(180)
        await asyncio.sleep(0.01)
        b.far_answer()

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
        legs[0].far_ringing(183, early_media=True)
        await asyncio.sleep(0.01)
        kinds = [link.kind for link in graph.live]
        assert kinds == ["bridge"], kinds
        legs[0].far_fail(486)
        legs[1].far_fail(480)

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
        assert isinstance(call.caller, FakeLeg)
        call.caller.far_fail(487, "cancelled")

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
    assert isinstance(callee, FakeLeg)
    callee.start()
    callee.far_answer()
    assert isinstance(call.events.pop(), LegAnswered)
    callee.far_hangup()
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


async def test_ring_answer_in_the_same_batch_as_ringing() -> None:
    """A 180 and a 200 read in one batch: the leg is already answered when ring() reads the
    LegProgressed; the LegAnswered behind it must still win the ring."""
    call, _, legs = make_call()

    async def drive() -> None:
        await asyncio.sleep(0)
        a = legs[0]
        a.far_ringing(180)
        a.far_answer()

    task = asyncio.create_task(drive())
    result = await call.ring(TARGETS[:1], timeout=5)
    await task
    assert result.outcome is RingOutcome.ANSWERED and result.leg is legs[0]


async def test_originate_makes_the_first_answer_the_caller() -> None:
    graph_call, graph, legs = make_call()
    call = Call(None, graph=graph, leg_factory=graph_call.leg_factory, record=graph_call.record)

    async def drive() -> None:
        await asyncio.sleep(0)
        legs[1].far_answer()

    task = asyncio.create_task(drive())
    winner = await call.originate(TARGETS, timeout=5)
    await task
    assert winner is legs[1] and call.caller is winner
    assert ("cancel", COMPLETED_ELSEWHERE) in legs[0].log
    assert not graph.live  # no ringback: there was nobody to hear it


async def test_originate_nobody_answers() -> None:
    template, graph, _legs = make_call()
    call = Call(None, graph=graph, leg_factory=template.leg_factory, record=template.record)
    assert await call.originate(TARGETS[:1], timeout=0.05) is None
    assert call.caller is None and call.record.status == 480
    assert await call.answer() is False


async def test_conference_join_closes_the_bridge_and_release_closes_the_mix() -> None:
    call, graph, _ = make_call()
    callee = call.add_leg(TARGETS[0])
    call.bridge(call.caller, callee)  # type: ignore[arg-type]
    conf = call.conference()
    call.join(conf, call.caller)  # type: ignore[arg-type]
    call.join(conf, callee)
    kinds = [link.kind for link in graph.live]
    assert kinds == ["conference"] and not call.bridges
    mix = graph.live[0]
    assert mix.members == [call.caller.media, callee.media]  # type: ignore[union-attr]
    conf.remove(callee)
    assert mix.members == [call.caller.media]  # type: ignore[union-attr]
    call.release()
    assert not graph.live


async def test_replace_moves_one_side_of_a_bridge_to_a_leg_of_another_call() -> None:
    call, graph, _ = make_call()
    other, _, _ = make_call()
    callee = call.add_leg(TARGETS[0])
    bridge = call.bridge(call.caller, callee)  # type: ignore[arg-type]
    newcomer = other.add_leg(TARGETS[1])
    moved = call.replace(bridge, callee, newcomer)
    assert (moved.a, moved.b) == (call.caller, newcomer)
    assert newcomer.call is call and newcomer in call.legs and newcomer not in other.legs
    assert bridge.closed and [link.kind for link in graph.live] == ["bridge"]
    with pytest.raises(ValueError):
        call.replace(moved, callee, newcomer)
