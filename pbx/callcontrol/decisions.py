"""What a feature's hook answers: one decision, the script carries it out.

* :class:`Continue` — not my business, ask the next feature;
* :class:`Reject` — end the call with this SIP status (486 busy, 433 anonymity disallowed …);
* :class:`Busy` — the user is busy (in a call, call waiting off): the busy chain decides
  (busy forwarding, voicemail), else the caller gets 486;
* :class:`Redirect` — route the call on to another target, on behalf of the user whose feature
  decided (their permissions and caller number; the far end learns of the diversion);
* :class:`Ring` — ring these targets in parallel for ``timeout`` seconds;
* :class:`Confirm` — (feature codes) answer, play the confirmation or error tone, hang up;
* :class:`Dial` — (per-call codes: ``*67`` + number …) place the call to this number as if it
  had been dialled, after the code changed something for this call;
* :class:`Handled` — the feature did everything itself (played an announcement, ran an IVR);
* :class:`CallBack` — (originating) turn a device's call into a call-back (permanent
  call-back, remote office).

:class:`Prompt` names an announcement from the prompt set (in the user's language); a
:class:`Confirm` plays it instead of the confirmation tone, a :class:`Reject` plays it to the
caller as early media before the final status.
"""

from __future__ import annotations

from dataclasses import dataclass

from pbx.callcontrol.legs import Target

__all__ = ["Busy", "CallBack", "Confirm", "Continue", "Decision", "Dial", "Handled", "Prompt", "Redirect", "Reject", "Ring"]


@dataclass(frozen=True, slots=True)
class Prompt:
    """An announcement: the prompt ``name`` from the prompt set (``"activated"``,
    ``"forward_on_to"`` …), followed by ``say`` spoken digit by digit (a number)."""

    name: str
    say: str = ""


@dataclass(frozen=True, slots=True)
class Continue:
    """Not handled here: the next feature in the chain decides."""


@dataclass(frozen=True, slots=True)
class Reject:
    """End the call with ``status`` (and an optional reason phrase; ``retry_after`` seconds
    when the caller may try again later, e.g. a 503)."""

    status: int
    reason: str | None = None
    retry_after: int | None = None
    #: played to the caller as early media before the status (433 "anonymous calls are not
    #: accepted" …)
    prompt: Prompt | None = None


@dataclass(frozen=True, slots=True)
class Busy:
    """The user cannot take the call now (terminating chain): run ``on_busy``."""


@dataclass(frozen=True, slots=True)
class Redirect:
    """Route the call to ``target`` (an extension or a number) instead. ``reason`` is the
    diversion reason as RFC 5806 names it (``unconditional``, ``user-busy``, ``no-answer``,
    ``unavailable``, ``do-not-disturb`` …)."""

    target: str
    reason: str = "unconditional"


@dataclass(frozen=True, slots=True)
class Ring:
    """Ring ``targets`` in parallel for ``timeout`` seconds (first answer wins)."""

    targets: tuple[Target, ...]
    timeout: float


@dataclass(frozen=True, slots=True)
class Confirm:
    """A feature code did its job (``ok``) or could not (``ok=False``: the error tone);
    ``prompt`` is announced instead of the tone (``"deactivated"``, an interrogation's answer)."""

    ok: bool = True
    prompt: Prompt | None = None


@dataclass(frozen=True, slots=True)
class Dial:
    """Place the call to ``number`` (the caller's originating chain and routing run)."""

    number: str


@dataclass(frozen=True, slots=True)
class Handled:
    """The feature handled the call completely."""


@dataclass(frozen=True, slots=True)
class CallBack:
    """(originating) Do not place this call from the device: answer it, announce ``prompt``,
    hang it up, then call the user back on ``targets`` (empty: their devices) for ``timeout``
    seconds and, once one answers, call ``dialled`` from there (3PCC, RFC 3725)."""

    dialled: str
    targets: tuple[Target, ...] = ()
    timeout: float = 30.0
    prompt: Prompt | None = None


Decision = Continue | Reject | Busy | Redirect | Ring | Confirm | Dial | Handled | CallBack
