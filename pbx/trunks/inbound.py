"""Inbound requests from trunks: which trunk a request came from, and the headers only a
trusted trunk may send (stripped from everyone else's)."""

from __future__ import annotations

from collections.abc import Iterable

from pbx.trunks.config import TrunkConfig
from sipcore.message import Request
from sipcore.transport import Peer


def identify_trunk(trunks: Iterable[TrunkConfig], peer: Peer) -> TrunkConfig | None:
    """The first trunk whose allowed sources include ``peer`` (None: not from a trunk)."""
    for trunk in trunks:
        if trunk.matches_source(peer):
            return trunk
    return None


#: Headers only a trusted peer may send (RFC 3325 §9, RFC 7315; Remote-Party-ID is the
#: pre-RFC 3325 draft still used by some carriers). Every other ``P-`` header goes too.
PRIVATE_HEADERS = frozenset({"p-asserted-identity", "p-preferred-identity", "remote-party-id",
                             "route"})


def sanitize_inbound(request: Request, *, trusted: bool) -> list[str]:
    """Strip identity, routing and private headers unless ``request`` comes from a trusted
    trunk; returns the names removed (for the security log).

    Header names are compared case-insensitively on the parsed header set — the same set
    every later layer reads, so "whitespace before the colon" or case games cannot smuggle
    a second spelling past this.
    """
    if trusted:
        return []
    headers = request.headers
    doomed = sorted(key for key in headers.lookup_keys()
                    if key in PRIVATE_HEADERS or key.startswith("p-"))
    for name in doomed:
        headers.remove(name)
    return doomed

