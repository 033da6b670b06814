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
