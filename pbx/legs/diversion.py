"""How a leg tells the far end that the call was redirected on its way: RFC 5806 ``Diversion``
(what carriers and most phones read) and RFC 7044 ``History-Info`` (the standard successor).

Diversion lists the redirecting users most recent first, with ``reason`` and ``counter``;
History-Info lists the targets in the order the call reached them, each retargeted entry with
the RFC 4458 ``cause`` of its redirection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pbx.callcontrol import Diversion

__all__ = ["diversion_headers"]

#: RFC 4458 §3 redirection causes for the diversion reasons our features give.
CAUSES = {"unconditional": 302, "user-busy": 486, "no-answer": 408, "unavailable": 503,
          "do-not-disturb": 480, "deflection": 480, "time-of-day": 404, "unknown": 404}


def diversion_headers(diversions: Sequence[Diversion], target: str,
                      uri: Callable[[str], str]) -> list[tuple[str, str]]:
    """The headers for an INVITE to ``target`` (a user or number) after ``diversions``;
    ``uri(number)`` makes the SIP URI the far end knows a number or extension by."""
    if not diversions:
        return []
    headers: list[tuple[str, str]] = []
    for count, d in enumerate(reversed(diversions)):
        reason = d.reason if d.reason in CAUSES else "unknown"
        headers.append(("Diversion", f"<{uri(d.number)}>;reason={reason};"
                                     f"counter={len(diversions) - count}"))
    index = "1"
    entries = [f"<{uri(diversions[0].number)}>;index={index}"]
    for n, d in enumerate(diversions):
        index += ".1"
        reached = diversions[n + 1].number if n + 1 < len(diversions) else target
        cause = CAUSES.get(d.reason, 404)
        entries.append(f"<{uri(reached)};cause={cause}>;index={index};mp={index[:-2]}")
    headers.append(("History-Info", ", ".join(entries)))
    return headers
