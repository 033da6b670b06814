"""Symmetric-RTP latching across a re-offer: when signalling moves a leg's media to a new
address (``RtpSession.set_remote`` after a re-INVITE/UPDATE), packets still arriving from the old
address must not pull the audio back there; the old address is a foreign source from then on.

On a fake clock, so the hub's time rules (``ALIVE``, ``LATCH_WINDOW``) are checked to the tick."""

from __future__ import annotations

from media.batchio import ALIVE
from media.port import PTIME
from tests.media.fakeclock import FakeClock, Phone, fake_engine
from tests.media.test_aio import tone

RANGE = (31600, 31663)


async def test_old_address_cannot_pull_the_audio_back_after_set_remote() -> None:
    async with fake_engine(RANGE) as engine:
        old, new = Phone(), Phone()
        sess = engine.create_session(remote=old.addr)
        clock = FakeClock(engine, [old, new])
        clock.talk(old, sess.local_addr, old.tone_packets(440.0, 260))  # it never stops
        clock.run(15)
        assert sess.send_address == old.addr
        refused = engine.hub.counters(sess.slot)["source"]
        # the re-offer: the phone now listens on `new`, but its old port keeps sending
        # (far more than the 4 in-sequence packets a new source needs)
        sess.set_remote(*new.addr)
        clock.run(25)
        assert sess.send_address == new.addr
        assert engine.hub.counters(sess.slot)["source"] - refused == 25
        # what the PBX sends goes to the new address, none of it to the old one
        before_old = len(old.rtp())
        for i in range(5):
            sess.put_frame(tone(300.0, 8000, 160, start=160 * i))
        clock.settle()
        assert len(old.rtp()) == before_old
        assert len(new.rtp()) == 5
        # the phone sends from its new port (steps 40..89): it stays there while it is alive
        clock.talk(new, sess.local_addr, new.tone_packets(880.0, 50), first=clock.steps)
        alive_steps = round(ALIVE / PTIME)
        clock.run(50 + alive_steps - 2)
        assert sess.send_address == new.addr
        # silent for longer than ALIVE: a source in sequence may take the stream (4 packets)
        clock.run(8)
        assert sess.send_address == old.addr
        old.close()
        new.close()


async def test_unchanged_address_keeps_latching_as_before() -> None:
    # a re-INVITE that keeps the address (hold/resume, a session refresh) does not vouch for
    # it: a NATed phone whose packets come from another address is still latched onto
    async with fake_engine(RANGE) as engine:
        nat, signalled = Phone(), Phone()
        sess = engine.create_session(remote=signalled.addr)
        clock = FakeClock(engine, [nat])
        signalled.close()  # the signalled (private) address never sends
        clock.talk(nat, sess.local_addr, nat.tone_packets(440.0, 40))
        clock.run(15)
        assert sess.send_address == nat.addr
        sess.set_remote(*signalled.addr)
        clock.run(15)
        assert sess.send_address == nat.addr
        nat.close()
