"""Feature codes and rejections that announce: the interrogation codes (``*21*``, ``*63*``),
"activated"/"deactivated" confirmations, the tone when the prompt set lacks a prompt, the
announcement playing to its end, and a Reject's prompt reaching the host in the user's
language."""

from __future__ import annotations

from media.tones import ToneName
from pbx.callcontrol import BaseFeature, CallContext, Decision, FeatureCode, Prompt, Reject
from tests.features.conftest import Pbx


async def test_star21star_announces_forwarding_off_then_on_to_the_number(pbx: Pbx) -> None:
    off = pbx.dial("101", "*21*")
    await off.done()
    assert ("answer", None) in off.caller.log and ("hangup", "normal") in off.caller.log
    assert off.prompts() == [(Prompt("forward_off"), "de")]
    assert pbx.events == []  # asking changes nothing

    await pbx.dial("101", "*720301234567").done()
    on = pbx.dial("101", "*21*")
    await on.done()
    assert on.prompts() == [(Prompt("forward_on_to", say="0301234567"), "de")]
    assert not on.legs and pbx.routed == []

    await pbx.dial("101", "*73").done()  # off again: the target is kept, the state is "off"
    again = pbx.dial("101", "*21*")
    await again.done()
    assert again.prompts() == [(Prompt("forward_off"), "de")]


async def test_star63star_asks_unreachable_forwarding_not_immediate(pbx: Pbx) -> None:
    await pbx.dial("101", "*72102").done()
    unreachable = pbx.dial("101", "*63*")
    await unreachable.done()
    assert unreachable.prompts() == [(Prompt("forward_off"), "de")]
    await pbx.dial("101", "*94+4930555102").done()
    unreachable = pbx.dial("101", "*63*")
    await unreachable.done()
    assert unreachable.prompts() == [(Prompt("forward_on_to", say="+4930555102"), "de")]


async def test_the_announcement_is_in_the_users_language(pbx: Pbx) -> None:
    pbx.store.update_user("101", tenant="acme", language="en")
    code = pbx.dial("101", "*78")
    await code.done()
    assert code.prompts() == [(Prompt("activated"), "en")]
    assert pbx.announcements[-1].tenant_id == pbx.tenant_id  # the tenant's recordings first
    off = pbx.dial("101", "*79")
    await off.done()
    assert off.prompts() == [(Prompt("deactivated"), "en")]


async def test_the_call_ends_when_the_announcement_has_played(pbx: Pbx) -> None:
    # 40 frames at the fake clock's 5 ms: 200 ms, four times the confirmation tone's time
    # (confirm_seconds=0.05 in the fixture) — the hang-up waits for the prompt's end
    pbx.prompt_frames = 40
    code = pbx.dial("101", "*78")
    await code.until(lambda: pbx.announcements)
    port = pbx.announcements[0]
    await code.until(lambda: ("hangup", "normal") in code.caller.log)
    assert port.frames == 0  # drained before the hang-up


async def test_a_missing_prompt_falls_back_to_the_tone(pbx: Pbx) -> None:
    pbx.missing_prompts = {"activated", "error"}
    ok = pbx.dial("101", "*78")
    await ok.done()
    assert ok.prompts() == [] and ok.tones() == [ToneName.CONFIRMATION]
    pbx.store.update_user("101", tenant="acme", permission="internal")
    refused = pbx.dial("101", "*720301234567")
    await refused.done()
    assert refused.tones() == [ToneName.ERROR]


class _Refuser(BaseFeature):
    """Rejects every call to its user with an announcement (what anonymous rejection does)."""

    name = "refuser"
    priority = 50

    async def on_terminate(self, ctx: CallContext) -> Decision:
        return Reject(433, "Anonymity Disallowed", prompt=Prompt("anonymous_rejected"))


async def test_a_rejects_prompt_goes_to_the_host_with_the_callees_language(pbx: Pbx) -> None:
    pbx.registry.register(_Refuser())
    pbx.store.update_user("101", tenant="acme", language="en")
    call = pbx.dial("+4940777", "+4930555101", from_trunk=True)
    await call.done()
    assert pbx.failures == [(433, Prompt("anonymous_rejected"), "en")]
    assert ("reject", 433) in call.caller.log


async def test_star21star_wins_over_a_shorter_code_by_the_longest_match(pbx: Pbx) -> None:
    # *21 (forwarding immediate to voicemail) is a prefix of *21* (its query)
    query = pbx.registry.match("*21*")
    assert query is not None and (query.feature.name, query.code.action) == (
        "forward_immediate", "query")
    short = pbx.registry.match("*21")
    assert short is not None and short.code.action == "voicemail_on"

    class Short(BaseFeature):  # two codes outside the table, one the other's prefix
        name = "short_probe"
        feature_codes = (FeatureCode("on", "*4712"),)

    class Long(BaseFeature):
        name = "long_probe"
        feature_codes = (FeatureCode("on", "*4712*"),)

    pbx.registry.register(Short())
    pbx.registry.register(Long())
    long, short = pbx.registry.match("*4712*"), pbx.registry.match("*4712")
    assert long is not None and long.feature.name == "long_probe"
    assert short is not None and short.feature.name == "short_probe"


async def test_star67star_and_star61star_ask_busy_and_no_answer_forwarding(pbx: Pbx) -> None:
    await pbx.dial("101", "*90102").done()
    busy = pbx.dial("101", "*67*")
    await busy.done()
    assert busy.prompts() == [(Prompt("forward_on_to", say="102"), "de")]
    no_answer = pbx.dial("101", "*61*")
    await no_answer.done()
    assert no_answer.prompts() == [(Prompt("forward_off"), "de")]
    rings = pbx.dial("101", "*6103")  # *610 + rings is not the query
    await rings.done()
    assert rings.prompts() == [(Prompt("confirm"), "de")]
    assert pbx.settings("101", "forward_no_answer")["rings"] == 3


async def test_the_other_switches_announce_activated_and_deactivated(pbx: Pbx) -> None:
    for code, prompt in (("#43", "deactivated"), ("*43", "activated"), ("*13", "deactivated")):
        placed = pbx.dial("101", code)
        await placed.done()
        assert placed.prompts() == [(Prompt(prompt), "de")], code
