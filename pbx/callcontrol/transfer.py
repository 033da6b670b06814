"""Transfer: blind transfer, consultation and attended transfer, hold — the call-control
functions (REFER, the in-call codes of :mod:`features.transfer` and later the REST API call
them).

* :func:`transfer_blind` — the other party of ``leg``'s bridge is moved into a new call to the
  target (routed on behalf of ``leg``'s user: their permissions; the target's terminating
  features apply: forwarding, voicemail) and hears ringback; ``leg`` drops out (the caller
  hangs it up: ``##`` at once, a REFER after the final NOTIFY). In-call ``##`` + number.
* :func:`consult` — consultation ("Rückfrage", in-call ``*2`` + number): the other party is put
  on hold with music, the user hears ringback and then talks to the consulted party. ``*2``
  again, or hanging up, completes the transfer (the first and the consulted party are
  connected, also while the consulted party still rings: the first party then hears ringback);
  the consulted party hanging up (or not answering) brings the user back to the first party.
  :meth:`Consultation.complete` and :meth:`Consultation.cancel` are the API's verbs.
* :func:`attended_transfer` — connect the other parties of two legs (REFER with Replaces from
  a phone that held one call and consulted in another).
* :func:`toggle_hold` — the other party on hold (music) or back (in-call ``*4``);
  :func:`set_hold` the same with the state named (the REST API's hold and resume).
* A blind transfer that fails (the target busy, not answering, rejecting) is **recalled**:
  the transferor's devices ring again while the party keeps hearing music on hold; when the
  transferor answers, the two talk again (:func:`recall`; :data:`RECALL` tells the host not
  to play the failure to the party).

The consultation is a call of its own (the first party is moved into it, so it is never hung
up with the user's call) run under its own supervisor by the host (the B2BUA:
:meth:`pbx.b2bua.B2bua.moved_call`). No SIP here: the REFER side is :mod:`pbx.legs.refer`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

import structlog

from pbx.callcontrol.call import Call
from pbx.callcontrol.context import UserView
from pbx.callcontrol.decisions import Reject, Ring
from pbx.callcontrol.events import LegEnded, LegFailed, LegHeld, LegResumed
from pbx.callcontrol.incall import InCallDispatcher
from pbx.callcontrol.legs import Leg
from pbx.callcontrol.media import Bridge
from pbx.callcontrol.script import CallScript, Routed

__all__ = [
    "CONSULTATION",
    "CONSULT_RING_SECONDS",
    "RECALL",
    "RECALL_RING_SECONDS",
    "CallStateError",
    "Consultation",
    "TransferError",
    "TransferHost",
    "attended_transfer",
    "bridge_of",
    "consult",
    "is_held",
    "recall",
    "set_hold",
    "toggle_hold",
    "transfer_blind",
    "users_of",
]

log = structlog.get_logger("pbx.callcontrol")

#: How long a consulted party rings before the user is back with the first party.
CONSULT_RING_SECONDS = 30.0
#: ``call.per_call`` key of a call's running consultation.
CONSULTATION: str = "transfer.consultation"
#: ``call.per_call`` key of ``*4``'s state.
HELD = "transfer.held"
#: ``call.per_call`` key of a blind transfer's moved call whose failure is recalled: the
#: host does not tell the (answered) party the failure, the transferor is rung back.
RECALL = "transfer.recall"
#: How long the transferor's devices ring when a failed blind transfer is recalled.
RECALL_RING_SECONDS = 30.0

#: A transfer's progress as SIP would say it: (status, reason) — 100 first, then the final.
Progress = Callable[[int, str], None]


class TransferError(Exception):
    """The transfer cannot be done (the leg is in no bridge, the target is unknown)."""


class CallStateError(TransferError):
    """The call's state does not allow the operation (ringing, in a consultation, over)."""


class TransferHost(Protocol):
    """What transfers need of the PBX (the B2BUA)."""

    @property
    def script(self) -> CallScript: ...

    def moved_call(self, first: Call, party: Leg, dialled: str,
                   script: Callable[[Call], Coroutine[Any, Any, None]], *,
                   user: UserView | None = None, consultation: bool = False) -> Call: ...

    def route(self, call: Call, dialled: str, on_behalf_of: UserView | None) -> (
            Routed | Ring | Reject): ...

    def devices(self, user: UserView) -> list[Any]: ...


def is_held(call: Call) -> bool:
    """Whether the user of ``call`` holds its other party now (:func:`toggle_hold`,
    :func:`set_hold`)."""
    return bool(call.per_call.get(HELD, False))


