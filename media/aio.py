"""The media graph's asyncio side, as one import: a thin re-export of its homes.

``media.aio`` was one 1,236-line module; it is split along its seams into files with one job —
:mod:`media.clock` (the 20 ms clock, ``tick(now)``), :mod:`media.session` (one leg's RTP/RTCP
session), :mod:`media.bridge` (relay, transcoding bridge, link), :mod:`media.conference`
(conferences and the one mixer job) and :mod:`media.engine` (ports, sockets, packet hub, the
graph's factory); ``payload_format``/``make_codec`` live in :mod:`media.codecs`. The names that
other packages import from here keep working; new code imports the homes.
"""

from __future__ import annotations

from media.bridge import Bridge, Link, RelayBridge, inband_only
from media.clock import ClockJob, MediaClock, Phase
from media.codecs import make_codec, payload_format
from media.conference import Conference, Mode
from media.engine import SPARE_SOCKETS_MAX, MediaEngine
from media.session import RtpSession, SrtpKeys

__all__ = [
    "SPARE_SOCKETS_MAX",
    "Bridge",
    "ClockJob",
    "Conference",
    "Link",
    "MediaClock",
    "MediaEngine",
    "Mode",
    "Phase",
    "RelayBridge",
    "RtpSession",
    "SrtpKeys",
    "inband_only",
    "make_codec",
    "payload_format",
]
