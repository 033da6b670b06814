"""The call script's own promises, through the real script with spy features: the order of
the chains, on_unreachable before any 480, on_dtmf delivery, and the feature-code table."""

from __future__ import annotations

import pytest

from media.tones import ToneName
from pbx.callcontrol import (
    BaseFeature,
    CallContext,
    Continue,
    Decision,
    DtmfReceived,
    FeatureCode,
    FeatureRegistry,
    Handled,
    Hook,
)
from tests.features.conftest import Pbx


class Spy(BaseFeature):
    """Records which hooks ran, for whom, with which digits."""

    name = "spy"
    priority = 50

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def _saw(self, hook: Hook, ctx: CallContext) -> Decision:
        self.seen.append((hook.value, ctx.user.extension if ctx.user else "", ctx.digits))
        return Continue()

    async def on_originate(self, ctx: CallContext) -> Decision:
        return self._saw(Hook.ORIGINATE, ctx)

    async def on_terminate(self, ctx: CallContext) -> Decision:
        return self._saw(Hook.TERMINATE, ctx)

    async def on_unreachable(self, ctx: CallContext) -> Decision:
        return self._saw(Hook.UNREACHABLE, ctx)

    async def on_dtmf(self, ctx: CallContext) -> Decision:
        self._saw(Hook.DTMF, ctx)
        return Handled() if ctx.digits.endswith("#") else Continue()


async def test_unreachable_runs_before_the_480_for_the_callee(pbx: Pbx) -> None:
    spy = Spy()
    pbx.registry.register(spy)
    pbx.registered["101"] = []
    call = pbx.dial("100", "101")
    await call.done()
    assert spy.seen == [("on_originate", "100", ""), ("on_terminate", "101", ""),
                        ("on_unreachable", "101", "")]
    assert ("reject", 480) in call.caller.log


async def test_digits_in_a_connected_call_reach_on_dtmf_of_the_leg_owner(pbx: Pbx) -> None:
    spy = Spy()
    pbx.registry.register(spy)
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)
    callee = call.legs[0]
    callee.far_answer()
    await call.until(lambda: call.caller.answered)
    for digit in "12#":
        call.call.post(DtmfReceived(callee, digit))
    call.call.post(DtmfReceived(call.caller, "5"))
    await call.until(lambda: len([s for s in spy.seen if s[0] == "on_dtmf"]) == 4)
    callee.far_hangup()
    await call.done()
    dtmf = [s for s in spy.seen if s[0] == "on_dtmf"]
    # a sequence grows digit by digit for its owner; the caller's digit is the caller's own
    assert dtmf == [("on_dtmf", "101", "1"), ("on_dtmf", "101", "12"),
                    ("on_dtmf", "101", "12#"), ("on_dtmf", "100", "5")]
    assert ("dtmf", "5") in callee.log  # and the digits still pass to the other side


async def test_a_feature_that_raises_is_skipped(pbx: Pbx) -> None:
    class Broken(BaseFeature):
        name = "broken"
        priority = 1

        async def on_terminate(self, ctx: CallContext) -> Decision:
            raise RuntimeError("bug")

    pbx.registry.register(Broken())
    call = pbx.dial("100", "101")
    await call.until(lambda: call.legs)  # ringing still happens
    call.caller.far_fail(487, "cancelled")
    await call.done()


def test_code_table_matching() -> None:
    class Codes(BaseFeature):
        name = "codes"
        feature_codes = (FeatureCode("on", "*7", takes_number=True),
                         FeatureCode("x", "*8"), FeatureCode("q", "*21*", alternate="#21"),
                         FeatureCode("s", "*21"))

    registry = FeatureRegistry([Codes()], codes={})  # no seed table: the declared codes
    found = registry.match("*8")
    assert found is not None and (found.code.action, found.number) == ("x", "")
    found = registry.match("*7812")
    assert found is not None and (found.code.action, found.number) == ("on", "812")
    found = registry.match("*21*")  # the longest code wins
    assert found is not None and found.code.action == "q"
    found = registry.match("*21")
    assert found is not None and found.code.action == "s"
    assert registry.match("*812") is None  # *8 takes no number
    found = registry.match("#21")
    assert found is not None and found.code.action == "q"
    assert registry.match("78") is None and registry.match("*9") is None
    with pytest.raises(ValueError, match="belongs to codes"):
        registry.register(type("Other", (BaseFeature,), {
            "name": "other", "feature_codes": (FeatureCode("a", "*8"),)})())
    with pytest.raises(ValueError, match="must be"):
        registry.register(type("Bad", (BaseFeature,), {
            "name": "bad", "feature_codes": (FeatureCode("a", "78"),)})())
    with pytest.raises(ValueError, match="unreachable"):  # *7 + numbers starting with 8
        registry.register(type("Shadow", (BaseFeature,), {
            "name": "shadow", "feature_codes": (FeatureCode("a", "*78"),)})())
    assert [f.name for f in registry.features] == ["codes"]  # refused: nothing registered


async def test_an_unknown_code_and_a_passing_feature_get_the_error_tone_never_routing(
        pbx: Pbx) -> None:
    class Silent(BaseFeature):
        name = "silent"
        feature_codes = (FeatureCode("x", "*60"),)

    pbx.registry.register(Silent())
    call = pbx.dial("100", "*60")
    await call.done()
    assert ("answer", None) in call.caller.log and call.tones() == [ToneName.ERROR]
    unknown = pbx.dial("100", "*61")
    await unknown.done()
    # not a code and never a number: answered with the error tone, nothing routed
    assert ("answer", None) in unknown.caller.log and unknown.tones() == [ToneName.ERROR]
    assert pbx.routed == []
    pending = pbx.dial("100", "#51")  # in the table, but no feature implements it (yet)
    await pending.done()
    assert pending.tones() == [ToneName.ERROR] and pbx.routed == []


async def test_a_star_string_from_a_trunk_is_refused_without_routing(pbx: Pbx) -> None:
    call = pbx.dial("+4917012345", "*78", from_trunk=True)
    await call.done()
    assert ("reject", 404) in call.caller.log and pbx.routed == []
    assert pbx.settings("101", "dnd") == {}
