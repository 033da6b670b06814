"""Session-timer (RFC 4028) helpers of our SIP legs, over :mod:`sipcore.invite_session`.

The parsing and the negotiation rules live in sipcore (:func:`~sipcore.invite_session.
parse_session_expires`, :func:`~sipcore.invite_session.negotiate`, :func:`~sipcore.
invite_session.option_tags`); these keep the tuple shapes the legs use today.
"""
from __future__ import annotations

from sipcore.errors import RemoteProtocolError
from sipcore.invite_session import SessionExpires, negotiate, option_tags
from sipcore.invite_session import parse_session_expires as _parse_session_expires

__all__ = ["negotiate_session_timer", "option_tags", "parse_session_expires"]


def parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """``Session-Expires: 1800;refresher=uac`` → (1800, "uac"); None when absent or
    malformed (the legs ignore a header they cannot read)."""
    try:
        se = _parse_session_expires(value or None)
    except RemoteProtocolError:
        return None
    return None if se is None else (se.seconds, se.refresher)


def negotiate_session_timer(se: tuple[int, str | None], supported: bool, *, min_se: int,
                            session_expires: int) -> tuple[int, str]:
    """RFC 4028 §9 for a request we answer: the interval (the requested one, capped by ours
    and at least Min-SE) and who refreshes (``"uac"``/``"uas"``). A UAC without ``timer``
    support cannot be the refresher."""
    granted = negotiate(SessionExpires(se[0], se[1]), supported, min_se=min_se,
                        session_expires=session_expires)
    assert granted.refresher is not None
    return granted.seconds, granted.refresher
