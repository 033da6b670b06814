"""What the voicemail feature calls: deposit into a box, the box's menu, the voice portal.

The composition root (:class:`pbx.app.PbxServer`) builds one :class:`VoicemailService` with the
store, the data directory, the event bus and the call host's tones and prompts, and hands it to
the feature. Every change of a box is published as :data:`CHANGED` with the box's counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from media.port import MediaPort
from media.tones import ToneName
from pbx.callcontrol import Call, Prompt, UserView
from pbx.store.records import StoreError
from pbx.store.voicemail import VoicemailMessage
from pbx.voicemail.deposit import Box, deposit
from pbx.voicemail.menu import Menu
from pbx.voicemail.prompts import Gone, Keypad
from pbx.voicemail.storage import Boxes

__all__ = ["CHANGED", "PIN_ATTEMPTS", "MediaHost", "VoicemailService", "publish_counts"]

log = structlog.get_logger("pbx.voicemail")

#: The event published after every change of a box (deposit, heard, deleted).
CHANGED = "voicemail.changed"
#: Wrong PINs (or unknown mailboxes) before the voice portal ends the call.
PIN_ATTEMPTS = 3


class MediaHost(Protocol):
    """The call host's tones and prompts (:class:`pbx.b2bua.B2bua`)."""

    def tone(self, name: ToneName, rate: int) -> MediaPort: ...
    def prompt(self, prompt: Prompt, language: str, rate: int,
               tenant_id: int | None = None) -> MediaPort: ...


class Publisher(Protocol):
    """The event bus (:class:`pbx.services.EventBus`)."""

    def publish(self, kind: str, data: Any = None) -> Any: ...


def publish_counts(store: Any, events: Publisher, user_id: int, tenant: str,
                   extension: str) -> None:
    """Publish a box's counts (``store``: a :class:`pbx.store.Store`) as :data:`CHANGED`."""
    new, old, new_urgent, old_urgent = store.voicemail_counts(user_id)
    events.publish(CHANGED, {"tenant": tenant, "user": extension, "user_id": user_id,
                             "new": new, "old": old, "new_urgent": new_urgent,
                             "old_urgent": old_urgent})