def bridge_of(call: Call, leg: Leg) -> Bridge | None:
    """The open two-party bridge ``leg`` is in."""
    for br in call.bridges:
        if leg in (br.a, br.b) and not br.closed:
            return br
    return None


def users_of(call: Call) -> Mapping[Leg, UserView]:
    """The users' legs of ``call`` (what its in-call dispatcher watches)."""
    dispatcher = call.per_call.get(InCallDispatcher.KEY)
    return dispatcher.users if isinstance(dispatcher, InCallDispatcher) else {}


def _report(call: Call, progress: Progress) -> None:
    """Tell ``progress`` how the new call goes: 200 when it is answered, else its final
    status when it ends."""
    inner = call.on_record
    told = False

    def hook(record: Any) -> None:
        nonlocal told
        if inner is not None:
            inner(record)
        if told:
            return
        if record.answered is not None:
            told = True
            progress(200, "OK")
        elif record.ended is not None:
            told = True
            status = record.status if record.status and record.status >= 300 else 487
            progress(status, "Request Terminated" if status == 487 else "Failed")

    call.on_record = hook


def transfer_blind(call: Call, leg: Leg, target: str, *, host: TransferHost,
                   progress: Progress | None = None) -> Call:
    """Move the other party of ``leg``'s bridge in ``call`` into a new call to ``target``
    (see the module docstring); returns that call. ``leg`` stays up, alone: the caller hangs
    it up. ``progress`` hears how the new call goes (the REFER's NOTIFYs)."""
    bridge = bridge_of(call, leg)
    if bridge is None:
        raise TransferError(f"{leg} is in no bridge of {call}")
    party = bridge.other(leg)
    users = users_of(call)
    transferor, party_user = users.get(leg), users.get(party)
    call.unbridge(bridge)
    call.record.cause = call.record.cause or "transferred"
    log.info("transfer.blind", call_id=call.record.call_id, transferor=leg.id, party=party.id,
             target=target)
    moved = host.moved_call(
        call, party, target,
        lambda c: _moved(c, host, target, transferor, party_user), user=party_user)
    if progress is not None:
        progress(100, "Trying")
        _report(moved, progress)
    return moved


async def _moved(call: Call, host: TransferHost, target: str, transferor: UserView | None,
                 party_user: UserView | None) -> None:
    """The moved call's script: the target as routed; a failure is recalled."""
    if transferor is not None:
        call.per_call[RECALL] = True
    await host.script.moved(call, target, transferor, party_user)
    party = call.caller
    if transferor is None or call.record.answered is not None or party is None or \
            party.ended or call.released:
        return
    await recall(call, party, transferor, host=host)


async def recall(call: Call, party: Leg, transferor: UserView, *, host: TransferHost,
                 ring_seconds: float = RECALL_RING_SECONDS) -> Leg | None:
    """Ring ``transferor``'s devices while ``party`` (the moved call's caller) hears music on
    hold; when one answers the two talk until one hangs up. Returns the leg that answered
    (None: nobody did; the host then ends the call)."""
    call.per_call.pop(RECALL, None)
    devices = list(host.devices(transferor))
    log.info("transfer.recall", call_id=call.record.call_id, party=party.id,
             transferor=transferor.key, status=call.record.status, devices=len(devices))
    if not devices:
        return None
    moh = _play(call, party, call.hold_source)
    try:
        result = await call.ring(devices, ring_seconds, early_media=False)
    finally:
        _stop(moh)
    leg = result.leg
    if leg is None or leg.ended or party.ended:
        return None
    call.mark_answered(leg)
    log.info("transfer.recalled", call_id=call.record.call_id, leg=leg.id)
    await call.wait_hangup(call.bridge(party, leg))
    return leg


def attended_transfer(first: Call, leg: Leg, second: Call, other_leg: Leg) -> Bridge:
    """Connect the other party of ``leg`` (in ``first``) with the other party of
    ``other_leg`` (in ``second``): the first party moves into ``second`` (REFER with
    Replaces: the phone consulted in ``second`` and now hands both over). ``leg`` and
    ``other_leg`` stay up, alone: the caller hangs them up."""
    a_bridge, b_bridge = bridge_of(first, leg), bridge_of(second, other_leg)
    if a_bridge is None or b_bridge is None:
        raise TransferError("both legs must be in a bridge")
    party = a_bridge.other(leg)
    first.unbridge(a_bridge)
    first.record.cause = first.record.cause or "transferred"
    log.info("transfer.attended", first=first.record.call_id, second=second.record.call_id,
             party=party.id)
    return second.replace(b_bridge, other_leg, party)


