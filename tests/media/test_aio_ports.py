"""Players, recorders and conferences on the media clock: mixed port types in one graph."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from media.conference import Mode
from media.player import Player
from media.recorder import Recorder
from tests.media.fakeclock import FakeClock, Phone, fake_engine
from tests.media.test_aio import dominant, goertzel, hears, tone


def _wav(path: Path, freq: float, seconds: float, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone(freq, rate, int(rate * seconds), amp=6000).astype("<i2").tobytes())
    return path


async def test_player_into_a_leg_and_a_conference_recorded(tmp_path: Path) -> None:
    """A 16 kHz announcement plays to a G.722 phone through a link, and into an 8 kHz conference
    with a PCMU phone; a listen-only recorder port in the conference hears both."""
    announcement = _wav(tmp_path / "ann.wav", 1500, 2.0)
    async with fake_engine() as engine:
        wide = Phone("G722", 9)
        leg_wide = engine.create_session(payload_type=9, codec="G722", remote=wide.addr)
        engine.link(Player(announcement, sample_rate=16000), leg_wide)

        narrow = Phone()
        leg_narrow = engine.create_session(remote=narrow.addr)
        conf = engine.conference()
        conf.add(leg_narrow)
        conf.add(Player(announcement, sample_rate=16000))  # resampled into the 8 kHz mix
        rec = Recorder(tmp_path / "conf.wav", sample_rate=8000)
        conf.add(rec, mode=Mode.LISTEN_ONLY)
        clock = FakeClock(engine, [wide, narrow])
        clock.talk(narrow, leg_narrow.local_addr, narrow.tone_packets(700, 60))
        clock.run(60)
        clock.settle()
        rec.close()
        stats = engine.statistics()
    assert len(wide.rtp()) == 60  # the player fills every tick of the link
    heard_wide = wide.audio(skip=0.2)
    assert dominant(heard_wide, 16000, [700, 1000, 1500]) == 1500 and hears(heard_wide, 16000, 1500)
    heard_narrow = narrow.audio(skip=0.3)
    assert hears(heard_narrow, 8000, 1500)
    assert goertzel(heard_narrow, 8000, 700) < 1e-3 * goertzel(heard_narrow, 8000, 1500)
    with wave.open(str(tmp_path / "conf.wav"), "rb") as w:
        recorded = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(recorded) > 8000 * 0.8
    assert hears(recorded[2400:], 8000, 1500) and hears(recorded[2400:], 8000, 700)
    assert stats["tick_errors"] == 0


async def test_mute_and_hold_in_a_conference() -> None:
    async with fake_engine() as engine:
        phones = [Phone() for _ in range(3)]
        legs = [engine.create_session(remote=p.addr) for p in phones]
        conf = engine.conference()
        for leg in legs:
            conf.add(leg)
        conf.mute(legs[1])  # leg 1 talks but is muted: nobody hears 900 Hz
        legs[2].set_direction("inactive")  # leg 2 on hold: gets nothing, says nothing
        clock = FakeClock(engine, phones)
        for p, leg, f in zip(phones, legs, (500, 900, 1300), strict=True):
            clock.talk(p, leg.local_addr, p.tone_packets(f, 50))
        clock.run(50)
        conf.mute(legs[1], False)  # unmuted: from now on leg 0 hears 900 Hz
        clock.talk(phones[1], legs[1].local_addr, phones[1].tone_packets(900, 30), first=50)
        clock.run(30)
        clock.settle()
    heard0, heard1 = phones[0].audio(skip=0.3), phones[1].audio(skip=0.3)
    assert phones[2].rtp() == []
    muted, unmuted = heard0[:8000 * 7 // 10], heard0[8000 * 9 // 10:]
    assert not hears(muted, 8000, 900) and not hears(heard0, 8000, 1300)
    assert hears(unmuted, 8000, 900)
    assert hears(heard1, 8000, 500) and not hears(heard1, 8000, 1300)
