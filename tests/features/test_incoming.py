"""The incoming-call features through the real call script: busy and no-answer forwarding,
call waiting, parallel ringing on the mobile, remote office, "reject gives busy", and the pairs
whose precedence FEATURES.md fixes."""

from __future__ import annotations

import asyncio

from media.tones import ToneName
from pbx.callcontrol import Prompt
from tests.features.conftest import Pbx, Placed


async def _connected(pbx: Pbx, caller: str, callee: str) -> Placed:
    """A call from ``caller`` to ``callee``, answered by the callee's first device."""
    call = pbx.dial(caller, callee)
    await call.until(lambda: call.legs)
    call.legs[0].far_answer()
    await call.until(lambda: call.caller.answered)
    return call


async def _hang_up(call: Placed) -> None:
    call.caller.far_hangup()
    await call.done()


def _rung(call: Placed) -> list[str]:
    return [leg.target.user for leg in call.legs if leg.target is not None]


# -- busy forwarding and call waiting ----------------------------------------------------------

async def test_busy_forwarding_when_every_device_is_busy(pbx: Pbx) -> None:
    await pbx.dial("101", "*90102").done()
    assert pbx.settings("101", "forward_busy") == {"enabled": True, "target": "102",
                                                   "voicemail": False}
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    call.legs[0].far_fail(486)
    await call.until(lambda: len(call.legs) == 2)
    assert _rung(call) == ["101", "102"]
    assert call.call.diversions[0].reason == "user-busy"
    call.caller.far_fail(487)
    await call.done()


async def test_star91_switches_busy_forwarding_off(pbx: Pbx) -> None:
    await pbx.dial("101", "*90102").done()
    await pbx.dial("101", "*91").done()
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    call.legs[0].far_fail(486)
    await call.done()
    assert ("reject", 486) in call.caller.log and _rung(call) == ["101"]


async def test_call_waiting_on_offers_the_second_call_to_the_busy_user(pbx: Pbx) -> None:
    first = await _connected(pbx, "100", "101")
    second = pbx.dial("102", "101")
    await second.until(lambda: second.legs)  # the phone shows the waiting call itself
    assert _rung(second) == ["101"]
    second.caller.far_fail(487)
    await second.done()
    await _hang_up(first)


async def test_call_waiting_off_gives_busy_and_runs_busy_forwarding(pbx: Pbx) -> None:
    await pbx.dial("101", "#43").done()
    assert pbx.settings("101", "call_waiting") == {"enabled": False}
    first = await _connected(pbx, "100", "101")
    second = pbx.dial("102", "101")
    await second.done()
    assert ("reject", 486) in second.caller.log and not second.legs  # nothing rang
    # the pair "busy forwarding + call waiting": off, busy forwarding takes the second call
    await pbx.dial("101", "*90100").done()
    third = pbx.dial("102", "101")
    await third.until(lambda: third.legs)
    assert _rung(third) == ["100"] and third.call.diversions[0].reason == "user-busy"
    third.caller.far_fail(487)
    await third.done()
    await _hang_up(first)
    # the user is free again: the next call rings them
    fourth = pbx.dial("102", "101")
    await fourth.until(lambda: fourth.legs)
    assert _rung(fourth) == ["101"]
    fourth.caller.far_fail(487)
    await fourth.done()


async def test_busy_forwarding_does_not_take_a_waiting_call_while_call_waiting_is_on(
        pbx: Pbx) -> None:
    await pbx.dial("101", "*90100").done()
    first = await _connected(pbx, "102", "101")
    second = pbx.dial("100", "101")
    await second.until(lambda: second.legs)
    assert _rung(second) == ["101"]  # offered, not forwarded
    second.caller.far_fail(487)
    await second.done()
    await _hang_up(first)


async def test_star70_places_one_call_without_call_waiting(pbx: Pbx) -> None:
    first = pbx.dial("101", "*70100")  # 101 calls 100 without call waiting
    await first.until(lambda: first.legs)
    assert _rung(first) == ["100"]
    first.legs[0].far_answer()
    await first.until(lambda: first.caller.answered)
    second = pbx.dial("102", "101")
    await second.done()
    assert ("reject", 486) in second.caller.log and not second.legs
    assert pbx.settings("101", "call_waiting") == {}  # the setting itself is untouched
    await _hang_up(first)


