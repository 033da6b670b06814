"""The call script: what happens to a new call, from the first feature to the hang-up.

1. A user who dialled a feature code: the owning feature handles it (``on_feature_code``); a
   ``*``/``#`` string that is no code gets the error tone (404 from a trunk), never routing.
   Digits-only codes (``78843``) count only where the host says so (:meth:`ScriptHost.digits_only`).
2. The caller's originating chain (``on_originate``).
3. Routing what was dialled on behalf of the caller (their tenant, permissions, caller number).
4. For a user: their terminating chain (``on_terminate``); ringing is the last feature in it.
   A number reached through a trunk has no terminating features. A :class:`Busy` decision (the
   user is in a call and call waiting is off) goes straight to step 5's busy chain. While the
   user's devices ring for a second call, a leg of theirs that cannot show a waiting call
   itself (the mobile over a trunk) hears the call-waiting tone in its call instead of ringing.
5. A ring that is not answered runs ``on_busy``, ``on_no_answer`` or ``on_unreachable`` (no
   device, or every device failed) for that user; the first decision wins, ``Continue`` sends
   the caller the ring's final status.
6. A :class:`Redirect` routes the target on behalf of the user who redirected (their
   permissions, their number as the caller's diversion), at most :data:`MAX_REDIRECTS` times and
   never back to a user the call already reached. A feature code's :class:`Dial` places the
   call to a number after the code chose something for this call (``*67``, ``*70``).
7. Answered: the legs are bridged until one hangs up; digits on a user's leg go to ``on_dtmf``
   and to the in-call code dispatcher (:mod:`pbx.callcontrol.incall`: ``##``, ``*2`` …), which
   passes on to the other party only what is no code.

The script talks to the rest of the PBX through :class:`ScriptHost` (the B2BUA implements it)
and to features through the registry: it knows no SIP and no feature by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from media.port import MediaPort
from media.tones import ToneName
from pbx.callcontrol.activity import ActiveCall, ActiveCalls
from pbx.callcontrol.call import Call
from pbx.callcontrol.context import CallContext, Diversion, Services, UserView
from pbx.callcontrol.decisions import (
    Busy,
    CallBack,
    Confirm,
    Continue,
    Decision,
    Dial,
    Handled,
    Prompt,
    Redirect,
    Reject,
    Ring,
)
from pbx.callcontrol.feature import Hook
from pbx.callcontrol.incall import InCallCode, InCallDispatcher, incall_codes
from pbx.callcontrol.legs import Leg, Target
from pbx.callcontrol.records import RingOutcome, RingResult
from pbx.callcontrol.registry import CodeMatch, FeatureRegistry, is_code

__all__ = ["CONFIRM_SECONDS", "MAX_REDIRECTS", "CallScript", "Routed", "ScriptHost"]

log = structlog.get_logger("pbx.callcontrol")

#: FEATURES.md: "a call is never forwarded more than 5 times".
MAX_REDIRECTS = 5
#: How long the confirmation (or error) tone of a feature code plays before we hang up.
CONFIRM_SECONDS = 2.0
#: The longest a feature code's announcement plays before we hang up anyway.
PROMPT_LIMIT = 60.0
#: A bare code that takes a number prompts for it: digits end with ``#`` or this pause.
NUMBER_TIMEOUT = 10.0
NUMBER_INTER_DIGIT = 5.0
#: Digits of one in-call sequence belong together when no longer apart than this.
DTMF_SEQUENCE_GAP = 3.0
#: The call-waiting tone injected into a call: one burst of the country's cadence (DE: 200 ms
#: on, 200 off, 200 on), then this pause, for as long as the waiting call rings.
CALL_WAITING_BURST = 0.6
CALL_WAITING_PAUSE = 5.0

_RING_HOOKS = {RingOutcome.BUSY: Hook.BUSY, RingOutcome.REJECTED: Hook.BUSY,
               RingOutcome.NO_ANSWER: Hook.NO_ANSWER, RingOutcome.UNREACHABLE: Hook.UNREACHABLE}


@dataclass(frozen=True, slots=True)
class Routed:
    """Routing's answer for a user: ring them (``user``)."""

    user: UserView


