"""SIP trunks: carriers we register with (``register``) or exchange calls with by address (``ip``).

One job per module:

* :mod:`~pbx.trunks.config` — :class:`TrunkConfig`, one trunk as the store defines it; its
  allowed sources are parsed by :func:`sipcore.address.parse_source` (re-exported here).
* :mod:`~pbx.trunks.inbound` — :func:`identify_trunk` finds the trunk a request came from by its
  source address (optionally port and transport); :func:`sanitize_inbound` strips identity and
  routing headers that only a trusted peer may send (P-Asserted-Identity, Remote-Party-ID,
  Route, ``P-*``) — the B2BUA calls :meth:`TrunkManager.inbound` on *every* inbound request,
  which does both.
* :mod:`~pbx.trunks.outbound` — :func:`build_outbound_request` builds the INVITE toward a trunk
  (Request-URI ``sip:+E164@carrier``, the user's DID in From or ``anonymous`` with
  ``Privacy: id`` for CLIR, P-Asserted-Identity only toward trusted trunks);
  :func:`answer_challenge` answers the carrier's 401/407 with the trunk's credentials under the
  trunk's realm only.
* :mod:`~pbx.trunks.dns` — resolving trunk hosts that are DNS names (:func:`resolve_host`,
  :class:`~pbx.trunks.dns.DnsWatcher`).
* :mod:`~pbx.trunks.manager` — :class:`TrunkManager`, the asyncio driver: registrations, DNS
  refresh, the trunk table, ``/health``.
"""

from __future__ import annotations

from pbx.trunks.config import TrunkConfig, TrunkKind, TrunkRow
from pbx.trunks.dns import Resolver, resolve_host
from pbx.trunks.inbound import PRIVATE_HEADERS, identify_trunk, sanitize_inbound
from pbx.trunks.manager import TrunkManager
from pbx.trunks.outbound import (
    ANONYMOUS_URI,
    ChallengeRefusedError,
    answer_challenge,
    build_outbound_request,
)
from sipcore.address import SourceRule, parse_source

__all__ = [
    "ANONYMOUS_URI",
    "PRIVATE_HEADERS",
    "ChallengeRefusedError",
    "Resolver",
    "SourceRule",
    "TrunkConfig",
    "TrunkKind",
    "TrunkManager",
    "TrunkRow",
    "answer_challenge",
    "build_outbound_request",
    "identify_trunk",
    "parse_source",
    "resolve_host",
    "sanitize_inbound",
]