class VoicemailService:
    """Deposit, menu and portal over the store (a :class:`pbx.store.Store`) and
    ``data_dir``. ``tenant_name(tenant_id)`` names a tenant (its box directory, the event);
    ``user_in_tenant(tenant_id, extension)`` finds a box's user for the portal;
    ``portal_tenant(call)`` is the tenant of a trunk's call to a voice-portal DID (else None)."""

    def __init__(self, store: Any, data_dir: str | os.PathLike[str], events: Publisher,
                 host: MediaHost, *, tenant_name: Callable[[int | None], str],
                 user_in_tenant: Callable[[int | None, str], UserView | None],
                 seclog: Any = None,
                 portal_tenant: Callable[[Call], int | None] | None = None) -> None:
        self.store = store
        self.boxes = Boxes(data_dir)
        self.events = events
        self.host = host
        self.tenant_name = tenant_name
        self.user_in_tenant = user_in_tenant
        self._portal_tenant = portal_tenant
        self.seclog = seclog if seclog is not None else structlog.get_logger("security")

    def portal_tenant(self, call: Call) -> int | None:
        """The tenant whose voice portal ``call`` (from a trunk, to a voice-portal DID)
        reaches; None for any other call."""
        return self._portal_tenant(call) if self._portal_tenant is not None else None

    # -- boxes ------------------------------------------------------------------------------------

    def box(self, user: UserView) -> Box:
        """``user``'s box (a stored user: ``user.id`` is set)."""
        assert user.id is not None
        tenant = self.tenant_name(user.tenant_id)
        return Box(user.id, tenant, user.extension, user.language,
                   self.boxes.greeting(tenant, user.extension))

    def publish(self, user_id: int, tenant: str, extension: str) -> None:
        """Publish the box's counts as :data:`CHANGED`."""
        publish_counts(self.store, self.events, user_id, tenant, extension)

    def messages(self, box: Box) -> list[VoicemailMessage]:
        """The box's messages (new and saved), oldest first."""
        result: list[VoicemailMessage] = self.store.voicemails(box.user_id)
        return result

    def mark_heard(self, box: Box, message: VoicemailMessage) -> None:
        """A new message was heard: it is saved from now on."""
        if self.store.mark_voicemail_heard(message.id):
            self.publish(box.user_id, box.tenant, box.extension)

    def delete(self, box: Box, message: VoicemailMessage) -> None:
        """Delete a message: its row, then its file."""
        self.store.delete_voicemail(message.id)
        log.info("voicemail.deleted", id=message.id, box=box.extension, tenant=box.tenant)
        self.publish(box.user_id, box.tenant, box.extension)

    def set_pin(self, box: Box, pin: str) -> bool:
        """Change the box's PIN (False: not 4 to 8 digits)."""
        try:
            self.store.update_user(box.extension, tenant=box.tenant, voicemail_pin=pin)
        except StoreError:
            return False
        log.info("voicemail.pin_changed", box=box.extension, tenant=box.tenant)
        return True

    # -- calls ------------------------------------------------------------------------------------

    def _prompt(self, language: str,
                tenant_id: int | None) -> Callable[[Prompt, int], MediaPort | None]:
        def make(prompt: Prompt, rate: int = 8000) -> MediaPort | None:
            try:
                return self.host.prompt(prompt, language, rate, tenant_id)
            except LookupError as exc:
                log.warning("voicemail.prompt_missing", prompt=prompt.name, error=str(exc))
                return None
        return make

    async def deposit(self, call: Call, user: UserView, *, max_length: float,
                      silence_timeout: float, caller_name: str = "") -> VoicemailMessage | None:
        """The caller of ``call`` leaves a message in ``user``'s box."""
        box = self.box(user)
        rate = call.caller.media.sample_rate if call.caller is not None and \
            call.caller.media is not None else 8000
        say = self._prompt(user.language, user.tenant_id)
        caller = call.record.caller
        if call.presentation.withheld:
            caller = ""
        return await deposit(
            call, box, caller=caller, caller_name=caller_name,
            store=self.store, tone=self.host.tone, prompt=lambda p: say(p, rate),
            message_path=lambda mid: self.boxes.message_path(box.tenant, box.extension, mid),
            max_length=max_length, silence_timeout=silence_timeout,
            on_deposit=lambda m: self.publish(m.user_id, m.tenant, m.extension))

    async def menu(self, call: Call, user: UserView) -> str | None:
        """``*86``: the user's own box, no PIN. Returns the number to call back when the user
        chose to (the call stays up for it), else None (the call was hung up)."""
        leg = call.caller
        if leg is None or not await call.answer() or leg.media is None:
            return None
        keys = Keypad(call, leg)
        try:
            return await self._run_menu(call, keys, user)
        finally:
            keys.close()

    async def _run_menu(self, call: Call, keys: Keypad, user: UserView) -> str | None:
        rate = keys.leg.media.sample_rate if keys.leg.media is not None else 8000
        say = self._prompt(user.language, user.tenant_id)
        menu = Menu(keys, self.box(user), self, prompt=lambda p: say(p, rate),
                    tone=self.host.tone, rate=rate)
        try:
            await menu.run()
        except Gone:
            return None
        if menu.call_back is not None:
            log.info("voicemail.call_back", call_id=call.record.call_id, box=user.extension,
                     number=menu.call_back)
            return menu.call_back
        call.record.cause = "voicemail menu"
        call.hangup()
        return None

    async def portal(self, call: Call, caller: UserView | None, *,
                     tenant_id: int | None = None) -> str | None:
        """``*62``: mailbox number and PIN, then that box's menu (returns what :meth:`menu`
        does); after :data:`PIN_ATTEMPTS` wrong tries the call ends (a security event). The
        boxes are those of ``caller``'s tenant, or of ``tenant_id`` for a caller who is no
        user (a trunk's call to a voice-portal DID)."""
        leg = call.caller
        if leg is None or not await call.answer() or leg.media is None:
            return None
        rate = leg.media.sample_rate
        if caller is not None:
            tenant_id = caller.tenant_id
        say = self._prompt(caller.language if caller is not None else "", tenant_id)
        keys = Keypad(call, leg)
        source = getattr(leg, "source", None)
        try:
            return await self._portal(call, keys, say, rate, tenant_id, source)
        finally:
            keys.close()

    async def _portal(self, call: Call, keys: Keypad,
                      say: Callable[[Prompt, int], MediaPort | None], rate: int,
                      tenant_id: int | None, source: Any) -> str | None:
        try:
            for attempt in range(1, PIN_ATTEMPTS + 1):
                mailbox = await keys.play(say(Prompt("vm_enter_mailbox"), rate), max_digits=8,
                                          timeout=10.0)
                pin = await keys.play(say(Prompt("vm_enter_pin"), rate), max_digits=8,
                                      timeout=10.0)
                box_user = self.user_in_tenant(tenant_id, mailbox) if mailbox else None
                if box_user is not None and box_user.id is not None and pin and \
                        self.store.check_voicemail_pin(box_user.id, pin):
                    log.info("voicemail.portal_login", call_id=call.record.call_id,
                             box=mailbox, caller=call.record.caller)
                    return await self._run_menu(call, keys, box_user)
                self.seclog.warning("security.voicemail.pin_failed",
                                    call_id=call.record.call_id, box=mailbox,
                                    caller=call.record.caller, attempt=attempt, src=source)
                await keys.wait(say(Prompt("vm_wrong_pin"), rate))
            self.seclog.warning("security.voicemail.locked_out", call_id=call.record.call_id,
                                caller=call.record.caller, attempts=PIN_ATTEMPTS, src=source)
            await keys.wait(say(Prompt("vm_goodbye"), rate))
        except Gone:
            return None
        call.record.cause = "voicemail PIN refused"
        call.hangup()
        return None
