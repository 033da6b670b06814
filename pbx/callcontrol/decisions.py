"""What a feature's hook answers: one decision, the script carries it out.

* :class:`Continue` — not my business, ask the next feature;
* :class:`Reject` — end the call with this SIP status (486 busy, 433 anonymity disallowed …);
* :class:`Redirect` — route the call on to another target, on behalf of the user whose feature
  decided (their permissions and caller number; the far end learns of the diversion);
* :class:`Ring` — ring these targets in parallel for ``timeout`` seconds;
* :class:`Confirm` — (feature codes) answer, play the confirmation or error tone, hang up;
* :class:`Dial` — (a per-call prefix code: ``*67`` + number) go on as if the caller had dialled
  the number: their originating chain, then routing;
* :class:`Handled` — the feature did everything itself (played an announcement, ran an IVR).

:class:`Prompt` names an announcement from the prompt set (in the user's language); a
:class:`Confirm` plays it instead of the confirmation tone, a :class:`Reject` plays it to the
caller as early media before the final status.
"""

from __future__ import annotations

from dataclasses import dataclass

from pbx.callcontrol.legs import Target

__all__ = ["Confirm", "Continue", "Decision", "Dial", "Handled", "Prompt", "Redirect", "Reject",
           "Ring"]


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
    """(from ``on_feature_code``) The code was a prefix for this call only: place the call to
    ``number`` as if the caller had dialled it (the originating chain runs, then routing), with
    what the code changed on the call (its presentation, say) kept."""

    number: str


@dataclass(frozen=True, slots=True)
class Handled:
    """The feature handled the call completely."""


Decision = Continue | Reject | Redirect | Ring | Confirm | Dial | Handled
