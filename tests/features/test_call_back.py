"""Call-back (click-to-dial): the PBX rings the user first, then calls the target on the
user's behalf and bridges both — a call with no inbound leg, through the real script."""

from __future__ import annotations

from media.tones import ToneName
from tests.features.conftest import Pbx


async def test_call_back_rings_the_user_then_the_target_and_bridges(pbx: Pbx) -> None:
    placed = pbx.call_back("100", "101")
    await placed.until(lambda: placed.legs)
    first = placed.legs[0]
    assert first.target is not None and first.target.user == "100"
    assert len(placed.legs) == 1  # the target is not called before the user answers
    first.far_answer()
    await placed.until(lambda: len(placed.legs) == 2)
    assert placed.call.caller is first
    target = placed.legs[1]
    assert target.target is not None and target.target.user == "101"
    assert pbx.routed == [("101", "100")]  # routed on the user's behalf
    target.far_ringing()
    await placed.until(lambda: ToneName.RINGBACK in placed.tones())  # the user hears ringback
    target.far_answer()
    await placed.until(lambda: any(link.kind == "bridge" and {link.a, link.b} == {
        first.media, target.media} for link in placed.graph.live))
    first.far_hangup()
    await placed.done()
    assert target.ended and ("hangup", "normal") in target.log


async def test_call_back_that_the_user_does_not_answer_calls_nobody(pbx: Pbx) -> None:
    placed = pbx.call_back("100", "101")
    await placed.done(timeout=6)  # 2 s ring
    assert len(placed.legs) == 1 and placed.call.record.status == 480


async def test_call_back_honours_the_targets_features(pbx: Pbx) -> None:
    await pbx.dial("101", "*78").done()
    placed = pbx.call_back("100", "101")
    await placed.until(lambda: placed.legs)
    placed.legs[0].far_answer()
    await placed.done()
    assert len(placed.legs) == 1 and placed.call.record.status == 486


# -- which phone; a device's call turned into a call-back (features/call_back.py) --------------

async def test_permanent_call_back_turns_the_device_call_into_a_call_back_to_the_mobile(
        pbx: Pbx) -> None:
    pbx.store.update_user("100", tenant="acme", mobile_number="+491701234567")
    pbx.services.update_settings(pbx.user("100"), "call_back",
                                 {"permanent": True, "phone": "mobile"}, source="api")
    call = pbx.dial("100", "101")
    device = call.caller
    # the device is answered, hears the announcement, is hung up
    await call.until(lambda: ("hangup", "call-back") in device.log)
    assert ("answer", None) in device.log
    assert [p.name for p, _ in call.prompts()] == ["call_back_started"]
    await call.until(lambda: call.legs)
    mobile = call.legs[0]
    assert mobile.target is not None and (mobile.target.kind, mobile.target.user) == (
        "number", "+491701234567")
    assert len(call.legs) == 1  # nobody else rings before the mobile answered
    mobile.far_answer()
    await call.until(lambda: len(call.legs) == 2)
    assert call.call.caller is mobile and call.call.caller is not device
    target = call.legs[1]
    assert target.target is not None and target.target.user == "101"
    target.far_answer()
    await call.until(lambda: any(link.kind == "bridge" and {link.a, link.b} == {
        mobile.media, target.media} for link in call.graph.live))
    mobile.far_hangup()
    await call.done()
    # one call, one record: 100 called 101
    assert (call.call.record.caller, call.call.record.callee) == ("100", "101")


async def test_remote_office_sends_outgoing_calls_via_call_back_to_that_number(
        pbx: Pbx) -> None:
    pbx.store.update_user("100", tenant="acme", remote_office_number="+4940999888")
    pbx.services.update_settings(pbx.user("100"), "remote_office", {"enabled": True},
                                 source="api")
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    office = call.legs[0]
    assert office.target is not None and office.target.user == "+4940999888"
    office.far_fail(486)
    await call.done()
    assert len(call.legs) == 1  # the target was never called


async def test_without_permanent_call_back_the_device_calls_itself(pbx: Pbx) -> None:
    pbx.store.update_user("100", tenant="acme", mobile_number="+491701234567")
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    assert call.legs[0].target is not None and call.legs[0].target.user == "101"
    assert ("answer", None) not in call.caller.log
    call.caller.far_fail(487)
    await call.done()


async def test_an_emergency_call_is_never_turned_into_a_call_back(pbx: Pbx) -> None:
    pbx.store.update_user("100", tenant="acme", mobile_number="+491701234567")
    pbx.services.update_settings(pbx.user("100"), "call_back", {"permanent": True},
                                 source="api")
    call = pbx.dial("100", "112")
    await call.until(lambda: call.legs)
    assert call.legs[0].target is not None and call.legs[0].target.kind == "number"
    assert ("answer", None) not in call.caller.log
    call.caller.far_fail(487)
    await call.done()


async def test_call_back_settings_are_validated(pbx: Pbx) -> None:
    import pytest

    with pytest.raises(ValueError):
        pbx.services.update_settings(pbx.user("100"), "call_back", {"phone": "fax"},
                                     source="api")
    assert pbx.services.settings(pbx.user("100"))["call_back"] == {
        "method": "device", "permanent": False, "phone": "mobile"}
