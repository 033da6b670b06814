"""What a hook knows about the call it decides on: :class:`CallContext`.

``user`` is the user whose features run: the callee in the terminating chain (and after a
redirect, the user the call reached), the caller in the originating chain and for feature codes.
``settings`` are that user's settings from the directory cache, feature name → setting → value;
``services`` is call control's handle on the rest of the PBX: the store's read side and the
settings service (the one way a setting changes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pbx.callcontrol.legs import Target

if TYPE_CHECKING:
    from pbx.callcontrol.activity import ActiveCall, ActiveCalls
    from pbx.callcontrol.call import Call
    from pbx.callcontrol.feature import Feature

__all__ = ["CallContext", "Diversion", "Services", "UserView"]


@dataclass(frozen=True, slots=True)
class UserView:
    """A user as features see one. ``key`` is how call control addresses the user (the
    extension, ``ext@domain`` outside the default tenant); ``id`` is None for a user the
    store does not know (a config-file user: no settings)."""

    key: str
    extension: str
    id: int | None = None
    tenant_id: int | None = None
    numbers: tuple[str, ...] = ()
    language: str = "de"
    name: str = ""
    #: the user's own mobile number (E.164; parallel ringing, call-back) and remote office
    #: number (E.164; rings instead of the devices while remote office is on)
    mobile: str | None = None
    remote_office: str | None = None
    #: the tenant's main number (E.164), which every user of the tenant may present
    company_number: str | None = None


@dataclass(frozen=True, slots=True)
class Diversion:
    """One redirection the call went through (RFC 5806 Diversion / RFC 7044 History-Info):
    ``user`` redirected it for ``reason``; ``number`` is how the far end knows that user (their
    DID, else their extension)."""

    user: UserView
    reason: str
    number: str


class Services(Protocol):
    """What call control offers features beyond the call itself."""

    def settings(self, user: UserView) -> Mapping[str, Mapping[str, Any]]:
        """``user``'s settings of every feature (stored over defaults), from the cache."""
        ...

    def update_settings(self, user: UserView, feature: str, changes: Mapping[str, Any], *,
                        source: str) -> dict[str, Any]:
        """Change ``user``'s settings through the settings service (validated, stored, cached,
        one ``settings.changed`` event); raises ValueError naming the bad key."""
        ...

    def routable(self, user: UserView, dialled: str) -> bool:
        """Whether ``dialled`` would be routed for ``user`` (a forward target check)."""
        ...

    def number_targets(self, call: Call, user: UserView, number: str) -> tuple[Target, ...]:
        """Targets that ring the external ``number`` (the user's mobile or remote office
        number) over ``user``'s trunk in ``call``; empty when it routes nowhere or to a user
        (a mobile number never reaches another user)."""
        ...

    def pickup_peers(self, user: UserView) -> tuple[str, ...]:
        """The keys of the users who share a pickup group with ``user`` (``*98``)."""
        ...


@dataclass
class CallContext:
    """What a hook knows (see the module docstring).

    ``caller``/``callee`` are what the call record shows (extension or number); ``devices`` the
    reachable device targets of ``user`` (terminating); ``history`` the users the call already
    reached (loop protection), ``diversions`` the redirections on the way; ``status`` the final
    status of the last ring for the busy/no-answer/unreachable hooks; ``digits`` what arrived in
    a connected call (``on_dtmf``); ``active`` the calls ``user`` is in now (busy, call
    waiting).
    """

    caller: str
    callee: str
    call: Call | None = None
    user: UserView | None = None
    #: who placed the call (None: a trunk's or an anonymous caller)
    originator: UserView | None = None
    services: Services | None = None
    devices: Sequence[Target] = ()
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    diversions: list[Diversion] = field(default_factory=list)
    status: int = 0
    digits: str = ""
    active: Sequence[ActiveCall] = ()
    #: every user's calls and rings (call pull, pickup, barge-in look up other calls here)
    calls: ActiveCalls | None = None

    @property
    def caller_anonymous(self) -> bool:
        """The caller presents no number: withheld by CLIR, or their INVITE named none (an
        anonymous From, one without a user part, ``Privacy: id``)."""
        return self.call is not None and self.call.presentation.withheld

    def present(self, **changes: Any) -> None:
        """Change how the call presents its caller on the legs it sends out from now on
        (:class:`~pbx.callcontrol.presentation.Presentation` fields: ``number``, ``name``,
        ``private``)."""
        if self.call is not None:
            self.call.presentation = dataclasses.replace(self.call.presentation, **changes)

    def setting(self, feature: Feature, name: str) -> Any:
        """``feature``'s setting ``name`` for ``user`` (the schema's default when unset)."""
        value = self.settings.get(feature.name, {}).get(name)
        if value is None:
            return feature.settings_schema[name].default
        return value

    def update(self, feature: Feature, source: str = "feature_code", **changes: Any) -> bool:
        """Change ``user``'s settings of ``feature`` through the settings service; False when
        there is no stored user or the change is refused (the error is logged there)."""
        if self.services is None or self.user is None or self.user.id is None:
            return False
        try:
            self.settings = {**self.settings, feature.name: self.services.update_settings(
                self.user, feature.name, changes, source=source)}
        except ValueError:
            return False
        return True
