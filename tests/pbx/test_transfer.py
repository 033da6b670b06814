"""Transfers in call control without SIP: fake legs, a fake media graph and a fake host."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from pbx.callcontrol import (
    RECALL,
    Call,
    CallRecord,
    CallStateError,
    Consultation,
    InCallDispatcher,
    Leg,
    Reject,
    Ring,
    Routed,
    Target,
    TransferError,
    UserView,
    attended_transfer,
    consult,
    set_hold,
    supervise,
    toggle_hold,
    transfer_blind,
)
from tests.conftest import FakeLeg, log_of, new_fake_call

T102 = Target("device", "102", "sip:102", "102")
U101 = UserView(key="101", extension="101")
U100 = UserView(key="100", extension="100")


class FakeHost:
    """What the transfers need of the B2BUA: new calls run as tasks, routing to 102."""

    def __init__(self) -> None:
        self.moved: list[tuple[Call, Leg, str, UserView | None, bool]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.calls: list[Call] = []
        self.script: Any = None

    def moved_call(self, first: Call, party: Leg, dialled: str,
                   script: Callable[[Call], Coroutine[Any, Any, None]], *,
                   user: UserView | None = None, consultation: bool = False) -> Call:
        call = Call(None, graph=first.graph, leg_factory=first.leg_factory,
                    record=CallRecord("moved", "internal", "100", dialled, started=0.0),
                    hold_source=first.hold_source, ringback_source=first.ringback_source)
        call.adopt(party)
        if not consultation:
            call.caller = party
        self.moved.append((first, party, dialled, user, consultation))
        self.calls.append(call)
        self.tasks.append(asyncio.ensure_future(supervise(call, script)))
        return call

    def route(self, call: Call, dialled: str, on_behalf_of: UserView | None) -> (
            Routed | Ring | Reject):
        return Ring((T102,), 5.0) if dialled == "102" else Reject(404)

    def devices(self, user: UserView) -> list[Target]:
        return [T102]


def connected() -> tuple[Call, FakeLeg, FakeLeg]:
    """100 (caller) talks to 101 (callee, a user's phone) in a fake call."""
    call, _, _ = new_fake_call()
    callee = call.add_leg(Target("device", "101", "sip:101", "101"))
    assert isinstance(callee, FakeLeg) and isinstance(call.caller, FakeLeg)
    callee.start()
    callee.far_answer()
    call.caller.answer()
    call.events.clear()
    InCallDispatcher(call, {callee: U101, call.caller: U100}).install()
    call.bridge(call.caller, callee)
    return call, call.caller, callee


async def test_blind_transfer_moves_the_other_party_and_reports_progress() -> None:
    call, caller, callee = connected()
    host = FakeHost()
    progress: list[tuple[int, str]] = []
    started = asyncio.Event()

    async def script(c: Call) -> None:  # stands in for CallScript.moved
        started.set()

    host.script = type("S", (), {"moved": lambda self, c, *a: script(c)})()
    moved = transfer_blind(call, callee, "102", host=host,
                           progress=lambda s, r: progress.append((s, r)))
    assert not any(not br.closed for br in call.bridges)  # the old bridge is gone
    assert caller not in call.legs and caller.call is moved and moved.caller is caller
    assert host.moved[0][2:4] == ("102", U100)  # the party's own user goes along
    assert progress == [(100, "Trying")]
    moved.record.answered = 1.0
    assert moved.on_record is not None
    moved.on_record(moved.record)
    assert progress[-1] == (200, "OK")
    await asyncio.wait_for(asyncio.gather(*host.tasks), 2)
    assert started.is_set()


async def test_blind_transfer_of_a_leg_in_no_bridge_is_refused() -> None:
    call, _, callee = connected()
    call.unbridge(call.bridges[0])
    with pytest.raises(TransferError):
        transfer_blind(call, callee, "102", host=FakeHost())


async def test_toggle_hold_plays_music_to_the_other_party_and_back() -> None:
    call, caller, callee = connected()
    bridge = call.bridges[0]
    assert toggle_hold(call, callee) is True
    assert bridge.music_on_hold_to == [caller.id]
    assert toggle_hold(call, callee) is False
    assert bridge.music_on_hold_to == []


async def test_attended_transfer_joins_the_other_parties_and_the_old_legs_do_not_end_it() -> None:
    first, party, user_a = connected()
    second, _, _ = new_fake_call()
    assert isinstance(second.caller, FakeLeg)
    consulted = second.add_leg(T102)
    assert isinstance(consulted, FakeLeg)
    consulted.start()
    consulted.far_answer()
    second.caller.answer()
    second.events.clear()
    user_b = second.caller
    old = second.bridge(user_b, consulted)
    bridge = attended_transfer(first, user_a, second, user_b)
    assert {bridge.a, bridge.b} == {party, consulted} and old.replaced_by is bridge
    assert party.call is second and party not in first.legs
    waiter = asyncio.ensure_future(second.wait_hangup(old))  # the loop started on the old one
    user_b.hangup()  # the transferor hangs up: the call goes on
    await asyncio.sleep(0.05)
    assert not waiter.done()
    consulted.far_hangup()
    assert await asyncio.wait_for(waiter, 1) is consulted


async def test_consultation_holds_the_party_talks_and_completes() -> None:
    call, caller, callee = connected()
    host = FakeHost()
    consultation = consult(call, callee, "102", host=host)
    assert isinstance(consultation, Consultation)
    await asyncio.sleep(0.05)
    c3 = host.calls[0]
    assert host.moved[0][3:] == (U101, True)  # the user's call, the party on hold in it
    consulted = next(leg for leg in c3.legs if leg.target == T102)
    assert isinstance(consulted, FakeLeg) and consultation.state == "ringing"
    consulted.far_answer()
    await asyncio.sleep(0.05)
    assert consultation.state == "talking"
    assert any({br.a, br.b} == {callee, consulted} for br in c3.bridges if not br.closed)
    consultation.complete()
    await asyncio.sleep(0.05)
    assert consultation.state == "transferred"
    assert ("hangup", "normal") in log_of(callee)  # the user drops out
    assert any({br.a, br.b} == {caller, consulted} for br in c3.bridges if not br.closed)
    consulted.far_hangup()
    await asyncio.wait_for(asyncio.gather(*host.tasks), 2)


async def test_consultation_back_when_the_consulted_party_hangs_up() -> None:
    call, caller, callee = connected()
    host = FakeHost()
    consultation = consult(call, callee, "102", host=host)
    await asyncio.sleep(0.05)
    c3 = host.calls[0]
    consulted = next(leg for leg in c3.legs if leg.target == T102)
    assert isinstance(consulted, FakeLeg)
    consulted.far_answer()
    await asyncio.sleep(0.05)
    consulted.far_hangup()
    await asyncio.wait_for(asyncio.gather(*host.tasks), 2)
    assert consultation.state == "back"
    assert caller.call is call and caller in call.legs  # the party is back in the first call
    assert any({br.a, br.b} == {caller, callee} for br in call.bridges if not br.closed)


async def test_consultation_cancel_hangs_up_the_consulted_party_and_goes_back() -> None:
    call, caller, callee = connected()
    host = FakeHost()
    consultation = consult(call, callee, "102", host=host)
    await asyncio.sleep(0.05)
    consulted = next(leg for leg in host.calls[0].legs if leg.target == T102)
    assert isinstance(consulted, FakeLeg)
    consulted.far_answer()
    await asyncio.sleep(0.05)
    consultation.cancel()
    await asyncio.wait_for(asyncio.gather(*host.tasks), 2)
    assert consultation.state == "back" and consulted.ended
    assert any({br.a, br.b} == {caller, callee} for br in call.bridges if not br.closed)
    assert "transfer.consultation" not in call.per_call  # a new one may start


async def test_a_second_consultation_while_one_runs_is_refused() -> None:
    call, _, callee = connected()
    host = FakeHost()
    consult(call, callee, "102", host=host)
    with pytest.raises(TransferError):
        consult(call, callee, "102", host=host)
    for task in host.tasks:
        task.cancel()


async def test_set_hold_plays_music_signals_once_per_change_and_needs_a_bridge() -> None:
    call, caller, callee = connected()
    bridge = call.bridges[0]
    signalled: list[bool] = []

    def signal(held: bool) -> bool:
        signalled.append(held)
        return True

    caller.signal_hold = signal  # type: ignore[method-assign]
    set_hold(call, callee, True)
    set_hold(call, callee, True)  # idempotent: no second re-INVITE
    assert bridge.music_on_hold_to == [caller.id]
    set_hold(call, callee, False)
    assert bridge.music_on_hold_to == [] and signalled == [True, False]
    call.unbridge(bridge)
    with pytest.raises(CallStateError):
        set_hold(call, callee, True)


def _failing_target(host: FakeHost) -> None:
    """The moved call's routing: the target is busy (the host's fail is left out: RECALL)."""

    async def moved(c: Call, *args: Any) -> None:
        assert c.per_call.get(RECALL) is True  # the host is told not to play the failure
        c.record.status = 486

    host.script = type("S", (), {"moved": lambda self, c, *a: moved(c, *a)})()


async def test_a_failed_blind_transfer_rings_the_transferor_back() -> None:
    call, caller, callee = connected()
    host = FakeHost()
    _failing_target(host)
    moved = transfer_blind(call, callee, "103", host=host)
    callee.hangup()
    await asyncio.sleep(0.05)
    # the transferor's devices ring (FakeHost.devices: T102), the party hears music meanwhile
    ringing = next(leg for leg in moved.legs if leg.target == T102)
    assert isinstance(ringing, FakeLeg) and not ringing.answered
    assert moved.playbacks and not moved.playbacks[-1].done.done()
    ringing.far_answer()
    await asyncio.sleep(0.05)
    assert moved.record.answered is not None
    assert any({br.a, br.b} == {caller, ringing} for br in moved.bridges if not br.closed)
    ringing.far_hangup()
    await asyncio.wait_for(asyncio.gather(*host.tasks), 2)


async def test_no_recall_when_the_transferor_does_not_answer_or_is_unknown() -> None:
    call, caller, callee = connected()
    host = FakeHost()
    _failing_target(host)
    moved = transfer_blind(call, callee, "103", host=host)
    await asyncio.sleep(0.05)
    ringing = next(leg for leg in moved.legs if leg.target == T102)
    assert isinstance(ringing, FakeLeg)
    ringing.far_fail(480)
    await asyncio.wait_for(asyncio.gather(*host.tasks), 2)
    assert moved.record.answered is None and caller.ended
    # a party moved by someone who is no user of ours: nobody to ring back
    call2, _, callee2 = connected()
    call2.per_call[InCallDispatcher.KEY].users.pop(callee2)
    host2 = FakeHost()
    _failing_target(host2)
    moved2 = transfer_blind(call2, callee2, "103", host=host2)
    await asyncio.wait_for(asyncio.gather(*host2.tasks), 2)
    assert not any(leg.target == T102 for leg in moved2.legs)
