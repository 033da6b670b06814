"""Do not disturb, switched by its feature codes and exercised by calls through the script."""

from __future__ import annotations

from pbx.callcontrol import Prompt
from tests.conftest import log_of
from tests.features.conftest import Pbx


async def test_star78_turns_dnd_on_and_callers_get_busy(pbx: Pbx) -> None:
    code = pbx.dial("101", "*78")
    await code.done()
    # answered, "activated" announced, hung up; nothing was routed or rung
    assert ("answer", None) in code.caller.log and ("hangup", "normal") in code.caller.log
    assert code.prompts() == [(Prompt("activated"), "de")] and code.tones() == []
    assert not code.legs and pbx.routed == []
    assert pbx.settings("101", "dnd") == {"enabled": True, "ring_burst": False}
    changed = [e for e in pbx.events if e.kind == "settings.changed"]
    assert len(changed) == 1 and changed[0].data["changed"] == {"enabled": True}
    assert changed[0].data["source"] == "feature_code"

    call = pbx.dial("100", "101")
    await call.done()
    assert ("reject", 486) in call.caller.log
    assert not call.legs  # no device rang
    assert call.call.record.status == 486 and call.call.record.missed


async def test_star79_turns_it_off_again(pbx: Pbx) -> None:
    await pbx.dial("101", "*78").done()
    await pbx.dial("101", "*79").done()
    assert pbx.settings("101", "dnd") == {"enabled": False, "ring_burst": False}
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    assert [leg.target.user for leg in call.legs if leg.target] == ["101"]
    call.legs[0].far_answer()
    await call.until(lambda: call.caller.answered)
    call.legs[0].far_hangup()
    await call.done()
    assert ("reject", 486) not in log_of(call.caller)


async def test_dnd_is_per_user(pbx: Pbx) -> None:
    await pbx.dial("101", "*78").done()
    call = pbx.dial("100", "102")
    await call.until(lambda: call.legs)
    assert call.legs[0].target is not None and call.legs[0].target.user == "102"
    call.caller.far_fail(487, "cancelled")  # the caller gives up
    await call.done()


async def test_a_code_from_a_trunk_caller_is_not_a_feature_code(pbx: Pbx) -> None:
    call = pbx.dial("+4930999", "*78", from_trunk=True)
    await call.done()
    assert ("reject", 404) in call.caller.log  # routed as a number: nobody has it
    assert pbx.events == []
