"""Call control's conference port and bridge replacement on the real media engine (through
pbx.mediagraph's adapter), with RTP phones on loopback and the media clock driven by hand."""

from __future__ import annotations

from pbx.callcontrol import Call, CallRecord, Leg
from pbx.mediagraph import EngineGraph
from tests.media.fakeclock import FakeClock, Phone, fake_engine
from tests.media.test_aio import goertzel, hears


class MediaLeg(Leg):
    """A leg that is only its media (signalling is not the point here)."""

    def hangup(self, cause: str = "normal") -> None:
        pass

    def close_media(self) -> None:
        pass


def make_call(graph: EngineGraph, legs: list[MediaLeg]) -> Call:
    record = CallRecord("cid", "internal", "100", "101", started=0.0)
    call = Call(legs[0], graph=graph, leg_factory=lambda c, t: MediaLeg(c), record=record)
    for leg in legs[1:]:
        call.adopt(leg)
    return call


async def test_a_conference_port_mixes_the_legs_joined_into_it() -> None:
    freqs = [500, 800, 1100]
    async with fake_engine(port_range=(31000, 31099)) as engine:
        graph = EngineGraph(engine)
        phones = [Phone() for _ in freqs]
        legs = [MediaLeg(None, party=str(i)) for i in range(3)]
        for leg, phone in zip(legs, phones, strict=True):
            leg.media = engine.create_session(payload_type=0, codec="PCMU", remote=phone.addr)
        call = make_call(graph, legs)
        call.bridge(legs[0], legs[1])  # a two-party call first; join() closes it
        conf = call.conference()
        for leg in legs:
            call.join(conf, leg)
        assert not call.bridges
        clock = FakeClock(engine, phones)
        for phone, leg, f in zip(phones, legs, freqs, strict=True):
            assert leg.media is not None
            clock.talk(phone, leg.media.local_addr, phone.tone_packets(f, 50, amp=7000))
        clock.run(50)
        clock.settle()
        call.release()
    for i, phone in enumerate(phones):
        audio = phone.audio(skip=0.3)
        assert len(audio) > 4000
        for j, f in enumerate(freqs):
            if j != i:
                assert hears(audio, 8000, f), (i, f)
        assert goertzel(audio, 8000, freqs[(i + 1) % 3]) > 20 * goertzel(audio, 8000, freqs[i])


async def test_replace_moves_the_far_side_of_a_bridge_to_another_leg() -> None:
    async with fake_engine(port_range=(31100, 31199)) as engine:
        graph = EngineGraph(engine)
        pa, pb, pc = Phone(), Phone("PCMA", 8), Phone("PCMA", 8)
        a, b, c = MediaLeg(None, party="a"), MediaLeg(None, party="b"), MediaLeg(None, party="c")
        a.media = engine.create_session(payload_type=0, codec="PCMU", remote=pa.addr)
        b.media = engine.create_session(payload_type=8, codec="PCMA", remote=pb.addr)
        c.media = engine.create_session(payload_type=8, codec="PCMA", remote=pc.addr)
        call = make_call(graph, [a, b])
        other = Call(c, graph=graph, leg_factory=lambda cl, t: MediaLeg(cl),
                     record=CallRecord("cid2", "internal", "c", "x", started=0.0))
        bridge = call.bridge(a, b)
        clock = FakeClock(engine, [pa, pb, pc])
        clock.talk(pa, a.media.local_addr, pa.tone_packets(700, 25))
        clock.run(25)
        clock.settle()
        heard_b = len(pb.audio())
        call.replace(bridge, b, c)  # transfer / pickup: c takes b's place
        assert c.call is call and c not in other.legs
        clock.talk(pa, a.media.local_addr, pa.tone_packets(700, 50))
        clock.run(50)
        clock.settle()
        call.release()
    assert heard_b > 2000 and len(pb.audio()) - heard_b < 400  # b hears nothing more
    assert hears(pc.audio(skip=0.2), 8000, 700)
