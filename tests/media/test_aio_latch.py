"""Symmetric-RTP latching across a re-offer: when signalling moves a leg's media to a new
address (``RtpSession.set_remote`` after a re-INVITE/UPDATE), packets still arriving from the old
address must not pull the audio back there; the old address is a foreign source from then on."""

from __future__ import annotations

import asyncio

from media.aio import MediaEngine
from tests.media.test_aio import Peer, run_for, tone

RANGE = (31600, 31663)


async def test_old_address_cannot_pull_the_audio_back_after_set_remote() -> None:
    async with MediaEngine("127.0.0.1", RANGE) as engine:
        old, new = Peer(), Peer()
        try:
            sess = engine.create_session(remote=old.addr)
            old.start_tone(sess.local_addr, 440.0)
            await run_for(0.3)
            assert sess.send_address == old.addr
            refused = engine.hub.counters(sess.slot)["source"]
            # the re-offer: the phone now listens on `new`, but its old port keeps sending
            # (far more than the 4 in-sequence packets a new source needs)
            sess.set_remote(*new.addr)
            await run_for(0.5)
            assert sess.send_address == new.addr
            assert engine.hub.counters(sess.slot)["source"] - refused >= 10
            # what the PBX sends goes to the new address, none of it to the old one
            before_old = len(old.rtp())
            for i in range(5):
                sess.put_frame(tone(300.0, 8000, 160, start=160 * i))
            await run_for(0.1)
            assert len(old.rtp()) == before_old
            assert len(new.rtp()) >= 5
            # once the phone sends from its new port it stays there for good
            new.start_tone(sess.local_addr, 880.0)
            await run_for(0.5)
            assert sess.send_address == new.addr
        finally:
            old.close()
            new.close()


async def test_unchanged_address_keeps_latching_as_before() -> None:
    # a re-INVITE that keeps the address (hold/resume, a session refresh) does not vouch for
    # it: a NATed phone whose packets come from another address is still latched onto
    async with MediaEngine("127.0.0.1", RANGE) as engine:
        nat, signalled = Peer(), Peer()
        try:
            sess = engine.create_session(remote=signalled.addr)
            signalled.close()  # the signalled (private) address never sends
            nat.start_tone(sess.local_addr, 440.0)
            await run_for(0.3)
            assert sess.send_address == nat.addr
            sess.set_remote(*signalled.addr)
            await asyncio.sleep(0.3)
            assert sess.send_address == nat.addr
        finally:
            nat.close()