def toggle_hold(call: Call, leg: Leg) -> bool:
    """Put the other party of ``leg``'s bridge on hold (music) or take it back; True: it is
    held now."""
    bridge = bridge_of(call, leg)
    if bridge is None:
        return False
    other = bridge.other(leg)
    held = not call.per_call.get(HELD, False)
    if held:
        call.hold(other)
    else:
        call.resume(other)
    call.per_call[HELD] = held
    return held


def set_hold(call: Call, leg: Leg, held: bool) -> None:
    """Put the other party of ``leg``'s bridge on hold (music) or take it back (idempotent),
    and tell it so (a SIP party gets a re-INVITE with ``sendonly``, then ``sendrecv``:
    :meth:`Leg.signal_hold`); :class:`CallStateError` when ``leg`` is in no bridge (ringing,
    consulting, over)."""
    bridge = bridge_of(call, leg)
    if bridge is None or leg.ended:
        raise CallStateError(f"{leg} is in no bridge of {call}")
    other = bridge.other(leg)
    changed = bool(call.per_call.get(HELD, False)) != held
    if held:
        call.hold(other)
    else:
        call.resume(other)
    call.per_call[HELD] = held
    signalled = other.signal_hold(held) if changed else False
    log.info("transfer.hold" if held else "transfer.resume", call_id=call.record.call_id,
             leg=leg.id, party=other.id, signalled=signalled)


# ------------------------------------------------------------------------------ consultation


class Consultation:
    """One consultation (see the module docstring): ``user_leg`` in ``first`` consults
    ``number`` while ``party`` (moved into the consultation's own call) holds."""

    def __init__(self, first: Call, user_leg: Leg, party: Leg, number: str, *,
                 host: TransferHost, user: UserView | None,
                 ring_seconds: float = CONSULT_RING_SECONDS) -> None:
        self.first, self.user_leg, self.party, self.number = first, user_leg, party, number
        self.host, self.user, self.ring_seconds = host, user, ring_seconds
        self.call: Call | None = None
        self.consulted: Leg | None = None
        self._complete = asyncio.Event()
        self._cancel = asyncio.Event()
        #: "ringing", "talking", "transferred", "back", "over"
        self.state = "starting"

    def complete(self) -> None:
        """Connect the first and the consulted party; the user drops out."""
        self._complete.set()

    def cancel(self) -> None:
        """Back to the first party (the consulted party is hung up)."""
        self._cancel.set()

    def first_call_ended(self) -> None:
        """The user hung up: that completes the transfer."""
        self._complete.set()

    async def run(self, call: Call) -> None:
        """The consultation call's script."""
        self.call = call
        try:
            await self._run(call)
        finally:
            if self.first.per_call.get(CONSULTATION) is self:
                del self.first.per_call[CONSULTATION]
            if self.state not in ("transferred", "back"):
                self.state = "over"

    async def _targets(self, call: Call) -> list[Any]:
        routed = self.host.route(call, self.number, self.user)
        if isinstance(routed, Routed):
            return list(self.host.devices(routed.user))
        if isinstance(routed, Ring):
            return list(routed.targets)
        return []

    async def _run(self, call: Call) -> None:
        party, user_leg = self.party, self.user_leg
        moh = _play(call, party, call.hold_source)
        ringback = _play(call, user_leg, call.ringback_source)
        call.dtmf_guarded.add(user_leg)  # its digits are the first call's dispatcher's
        targets = await self._targets(call)
        if not targets:
            _stop(ringback)
            self._back(moh)
            return
        self.state = "ringing"
        ring = asyncio.ensure_future(call.ring(targets, self.ring_seconds, early_media=False))
        decided = asyncio.ensure_future(self._complete.wait())
        cancelled = asyncio.ensure_future(self._cancel.wait())
        try:
            await asyncio.wait((ring, decided, cancelled), return_when=asyncio.FIRST_COMPLETED)
            if cancelled.done() and not ring.done():
                ring.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ring
                for leg in call.legs:
                    if leg is not party and not leg.ended:
                        leg.hangup()
                _stop(ringback)
                self._back(moh)
                return
            if decided.done() and not ring.done():
                # transfer while the consulted party rings: the first party hears ringback
                _stop(ringback)
                _stop(moh)
                ringback = _play(call, party, call.ringback_source)
                self._drop_user()
                result = await ring
                _stop(ringback)
                if result.leg is None or result.leg.ended:
                    return  # nobody answered: the first party is hung up with this call
                await self._transferred(call, result.leg)
                return
            result = await ring
        finally:
            for waiter in (decided, cancelled):
                waiter.cancel()
        _stop(ringback)
        if result.leg is None:
            self._back(moh)
            return
        await self._talk(call, result.leg, moh)

    async def _talk(self, call: Call, consulted: Leg, moh: Any) -> None:
        self.consulted = consulted
        self.state = "talking"
        call.mark_answered(consulted)
        bridge = call.bridge(self.user_leg, consulted)
        while True:
            # the user hanging up completes the transfer (whether or not the first call's
            # end has been seen yet)
            if self._complete.is_set() or self.user_leg.ended:
                call.unbridge(bridge)
                _stop(moh)
                self._drop_user()
                await self._transferred(call, consulted)
                return
            if self._cancel.is_set():
                call.unbridge(bridge)
                consulted.hangup()
                self._back(moh)
                return
            event = await _next(call, self._complete, self._cancel)
            if event is None:
                continue
            if isinstance(event, LegEnded | LegFailed):
                if event.leg is consulted:
                    call.unbridge(bridge)
                    self._back(moh)
                    return
                if event.leg is self.party:  # the first party left: user and consulted stay
                    _stop(moh)
                    await _talk_on(call, bridge, self)
                    return
            elif isinstance(event, LegHeld | LegResumed):
                event.leg.held = isinstance(event, LegHeld)
                bridge.rebuild()

    async def _transferred(self, call: Call, consulted: Leg) -> None:
        self.state = "transferred"
        call.caller = self.party
        call.dtmf_guarded.discard(self.user_leg)
        bridge = call.bridge(self.party, consulted)
        call.mark_answered(consulted)
        log.info("transfer.completed", call_id=call.record.call_id,
                 first=self.first.record.call_id)
        await call.wait_hangup(bridge)

    def _drop_user(self) -> None:
        if not self.user_leg.ended:
            self.user_leg.hangup()

    def _back(self, moh: Any) -> None:
        """The user talks to the first party again (the party returns to the first call)."""
        _stop(moh)
        assert self.call is not None
        self.call.dtmf_guarded.discard(self.user_leg)
        if self.user_leg.ended or self.party.ended:
            return  # the first call is over: the party is hung up with this call
        self.state = "back"
        self.first.adopt(self.party)
        self.first.bridge(self.user_leg, self.party)
        log.info("transfer.consultation_back", call_id=self.first.record.call_id)


