"""Caller identity: CLIR (``*31``/``#31``, ``*67``/``*65`` + number), the displayed number and
anonymous rejection (``*77``/``*87``), switched the way a user does it and exercised by calls
through the script. What the legs then put in From/PAI/Privacy is tested in
tests/pbx/test_b2bua_identity.py and over SIP in tests/interop/test_identity_sipp.py."""

from __future__ import annotations

import pytest

from features.clir import Clir
from pbx.callcontrol import (
    BaseFeature,
    DtmfReceived,
    FeatureCode,
    FeatureRegistry,
    Presentation,
    Prompt,
    script,
)
from pbx.settings_schema import SettingError
from tests.features.conftest import Pbx, Placed


async def ringing(call: Placed) -> Presentation:
    """Wait for the call's first outgoing leg; the presentation it went out with."""
    await call.until(lambda: call.legs)
    return call.call.presentation


async def give_up(call: Placed) -> None:
    call.caller.far_fail(487, "cancelled")
    await call.done()


# -- CLIR ---------------------------------------------------------------------------------------


async def test_star31_withholds_every_call_and_hash31_shows_it_again(pbx: Pbx) -> None:
    code = pbx.dial("100", "*31")
    await code.done()
    assert code.prompts() == [(Prompt("activated"), "de")] and not code.legs
    assert pbx.settings("100", "clir") == {"enabled": True}
    for dialled in ("101", "0301234567"):  # a user, a number over the trunk
        call = pbx.dial("100", dialled)
        assert (await ringing(call)).withheld
        assert call.call.record.caller == "100"  # the history keeps who called
        await give_up(call)

    off = pbx.dial("100", "#31")
    await off.done()
    assert off.prompts() == [(Prompt("deactivated"), "de")]
    assert pbx.settings("100", "clir") == {"enabled": False}
    call = pbx.dial("100", "101")
    assert not (await ringing(call)).withheld
    await give_up(call)


async def test_star67_withholds_this_call_only(pbx: Pbx) -> None:
    call = pbx.dial("100", "*67101")
    shown = await ringing(call)
    assert shown.withheld
    assert [leg.target.user for leg in call.legs if leg.target] == ["101"]
    assert pbx.routed == [("101", "100")]  # routed as if 101 had been dialled, for 100
    assert call.call.record.callee == "101"  # the history names whom, not the code
    assert ("answer", None) not in call.caller.log  # not answered like a code: it rings
    await give_up(call)
    assert pbx.settings("100", "clir") == {}  # nothing stored
    nxt = pbx.dial("100", "101")
    assert not (await ringing(nxt)).withheld
    await give_up(nxt)


async def test_star65_shows_the_number_although_clir_is_on(pbx: Pbx) -> None:
    await pbx.dial("100", "*31").done()
    call = pbx.dial("100", "*650301234567")
    shown = await ringing(call)
    assert not shown.withheld and shown.private is False
    leg = call.legs[0]
    assert leg.target is not None and leg.target.user == "+49301234567"
    await give_up(call)