async def test_a_user_is_busy_from_the_moment_they_dial_out(pbx: Pbx) -> None:
    await pbx.dial("101", "#43").done()
    out = pbx.dial("101", "100")  # still ringing at 100
    await out.until(lambda: out.legs)
    incoming = pbx.dial("102", "101")
    await incoming.done()
    assert ("reject", 486) in incoming.caller.log
    out.caller.far_fail(487)
    await out.done()


# -- no-answer forwarding ----------------------------------------------------------------------

async def test_no_answer_forwarding_after_the_users_rings(pbx: Pbx) -> None:
    await pbx.dial("101", "*92102").done()
    await pbx.dial("101", "*6101").done()  # one ring: 5 s
    assert pbx.settings("101", "forward_no_answer") == {"enabled": True, "target": "102",
                                                         "rings": 1, "voicemail": False}
    loop = asyncio.get_running_loop()
    started = loop.time()
    call = pbx.dial("100", "101")
    await call.until(lambda: len(call.legs) == 2, timeout=8.0)
    assert 4.5 < loop.time() - started < 6.5  # 1 ring of 5 s, not the 2 s ring timeout
    assert _rung(call) == ["101", "102"] and call.call.diversions[0].reason == "no-answer"
    call.caller.far_fail(487)
    await call.done()


async def test_star610_refuses_rings_out_of_range(pbx: Pbx) -> None:
    for bad in ("*61021", "*6100"):
        code = pbx.dial("101", bad)
        await code.done()
        assert code.prompts() == [(Prompt("error"), "de")]
    assert pbx.settings("101", "forward_no_answer") == {}


async def test_star93_switches_no_answer_forwarding_off(pbx: Pbx) -> None:
    await pbx.dial("101", "*92102").done()
    await pbx.dial("101", "*93").done()
    call = pbx.dial("100", "101")
    await call.done(timeout=5.0)  # the plain 2 s ring timeout, then 480
    assert ("reject", 480) in call.caller.log and _rung(call) == ["101"]


# -- reject gives busy -------------------------------------------------------------------------

async def test_a_callee_who_rejects_gives_the_caller_busy_and_stops_the_other_devices(
        pbx: Pbx) -> None:
    pbx.registered["101"].append(pbx.registered["101"][0].__class__(
        "device", "101", "sip:101@softphone", "101:softphone"))
    call = pbx.dial("100", "101")
    await call.until(lambda: len(call.legs) == 2)
    call.legs[0].far_fail(603, "Decline")
    await call.done()
    assert ("reject", 486) in call.caller.log
    assert any(entry[0] == "cancel" for entry in call.legs[1].log)


async def test_a_reject_runs_busy_forwarding(pbx: Pbx) -> None:
    await pbx.dial("101", "*90102").done()
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    call.legs[0].far_fail(603, "Decline")
    await call.until(lambda: len(call.legs) == 2)
    assert _rung(call) == ["101", "102"]
    call.caller.far_fail(487)
    await call.done()


# -- parallel ringing and remote office --------------------------------------------------------

async def test_parallel_ringing_rings_the_mobile_with_the_devices(pbx: Pbx) -> None:
    code = pbx.dial("101", "*12")
    await code.done()
    assert code.prompts() == [(Prompt("error"), "de")]  # no mobile number yet
    pbx.store.update_user("101", tenant="acme", mobile_number="+491701234567")
    await pbx.dial("101", "*12").done()
    assert pbx.settings("101", "parallel_ringing") == {"enabled": True}
    call = pbx.dial("100", "101")
    await call.until(lambda: len(call.legs) == 2)
    targets = [(leg.target.kind, leg.target.user) for leg in call.legs if leg.target]
    assert targets == [("device", "101"), ("number", "+491701234567")]
    assert call.call.record.direction == "internal"  # still a call between colleagues
    call.legs[1].far_answer()  # answered on the mobile: the desk phone is cancelled
    await call.until(lambda: call.caller.answered)
    assert any(entry[0] == "cancel" for entry in call.legs[0].log)
    await _hang_up(call)
    await pbx.dial("101", "*13").done()
    off = pbx.dial("100", "101")
    await off.until(lambda: off.legs)
    await asyncio.sleep(0.05)
    assert len(off.legs) == 1
    off.caller.far_fail(487)
    await off.done()


