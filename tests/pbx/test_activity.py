"""Who is on the phone (pbx.callcontrol.activity): entries in and out in order, idempotent
leave, the calls on devices that cannot show a second call kept apart, the count."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pbx.callcontrol.activity import ActiveCalls


def _leg(kind: str | None) -> Any:
    return SimpleNamespace(target=SimpleNamespace(kind=kind, label=f"dev-{kind}")
                           if kind else None, party="x")


def test_enter_leave_and_the_calls_without_call_waiting() -> None:
    active = ActiveCalls()
    calls = [SimpleNamespace(id=i) for i in range(4)]
    desk = [active.enter("100@t", calls[i], _leg("device")) for i in range(3)]
    mobile = active.enter("100@t", calls[3], _leg("number"))
    assert len(active) == 4
    assert [e.call.id for e in active.of("100@t")] == [0, 1, 2, 3]
    assert active.without_call_waiting("100@t") == (mobile,)
    active.leave(desk[1])
    active.leave(desk[1])  # idempotent
    assert len(active) == 3 and [e.call.id for e in active.of("100@t")] == [0, 2, 3]
    active.leave(mobile)
    assert active.without_call_waiting("100@t") == () and len(active) == 2
    for e in desk:
        active.leave(e)
    assert active.of("100@t") == () and len(active) == 0
    ring = active.start_ringing("100@t", calls[0])
    assert active.ringing("100@t") == (ring,)
    active.stop_ringing(ring)
    active.stop_ringing(ring)
    assert active.ringing("100@t") == ()
