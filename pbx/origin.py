"""Who is calling: the origin of a new INVITE (a trunk by source, or an authenticated device)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pbx.trunks import TrunkConfig


@dataclass(frozen=True, slots=True)
class CallOrigin:
    """Who is calling (found before the call starts): ``caller`` as the other users see it
    (the extension internally, the caller's number from a trunk), the direction for the
    history, the callee already resolved from a trunk's DID, the caller's user and the trunk
    the call came in on."""

    caller: str
    direction: str = "internal"
    callee: str = ""
    user: Any = None  # pbx.store.User
    trunk: TrunkConfig | None = None

