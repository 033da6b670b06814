"""Call-handling parameters of the B2BUA (the ``[calls]`` and ``[media]`` config tables)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallSettings:
    """Call-handling parameters (from the ``[calls]`` and ``[media]`` config tables)."""

    ring_timeout: float = 20.0
    #: RFC 4028: the interval we grant (upper bound) and the smallest we accept (422 below).
    session_expires: int = 1800
    min_se: int = 90
    #: A leg that received no RTP for this long (not on hold) ends the call; 0 disables.
    rtp_timeout: float = 60.0
    #: Seconds of busy tone a caller we give early media to hears before the 486; 0: none.
    busy_tone: float = 4.0
    #: Music on hold file (any format PyAV reads); empty: a generated melody.
    moh_file: str = ""
    #: Tone plan (ringback, busy) country.
    tones: str = "DE"
    #: The address written into our SDP (c=); defaults to the media engine's host.
    sdp_address: str = ""

