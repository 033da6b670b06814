"""The features users get, one module each, written against :mod:`pbx.callcontrol` only.

Precedence (FEATURES.md §2, DESIGN.md principle 7) — the priority of each feature is its place:

* **terminating** (an incoming call to a user): anonymous rejection → do not disturb (busy; no
  busy forwarding) → forwarding immediate (wins over remote office) → remote office (rings the
  remote office number instead of the devices) → call waiting (in a call and off: *busy*) →
  ringing (devices, plus the mobile with parallel ringing; a busy leg over a trunk hears the
  call-waiting tone instead) → after the ring: busy forwarding (every device busy or declined,
  or *busy* above) / no-answer forwarding (after N rings) / unreachable forwarding (nothing
  registered, or every device failed) — each kind may go to the voicemail box instead
  (``*21``/``*40``/``*41``) → voicemail as the last step when the box is enabled → the caller
  gets 486 / 480.
* **originating** (a user's call): feature codes → call-back instead (permanent call-back,
  remote office) → CLIR / displayed number → routing.
* Every redirect routes on behalf of the user who forwarded (their permissions and number), at
  most 5 times, never back to a user already in the call's chain (482).

Adding a feature: (1) write a module with a :class:`~pbx.callcontrol.BaseFeature` subclass
(name, priority, settings schema, feature codes, the hooks it needs); (2) add it to
:func:`default_features`; (3) test it through the real call script (tests/features) and over SIP
from a phone (tests/interop). Call control dispatches its codes, fills its settings and runs its
hooks; the settings service stores what it changes.

Feature codes are data (:mod:`pbx.feature_codes`, seeded from ``pbx/feature_codes.toml``). A
feature names its actions only — the codes come from the table row ``<feature name>.<action>``::

    name = "call_waiting"
    feature_codes = (FeatureCode("on"), FeatureCode("off"))          # rows call_waiting.on/off
    # a code followed by a number: FeatureCode("on", takes_number=True)

and ``on_feature_code(ctx, code, number)`` gets that FeatureCode with ``code.code`` /
``code.alternate`` filled in from the table in force (what the administrator set with
``asyncpbx codes set``); decide on ``code.action``, never on the digits. Every row of
FEATURE_CODES.md is in the seed table already (``asyncpbx codes list`` shows those no feature
implements yet); a new action gets a new row there. ``takes_number`` must agree with the row's
``argument`` (tests/pbx/test_feature_codes.py checks the default features). The digits-only
form for mobiles (``78843`` for ``*43``) is call control's business: the feature sees the same
FeatureCode either way.
"""

from __future__ import annotations

from pbx.callcontrol import Feature

__all__ = ["default_features"]


def default_features(*, ring_timeout: float | None = None) -> list[Feature]:
    """Every feature the PBX runs, configured from the server's settings (``ring_timeout``:
    the ``[calls] ring_timeout`` default for users who chose none)."""
    from features.anonymous_rejection import AnonymousRejection
    from features.call_back import CallBackFeature
    from features.call_pull import CallPull
    from features.call_waiting import CallWaiting
    from features.clir import Clir
    from features.conference import ConferenceFeature
    from features.conference_focus import ConferenceFocus
    from features.displayed_number import DisplayedNumber
    from features.dnd import DoNotDisturb
    from features.forward_busy import ForwardBusy
    from features.forward_immediate import ForwardImmediate
    from features.forward_no_answer import ForwardNoAnswer
    from features.forward_unreachable import ForwardUnreachable
    from features.mwi import MessageWaiting
    from features.parallel_ringing import ParallelRinging
    from features.pickup import Pickup
    from features.remote_office import RemoteOffice
    from features.ringing import OrdinaryRinging
    from features.transfer import register_actions
    from features.voicemail import Voicemail
    from features.voicemail_mail import VoicemailMail

    register_actions()  # the in-call codes ##, *2, *4 (pbx.callcontrol.incall)

    box = Voicemail()
    no_answer = ForwardNoAnswer(box)
    parallel = ParallelRinging()
    ringing = OrdinaryRinging(ring_timeout, no_answer=no_answer, parallel=parallel)
    return [AnonymousRejection(), DoNotDisturb(), ForwardImmediate(box), RemoteOffice(ringing),
            CallWaiting(), parallel, ringing, ForwardBusy(box), no_answer,
            ForwardUnreachable(box), box, Clir(), DisplayedNumber(), CallBackFeature(ringing),
            MessageWaiting(), VoicemailMail(), ConferenceFeature(), ConferenceFocus(), Pickup(),
            CallPull()]
