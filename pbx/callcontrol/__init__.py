"""Call control: the API features are written against (DESIGN.md principle 7).

A *call* is what a user experiences as one call: legs (each terminating in our media core), the
bridges and playbacks between them, and the events the legs post. Features never see SIP: they
get a :class:`~pbx.callcontrol.context.CallContext` and return a decision.

Modules, one job each:

* :mod:`.legs` — the :class:`Leg` contract and its state table ``(state, input) → (action, next)``;
* :mod:`.events` — what legs tell their call;
* :mod:`.media` — the :class:`MediaGraph` protocol, bridges, playback, in-band DTMF taps;
* :mod:`.records` — the call record and ring outcomes;
* :mod:`.activity` — the calls each user is in (busy, call waiting);
* :mod:`.call` — :class:`Call`, its operations (ring, answer, bridge, play, collect digits …);
* :mod:`.supervise` — one TaskGroup per call, a clean release whatever happens;
* :mod:`.decisions`, :mod:`.feature`, :mod:`.context` — what features are written against;
* :mod:`.presentation` — how a call presents its caller (CLIR, displayed number);
* :mod:`.registry` — the features in chain order and the feature-code table in force (the
  table is data: :mod:`pbx.feature_codes`);
* :mod:`.script` — what happens to a call, from the first feature to the hang-up;
* :mod:`.incall` — in-call codes (``##``, ``*2`` …) on a user's leg, dispatched to the handler
  registered under the action's name (:func:`register_incall_action`);
* :mod:`.transfer` — blind transfer, consultation, attended transfer, hold (REFER, in-call
  codes and the API call these).
"""

from pbx.callcontrol.activity import ActiveCall, ActiveCalls, RingingCall
from pbx.callcontrol.call import COMPLETED_ELSEWHERE, Call, Intercept, LegFactory
from pbx.callcontrol.conferences import (
    ConferenceError,
    ConferenceOperations,
    ConferenceView,
    ParticipantView,
)
from pbx.callcontrol.context import CallContext, Diversion, Services, UserView
from pbx.callcontrol.decisions import (
    Busy,
    CallBack,
    Confirm,
    Continue,
    Decision,
    Dial,
    Handled,
    Prompt,
    Redirect,
    Reject,
    Ring,
)
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
    PickedUp,
)
from pbx.callcontrol.feature import BaseFeature, Feature, FeatureCode, Hook
from pbx.callcontrol.incall import (
    InCallCode,
    InCallContext,
    InCallDispatcher,
    InCallHandler,
    incall_action,
    incall_codes,
    register_incall_action,
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
from pbx.callcontrol.media import (
    Bridge,
    Conference,
    InbandDtmf,
    MediaGraph,
    Playback,
    needs_inband_detection,
)
from pbx.callcontrol.presentation import Presentation
from pbx.callcontrol.records import CallRecord, RingOutcome, RingResult, tell_outcome
from pbx.callcontrol.registry import CodeMatch, FeatureRegistry
from pbx.callcontrol.script import MAX_REDIRECTS, CallScript, Routed, ScriptHost
from pbx.callcontrol.supervise import supervise
from pbx.callcontrol.transfer import (
    CONSULTATION,
    RECALL,
    CallStateError,
    Consultation,
    TransferError,
    TransferHost,
    attended_transfer,
    bridge_of,
    consult,
    is_held,
    recall,
    set_hold,
    toggle_hold,
    transfer_blind,
    users_of,
)
from pbx.settings_schema import Setting, SettingError

__all__ = [
    "COMPLETED_ELSEWHERE",
    "CONSULTATION",
    "LEG_TABLE",
    "MAX_REDIRECTS",
    "RECALL",
    "ActiveCall",
    "ActiveCalls",
    "BaseFeature",
    "Bridge",
    "Busy",
    "Call",
    "CallBack",
    "CallContext",
    "CallEvent",
    "CallRecord",
    "CallScript",
    "CallStateError",
    "CodeMatch",
    "Conference",
    "ConferenceError",
    "ConferenceOperations",
    "ConferenceView",
    "Confirm",
    "Consultation",
    "Continue",
    "Decision",
    "Dial",
    "Diversion",
    "DtmfReceived",
    "Feature",
    "FeatureCode",
    "FeatureRegistry",
    "Handled",
    "Hook",
    "InCallCode",
    "InCallContext",
    "InCallDispatcher",
    "InCallHandler",
    "InbandDtmf",
    "Intercept",
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
    "ParticipantView",
    "PickedUp",
    "Playback",
    "Presentation",
    "Prompt",
    "Redirect",
    "Reject",
    "Ring",
    "RingOutcome",
    "RingResult",
    "RingingCall",
    "Routed",
    "ScriptHost",
    "Services",
    "Setting",
    "SettingError",
    "Target",
    "TransferError",
    "TransferHost",
    "UserView",
    "attended_transfer",
    "bridge_of",
    "consult",
    "incall_action",
    "incall_codes",
    "is_held",
    "leg_transition",
    "needs_inband_detection",
    "recall",
    "register_incall_action",
    "set_hold",
    "supervise",
    "tell_outcome",
    "toggle_hold",
    "transfer_blind",
    "users_of",
]
