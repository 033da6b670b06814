"""In-call codes: digits a user types during a connected call (``##`` + number, ``*2``, ``*3``,
``*4`` — FEATURE_CODES.md) recognised on the user's own leg and dispatched to a handler.

Theory of operation
-------------------
The codes are data: the ``[incall.ACTION]`` section of ``pbx/feature_codes.toml`` (``code``,
``argument = "number"`` when a number follows, ``description``), read by :func:`incall_codes`.
They are outside the dialled-code table and its rules (``##`` has no digit, ``*2`` + number
starts like ``*21``).

:class:`InCallRecognizer` is the sans-IO core (explicit ``now``): digits go in, :class:`Pass`
(digits for the other party) and :class:`CodeDialled` (an action and its number) come out. A
``*`` or ``#`` that may start a code is held back until the next digit shows whether it does;
a code's digits, and the number after it, never reach the other party. A number ends with
``#`` or after :data:`INTER_DIGIT` seconds without a digit (a code with no number at all,
e.g. ``*2`` alone to complete a consultation, is dispatched with ``""`` after that pause); a
``*`` while a number is typed abandons the code. A held ``*``/``#`` that starts no code is
passed on after :data:`PREFIX_TIMEOUT` (or with the digit that shows it starts none).

:class:`InCallDispatcher` drives one recognizer per watched leg in a call: call control calls
:meth:`InCallDispatcher.feed` for each digit of the call (``Call.digit_guard``); digits of a
watched leg are taken (the call does not relay them itself): the dispatcher passes on what is
no code (``send_dtmf`` on the other leg of the bridge) and runs the registered handler of a
code as a task of the call. Which legs are watched is decided by the call script: the legs of
users (a device of ours), never a trunk's or an anonymous caller's. A bridge with a watched
leg never forwards that leg's digits itself: a packet relay drops (and only taps) its RFC 4733
events; a leg without telephone-event (in-band digits) or an SRTP leg is bridged through
decoded audio with its DTMF tones muted and an in-band detector on it. So whether the leg
sends RFC 4733, INFO or in-band tones, only what the dispatcher passes reaches the other
party.

Registering an action (the public API)
--------------------------------------
A feature carries out an in-call action by registering a handler under the action's name::

    from pbx.callcontrol.incall import InCallContext, register_incall_action

    async def add_participant(ctx: InCallContext, number: str) -> None:
        ...  # ctx.call, ctx.leg (the user's), ctx.other / ctx.bridge, ctx.user, ctx.host

    register_incall_action("conference_add", add_participant)

``number`` is what was dialled after the code (``""`` for a code without argument, or when the
user typed none). A handler runs as a task of the call: it must not read the call's events
(the connected call's loop does); an exception is logged and does not end the call. Names in
the shipped table: ``blind_transfer`` (``##``), ``attended_transfer`` (``*2``),
``conference_add`` (``*3``), ``toggle_hold`` (``*4``), ``voicemail_transfer`` (``*55``,
:mod:`features.voicemail`). A code whose action has no handler is
swallowed (its digits still do not leak) and logged.
"""

from __future__ import annotations

import asyncio
import functools
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from pbx.callcontrol.context import UserView
from pbx.callcontrol.legs import Leg
from pbx.callcontrol.media import Bridge
from pbx.feature_codes import INCALL_SECTION, SEED_PATH
from sipcore.enums import FastEnum

if TYPE_CHECKING:
    from pbx.callcontrol.call import Call

__all__ = [
    "INTER_DIGIT",
    "PREFIX_TIMEOUT",
    "CodeDialled",
    "InCallCode",
    "InCallContext",
    "InCallDispatcher",
    "InCallHandler",
    "InCallRecognizer",
    "Pass",
    "incall_action",
    "incall_codes",
    "parse_incall_codes",
    "register_incall_action",
    "unregister_incall_action",
]

log = structlog.get_logger("pbx.callcontrol")

#: Seconds between the digits of a number after a code (and after a bare ``*2``).
INTER_DIGIT = 3.0
#: Seconds a held ``*``/``#`` waits for the digit that shows whether it starts a code.
PREFIX_TIMEOUT = 1.5

