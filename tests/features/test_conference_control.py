"""The conference service of the API (:class:`features.conference_control.ConferenceControl`)
on the real call script with fake legs: add rings and joins, mute marks and un-marks, drop
sends BYE and the conference ends below two; the rooms' changes reach the event bus."""

from __future__ import annotations

import pytest

from features.conference_control import ConferenceControl
from pbx.callcontrol import ConferenceError
from pbx.services import EventBus
from tests.features.conftest import Pbx
from tests.features.test_conference_pickup import _connected


async def test_add_mute_drop_through_the_service(pbx: Pbx) -> None:
    placed, b = await _connected(pbx, "100", "101")
    bus = EventBus()
    seen: list[tuple[str, dict[str, object]]] = []
    bus.subscribe(lambda e: seen.append((e.kind, dict(e.data))))
    control = ConferenceControl(lambda: [placed.call], lambda: pbx, bus.publish,
                                lambda call: (7, [1, 2]))
    try:
        call_id = placed.call.record.call_id
        with pytest.raises(ConferenceError) as err:
            control.view(call_id)
        assert err.value.reason == "no_conference"
        with pytest.raises(ConferenceError) as err:
            control.add("nope", "102")
        assert err.value.reason == "no_call"
        legs = control.add(call_id, "102")  # a two-party call becomes a conference
        assert len(legs) == 1 and control.is_conference(placed.call)
        view = control.view(call_id)
        assert [(p.state, p.muted) for p in view.participants] == \
            [("joined", False), ("joined", False), ("ringing", False)]
        c = placed.legs[1]
        assert c.id == legs[0]
        with pytest.raises(ConferenceError):
            control.mute(call_id, c.id, True)  # not joined yet
        c.far_answer()
        await placed.until(lambda: len(control.view(call_id).participants) == 3
                           and all(p.state == "joined"
                                   for p in control.view(call_id).participants))
        control.mute(call_id, c.id, True)
        assert [p.leg_id for p in control.view(call_id).participants if p.muted] == [c.id]
        control.mute(call_id, c.id, False)
        assert not any(p.muted for p in control.view(call_id).participants)
        with pytest.raises(ConferenceError) as err:
            control.drop(call_id, "L0")
        assert err.value.reason == "no_participant"
        control.drop(call_id, b.id)  # BYE; with two left the conference goes on
        await placed.until(lambda: len(control.view(call_id).participants) == 2)
        assert ("hangup", "normal") in b.log and not placed.task.done()
        control.drop(call_id, c.id)  # fewer than two: the call ends
        await placed.done()
        assert ("hangup", "normal") in placed.caller.log
        kinds = [k for k, _ in seen]
        assert kinds.count("conference.joined") == 3
        assert kinds.count("conference.left") == 2
        assert "conference.muted" in kinds and "conference.unmuted" in kinds
        data = dict(seen[-1][1])
        assert data["tenant_id"] == 7 and data["user_ids"] == [1, 2]
        assert data["call_id"] == call_id
    finally:
        control.close()


async def test_add_to_an_unknown_number_is_no_route(pbx: Pbx) -> None:
    placed, _ = await _connected(pbx, "100", "101")
    control = ConferenceControl(lambda: [placed.call], lambda: pbx)
    with pytest.raises(ConferenceError) as err:
        control.add(placed.call.record.call_id, "999")
    assert err.value.reason == "no_route"
    placed.caller.far_hangup()
    await placed.done()
