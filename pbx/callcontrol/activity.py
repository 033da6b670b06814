"""Who is on the phone: the calls each user is in now ("user busy", call waiting).

A user is *in* a call from the moment they place it (their device is taken) and, as a callee,
from the answer; they leave it when the call ends. A call *rings* a user while their devices
ring for it (pickup ``*97``/``*98`` looks here). Features read it through
:attr:`~pbx.callcontrol.context.CallContext.active` — never by asking SIP — and the call script
uses it to signal a waiting call to a leg that cannot show one itself (the mobile over a trunk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pbx.callcontrol.call import Call
    from pbx.callcontrol.legs import Leg

__all__ = ["ActiveCall", "ActiveCalls", "RingingCall"]


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


class ActiveCalls:
    """The active calls of every user, indexed by user key."""

    def __init__(self) -> None:
        self._by_user: dict[str, list[ActiveCall]] = {}
        self._ringing: dict[str, list[RingingCall]] = {}

    def start_ringing(self, user: str, call: Call) -> RingingCall:
        """``call`` rings ``user``'s devices now; :meth:`stop_ringing` with what this returns."""
        entry = RingingCall(user, call)
        self._ringing.setdefault(user, []).append(entry)
        return entry

    def stop_ringing(self, entry: RingingCall) -> None:
        """The ring of ``entry`` is over (answered, picked up, given up; idempotent)."""
        entries = self._ringing.get(entry.user)
        if entries is None or entry not in entries:
            return
        entries.remove(entry)
        if not entries:
            del self._ringing[entry.user]

    def ringing(self, user: str) -> tuple[RingingCall, ...]:
        """The calls ringing ``user`` now (oldest first)."""
        return tuple(self._ringing.get(user, ()))

    def enter(self, user: str, call: Call, leg: Leg) -> ActiveCall:
        """``user`` is now in ``call`` on ``leg``; :meth:`leave` with what this returns."""
        entry = ActiveCall(user, call, leg)
        self._by_user.setdefault(user, []).append(entry)
        return entry

    def leave(self, entry: ActiveCall) -> None:
        """The call of ``entry`` ended for its user (idempotent)."""
        entries = self._by_user.get(entry.user)
        if entries is None or entry not in entries:
            return
        entries.remove(entry)
        if not entries:
            del self._by_user[entry.user]

    def of(self, user: str) -> tuple[ActiveCall, ...]:
        """The calls ``user`` is in now (oldest first)."""
        return tuple(self._by_user.get(user, ()))

    def busy_devices(self, user: str) -> frozenset[str]:
        """The devices (target labels) of ``user`` that are in a call."""
        return frozenset(e.device for e in self._by_user.get(user, ()))

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_user.values())
