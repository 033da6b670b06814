"""pbx.services.live_calls on fake calls: the user's connected leg is found through the in-call
dispatcher, a ringing call or an unknown Call-ID is refused, each verb publishes its event."""

from __future__ import annotations

import asyncio

import pytest

from pbx.callcontrol import Call, CallStateError, UserView
from pbx.services import Event, EventBus
from pbx.services.live_calls import LiveCallService, NoSuchCall
from tests.conftest import FakeLeg, log_of, new_fake_call
from tests.pbx.test_transfer import FakeHost, connected

U101 = UserView(key="101", extension="101", id=11)


def service(calls: list[Call], host: FakeHost | None = None) -> tuple[LiveCallService,
                                                                      list[Event]]:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    return LiveCallService(lambda: calls, lambda: host, bus,
                           lambda call: (1, [11, 12])), events


def with_user(call: Call, leg: FakeLeg) -> None:
    """The dispatcher knows ``leg`` as user 11's."""
    call.per_call["incall.dispatcher"].users[leg] = U101


async def test_hold_and_resume_publish_and_find_the_users_leg() -> None:
    call, caller, callee = connected()
    with_user(call, callee)
    live, events = service([call])
    live.hold(call.record.call_id, 11)
    assert call.bridges[0].music_on_hold_to == [caller.id]
    live.hold(call.record.call_id, 11, held=False)
    assert call.bridges[0].music_on_hold_to == []
    assert [e.kind for e in events] == ["call.held", "call.resumed"]
    assert events[0].data["by_user_id"] == 11 and events[0].data["user_ids"] == [11, 12]
    assert "user_id" not in events[0].data  # every user in the call sees it
    with pytest.raises(CallStateError):
        live.hold(call.record.call_id, 99)  # not in the call
    with pytest.raises(NoSuchCall):
        live.hold("nope", 11)


async def test_a_ringing_call_is_refused() -> None:
    call, _, _ = new_fake_call()
    ringing = call.add_leg(FakeHost().devices(U101)[0])
    assert isinstance(ringing, FakeLeg)
    ringing.start()
    live, events = service([call], FakeHost())
    with pytest.raises(CallStateError):
        live.transfer(call.record.call_id, 11, "102")
    assert events == []


async def test_blind_transfer_ends_the_users_leg_and_publishes() -> None:
    call, _, callee = connected()
    with_user(call, callee)
    host = FakeHost()

    async def moved(c: Call) -> None:
        c.record.answered = 1.0  # the target answered (and hung up): no recall

    host.script = type("S", (), {"moved": lambda self, c, *a: moved(c)})()
    live, events = service([call], host)
    new_id = live.transfer(call.record.call_id, 11, "102")
    assert ("hangup", "normal") in log_of(callee)
    assert events[-1].kind == "call.transferred" and events[-1].data["kind"] == "blind"
    assert events[-1].data["new_call_id"] == new_id == host.calls[0].record.call_id
    await asyncio.wait_for(asyncio.gather(*host.tasks), 2)
    with pytest.raises(CallStateError):
        live.attended(call.record.call_id, 11, call.record.call_id)
