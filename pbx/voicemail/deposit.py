"""Leaving a message: the caller hears the box's greeting (the user's recording, else the
default one naming the number) and a beep, and is recorded until they hang up, press ``#``,
stay silent for ``silence_timeout`` seconds or reach ``max_length``. A message with less than
:data:`~pbx.voicemail.storage.MIN_SPEECH` of speech is not kept.

Crash safety is the order of the steps (:mod:`pbx.voicemail.storage`): row ``recording`` →
recorder (partial file, fsync'd every second) → rename into place → row ``new`` in one
transaction with the deposit hooks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from media.player import Player
from media.port import MediaPort
from media.recorder import Recorder
from media.tones import ToneName
from pbx.callcontrol import Call, Leg, Prompt
from pbx.callcontrol.events import DtmfReceived, LegEnded, LegFailed
from pbx.store.voicemail import VoicemailMessage
from pbx.voicemail.prompts import Gone, Keypad, SequencePort
from pbx.voicemail.storage import MIN_SPEECH, wav_seconds

__all__ = ["Box", "Recording", "record"]

log = structlog.get_logger("pbx.voicemail")

#: How often the recording loop looks at the recorder's state (seconds).
_POLL = 0.1


@dataclass(frozen=True, slots=True)
class Box:
    """A voicemail box as a deposit sees it."""

    user_id: int
    tenant: str
    extension: str
    language: str
    greeting: Path


@dataclass(frozen=True, slots=True)
class Recording:
    """How a recording ended: ``path`` (None: discarded), ``seconds`` of audio, ``speech``
    seconds before the trailing silence, ``gone`` the caller hung up."""

    path: Path | None
    seconds: float
    speech: float
    gone: bool


def greeting_port(box: Box, rate: int,
                  prompt: Callable[[Prompt], MediaPort | None]) -> MediaPort | None:
    """The user's recorded greeting, else "the person at <number> is not available, please
    leave a message after the tone" in their language."""
    if box.greeting.is_file():
        return Player(box.greeting, rate)
    parts = [prompt(Prompt("vm_greeting_person_at", say=box.extension)),
             prompt(Prompt("vm_greeting_unavailable"))]
    ports = [p for p in parts if p is not None]
    if len(ports) < 2:
        return prompt(Prompt("vm_greeting_default"))
    return SequencePort(ports, rate)


async def record(call: Call, leg: Leg, path: Path, *, max_length: float,
                 silence_timeout: float, end_on_hash: bool = True) -> Recording:
    """Record what ``leg`` sends into ``path`` until it hangs up, ``#``, silence or the
    limit; the file is in place when this returns (a recording of no audio is removed)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(stop.set)

    rec: Recorder = call.record_leg(leg, path, max_duration=max_length,
                                    silence_timeout=silence_timeout, on_silence=wake,
                                    on_limit=wake)
    gone = False
    try:
        while not stop.is_set():
            event = await call.next_event(_POLL)
            if event is None or event.leg is not leg:
                continue
            if isinstance(event, LegEnded | LegFailed):
                gone = True
                break
            if end_on_hash and isinstance(event, DtmfReceived) and event.digit == "#":
                break
    finally:
        for entry in list(call.recordings):
            if entry[1] is rec:
                entry[0].close()
                call.recordings.remove(entry)
        seconds = rec.duration
        speech = max(0.0, seconds - rec.trailing_silence)
        final = rec.close() if rec.samples else None
        if final is None:
            rec.abort()
    return Recording(final, seconds, speech, gone)


async def deposit(call: Call, box: Box, *, caller: str, caller_name: str, store: object,
                  tone: Callable[[ToneName, int], MediaPort],
                  prompt: Callable[[Prompt], MediaPort | None],
                  message_path: Callable[[str], Path], max_length: float, silence_timeout: float,
                  on_deposit: Callable[[VoicemailMessage], None]) -> VoicemailMessage | None:
    """Answer ``call``'s caller, play the greeting and the beep, record a message into
    ``box`` (``store`` a :class:`pbx.store.Store`); ``on_deposit`` gets a kept message."""
    from pbx.store import Store

    assert isinstance(store, Store)
    leg = call.caller
    if leg is None or not await call.answer() or leg.media is None:
        return None
    keys = Keypad(call, leg)  # its in-band detector stays on for a "#" while recording
    try:
        return await _deposit(call, box, keys, caller=caller, caller_name=caller_name,
                              store=store, tone=tone, prompt=prompt, message_path=message_path,
                              max_length=max_length, silence_timeout=silence_timeout,
                              on_deposit=on_deposit)
    finally:
        keys.close()


async def _deposit(call: Call, box: Box, keys: Keypad, *, caller: str, caller_name: str,
                   store: Any, tone: Callable[[ToneName, int], MediaPort],
                   prompt: Callable[[Prompt], MediaPort | None],
                   message_path: Callable[[str], Path], max_length: float,
                   silence_timeout: float,
                   on_deposit: Callable[[VoicemailMessage], None]) -> VoicemailMessage | None:
    leg = keys.leg
    rate = leg.media.sample_rate if leg.media is not None else 8000
    try:
        # a key during the greeting skips it (the caller knows it already)
        await keys.play(greeting_port(box, rate, prompt), max_digits=0)
        keys.pending.clear()
        await keys.wait(tone(ToneName.BEEP, rate))
    except Gone:
        return None
    message_id = uuid.uuid4().hex
    path = message_path(message_id)
    message = VoicemailMessage(id=message_id, user_id=box.user_id, tenant=box.tenant,
                               extension=box.extension, caller=caller,
                               caller_name=caller_name, received_at=time.time(),
                               duration=0.0, audio_path=str(path),
                               language=box.language, state="recording")
    store.begin_voicemail(message)
    try:
        result = await record(call, leg, path, max_length=max_length,
                              silence_timeout=silence_timeout)
    except BaseException:
        # the call was torn down mid-recording (a shutdown): keep what was said
        seconds = wav_seconds(path)
        if seconds >= MIN_SPEECH:
            on_deposit(store.finish_voicemail(message.id, seconds))
        else:
            store.delete_voicemail(message.id)
        raise
    if result.path is None or result.speech < MIN_SPEECH:
        store.delete_voicemail(message.id)
        log.info("voicemail.discarded", call_id=call.record.call_id, box=box.extension,
                 seconds=round(result.seconds, 2), speech=round(result.speech, 2))
        kept = None
    else:
        kept = store.finish_voicemail(message.id, result.seconds)
        log.info("voicemail.deposited", call_id=call.record.call_id, id=kept.id,
                 box=box.extension, tenant=box.tenant, caller=caller,
                 seconds=round(result.seconds, 2))
        on_deposit(kept)
    call.record.cause = "voicemail"
    if not result.gone:
        call.hangup()
    return kept
