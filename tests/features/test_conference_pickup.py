"""Conference (``*3`` + number + ``#``), pickup (``*97``, ``*98``, ``*33``) and call pull
(``*11``) through the real call script with fake legs: who rings, who gets CANCEL or BYE, which
legs end up bridged or mixed."""

from __future__ import annotations

from features.conference import room_of
from pbx.callcontrol import DtmfReceived, Target
from tests.conftest import FakeLeg
from tests.features.conftest import Pbx, Placed


async def _connected(pbx: Pbx, caller: str, callee: str) -> tuple[Placed, FakeLeg]:
    placed = pbx.dial(caller, callee)
    await placed.until(lambda: placed.legs)
    leg = placed.legs[0]
    leg.far_answer()
    await placed.until(lambda: placed.caller.answered and placed.call.bridges)
    return placed, leg


def _press(placed: Placed, leg: FakeLeg, digits: str) -> None:
    for d in digits:
        placed.call.post(DtmfReceived(leg, d))


async def test_star3_adds_a_participant_and_the_conference_ends_below_two(pbx: Pbx) -> None:
    placed, b = await _connected(pbx, "100", "101")
    _press(placed, placed.caller, "*3102#")
    await placed.until(lambda: len(placed.legs) == 2)
    c = placed.legs[1]
    assert c.target is not None and c.target.user == "102"
    room = room_of(placed.call)
    assert room is not None and set(room.members) == {placed.caller, b}
    assert not placed.call.bridges  # the two-party bridge gave way to the mix
    c.far_answer()
    await placed.until(lambda: len(room.members) == 3)
    room.mute(c)
    assert room.muted == {c}
    room.drop(b)  # the API's drop: BYE, three became two, the conference goes on
    await placed.until(lambda: len(room.members) == 2)
    assert ("hangup", "normal") in b.log
    assert not placed.task.done()
    c.far_hangup()  # fewer than two: over, the last one gets BYE
    await placed.done()
    assert ("hangup", "normal") in placed.caller.log


async def test_a_participant_who_does_not_answer_leaves_the_call_as_it_was(pbx: Pbx) -> None:
    placed, b = await _connected(pbx, "100", "101")
    _press(placed, b, "*3102#")
    await placed.until(lambda: len(placed.legs) == 2)
    room = room_of(placed.call)
    assert room is not None
    placed.legs[1].far_fail(486)
    await placed.until(lambda: not room.pending)
    assert set(room.members) == {placed.caller, b} and not placed.task.done()
    b.far_hangup()
    await placed.done()


async def test_star97_picks_up_the_ringing_call_and_cancels_the_phone(pbx: Pbx) -> None:
    ringing = pbx.dial("100", "101")
    await ringing.until(lambda: ringing.legs)
    phone = ringing.legs[0]
    phone.far_ringing()
    picker = pbx.dial("102", "*97101")
    picked = picker.caller
    await ringing.until(lambda: ringing.caller.answered)
    assert ("cancel", None) in phone.log
    assert picked.call is ringing.call and picked.answered
    bridge = ringing.call.bridges[0]
    assert {bridge.a, bridge.b} == {ringing.caller, picked}
    await picker.done()  # the vehicle call ends without touching the picker's leg
    assert not any(c == "hangup" for c, _ in picked.log)
    picked.far_hangup()
    await ringing.done()


async def test_star97_with_nothing_ringing_gets_the_error_tone(pbx: Pbx) -> None:
    picker = pbx.dial("102", "*97101")
    await picker.done()
    assert "error" in picker.heard()


async def test_star98_takes_a_call_ringing_in_the_own_group_only(pbx: Pbx) -> None:
    group = pbx.store.add_pickup_group(pbx.tenant_id, "sales")
    pbx.store.set_pickup_members(group.id, add=(pbx.user("101").id or 0,
                                                pbx.user("102").id or 0))
    ringing = pbx.dial("100", "101")
    await ringing.until(lambda: ringing.legs)
    outsider = pbx.dial("100", "*98")  # 100 is in no group: nothing to take
    await outsider.done()
    assert "error" in outsider.heard() and not ringing.caller.answered
    picker = pbx.dial("102", "*98")
    picked = picker.caller
    await ringing.until(lambda: ringing.caller.answered)
    assert picked.call is ringing.call
    picked.far_hangup()
    await ringing.done()


async def test_star11_pulls_the_call_to_the_dialling_device(pbx: Pbx) -> None:
    placed, desk = await _connected(pbx, "100", "101")
    remote = placed.caller
    pbx.registered["101"].append(Target("device", "101", "sip:101@mobile", "101:mobile"))
    puller = pbx.dial("101", "*11")
    new = puller.caller
    await placed.until(lambda: new.call is placed.call and ("hangup", "normal") in desk.log)
    bridge = placed.call.bridges[-1]
    assert {bridge.a, bridge.b} == {remote, new}
    assert not any(c == "hangup" for c, _ in remote.log)  # the remote's dialog stays
    await puller.done()
    assert not placed.task.done()  # the old device's BYE does not end the call
    new.far_hangup()
    await placed.done()


async def test_star33_barges_into_an_answered_call_as_a_conference(pbx: Pbx) -> None:
    placed, b = await _connected(pbx, "100", "101")
    barger = pbx.dial("102", "*33101")
    joined = barger.caller
    await placed.until(lambda: room_of(placed.call) is not None
                       and len(room_of(placed.call).members) == 3)  # type: ignore[union-attr]
    room = room_of(placed.call)
    assert room is not None and joined in room.members
    joined.far_hangup()
    b.far_hangup()
    await placed.done()