async def _talk_on(call: Call, bridge: Bridge, consultation: Consultation) -> None:
    """The first party left during a consultation: the user and the consulted party talk
    until one of them hangs up (or the user's call ends)."""
    while not consultation.user_leg.ended:
        event = await _next(call, consultation._complete, consultation._cancel)
        if isinstance(event, LegEnded | LegFailed) and event.leg in (bridge.a, bridge.b):
            break
        if consultation._cancel.is_set():
            break
    call.unbridge(bridge)
    for leg in (bridge.a, bridge.b):
        if not leg.ended:
            leg.hangup()


async def _next(call: Call, *signals: asyncio.Event) -> Any:
    """The call's next event, or None when one of ``signals`` is set first."""
    event_task = asyncio.ensure_future(call.next_event())
    waiters = [asyncio.ensure_future(s.wait()) for s in signals]
    try:
        await asyncio.wait((event_task, *waiters), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    if event_task.done():
        return event_task.result()
    event_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await event_task
    return None


def _play(call: Call, leg: Leg, source: Callable[[int], Any] | None) -> Any:
    if source is None or leg.media is None or leg.ended:
        return None
    return call.play(leg, source(leg.media.sample_rate))


def _stop(playback: Any) -> None:
    if playback is not None:
        playback.stop()


def consult(call: Call, leg: Leg, number: str, *, host: TransferHost) -> Consultation:
    """Start a consultation from ``leg`` in ``call`` to ``number`` (see the module
    docstring); the returned :class:`Consultation` completes or cancels it."""
    if call.per_call.get(CONSULTATION) is not None:
        raise TransferError(f"{call} is consulting already")
    bridge = bridge_of(call, leg)
    if bridge is None:
        raise TransferError(f"{leg} is in no bridge of {call}")
    party = bridge.other(leg)
    users = users_of(call)
    consultation = Consultation(call, leg, party, number, host=host, user=users.get(leg))
    call.unbridge(bridge)
    call.per_call[CONSULTATION] = consultation
    dispatcher = call.per_call.get(InCallDispatcher.KEY)
    if isinstance(dispatcher, InCallDispatcher):
        dispatcher.on_end.append(consultation.first_call_ended)
    log.info("transfer.consult", call_id=call.record.call_id, user_leg=leg.id, party=party.id,
             number=number)
    host.moved_call(call, party, number, consultation.run, user=users.get(leg),
                    consultation=True)
    return consultation
