"""What the API's handlers work with: the store, the directory cache, the services every change
goes through, the event log, and the server's live figures (as callables, so the API does not
import the server)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pbx.api.events import EventLog
from pbx.api.logins import SessionPolicy
from pbx.api.passwords import Passwords
from pbx.api.token_cache import TokenCache
from pbx.bans import BanTable
from pbx.callcontrol import ConferenceOperations, FeatureRegistry
from pbx.directory import Directory
from pbx.moh import MusicOnHold
from pbx.services import EventBus, SettingsService
from pbx.services.codes import CodesService
from pbx.store import Store, User
from pbx.store.chat import ChatMessage
from pbx.webhooks import WebhookService
from sipcore.registrar import Binding

__all__ = ["ApiContext", "CallControl", "LiveCall"]


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A call in progress, as GET /calls shows it: ``call_id`` is the caller's SIP Call-ID
    (the one the call events and the history name), ``tenant_id`` 0 for a call of no tenant,
    ``user_ids`` the users in it (who may see it besides their tenant's admins), ``state``
    ``ringing`` or ``answered``, ``since`` when it began (POSIX seconds)."""

    call_id: str
    tenant_id: int
    user_ids: tuple[int, ...]
    direction: str
    caller: str
    callee: str
    state: str
    since: float
    answered_at: float | None
    #: the call is a conference now (its participants: GET /calls/{call}/conference)
    conference: bool = False


class CallControl(Protocol):
    """Hold, resume and transfer of a user's leg in a call in progress
    (:class:`pbx.services.live_calls.LiveCallService`): LookupError when there is no such
    call, ``pbx.callcontrol.CallStateError`` when its state does not allow it."""

    def hold(self, call_id: str, user_id: int, held: bool = True) -> None: ...

    def transfer(self, call_id: str, user_id: int, target: str) -> str: ...

    def attended(self, call_id: str, user_id: int, other_call_id: str) -> None: ...


def _no_calls() -> Sequence[LiveCall]:
    return ()


def _none() -> Mapping[str, object]:
    return {}


def _no_bindings() -> Sequence[Binding]:
    return ()


@dataclass
class ApiContext:
    """The API's view of the server (:meth:`pbx.app.PbxServer` builds it)."""

    store: Store
    directory: Directory
    settings: SettingsService
    codes: CodesService
    features: FeatureRegistry
    bus: EventBus
    events: EventLog
    #: /health's figures: registrations, active_calls, trunks
    figures: Callable[[], Mapping[str, object]] = _none
    #: the SIP endpoint's counters (``AsyncEndpoint.statistics``)
    sip_statistics: Callable[[], Mapping[str, object]] = _none
    #: every current registration (the registrar's bindings)
    bindings: Callable[[], Sequence[Binding]] = _no_bindings
    #: what the server is called in the document
    version: str = ""
    #: the per-source bans a bad token counts toward (the server's, shared with SIP)
    bans: BanTable = field(default_factory=BanTable)
    extra: dict[str, object] = field(default_factory=dict)
    #: start a call-back: (user, target, phone or None) → the call's id; None until the calls
    #: run (pbx.b2bua.B2bua.call_back)
    call_back: Callable[[User, str, str | None], str] | None = None
    #: send a chat message as a user: (sender, recipient, body, content type) → the stored
    #: message and whether the recipient was online; None until the calls run
    #: (pbx.chat.ChatService.send)
    chat_send: Callable[[User, User, bytes, str], Awaitable[tuple[ChatMessage, bool]]] | None \
        = None
    #: the calls in progress (pbx.b2bua.B2bua.calls)
    live_calls: Callable[[], Sequence[LiveCall]] = _no_calls
    #: hang up the call with this Call-ID (False: no such call); None until the calls run
    hang_up: Callable[[str], bool] | None = None
    #: the clock of sessions and tokens (tests inject one)
    clock: Callable[[], float] = time.time
    #: portal sessions' idle and absolute lifetimes
    sessions: SessionPolicy = field(default_factory=SessionPolicy)
    #: portal password hashing (argon2 parameters)
    passwords: Passwords = field(default_factory=Passwords)
    #: tokens the store confirmed a moment ago (authenticated on the loop)
    token_cache: TokenCache = field(default_factory=TokenCache)
    #: the webhook service (pbx.webhooks): the endpoints' cache and test deliveries; None
    #: until the server runs it
    webhooks: WebhookService | None = None
    #: hold, resume and transfer calls in progress; None until the calls run
    call_control: CallControl | None = None
    #: conference operations on live calls (features.conference_control); None until the calls
    #: run
    conferences: ConferenceOperations | None = None
    #: the tenants' music on hold (pbx.moh); None: the store's data directory's, made on use
    moh: MusicOnHold | None = None