_NUMBER_DIGITS = frozenset("0123456789")


# -------------------------------------------------------------------------------- the codes


@dataclass(frozen=True, slots=True)
class InCallCode:
    """One in-call action's code: ``action`` names the handler, ``takes_number`` whether a
    number follows the code."""

    action: str
    code: str
    takes_number: bool = False
    description: str = ""


def parse_incall_codes(text: str, source: str = "feature codes") -> tuple[InCallCode, ...]:
    """The ``[incall.ACTION]`` tables of a feature-code TOML file (ValueError when a code is
    not 2+ characters of digits, ``*`` and ``#`` starting with ``*``/``#``, or two actions
    share a code, or one code starts another)."""
    data = tomllib.loads(text).get(INCALL_SECTION, {})
    codes: list[InCallCode] = []
    for action, fields in data.items():
        if not isinstance(fields, dict) or not isinstance(fields.get("code"), str):
            raise ValueError(f"{source}: {INCALL_SECTION}.{action} needs a code")
        code = fields["code"]
        if len(code) < 2 or code[0] not in "*#" or not set(code) <= set("0123456789*#"):
            raise ValueError(f"{source}: {INCALL_SECTION}.{action}: {code!r} is no in-call code")
        argument = fields.get("argument", "")
        if argument not in ("", "number"):
            raise ValueError(f"{source}: {INCALL_SECTION}.{action}: argument must be number")
        codes.append(InCallCode(action, code, argument == "number",
                                str(fields.get("description", ""))))
    for a in codes:
        for b in codes:
            if a is not b and b.code.startswith(a.code):
                raise ValueError(f"{source}: in-call code {a.code} ({a.action}) starts "
                                 f"{b.code} ({b.action})")
    return tuple(codes)


@functools.cache
def incall_codes(path: Path = SEED_PATH) -> tuple[InCallCode, ...]:
    """The in-call codes shipped in ``pbx/feature_codes.toml`` (read once)."""
    return parse_incall_codes(path.read_text(encoding="utf-8"), path.name)


# -------------------------------------------------------------------------- the recogniser


@dataclass(frozen=True, slots=True)
class Pass:
    """Digits that are no code: send them on to the other party."""

    digits: str


@dataclass(frozen=True, slots=True)
class CodeDialled:
    """A code was dialled: run ``code.action`` with ``number``."""

    code: InCallCode
    number: str


Output = Pass | CodeDialled


class _Phase(FastEnum):
    IDLE = "idle"  # nothing held
    PREFIX = "prefix"  # holding digits that may start a code
    NUMBER = "number"  # a code was recognised, its number is being typed


class InCallRecognizer:
    """Recognises in-call codes in one leg's digits (see the module docstring); sans-IO:
    :meth:`feed` and :meth:`poll` take the time, :attr:`deadline` says when to poll."""

    def __init__(self, codes: Iterable[InCallCode], *, inter_digit: float = INTER_DIGIT,
                 prefix_timeout: float = PREFIX_TIMEOUT) -> None:
        self.codes = {c.code: c for c in codes}
        self._prefixes = {c.code[:n] for c in self.codes.values() for n in range(1, len(c.code))}
        self.inter_digit = inter_digit
        self.prefix_timeout = prefix_timeout
        self.phase = _Phase.IDLE
        self.held = ""
        self.code: InCallCode | None = None
        self.number = ""
        #: When :meth:`poll` has something to do (None: nothing pending).
        self.deadline: float | None = None

    def feed(self, digit: str, now: float) -> list[Output]:
        """One digit from the leg; what it produces."""
        if self.phase is _Phase.NUMBER:
            return self._number_digit(digit, now)
        out: list[Output] = []
        held = self.held + digit
        code = self.codes.get(held)
        if code is not None:
            self.held = ""
            return self._recognised(code, now)
        if held in self._prefixes:
            self.phase, self.held, self.deadline = _Phase.PREFIX, held, now + self.prefix_timeout
            return out
        # no code starts so: pass what was held; the new digit may start one itself
        if self.held:
            out.append(Pass(self.held))
            self._reset()
            out.extend(self.feed(digit, now))
            return out
        out.append(Pass(digit))
        return out

    def poll(self, now: float) -> list[Output]:
        """What a pause produces: a held prefix goes to the other party, a number is
        complete."""
        if self.deadline is None or now < self.deadline:
            return []
        if self.phase is _Phase.PREFIX:
            held = self.held
            self._reset()
            return [Pass(held)]
        if self.phase is _Phase.NUMBER and self.code is not None:
            code, number = self.code, self.number
            self._reset()
            return [CodeDialled(code, number)]
        self._reset()
        return []

    def _recognised(self, code: InCallCode, now: float) -> list[Output]:
        if not code.takes_number:
            self._reset()
            return [CodeDialled(code, "")]
        self.phase, self.code, self.number = _Phase.NUMBER, code, ""
        self.deadline = now + self.inter_digit
        return []

    def _number_digit(self, digit: str, now: float) -> list[Output]:
        assert self.code is not None
        if digit in _NUMBER_DIGITS:
            self.number += digit
            self.deadline = now + self.inter_digit
            return []
        code, number = self.code, self.number
        self._reset()
        if digit == "#":  # the number is complete
            return [CodeDialled(code, number)]
        return []  # * (or A-D): the code is abandoned, nothing reaches the other party

    def _reset(self) -> None:
        self.phase, self.held, self.code, self.number, self.deadline = (
            _Phase.IDLE, "", None, "", None)


