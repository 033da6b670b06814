"""What a feature code answers with: the announcement of its result (``activated``,
``deactivated``, ``confirm``, or ``error`` when nothing changed). The call script plays it to
its end and hangs up; where the prompt set lacks a prompt it plays the confirmation or error
tone instead (``Confirm.ok`` says which)."""

from __future__ import annotations

from pbx.callcontrol import Confirm, Prompt

__all__ = ["confirmed", "refused", "switched"]


def confirmed(ok: bool, prompt: str = "confirm") -> Confirm:
    """``prompt`` when the change was made, the error announcement when not."""
    return Confirm(ok, Prompt(prompt if ok else "error"))


def switched(ok: bool, on: bool) -> Confirm:
    """A feature switched on ("activated") or off ("deactivated"), or the error."""
    return confirmed(ok, "activated" if on else "deactivated")


def refused() -> Confirm:
    """A code whose argument was refused: the error announcement, nothing changed."""
    return Confirm(False, Prompt("error"))
