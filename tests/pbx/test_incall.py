"""In-call codes: the recogniser (sans-IO, explicit time) and the dispatcher on a fake call."""

from __future__ import annotations

import asyncio

import pytest

from pbx.callcontrol import Call, DtmfReceived, LegAnswered, Target, UserView, supervise
from pbx.callcontrol.incall import (
    CodeDialled,
    InCallCode,
    InCallContext,
    InCallDispatcher,
    InCallRecognizer,
    Pass,
    incall_codes,
    parse_incall_codes,
    register_incall_action,
    unregister_incall_action,
)
from pbx.feature_codes import seed_table
from tests.conftest import FakeLeg, log_of, new_fake_call

CODES = incall_codes()
BY_ACTION = {c.action: c for c in CODES}


def feed(rec: InCallRecognizer, digits: str, now: float = 0.0) -> list[Pass | CodeDialled]:
    out: list[Pass | CodeDialled] = []
    for d in digits:
        out.extend(rec.feed(d, now))
    return out


def test_the_seed_file_has_the_five_in_call_codes_outside_the_dialled_table() -> None:
    assert {c.action: (c.code, c.takes_number) for c in CODES} == {
        "blind_transfer": ("##", True), "attended_transfer": ("*2", True),
        "conference_add": ("*3", True), "toggle_hold": ("*4", False),
        "voicemail_transfer": ("*55", True)}
    assert not any(feature == "incall" for feature, _ in seed_table())


def test_a_number_after_the_code_ends_with_hash_and_nothing_is_passed() -> None:
    rec = InCallRecognizer(CODES)
    assert feed(rec, "##201#") == [CodeDialled(BY_ACTION["blind_transfer"], "201")]
    assert rec.deadline is None


def test_a_number_ends_after_the_inter_digit_pause() -> None:
    rec = InCallRecognizer(CODES, inter_digit=3.0)
    assert feed(rec, "*2", 10.0) == []
    assert feed(rec, "33", 11.0) == []
    assert rec.deadline == 14.0
    assert rec.poll(13.9) == []
    assert rec.poll(14.0) == [CodeDialled(BY_ACTION["attended_transfer"], "33")]


def test_a_bare_code_with_a_number_argument_is_dispatched_empty_after_the_pause() -> None:
    rec = InCallRecognizer(CODES, inter_digit=3.0)
    assert feed(rec, "*2", 0.0) == []
    assert rec.poll(3.0) == [CodeDialled(BY_ACTION["attended_transfer"], "")]


def test_a_code_without_argument_is_immediate() -> None:
    rec = InCallRecognizer(CODES)
    assert feed(rec, "5*4") == [Pass("5"), CodeDialled(BY_ACTION["toggle_hold"], "")]


def test_digits_that_start_no_code_are_passed_in_order() -> None:
    rec = InCallRecognizer(CODES)
    assert feed(rec, "12*9") == [Pass("1"), Pass("2"), Pass("*"), Pass("9")]
    # a held * followed by # : the * is no code, the # may start ##
    assert feed(rec, "*#") == [Pass("*")]
    assert feed(rec, "5") == [Pass("#"), Pass("5")]


def test_a_held_prefix_goes_on_after_its_timeout() -> None:
    rec = InCallRecognizer(CODES, prefix_timeout=1.5)
    assert feed(rec, "#", 0.0) == []
    assert rec.deadline == 1.5
    assert rec.poll(1.5) == [Pass("#")]
    assert rec.deadline is None


def test_a_star_while_typing_the_number_abandons_the_code() -> None:
    rec = InCallRecognizer(CODES)
    assert feed(rec, "##20*") == []
    assert feed(rec, "7") == [Pass("7")]


def test_parse_refuses_codes_that_start_each_other_and_bad_codes() -> None:
    with pytest.raises(ValueError, match="starts"):
        parse_incall_codes('[incall.a]\ncode = "*2"\n[incall.b]\ncode = "*21"\n')
    with pytest.raises(ValueError, match="no in-call code"):
        parse_incall_codes('[incall.a]\ncode = "12"\n')
    assert parse_incall_codes('[dnd.on]\ncode = "*78"\n') == ()


async def _connected() -> tuple[Call, FakeLeg, FakeLeg]:
    call, _, _ = new_fake_call()
    callee = call.add_leg(Target("device", "101", "sip:b", "b"))
    assert isinstance(callee, FakeLeg) and isinstance(call.caller, FakeLeg)
    callee.start()
    callee.far_answer()
    assert isinstance(call.events.pop(), LegAnswered)
    call.caller.answer()
    call.events.clear()
    return call, call.caller, callee


async def test_dispatcher_swallows_the_code_passes_the_rest_and_runs_the_handler() -> None:
    call, caller, callee = await _connected()
    seen: list[tuple[InCallContext, str]] = []
    done = asyncio.Event()

    async def handler(ctx: InCallContext, number: str) -> None:
        seen.append((ctx, number))
        done.set()

    register_incall_action("blind_transfer", handler)
    user = UserView(key="100", extension="100")
    try:
        async def script(c: Call) -> None:
            dispatcher = InCallDispatcher(call, {caller: user}, prefix_timeout=0.2,
                                          inter_digit=0.2)
            dispatcher.install()
            bridge = call.bridge(caller, callee)
            for d in "7##201#":
                call.post(DtmfReceived(caller, d, "rfc4733"))
            call.post(DtmfReceived(callee, "#", "rfc4733"))  # the other party: not watched
            waiter = asyncio.ensure_future(call.wait_hangup(bridge))
            await asyncio.wait_for(done.wait(), 2.0)
            callee.far_hangup()
            await asyncio.wait_for(waiter, 2.0)
            dispatcher.uninstall()

        await supervise(call, script)
    finally:
        unregister_incall_action("blind_transfer")
    assert [n for _, n in seen] == ["201"]
    ctx = seen[0][0]
    assert ctx.leg is caller and ctx.other is callee and ctx.user == user
    # only the 7 reached the callee; the callee's own # went to the caller as before
    assert [e for e in log_of(callee) if e[0] == "dtmf"] == [("dtmf", "7")]
    assert ("dtmf", "#") in log_of(caller)


async def test_a_watched_leg_gets_a_decoded_bridge_with_its_tones_muted() -> None:
    call, caller, callee = await _connected()
    dispatcher = InCallDispatcher(call, {callee: UserView(key="101", extension="101")},
                                  codes=[InCallCode("toggle_hold", "*4")])
    dispatcher.install()
    call.bridge(caller, callee)
    graph = call.graph
    bridge_link = next(link for link in graph.live if link.kind == "bridge")  # type: ignore[attr-defined]
    assert bridge_link.mute_dtmf == (False, True)
    dispatcher.uninstall()
    assert call.digit_guard is None and not call.dtmf_guarded