# ------------------------------------------------------------------------------ the actions


@dataclass(frozen=True, slots=True)
class InCallContext:
    """What an in-call action's handler gets: the ``call``, the user's own ``leg`` (where the
    code was typed), the ``user``, the ``bridge`` that leg is in and the ``other`` leg of it
    (None while the leg is in no two-party bridge), and ``host``: the PBX side that runs
    calls (the B2BUA: :class:`pbx.callcontrol.ScriptHost`, plus what the transfer features
    use of it)."""

    call: Call
    leg: Leg
    user: UserView
    bridge: Bridge | None
    other: Leg | None
    host: Any = None
    #: per-call state an action keeps between its codes (``*4`` on/off, a consultation)
    state: dict[str, Any] = field(default_factory=dict)


InCallHandler = Callable[[InCallContext, str], Awaitable[None]]

_ACTIONS: dict[str, InCallHandler] = {}


def register_incall_action(name: str, handler: InCallHandler) -> None:
    """Carry out the in-call action ``name`` (``[incall.NAME]`` in the code table) with
    ``handler(ctx, number)``; a second registration replaces the first."""
    _ACTIONS[name] = handler


def unregister_incall_action(name: str) -> None:
    """Forget the handler of ``name`` (tests)."""
    _ACTIONS.pop(name, None)


def incall_action(name: str) -> InCallHandler | None:
    """The handler registered for ``name`` (None: none)."""
    return _ACTIONS.get(name)


# --------------------------------------------------------------------------- the dispatcher


