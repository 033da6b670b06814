"""Feature codes through the real call script: the table in force (changed through the codes
service, dialled on the next call), and the digits-only form — from a device flagged mobile,
from the carrier with the user's own mobile number as caller, and never from a desk phone,
where ``78843`` is an ordinary number."""

from __future__ import annotations

from media.tones import ToneName
from pbx.services.codes import CodesService
from tests.features.conftest import Pbx, Placed


def dnd(pbx: Pbx, ext: str) -> bool:
    return bool(pbx.settings(ext, "dnd").get("enabled"))


async def confirmed(call: Placed) -> str:
    """How the answered code ended for the caller: "ok" (a confirmation announcement or tone)
    or "error" (the error announcement or tone)."""
    await call.done()
    assert ("answer", None) in call.caller.log
    heard = [p.name for p, _ in call.prompts()] + [t.value for t in call.tones()]
    assert len(heard) == 1, heard
    return "error" if heard[0] in ("error", ToneName.ERROR.value) else "ok"


async def ring_and_give_up(call: Placed) -> None:
    """The call was routed and rings: the caller gives up."""
    await call.until(lambda: call.legs)
    call.caller.far_fail(487, "cancelled")
    await call.done()


async def test_digits_only_code_from_a_mobile_device_switches_dnd(pbx: Pbx) -> None:
    assert await confirmed(pbx.dial("101", "78878", mobile=True)) == "ok"
    assert dnd(pbx, "101") and pbx.routed == []
    busy = pbx.dial("100", "101")
    await busy.done()
    assert ("reject", 486) in busy.caller.log
    assert await confirmed(pbx.dial("101", "78879", mobile=True)) == "ok"
    assert not dnd(pbx, "101")


async def test_the_star_form_still_works_from_a_mobile_device(pbx: Pbx) -> None:
    assert await confirmed(pbx.dial("101", "*78", mobile=True)) == "ok"
    assert dnd(pbx, "101")


async def test_digits_from_a_desk_phone_are_an_ordinary_number(pbx: Pbx) -> None:
    for dialled in ("78843", "78878"):
        call = pbx.dial("100", dialled)
        await ring_and_give_up(call)
        target = call.legs[0].target
        assert target is not None and target.kind == "number"  # a local number, the trunk
    assert pbx.routed == [("78843", "100"), ("78878", "100")]
    assert not dnd(pbx, "100")


async def test_from_a_mobile_only_a_code_is_rewritten(pbx: Pbx) -> None:
    # 78843 is *43 (call waiting on); 7887 is no code in any form and stays a number
    assert await confirmed(pbx.dial("101", "78843", mobile=True)) == "ok"
    await ring_and_give_up(pbx.dial("101", "7887", mobile=True))
    assert pbx.routed == [("7887", "101")]


async def test_digits_only_code_with_a_number_forwards(pbx: Pbx) -> None:
    assert await confirmed(pbx.dial("101", "78872102", mobile=True)) == "ok"
    assert pbx.settings("101", "forward_immediate") == {"enabled": True, "target": "102",
                                                         "ring_reminder": False, "voicemail": False}


async def test_digits_only_code_from_the_users_mobile_number_over_the_trunk(pbx: Pbx) -> None:
    call = pbx.dial("+4917011111", "78878", from_trunk=True, code_user="101")
    assert await confirmed(call) == "ok"
    assert dnd(pbx, "101") and pbx.routed == []
    changes = [e for e in pbx.events if e.kind == "settings.changed"]
    assert [(c.data["feature"], c.data["source"]) for c in changes] == [("dnd", "feature_code")]


async def test_a_trunk_call_that_counts_as_a_users_only_for_codes_is_never_routed(
        pbx: Pbx) -> None:
    call = pbx.dial("+4917011111", "0301234567", from_trunk=True, code_user="101")
    assert await confirmed(call) == "error"
    assert pbx.routed == []


async def test_a_changed_code_takes_effect_for_the_next_call(pbx: Pbx) -> None:
    service = CodesService(pbx.store, pbx.directory, pbx.registry, pbx.bus)
    row = service.set("dnd.on", "*80", "#80", source="cli")
    assert (row.code, row.alternate) == ("*80", "#80")
    assert await confirmed(pbx.dial("101", "*78")) == "error"  # no longer a code
    assert not dnd(pbx, "101")
    assert await confirmed(pbx.dial("101", "#80")) == "ok"
    assert dnd(pbx, "101")
    assert await confirmed(pbx.dial("101", "78879", mobile=True)) == "ok"
    assert not dnd(pbx, "101")  # *79, unchanged
    assert await confirmed(pbx.dial("101", "78980", mobile=True)) == "ok"
    assert dnd(pbx, "101")  # #80, the new alternate, in its digits-only form
    events = [e for e in pbx.events if e.kind == "codes.changed"]
    assert len(events) == 1 and events[0].data["changed"] == ["dnd.on"]
    assert events[0].data["after"]["dnd.on"] == {"code": "*80", "alternate": "#80"}
