"""The phone menu of a box (``*86`` from the user's own phone, ``*62`` with mailbox number and
PIN from any phone). Keys (DTMF: RFC 4733, SIP INFO and in-band all arrive as digits):

main menu — ``1`` listen (new messages first, then saved), ``0`` settings, ``*`` hang up;
while a message plays or after it — ``5`` repeat, ``7`` delete, ``9`` save, ``6`` next,
``4`` previous, ``2`` call the sender back (the menu ends, the call goes on to them), ``*`` back
to the main menu;
settings — ``1`` record the greeting (ends with ``#``), ``2`` back to the default greeting,
``3`` change the PIN (4 to 8 digits, ``#``).

Before the main menu the box announces its count of new and saved messages; each message
starts with its caller and time (HHMM).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import structlog

from media.player import Player
from media.port import MediaPort
from media.tones import ToneName
from pbx.callcontrol import Prompt
from pbx.store.voicemail import VoicemailMessage
from pbx.voicemail.deposit import Box, record
from pbx.voicemail.prompts import Keypad, SequencePort

__all__ = ["BoxActions", "Menu"]

log = structlog.get_logger("pbx.voicemail")

#: Unanswered main menus before the box says goodbye.
MAX_IDLE_MENUS = 3
#: The longest greeting a user records (seconds).
GREETING_MAX = 60.0


class BoxActions(Protocol):
    """What the menu changes (the service: store, files, the ``voicemail.changed`` event)."""

    def messages(self, box: Box) -> list[VoicemailMessage]: ...
    def mark_heard(self, box: Box, message: VoicemailMessage) -> None: ...
    def delete(self, box: Box, message: VoicemailMessage) -> None: ...
    def set_pin(self, box: Box, pin: str) -> bool: ...


class Menu:
    """One caller in one box's menu."""

    def __init__(self, keys: Keypad, box: Box, actions: BoxActions, *,
                 prompt: Callable[[Prompt], MediaPort | None],
                 tone: Callable[[ToneName, int], MediaPort], rate: int) -> None:
        self.keys = keys
        self.box = box
        self.actions = actions
        self.prompt = prompt
        self.tone = tone
        self.rate = rate
        #: the number to call back when the caller chose to (``2``): the menu ended for it
        self.call_back: str | None = None

    def _say(self, *prompts: Prompt) -> MediaPort | None:
        ports = [p for p in (self.prompt(pr) for pr in prompts) if p is not None]
        return SequencePort(ports, self.rate) if ports else None

    def summary(self) -> MediaPort | None:
        """"You have 2 new messages. You have 1 saved messages." (or "no new messages")."""
        messages = self.actions.messages(self.box)
        new = sum(1 for m in messages if m.state == "new")
        old = len(messages) - new
        parts: list[Prompt] = []
        if new:
            parts += [Prompt("vm_you_have", say=str(new)),
                      Prompt("vm_new_message" if new == 1 else "vm_new_messages")]
        else:
            parts.append(Prompt("vm_no_messages"))
        if old:
            parts += [Prompt("vm_you_have", say=str(old)), Prompt("vm_saved_messages")]
        return self._say(*parts)

    async def run(self) -> None:
        """The main menu until ``*``, hang-up (:class:`~pbx.voicemail.prompts.Gone`) or
        :data:`MAX_IDLE_MENUS` silent rounds."""
        await self.keys.play(self.summary(), max_digits=0)
        idle = 0
        while idle < MAX_IDLE_MENUS:
            key = await self.keys.play(self._say(Prompt("vm_menu_main")), terminators="")
            if key == "1":
                await self.listen()
                if self.call_back is not None:
                    return
            elif key == "0":
                await self.settings()
            elif key == "*":
                break
            idle = idle + 1 if not key else 0
        await self.keys.wait(self._say(Prompt("vm_goodbye")))

    async def listen(self) -> None:
        """Play the messages (new first) with the message keys."""
        messages = sorted(self.actions.messages(self.box),
                          key=lambda m: (m.state != "new", m.received_at))
        index = idle = 0
        key = ""
        while 0 <= index < len(messages) and idle < MAX_IDLE_MENUS:
            message = messages[index]
            if not key:
                key = await self.keys.play(self._message(message), terminators="")
                if message.state == "new":
                    self.actions.mark_heard(self.box, message)
            if not key:
                key = await self.keys.play(self._say(Prompt("vm_menu_message")),
                                           terminators="")
            idle = idle + 1 if not key else 0
            if key == "5" or not key:
                key = ""
                continue
            if key == "7":
                self.actions.delete(self.box, message)
                del messages[index]
                await self.keys.wait(self._say(Prompt("vm_message_deleted")))
            elif key == "9":
                await self.keys.wait(self._say(Prompt("vm_message_saved")))
                index += 1
            elif key == "6":
                index += 1
            elif key == "4":
                index = max(0, index - 1)
            elif key == "2" and message.caller:
                self.call_back = message.caller
                return
            elif key == "*":
                return
            key = ""
        await self.keys.wait(self._say(Prompt("vm_no_more_messages")))

    def _message(self, message: VoicemailMessage) -> MediaPort | None:
        """The caller, the time (HHMM), then the recording."""
        at = time.strftime("%H%M", time.localtime(message.received_at))
        caller = "".join(c for c in message.caller if c.isdigit() or c in "+*#")
        ports = [p for p in (self.prompt(Prompt("vm_message_from", say=caller)),
                             self.prompt(Prompt("vm_received_at", say=at))) if p is not None]
        ports.append(Player(message.audio_path, self.rate))
        return SequencePort(ports, self.rate)

    async def settings(self) -> None:
        """Record the greeting, go back to the default one, change the PIN."""
        key = await self.keys.play(self._say(Prompt("vm_menu_settings")), terminators="")
        if key == "1":
            await self.keys.wait(self._say(Prompt("vm_record_greeting")))
            await self.keys.wait(self.tone(ToneName.BEEP, self.rate))
            self.keys.pending.clear()
            result = await record(self.keys.call, self.keys.leg, self.box.greeting,
                                  max_length=GREETING_MAX, silence_timeout=GREETING_MAX)
            if result.gone:
                return
            log.info("voicemail.greeting_recorded", box=self.box.extension,
                     seconds=round(result.seconds, 2))
            await self.keys.wait(self._say(Prompt("vm_greeting_saved")))
        elif key == "2":
            self.box.greeting.unlink(missing_ok=True)
            await self.keys.wait(self._say(Prompt("confirm")))
        elif key == "3":
            pin = await self.keys.play(self._say(Prompt("vm_new_pin")), max_digits=8,
                                       timeout=10.0)
            ok = self.actions.set_pin(self.box, pin)
            await self.keys.wait(self._say(Prompt("vm_pin_changed" if ok else "error")))
