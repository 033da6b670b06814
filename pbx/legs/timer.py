"""Session-timer (RFC 4028) header parsing and negotiation for our SIP legs."""
from __future__ import annotations

from sipcore.message import Request, Response


def parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """``Session-Expires: 1800;refresher=uac`` → (1800, "uac")."""
    if not value:
        return None
    head, *params = value.split(";")
    try:
        seconds = int(head.strip())
    except ValueError:
        return None
    refresher = None
    for p in params:
        k, _, v = p.partition("=")
        if k.strip().lower() == "refresher":
            refresher = v.strip().lower()
    return seconds, refresher


def option_tags(message: Request | Response, name: str) -> set[str]:
    return {t.strip().lower() for v in message.headers.get_all(name) for t in v.split(",")}



def negotiate_session_timer(se: tuple[int, str | None], supported: bool, *, min_se: int,
                            session_expires: int) -> tuple[int, str]:
    """RFC 4028 §9 for a request we answer: the interval (the requested one, capped by ours
    and at least Min-SE) and who refreshes (``"uac"``/``"uas"``). A UAC without ``timer``
    support cannot be the refresher."""
    seconds = max(min_se, min(se[0], session_expires))
    refresher = se[1] or ("uac" if supported else "uas")
    if refresher == "uac" and not supported:
        refresher = "uas"
    return seconds, refresher

