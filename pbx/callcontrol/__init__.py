"""Call control: the API features are written against (DESIGN.md principle 7).

A *call* is what a user experiences as one call: legs (each terminating in our media core), the
bridges and playbacks between them, and the events the legs post. Features never see SIP: they
get a :class:`~pbx.callcontrol.context.CallContext` and return a decision.

Modules, one job each:

* :mod:`.legs` — the :class:`Leg` contract and its state table ``(state, input) → (action, next)``;
* :mod:`.events` — what legs tell their call;
* :mod:`.media` — the :class:`MediaGraph` protocol, bridges, playback, in-band DTMF taps;
* :mod:`.records` — the call record and ring outcomes;
* :mod:`.call` — :class:`Call`, its operations (ring, answer, bridge, play, collect digits …);
* :mod:`.supervise` — one TaskGroup per call, a clean release whatever happens.
"""

from pbx.callcontrol.call import COMPLETED_ELSEWHERE, Call, LegFactory
from pbx.callcontrol.events import (
    CallEvent,
    DtmfReceived,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegHeld,
    LegMediaChanged,
    LegProgressed,
    LegResumed,
)
from pbx.callcontrol.legs import (
    LEG_TABLE,
    Leg,
    LegAction,
    LegInput,
    LegState,
    Target,
    leg_transition,
)
from pbx.callcontrol.media import Bridge, InbandDtmf, MediaGraph, Playback, needs_inband_detection
from pbx.callcontrol.records import CallRecord, RingOutcome, RingResult, tell_outcome
from pbx.callcontrol.supervise import supervise

__all__ = [
    "COMPLETED_ELSEWHERE",
    "LEG_TABLE",
    "Bridge",
    "Call",
    "CallEvent",
    "CallRecord",
    "DtmfReceived",
    "InbandDtmf",
    "Leg",
    "LegAction",
    "LegAnswered",
    "LegEnded",
    "LegFactory",
    "LegFailed",
    "LegHeld",
    "LegInput",
    "LegMediaChanged",
    "LegProgressed",
    "LegResumed",
    "LegState",
    "MediaGraph",
    "Playback",
    "RingOutcome",
    "RingResult",
    "Target",
    "leg_transition",
    "needs_inband_detection",
    "supervise",
    "tell_outcome",
]