async def test_call_waiting_on_the_mobile_plays_the_tone_into_its_call(pbx: Pbx) -> None:
    pbx.store.update_user("101", tenant="acme", mobile_number="+491701234567")
    await pbx.dial("101", "*12").done()
    first = pbx.dial("100", "101")
    await first.until(lambda: len(first.legs) == 2)
    mobile = first.legs[1]
    mobile.far_answer()
    await first.until(lambda: first.caller.answered)
    second = pbx.dial("102", "101")
    await second.until(lambda: second.legs)
    # the mobile is in a call and cannot show a second one: only the desk phone rings, and
    # the mobile's call hears the call-waiting tone
    assert [(leg.target.kind if leg.target else "") for leg in second.legs] == ["device"]
    await first.until(lambda: any(
        getattr(link.a, "name", None) == ToneName.CALL_WAITING and link.b is mobile.media
        for link in first.graph.history if link.kind == "link"))
    second.caller.far_fail(487)
    await second.done()
    await _hang_up(first)


async def test_remote_office_rings_only_the_remote_office_number(pbx: Pbx) -> None:
    pbx.store.update_user("101", tenant="acme", remote_office_number="+4940999888")
    user = pbx.user("101")
    pbx.services.update_settings(user, "remote_office", {"enabled": True}, source="api")
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    await asyncio.sleep(0.05)
    assert [(leg.target.kind, leg.target.user) for leg in call.legs if leg.target] == [
        ("number", "+4940999888")]
    call.caller.far_fail(487)
    await call.done()


async def test_forwarding_immediate_wins_over_remote_office(pbx: Pbx) -> None:
    pbx.store.update_user("101", tenant="acme", remote_office_number="+4940999888")
    pbx.services.update_settings(pbx.user("101"), "remote_office", {"enabled": True},
                                 source="api")
    await pbx.dial("101", "*72102").done()
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    await asyncio.sleep(0.05)
    assert _rung(call) == ["102"]
    call.caller.far_fail(487)
    await call.done()


async def test_dnd_wins_over_forwarding_immediate(pbx: Pbx) -> None:
    await pbx.dial("101", "*72102").done()
    await pbx.dial("101", "*78").done()
    call = pbx.dial("100", "101")
    await call.done()
    assert ("reject", 486) in call.caller.log and not call.legs


# -- ring reminders ----------------------------------------------------------------------------

async def test_forwarding_immediate_with_ring_reminder_rings_the_phones_briefly(
        pbx: Pbx) -> None:
    await pbx.dial("101", "*72102").done()
    pbx.services.update_settings(pbx.user("101"), "forward_immediate", {"ring_reminder": True},
                                 source="api")
    call = pbx.dial("100", "101")
    await call.until(lambda: len(call.legs) == 2)
    reminder, forwarded = call.legs
    assert (reminder.target.user, forwarded.target.user) == ("101", "102")  # type: ignore[union-attr]
    forwarded.far_answer()
    await call.until(lambda: call.caller.answered)
    await call.until(lambda: any(e[0] == "cancel" for e in reminder.log), timeout=3.0)
    assert not call.call.released  # the reminder's end does not end the forwarded call
    await _hang_up(call)


async def test_dnd_ring_burst_notifies_the_phones_of_a_rejected_call(pbx: Pbx) -> None:
    await pbx.dial("101", "*78").done()
    plain = pbx.dial("100", "101")
    await plain.done()
    assert not plain.legs  # by default nothing rings
    pbx.services.update_settings(pbx.user("101"), "dnd", {"ring_burst": True}, source="api")
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    assert ("reject", 486) in call.caller.log
    await call.until(lambda: any(e[0] == "cancel" for e in call.legs[0].log), timeout=3.0)
    await call.done()


# -- numbers that do not exist -----------------------------------------------------------------

async def test_a_user_who_dials_a_number_that_does_not_exist_hears_so(pbx: Pbx) -> None:
    call = pbx.dial("100", "199")
    await call.done()
    assert [(status, prompt.name if prompt else None) for status, prompt, _ in pbx.failures] == [
        (404, "not_available")]
    assert ("reject", 404) in call.caller.log


async def test_a_trunk_caller_to_an_unknown_number_gets_404_at_once(pbx: Pbx) -> None:
    call = pbx.dial("+4940777", "+4930555199", from_trunk=True)
    await call.done()
    assert [(status, prompt) for status, prompt, _ in pbx.failures] == [(404, None)]
