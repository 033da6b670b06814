"""Who is on the phone: the calls each user is in now ("user busy", call waiting).

A user is *in* a call from the moment they place it (their device is taken) and, as a callee,
from the answer; they leave it when the call ends. A call *rings* a user while their devices
ring for it (pickup ``*97``/``*98`` looks here). Features read it through
:attr:`~pbx.callcontrol.context.CallContext.active` — never by asking SIP — and the call script
uses it to signal a waiting call to a leg that cannot show one itself (the mobile over a trunk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pbx.callcontrol.call import Call
    from pbx.callcontrol.legs import Leg

__all__ = ["ActiveCall", "ActiveCalls", "RingingCall", "shows_call_waiting"]


@dataclass(eq=False, slots=True)
class ActiveCall:
    """``user`` (a user key) is in ``call`` on ``leg`` (their side of it)."""

    user: str
    call: Call
    leg: Leg

    @property
    def device(self) -> str:
        """The user's device (or number) in this call: the leg's target label, else its party."""
        target = self.leg.target
        return target.label if target is not None else self.leg.party


@dataclass(eq=False, slots=True)
class RingingCall:
    """``call`` rings ``user`` (a user key) now."""

    user: str
    call: Call


_E = TypeVar("_E", ActiveCall, RingingCall)


def shows_call_waiting(entry: ActiveCall) -> bool:
    """A SIP device shows a second call itself; a number over a trunk (the mobile) cannot."""
    target = entry.leg.target
    return target is None or target.kind != "number"


class ActiveCalls:
    """The active calls of every user, indexed by user key.

    Every operation is O(1) in the number of calls a user is in but :meth:`of` (a copy):
    entries are kept in insertion-ordered dicts, and the entries whose device cannot show a
    second call (:func:`shows_call_waiting`: a leg's target never changes) are indexed apart,
    so an incoming call does not scan every call of a user in hundreds (a hunt number, the
    call benchmark's one callee)."""

    def __init__(self) -> None:
        self._by_user: dict[str, dict[ActiveCall, None]] = {}
        self._blind: dict[str, dict[ActiveCall, None]] = {}
        self._ringing: dict[str, dict[RingingCall, None]] = {}
        self._count = 0

    def start_ringing(self, user: str, call: Call) -> RingingCall:
        """``call`` rings ``user``'s devices now; :meth:`stop_ringing` with what this returns."""
        entry = RingingCall(user, call)
        self._ringing.setdefault(user, {})[entry] = None
        return entry

    def stop_ringing(self, entry: RingingCall) -> None:
        """The ring of ``entry`` is over (answered, picked up, given up; idempotent)."""
        _discard(self._ringing, entry.user, entry)

    def ringing(self, user: str) -> tuple[RingingCall, ...]:
        """The calls ringing ``user`` now (oldest first)."""
        return tuple(self._ringing.get(user, ()))

    def enter(self, user: str, call: Call, leg: Leg) -> ActiveCall:
        """``user`` is now in ``call`` on ``leg``; :meth:`leave` with what this returns."""
        entry = ActiveCall(user, call, leg)
        self._by_user.setdefault(user, {})[entry] = None
        if not shows_call_waiting(entry):
            self._blind.setdefault(user, {})[entry] = None
        self._count += 1
        return entry

    def leave(self, entry: ActiveCall) -> None:
        """The call of ``entry`` ended for its user (idempotent)."""
        if _discard(self._by_user, entry.user, entry):
            self._count -= 1
            _discard(self._blind, entry.user, entry)

    def of(self, user: str) -> tuple[ActiveCall, ...]:
        """The calls ``user`` is in now (oldest first)."""
        return tuple(self._by_user.get(user, ()))

    def without_call_waiting(self, user: str) -> tuple[ActiveCall, ...]:
        """The calls ``user`` is in on a device that cannot show a second call (their call
        hears the call-waiting tone instead)."""
        return tuple(self._blind.get(user, ()))

    def busy_devices(self, user: str) -> frozenset[str]:
        """The devices (target labels) of ``user`` that are in a call."""
        return frozenset(e.device for e in self._by_user.get(user, ()))

    def __len__(self) -> int:
        return self._count


def _discard(index: dict[str, dict[_E, None]], user: str, entry: _E) -> bool:
    """Take ``entry`` out of ``index[user]`` (dropping an empty user); whether it was in."""
    entries = index.get(user)
    if entries is None or entries.pop(entry, 0) is not None:
        return False
    if not entries:
        del index[user]
    return True