class ScriptHost(Protocol):
    """What the script needs of the PBX around it."""

    @property
    def services(self) -> Services:
        """Settings and routability for features."""
        ...

    def originator(self, call: Call) -> UserView | None:
        """The user who placed ``call`` (None: a trunk or an anonymous caller)."""
        ...

    def digits_only(self, call: Call) -> UserView | None:
        """The user whose feature codes ``call`` may dial in the digits-only form (``78843``
        for ``*43``): the user of a device flagged mobile, or the user from whose registered
        mobile number a trunk call comes (that call counts as theirs for feature codes only).
        None: only the ``*``/``#`` form is a code."""
        ...

    def route(self, call: Call, dialled: str, on_behalf_of: UserView | None) -> (
            Routed | Ring | Reject):
        """Where ``dialled`` goes when ``on_behalf_of`` (the caller, or the user who
        redirected) sends the call there."""
        ...

    def devices(self, user: UserView) -> list[Target]:
        """The reachable device targets of ``user``."""
        ...

    def tone(self, name: ToneName, rate: int) -> MediaPort:
        """A media port playing one of our tones."""
        ...

    def prompt(self, prompt: Prompt, language: str, rate: int,
               tenant_id: int | None = None) -> MediaPort:
        """A media port playing ``prompt`` once in ``language`` (the tenant's recorded file
        where it has one, else the generated set); LookupError when there is no such prompt."""
        ...

    async def connect(self, call: Call, callee: Leg) -> Leg | None:
        """Answer the caller, bridge it to ``callee`` and run the call until a leg ends
        (returned). ``call.on_digit`` is set before this is awaited."""
        ...

    async def fail(self, call: Call, status: int, reason: str | None = None, *,
                   retry_after: int | None = None, prompt: Prompt | None = None,
                   user: UserView | None = None) -> None:
        """Tell an unanswered caller ``status`` (with a busy tone first where configured;
        ``prompt`` is announced as early media first, in ``user``'s language)."""
        ...