class InCallDispatcher:
    """Watches the digits of ``users``' legs in ``call`` (leg → its user) and dispatches
    their in-call codes (see the module docstring). Install with :meth:`install` before the
    legs are bridged; the call calls :meth:`feed` for every digit. While installed it is
    ``call.per_call[InCallDispatcher.KEY]`` (actions find the users' legs there); ``on_end``
    callbacks run when it is uninstalled (the connected call is over)."""

    KEY = "incall.dispatcher"

    def __init__(self, call: Call, users: Mapping[Leg, UserView], *,
                 codes: Iterable[InCallCode] | None = None, host: Any = None,
                 inter_digit: float = INTER_DIGIT,
                 prefix_timeout: float = PREFIX_TIMEOUT) -> None:
        self.call = call
        self.users = dict(users)
        self.host = host
        self._codes = tuple(incall_codes() if codes is None else codes)
        self._inter_digit, self._prefix_timeout = inter_digit, prefix_timeout
        self._recognizers = {leg: self._recognizer() for leg in self.users}
        self._timers: dict[Leg, asyncio.TimerHandle] = {}
        #: action state shared by the handlers of this call (see InCallContext.state)
        self.state: dict[str, Any] = {}
        #: codes dispatched (action, number), in order (logs, tests)
        self.dispatched: list[tuple[str, str]] = []
        #: called once when the connected call is over (:meth:`uninstall`)
        self.on_end: list[Callable[[], None]] = []

    def _recognizer(self) -> InCallRecognizer:
        return InCallRecognizer(self._codes, inter_digit=self._inter_digit,
                                prefix_timeout=self._prefix_timeout)

    def install(self) -> None:
        """Let the call route its digits here and keep its watched legs' DTMF from the
        other party (decoded bridges, in-band tones muted)."""
        self.call.digit_guard = self.feed
        self.call.dtmf_guarded.update(self.users)
        self.call.per_call[self.KEY] = self

    def uninstall(self) -> None:
        """Stop watching (pending timers cancelled; held digits are dropped)."""
        if self.call.digit_guard == self.feed:
            self.call.digit_guard = None
        for leg in self.users:
            self.call.dtmf_guarded.discard(leg)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self.call.per_call.get(self.KEY) is self:
            del self.call.per_call[self.KEY]
        callbacks, self.on_end = self.on_end, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("incall.on_end_failed", call_id=self.call.record.call_id)

    def watch(self, leg: Leg, user: UserView) -> None:
        """Watch one more leg (a leg that joined the call: a transfer target who is a user)."""
        self.users[leg] = user
        self._recognizers[leg] = self._recognizer()
        self.call.dtmf_guarded.add(leg)

    def feed(self, leg: Leg, digit: str) -> bool:
        """A digit of ``leg``; True when the dispatcher took it (the leg is watched)."""
        recognizer = self._recognizers.get(leg)
        if recognizer is None:
            return False
        loop = asyncio.get_running_loop()
        self._carry_out(leg, recognizer.feed(digit, loop.time()))
        self._arm(leg, recognizer)
        return True

    def _arm(self, leg: Leg, recognizer: InCallRecognizer) -> None:
        timer = self._timers.pop(leg, None)
        if timer is not None:
            timer.cancel()
        if recognizer.deadline is not None:
            loop = asyncio.get_running_loop()
            self._timers[leg] = loop.call_at(recognizer.deadline, self._expire, leg)

    def _expire(self, leg: Leg) -> None:
        self._timers.pop(leg, None)
        recognizer = self._recognizers.get(leg)
        if recognizer is None or self.call.released:
            return
        self._carry_out(leg, recognizer.poll(asyncio.get_running_loop().time()))
        self._arm(leg, recognizer)

    def bridge_of(self, leg: Leg) -> Bridge | None:
        """The open two-party bridge ``leg`` is in."""
        for br in self.call.bridges:
            if leg in (br.a, br.b) and not br.closed:
                return br
        return None

    def _carry_out(self, leg: Leg, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Pass):
                bridge = self.bridge_of(leg)
                if bridge is not None:
                    try:
                        bridge.other(leg).send_dtmf(out.digits)
                    except Exception:
                        log.warning("incall.pass_failed", call_id=self.call.record.call_id,
                                    leg=leg.id, exc_info=True)
            else:
                self._dispatch(leg, out)

    def _dispatch(self, leg: Leg, dialled: CodeDialled) -> None:
        action = dialled.code.action
        handler = incall_action(action)
        call = self.call
        log.info("incall.code", call_id=call.record.call_id, leg=leg.id, action=action,
                 number=dialled.number, handled=handler is not None)
        self.dispatched.append((action, dialled.number))
        if handler is None or call.tasks is None:
            return
        bridge = self.bridge_of(leg)
        ctx = InCallContext(call=call, leg=leg, user=self.users[leg], bridge=bridge,
                            other=bridge.other(leg) if bridge is not None else None,
                            host=self.host, state=self.state)
        call.tasks.create_task(self._run(handler, ctx, dialled.number))

    async def _run(self, handler: InCallHandler, ctx: InCallContext, number: str) -> None:
        try:
            await handler(ctx, number)
        except Exception:
            log.exception("incall.action_failed", call_id=ctx.call.record.call_id,
                          leg=ctx.leg.id)
