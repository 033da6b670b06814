"""Forwarding immediate and when unreachable: codes dialled by the user, calls through the
script, routing on behalf of the forwarding user, diversions and loop protection."""

from __future__ import annotations

import itertools

from pbx.callcontrol import DtmfReceived, Prompt
from tests.features.conftest import Pbx


async def test_forwarding_immediate_to_an_extension(pbx: Pbx) -> None:
    await pbx.dial("101", "*72102").done()
    assert pbx.settings("101", "forward_immediate") == {"enabled": True, "target": "102",
                                                         "ring_reminder": False, "voicemail": False}
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    assert [leg.target.user for leg in call.legs if leg.target] == ["102"]  # 101 never rang
    assert pbx.routed == [("101", "100"), ("102", "101")]  # the forward is sent by 101
    assert [(d.user.extension, d.reason, d.number) for d in call.call.diversions] == [
        ("101", "unconditional", "+4930555101")]
    call.legs[0].far_answer()
    await call.until(lambda: call.caller.answered)
    call.caller.far_hangup()
    await call.done()


async def test_forwarding_immediate_to_an_external_number_uses_the_forwarders_rights(
        pbx: Pbx) -> None:
    await pbx.dial("101", "*720301234567").done()
    call = pbx.dial("+4940777", "101", from_trunk=True)  # an outside caller
    await call.until(lambda: call.legs)
    leg = call.legs[0]
    assert leg.target is not None and (leg.target.kind, leg.target.user) == ("number",
                                                                               "+49301234567")
    # routed for 101 (an outside caller has no permissions); 101's DID goes out
    assert pbx.routed[-1] == ("0301234567", "101")
    assert pbx.routing.caller_dids[call.call.id] == "+4930555101"
    call.caller.far_fail(487, "cancelled")  # the caller gives up
    await call.done()


async def test_a_forward_target_that_cannot_be_routed_is_refused(pbx: Pbx) -> None:
    user = pbx.directory.user_in_tenant(pbx.tenant_id, "101")
    assert user is not None
    pbx.store.update_user("101", tenant="acme", permission="internal")
    code = pbx.dial("101", "*720301234567")  # 101 may not call outside
    await code.done()
    assert code.prompts() == [(Prompt("error"), "de")]
    assert pbx.settings("101", "forward_immediate") == {}  # nothing stored
    assert pbx.events == []
    bad = pbx.dial("101", "*7210x")  # not a number at all: not even a code
    await bad.done()
    assert pbx.settings("101", "forward_immediate") == {}


async def test_star73_switches_off_and_keeps_the_target(pbx: Pbx) -> None:
    await pbx.dial("101", "*72102").done()
    await pbx.dial("101", "*73").done()
    assert pbx.settings("101", "forward_immediate") == {"enabled": False, "target": "102",
                                                         "ring_reminder": False, "voicemail": False}
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    assert call.legs[0].target is not None and call.legs[0].target.user == "101"
    call.caller.far_fail(487, "cancelled")  # the caller gives up
    await call.done()


async def test_bare_star72_prompts_for_the_number(pbx: Pbx) -> None:
    code = pbx.dial("101", "*72")
    await code.until(lambda: code.caller.answered)
    for digit in "102#":
        code.caller.post(DtmfReceived(code.caller, digit))
    await code.done()
    assert code.heard() == ["enter_number", "activated"]
    assert code.prompts()[-1] == (Prompt("activated"), "de")
    assert pbx.settings("101", "forward_immediate") == {"enabled": True, "target": "102",
                                                         "ring_reminder": False, "voicemail": False}


async def test_forwarding_loops_stop_with_482(pbx: Pbx) -> None:
    await pbx.dial("101", "*72102").done()
    await pbx.dial("102", "*72101").done()
    call = pbx.dial("100", "101")
    await call.done()
    assert ("reject", 482) in call.caller.log and not call.legs


async def test_more_than_five_forwards_stop(pbx: Pbx) -> None:
    for ext in ("103", "104", "105", "106", "107"):
        pbx.store.add_user(ext, f"pw{ext}", tenant="acme")
    chain = ["101", "102", "103", "104", "105", "106", "107"]
    for a, b in itertools.pairwise(chain):
        await pbx.dial(a, f"*72{b}").done()
    call = pbx.dial("100", "101")
    await call.done()
    assert ("reject", 482) in call.caller.log and not call.legs
    assert len(call.call.diversions) == 5


async def test_forwarding_when_unreachable_without_devices(pbx: Pbx) -> None:
    await pbx.dial("101", "*94102").done()
    pbx.registered["101"] = []
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    assert call.legs[0].target is not None and call.legs[0].target.user == "102"
    assert call.call.diversions[0].reason == "unavailable"
    call.caller.far_fail(487, "cancelled")  # the caller gives up
    await call.done()


async def test_forwarding_when_unreachable_after_every_device_failed(pbx: Pbx) -> None:
    await pbx.dial("101", "*94102").done()
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    call.legs[0].far_fail(503)
    await call.until(lambda: len(call.legs) == 2)
    assert call.legs[1].target is not None and call.legs[1].target.user == "102"
    call.caller.far_fail(487, "cancelled")  # the caller gives up
    await call.done()


async def test_unreachable_forwarding_does_not_take_unanswered_or_busy_calls(pbx: Pbx) -> None:
    await pbx.dial("101", "*94102").done()
    busy = pbx.dial("100", "101")
    await busy.until(lambda: busy.legs)
    busy.legs[0].far_fail(486)
    await busy.done()
    assert ("reject", 486) in busy.caller.log and len(busy.legs) == 1
    unanswered = pbx.dial("100", "101")  # ring timeout 2 s (fixture)
    await unanswered.done(timeout=6)
    assert ("reject", 480) in unanswered.caller.log and len(unanswered.legs) == 1


async def test_unreachable_without_forwarding_is_480(pbx: Pbx) -> None:
    pbx.registered["101"] = []
    call = pbx.dial("100", "101")
    await call.done()
    assert ("reject", 480) in call.caller.log and not call.legs


async def test_star95_switches_unreachable_forwarding_off(pbx: Pbx) -> None:
    await pbx.dial("101", "*94102").done()
    await pbx.dial("101", "*95").done()
    pbx.registered["101"] = []
    call = pbx.dial("100", "101")
    await call.done()
    assert ("reject", 480) in call.caller.log