class CallScript:
    """Runs one call from start to end (see the module docstring)."""

    def __init__(self, host: ScriptHost, registry: FeatureRegistry, *,
                 confirm_seconds: float = CONFIRM_SECONDS,
                 active: ActiveCalls | None = None,
                 incall: Iterable[InCallCode] | None = None) -> None:
        self.host = host
        self.registry = registry
        self.confirm_seconds = confirm_seconds
        #: the calls each user is in (shared by every call this script runs)
        self.active = active if active is not None else ActiveCalls()
        #: the in-call codes users may type in a connected call (empty: none watched)
        self.incall_codes: tuple[InCallCode, ...] = (
            incall_codes() if incall is None else tuple(incall))

    def context(self, call: Call, user: UserView | None,
                originator: UserView | None = None) -> CallContext:
        """A fresh context for ``user``'s features in ``call`` (``originator``: who placed
        the call)."""
        settings: Mapping[str, Mapping[str, Any]] = (
            self.host.services.settings(user) if user is not None else {})
        return CallContext(caller=call.record.caller, callee=call.record.callee, call=call,
                           user=user, services=self.host.services, settings=settings,
                           originator=originator, diversions=call.diversions,
                           active=self.active.of(user.key) if user is not None else (),
                           calls=self.active)

    async def run(self, call: Call) -> None:
        """The whole script for one call."""
        caller = self.host.originator(call)
        entry = (self.active.enter(caller.key, call, call.caller)
                 if caller is not None and call.caller is not None else None)
        try:
            if await self._dialled_code(call, caller):
                return
            await self._originate(call, self.context(call, caller, caller), call.record.callee)
        finally:
            if entry is not None:
                self.active.leave(entry)

    async def call_back(self, call: Call, user: UserView, dialled: str,
                        timeout: float, targets: Sequence[Target] = ()) -> None:
        """Call-back (click-to-dial, 3PCC as in RFC 3725): ring the user's chosen phone
        (``targets``: their mobile or remote office number over the trunk; empty: their
        devices) first; when it answers it is the caller, hears ringback, and the call goes on
        as if the user had dialled ``dialled`` from it (their originating chain, their
        routing, their number)."""
        targets = tuple(targets) or tuple(self.host.devices(user))
        if not targets:
            call.record.status = 480
            log.info("call.callback_unreachable", call_id=call.record.call_id, user=user.key)
            return
        first = await call.originate(targets, timeout)
        if first is None:
            log.info("call.callback_unanswered", call_id=call.record.call_id, user=user.key,
                     status=call.record.status)
            return
        entry = self.active.enter(user.key, call, first)
        try:
            await self._originate(call, self.context(call, user, user), dialled)
        finally:
            self.active.leave(entry)

    async def moved(self, call: Call, dialled: str, on_behalf_of: UserView | None,
                    party: UserView | None = None) -> None:
        """A call whose caller was moved out of another call (blind transfer): ``dialled``
        is routed on behalf of ``on_behalf_of`` (the transferor: their permissions) and the
        target's terminating features apply (forwarding, voicemail); the caller, already
        answered, hears ringback. ``party``: the moved caller's own user, if any."""
        entry = (self.active.enter(party.key, call, call.caller)
                 if party is not None and call.caller is not None else None)
        try:
            await self._route(call, self.context(call, on_behalf_of, party), dialled,
                              on_behalf_of)
        finally:
            if entry is not None:
                self.active.leave(entry)

    async def _originate(self, call: Call, ctx: CallContext, dialled: str) -> None:
        """The caller's originating chain, then ``dialled`` routed on their behalf."""
        decision = await self.registry.run_chain(Hook.ORIGINATE, ctx)
        if isinstance(decision, Continue):
            await self._route(call, ctx, dialled, ctx.originator)
        else:
            await self._carry_out(call, ctx, decision)

    async def _route(self, call: Call, ctx: CallContext, dialled: str,
                     on_behalf_of: UserView | None) -> None:
        while True:
            routed = self.host.route(call, dialled, on_behalf_of)
            if isinstance(routed, Reject):
                await self.host.fail(call, routed.status, routed.reason,
                                     retry_after=routed.retry_after, prompt=routed.prompt,
                                     user=on_behalf_of or ctx.user)
                return
            if isinstance(routed, Ring):  # a number through a trunk: no terminating features
                await self._carry_out(call, ctx, routed)
                return
            user = routed.user
            if user.key in ctx.history:
                log.info("call.loop", call_id=call.record.call_id, user=user.key,
                         history=ctx.history)
                await self.host.fail(call, 482, "Loop Detected")
                return
            ctx = self._reach(call, ctx, user)
            decision = await self._terminate(call, ctx)
            if isinstance(decision, Redirect) and len(ctx.diversions) >= MAX_REDIRECTS:
                log.info("call.too_many_redirects", call_id=call.record.call_id,
                         history=ctx.history)
                await self.host.fail(call, 482, "Too Many Redirects")
                return
            if isinstance(decision, Redirect):
                call.diversions.append(Diversion(user, decision.reason,
                                                 user.numbers[0] if user.numbers
                                                 else user.extension))
                log.info("call.redirected", call_id=call.record.call_id, by=user.key,
                         to=decision.target, reason=decision.reason)
                dialled, on_behalf_of = decision.target, user
                continue
            await self._carry_out(call, ctx, decision)
            return

    def _reach(self, call: Call, previous: CallContext, user: UserView) -> CallContext:
        """The context for the user the call reached now (their settings and devices)."""
        ctx = self.context(call, user, previous.originator)
        ctx.history = [*previous.history, user.key]
        ctx.devices = self.host.devices(user)
        return ctx

    async def _terminate(self, call: Call, ctx: CallContext) -> Decision:
        """The user's terminating chain and, when it rings, what follows the ring; returns a
        Redirect for the caller of this method to route, or a final decision (Handled when the
        call was connected or the caller left)."""
        decision = await self.registry.run_chain(Hook.TERMINATE, ctx)
        if isinstance(decision, Continue):  # nobody to ring: no registered device
            ctx.status = 480
            decision = await self.registry.run_chain(Hook.UNREACHABLE, ctx)
            return decision if not isinstance(decision, Continue) else Reject(480)
        if isinstance(decision, Ring):
            result = await self._ring_user(call, ctx, decision)
            if result.outcome is RingOutcome.ANSWERED and result.leg is not None:
                await self._connect(call, ctx, result.leg)
                return Handled()
            if result.outcome is RingOutcome.CALLER_GONE:
                return Handled()
            outcome, status = result.outcome, result.status
        elif isinstance(decision, Busy):
            outcome, status = RingOutcome.BUSY, 486
        else:
            return decision
        ctx.status = status
        after = await self.registry.run_chain(_RING_HOOKS[outcome], ctx)
        return after if not isinstance(after, Continue) else Reject(status)

    async def _ring_user(self, call: Call, ctx: CallContext, ring: Ring) -> RingResult:
        """Ring a user's targets. A target already in one of the user's calls that cannot show
        a second call itself (a number over a trunk) is not rung again: its call hears the
        call-waiting tone while the others ring."""
        waiting = list(self.active.without_call_waiting(ctx.user.key)) \
            if ctx.user is not None else []
        taken = {a.device for a in waiting}
        targets = tuple(t for t in ring.targets if t.label not in taken)
        if not targets:
            return RingResult(RingOutcome.BUSY, status=486)
        ringing = self.active.start_ringing(ctx.user.key, call) if ctx.user is not None else None
        try:
            if not waiting:
                return await call.ring(targets, ring.timeout)
            signal = asyncio.get_running_loop().create_task(self._call_waiting_tone(waiting))
            try:
                return await call.ring(targets, ring.timeout)
            finally:
                signal.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await signal
        finally:
            if ringing is not None:
                self.active.stop_ringing(ringing)

    async def _call_waiting_tone(self, entries: list[ActiveCall]) -> None:
        try:
            while True:
                for e in entries:
                    if e.leg.media is not None:
                        e.call.interrupt(e.leg, self.host.tone(ToneName.CALL_WAITING,
                                                               e.leg.media.sample_rate))
                await asyncio.sleep(CALL_WAITING_BURST)
                for e in entries:
                    e.call.resume_audio(e.leg)
                await asyncio.sleep(CALL_WAITING_PAUSE)
        finally:
            for e in entries:
                e.call.resume_audio(e.leg)

    async def _carry_out(self, call: Call, ctx: CallContext, decision: Decision) -> None:
        if isinstance(decision, Reject):
            await self.host.fail(call, decision.status, decision.reason,
                                 retry_after=decision.retry_after, prompt=decision.prompt,
                                 user=ctx.user)
        elif isinstance(decision, Ring):
            result = await call.ring(decision.targets, decision.timeout)
            if result.outcome is RingOutcome.ANSWERED and result.leg is not None:
                await self._connect(call, ctx, result.leg)
            elif result.outcome is not RingOutcome.CALLER_GONE:
                await self.host.fail(call, result.status)
        elif isinstance(decision, Redirect):  # from the originating chain: the caller's own
            await self._route(call, ctx, decision.target, ctx.user)
        elif isinstance(decision, Dial):  # a per-call code: now the call itself
            call.record.callee = decision.number  # the history shows whom, not the code
            await self._originate(call, ctx, decision.number)
        elif isinstance(decision, Busy):
            await self.host.fail(call, 486)
        elif isinstance(decision, Confirm):
            await self.confirm(call, decision.ok, decision.prompt, ctx.user)
        elif isinstance(decision, CallBack):
            await self._call_back_instead(call, ctx, decision)
        # Handled / Continue: nothing left to do

    async def _call_back_instead(self, call: Call, ctx: CallContext, decision: CallBack) -> None:
        """A device's call becomes a call-back (permanent call-back, remote office): answer
        it, announce that, hang it up, then go on as :meth:`call_back` in this same call (one
        call record: the history shows one outgoing call)."""
        caller, user = call.caller, ctx.user
        if caller is None or user is None or not await call.answer():
            return
        announcement = (self._prompt(call, decision.prompt, user)
                        if decision.prompt is not None else None)
        playback = call.play(caller, announcement if announcement is not None
                             else self._tone(call, ToneName.CONFIRMATION))
        hangup = asyncio.ensure_future(call.wait_hangup())
        try:
            await asyncio.wait((playback.done, hangup), return_when=asyncio.FIRST_COMPLETED,
                               timeout=PROMPT_LIMIT if announcement is not None
                               else self.confirm_seconds)
        finally:
            hangup.cancel()
            playback.stop()
        # let the cancelled wait finish now: it must not clear the event waiter of the ring
        # that follows (Call.next_event's finally)
        with contextlib.suppress(asyncio.CancelledError):
            await hangup
        if not caller.ended:
            caller.hangup("call-back")
        log.info("call.callback_instead", call_id=call.record.call_id, user=user.key,
                 dialled=decision.dialled, targets=[t.label for t in decision.targets])
        call.caller = None  # the device is out: the phone that answers the call-back calls
        call.record.callee = decision.dialled
        await self.call_back(call, user, decision.dialled, decision.timeout, decision.targets)

    # -- feature codes ---------------------------------------------------------------------------

    async def _dialled_code(self, call: Call, caller: UserView | None) -> bool:
        """Carry out a dialled feature code (True: the call was one). A ``*``/``#`` string is
        never a number: one that is no code gets the error tone (from a user) or 404 (from a
        trunk) and is not routed; so does a trunk call that counts as a user's only for codes."""
        dialled = call.record.callee
        mobile = self.host.digits_only(call)
        user = caller or mobile
        match = (self.registry.match(dialled, digits_only=mobile is not None)
                 if user is not None else None)
        if match is not None:
            await self._feature_code(call, self.context(call, user, user), match)
            return True
        if not is_code(dialled) and (mobile is None or caller is not None):
            return False
        log.info("feature.unknown_code", call_id=call.record.call_id, dialled=dialled,
                 user=user.key if user is not None else None)
        if user is not None:
            await self.confirm(call, False)
        else:
            await self.host.fail(call, 404)
        return True

    async def _feature_code(self, call: Call, ctx: CallContext, match: CodeMatch) -> None:
        if match.code.takes_number and not match.number:
            # dialled bare: answer, ask, and take the number from the keypad (ends with #)
            if call.caller is None or not await call.answer():
                return
            # "please enter the number, followed by the hash key" (the beep without a prompt
            # set); digits typed during the announcement count
            asking = self._prompt(call, Prompt("enter_number"), ctx.user)
            prompt = call.play(call.caller, asking if asking is not None
                               else self._tone(call, ToneName.BEEP))
            number = await call.collect_dtmf(call.caller, max_digits=32, timeout=NUMBER_TIMEOUT,
                                             inter_digit=NUMBER_INTER_DIGIT, terminators="#")
            prompt.stop()
            if not number:
                await self.confirm(call, False)
                return
            match = dataclasses.replace(match, number=number)
        decision = await self.registry.dispatch_code(match, ctx)
        # a code must be answered: a feature that passes leaves the caller with the error tone
        await self._carry_out(call, ctx, Confirm(ok=False) if isinstance(decision, Continue)
                              else decision)

    def _prompt(self, call: Call, prompt: Prompt, user: UserView | None) -> MediaPort | None:
        """``prompt`` for the caller in ``user``'s language, None when the set lacks it."""
        caller = call.caller
        rate = caller.media.sample_rate if caller is not None and caller.media is not None \
            else 8000
        try:
            return self.host.prompt(prompt, user.language if user is not None else "", rate,
                                    user.tenant_id if user is not None else None)
        except LookupError as exc:
            log.warning("call.prompt_missing", call_id=call.record.call_id, prompt=prompt.name,
                        error=str(exc))
            return None

    def _tone(self, call: Call, name: ToneName) -> MediaPort:
        caller = call.caller
        rate = caller.media.sample_rate if caller is not None and caller.media is not None \
            else 8000
        return self.host.tone(name, rate)

    async def confirm(self, call: Call, ok: bool, prompt: Prompt | None = None,
                      user: UserView | None = None) -> None:
        """Answer the caller, play ``prompt`` to its end (in ``user``'s language) or, without
        one or when the prompt set lacks it, the confirmation (or error) tone; hang up."""
        caller = call.caller
        if caller is None or not await call.answer():
            return
        announcement = self._prompt(call, prompt, user) if prompt is not None else None
        if announcement is not None:
            playback = call.play(caller, announcement)
            hangup = asyncio.ensure_future(call.wait_hangup())
            try:
                await asyncio.wait((playback.done, hangup), timeout=PROMPT_LIMIT,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                hangup.cancel()
        else:
            playback = call.play(caller, self._tone(
                call, ToneName.CONFIRMATION if ok else ToneName.ERROR))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.wait_hangup(), self.confirm_seconds)
        playback.stop()
        call.record.cause = call.record.cause or ("feature code" if ok else "feature code failed")
        call.hangup()

    # -- connected -------------------------------------------------------------------------------

    async def _connect(self, call: Call, ctx: CallContext, callee: Leg) -> None:
        """Bridge and run the call (the callee user is in it until it ends); digits on a user's
        leg go to that user's on_dtmf chain."""
        entry = (self.active.enter(ctx.user.key, call, callee) if ctx.user is not None
                 else None)
        try:
            await self._run_connected(call, ctx, callee)
        finally:
            if entry is not None:
                self.active.leave(entry)

    def _incall(self, call: Call, ctx: CallContext, callee: Leg) -> InCallDispatcher | None:
        """The in-call code dispatcher of a connected call: it watches the legs of users (a
        device of ours; not a trunk's or an anonymous caller's leg)."""
        if not self.incall_codes:
            return None
        users: dict[Leg, UserView] = {}
        target = callee.target
        if ctx.user is not None and target is not None and target.kind != "number":
            users[callee] = ctx.user
        if call.caller is not None and ctx.originator is not None and (
                call.caller.direction == "inbound" or call.caller.target is None
                or call.caller.target.kind != "number"):
            users[call.caller] = ctx.originator
        if not users:
            return None
        dispatcher = InCallDispatcher(call, users, codes=self.incall_codes, host=self.host)
        dispatcher.install()
        return dispatcher

    async def _run_connected(self, call: Call, ctx: CallContext, callee: Leg) -> None:
        incall = self._incall(call, ctx, callee)
        try:
            await self._run_connected_digits(call, ctx, callee)
        finally:
            if incall is not None:
                incall.uninstall()

    async def _run_connected_digits(self, call: Call, ctx: CallContext, callee: Leg) -> None:
        if not self.registry.chain(Hook.DTMF):
            await self.host.connect(call, callee)  # no feature wants digits: no task per digit
            return
        users: dict[Leg, UserView | None] = {callee: ctx.user}
        if call.caller is not None:
            users[call.caller] = ctx.originator
        buffers: dict[Leg, tuple[str, float]] = {}
        loop = asyncio.get_running_loop()

        def on_digit(leg: Leg, digit: str) -> None:
            user = users.get(leg)
            if user is None or call.tasks is None:
                return
            digits, last = buffers.get(leg, ("", 0.0))
            now = loop.time()
            digits = (digits if now - last <= DTMF_SEQUENCE_GAP else "") + digit
            buffers[leg] = (digits, now)
            call.tasks.create_task(self._dtmf(ctx, user, leg, digits, buffers))

        call.on_digit = on_digit
        try:
            await self.host.connect(call, callee)
        finally:
            call.on_digit = None

    async def _dtmf(self, connected: CallContext, user: UserView, leg: Leg, digits: str,
                    buffers: dict[Leg, tuple[str, float]]) -> None:
        call = connected.call
        assert call is not None
        ctx = self.context(call, user, connected.originator)
        ctx.digits = digits
        decision = await self.registry.run_chain(Hook.DTMF, ctx)
        if isinstance(decision, Continue):
            return
        buffers.pop(leg, None)  # a feature took the sequence
        if isinstance(decision, Reject):
            call.hangup()