async def test_a_per_call_code_with_no_number_after_it_gets_the_error_tone(
        pbx: Pbx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(script, "NUMBER_TIMEOUT", 0.1)
    call = pbx.dial("100", "*67")  # bare: prompts for the number, none comes
    await call.done()
    assert call.heard() == ["enter_number", "error"]
    assert not call.legs and pbx.routed == []


async def test_bare_star67_takes_the_number_from_the_keypad_and_rings_it(pbx: Pbx) -> None:
    call = pbx.dial("100", "*67")
    await call.until(lambda: call.caller.answered)
    for digit in "101#":
        call.caller.post(DtmfReceived(call.caller, digit))
    assert (await ringing(call)).withheld
    assert [leg.target.user for leg in call.legs if leg.target] == ["101"]
    call.legs[0].far_answer()
    await call.until(lambda: bool(call.call.bridges))
    call.caller.far_hangup()
    await call.done()
    assert call.heard()[0] == "enter_number" and "error" not in call.heard()


async def test_a_per_call_code_with_a_bad_number_is_refused(pbx: Pbx) -> None:
    call = pbx.dial("100", "*67" + "1" * 40)  # longer than any number
    await call.done()
    assert call.prompts() == [(Prompt("error"), "de")] and not call.legs


async def test_clir_of_a_trunk_caller_is_kept_when_the_call_is_forwarded_out(pbx: Pbx) -> None:
    await pbx.dial("101", "*720301234567").done()
    call = pbx.dial("+4940777", "101", from_trunk=True, withheld=True)
    assert (await ringing(call)).withheld  # the carrier gets anonymous as well
    await give_up(call)


# -- displayed number ---------------------------------------------------------------------------


def test_displayed_number_must_be_one_the_user_owns(pbx: Pbx) -> None:
    service = pbx.services.settings_service
    assert service is not None
    user = pbx.user("100")
    assert user.id is not None
    with pytest.raises(SettingError, match=r"displayed_number\.number: \+4930555101 is not a "
                                           r"number of user 100"):
        service.update(user.id, "displayed_number", {"number": "+4930555101"})  # 101's DID
    assert pbx.settings("100", "displayed_number") == {}
    assert [e for e in pbx.events if e.kind == "settings.changed"] == []
    pbx.store.add_number("+4930555190", tenant="acme", user="100")
    assert service.update(user.id, "displayed_number", {"number": "+4930555190"},
                          source="cli") == {"number": "+4930555190"}
    assert service.update(user.id, "displayed_number", {"number": ""}) == {"number": ""}
    with pytest.raises(ValueError, match=r"displayed_number\.number: must be a string"):
        service.update(user.id, "displayed_number", {"number": 4930555190})  # the schema's word


def test_the_company_main_number_may_be_displayed(pbx: Pbx) -> None:
    service = pbx.services.settings_service
    assert service is not None
    user = pbx.user("100")
    assert user.id is not None and user.company_number is None
    with pytest.raises(SettingError):
        service.update(user.id, "displayed_number", {"number": "+4930555000"})
    pbx.store.add_tenant("beta", "beta.example.com", area_code="30", main_number="030555999")
    pbx.store.add_user("200", "pw200", tenant="beta")
    beta = pbx.directory.tenant_for_domain("beta.example.com")
    assert beta is not None
    record = pbx.directory.user_in_tenant(beta.id, "200")
    assert record is not None
    assert pbx.routing.view(record).company_number == "+4930555999"
    assert service.update(record.id, "displayed_number", {"number": "+4930555999"}) == {
        "number": "+4930555999"}


async def test_the_displayed_number_goes_out_on_the_users_calls(pbx: Pbx) -> None:
    pbx.store.add_number("+4930555190", tenant="acme", user="100")
    user = pbx.user("100")
    assert pbx.services.update_settings(user, "displayed_number", {"number": "+4930555190"},
                                        source="api") == {"number": "+4930555190"}
    call = pbx.dial("100", "0301234567")
    assert (await ringing(call)).number == "+4930555190"
    await give_up(call)


async def test_a_displayed_number_no_longer_owned_is_not_presented(pbx: Pbx) -> None:
    pbx.store.add_number("+4930555190", tenant="acme", user="100")
    user = pbx.user("100")
    pbx.services.update_settings(user, "displayed_number", {"number": "+4930555190"},
                                 source="api")
    pbx.store.remove_number("+4930555190", tenant="acme")
    call = pbx.dial("100", "0301234567")
    assert (await ringing(call)).number is None  # the default (the first DID) goes out
    await give_up(call)


# -- anonymous rejection ------------------------------------------------------------------------


async def test_star77_rejects_an_anonymous_trunk_caller_with_433_and_the_announcement(
        pbx: Pbx) -> None:
    code = pbx.dial("101", "*77")
    await code.done()
    assert code.prompts() == [(Prompt("activated"), "de")]
    assert pbx.settings("101", "anonymous_rejection") == {"enabled": True}
    for number, withheld in (("+4940777", True), ("", False)):  # Privacy: id; no number at all
        call = pbx.dial(number, "101", from_trunk=True, withheld=withheld)
        await call.done()
        assert ("reject", 433) in call.caller.log and not call.legs
        assert call.call.record.status == 433
    assert [(status, prompt) for status, prompt, _ in pbx.failures] == [
        (433, Prompt("anonymous_rejected"))] * 2


async def test_a_presented_caller_still_rings_with_star77_on(pbx: Pbx) -> None:
    await pbx.dial("101", "*77").done()
    for caller, from_trunk in (("+4940777", True), ("100", False)):
        call = pbx.dial(caller, "101", from_trunk=from_trunk)
        await ringing(call)
        await give_up(call)
    assert pbx.failures == []


async def test_an_internal_caller_with_clir_is_anonymous_too(pbx: Pbx) -> None:
    await pbx.dial("101", "*77").done()
    await pbx.dial("100", "*31").done()
    call = pbx.dial("100", "101")
    await call.done()
    assert ("reject", 433) in call.caller.log
    shown = pbx.dial("100", "*65101")  # showing the number for this call gets through
    await ringing(shown)
    await give_up(shown)


async def test_star87_switches_it_off(pbx: Pbx) -> None:
    await pbx.dial("101", "*77").done()
    await pbx.dial("101", "*87").done()
    assert pbx.settings("101", "anonymous_rejection") == {"enabled": False}
    call = pbx.dial("+4940777", "101", from_trunk=True, withheld=True)
    await ringing(call)
    await give_up(call)


async def test_anonymous_rejection_runs_before_dnd(pbx: Pbx) -> None:
    await pbx.dial("101", "*77").done()
    await pbx.dial("101", "*78").done()  # DND as well: the anonymous caller gets 433, not 486
    call = pbx.dial("+4940777", "101", from_trunk=True, withheld=True)
    await call.done()
    assert ("reject", 433) in call.caller.log and ("reject", 486) not in call.caller.log


async def test_codes_take_the_longest_match(pbx: Pbx) -> None:
    match = pbx.registry.match("*670301234567")
    assert match is not None and (match.dialled, match.number) == ("*67", "0301234567")
    assert pbx.registry.match("*31") is not None and pbx.registry.match("#31") is not None
    assert pbx.registry.match("*311") is None  # *31 takes no number


def test_star67_plus_number_is_not_the_busy_forwarding_interrogation() -> None:
    class Interrogation(BaseFeature):  # forward_busy.query is *67* in the code table
        name = "forward_busy"
        feature_codes = (FeatureCode("query"),)

    registry = FeatureRegistry([Clir(), Interrogation()])
    asked = registry.match("*67*")
    assert asked is not None and (asked.feature.name, asked.code.action) == (
        "forward_busy", "query")
    once = registry.match("*670301234567")
    assert once is not None and (once.feature.name, once.number) == ("clir", "0301234567")
    assert once.code.action == "this_call"
    digits = registry.match("788670301234567", digits_only=True)  # from a mobile
    assert digits is not None and digits.code.action == "this_call"
