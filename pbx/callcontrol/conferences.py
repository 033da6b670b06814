"""What the call-control layer offers about conferences of live calls to those that are not a
phone (the REST API): the views, the error, and the :class:`ConferenceOperations` protocol.

The implementation is the conference feature's
(:class:`features.conference_control.ConferenceControl`, which the in-call code ``*3`` shares);
the server hands it to the API, which only translates (layers: features see call control,
the API sees this module, neither imports the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pbx.callcontrol.call import Call

__all__ = ["ConferenceError", "ConferenceOperations", "ConferenceView", "ParticipantView"]


class ConferenceError(Exception):
    """An operation that cannot be done: ``reason`` is ``no_call``, ``no_conference``,
    ``no_participant``, ``not_answered`` or ``no_route``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ParticipantView:
    """A participant: ``state`` ``joined`` (in the mix) or ``ringing`` (being added)."""

    leg_id: str
    party: str
    state: str
    muted: bool


@dataclass(frozen=True, slots=True)
class ConferenceView:
    """A call's conference now."""

    call_id: str
    sample_rate: int
    participants: tuple[ParticipantView, ...]


class ConferenceOperations(Protocol):
    """Conference operations on live calls named by the caller's SIP Call-ID; participants
    are named by their leg id. Each raises :class:`ConferenceError`."""

    def is_conference(self, call: Call) -> bool:
        """True when ``call`` is a conference now."""
        ...

    def view(self, call_id: str) -> ConferenceView:
        """The conference of ``call_id``: its members, then those still ringing."""
        ...

    def add(self, call_id: str, number: str) -> list[str]:
        """Ring ``number``, join it when it answers; the ids of the legs rung."""
        ...

    def merge(self, call_id: str, other_call_id: str, user_id: int) -> list[str]:
        """Join the other party of ``user_id``'s call ``other_call_id`` (that call ends for
        the user); the id of the joined leg."""
        ...

    def drop(self, call_id: str, leg_id: str) -> None:
        """Hang up a participant (BYE; CANCEL while it rings)."""
        ...

    def mute(self, call_id: str, leg_id: str, muted: bool) -> None:
        """Stop (or resume) mixing what a joined participant says."""
        ...
