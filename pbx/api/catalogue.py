"""The event catalogue: every kind the event bus publishes — what ``/api/v1/events`` and the
webhooks carry — with a pydantic model of its ``data``. The OpenAPI document lists the kinds
and their data schemas (``components.schemas``), and :func:`asyncapi_document` is the AsyncAPI
3.0 document served at ``/api/v1/asyncapi.json``; both are generated from :data:`CATALOGUE`.

A kind published that is not here fails ``tests/pbx/api/test_event_catalogue.py``, which
finds every ``publish(...)`` call in the source and resolves its kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

__all__ = ["CATALOGUE", "EventKind", "asyncapi_document", "data_schemas"]

REF = "#/components/schemas/{model}"


class _Data(BaseModel):
    # the data may grow fields (a consumer ignores what it does not know)
    model_config = ConfigDict(extra="allow")


class SettingsChangedData(_Data):
    """A user's feature setting changed (by the API, a feature code, the CLI)."""

    user_id: int
    feature: str
    source: str
    before: dict[str, Any]
    after: dict[str, Any]
    #: the fields that changed, with their new values
    changed: dict[str, Any]


class CodesChangedData(_Data):
    """The feature-code table changed (system-wide)."""

    source: str
    #: the rows that changed (keys such as ``dnd.on``)
    changed: list[str]
    before: dict[str, Any]
    after: dict[str, Any]


class RegistrationData(_Data):
    """A device's registration (``user_id`` None: an address of no user)."""

    aor: str
    contact: str
    user_id: int | None
    tenant_id: int


class RegistrationAddedData(RegistrationData):
    """A device registered."""

    #: seconds the registration lasts
    expires: float


class RegistrationRemovedData(RegistrationData):
    """A registration ended (``reason``: unregistered, expired, replaced, ...)."""

    reason: str


class TrunkStateData(_Data):
    """A trunk's registration changed state (``state`` as ``/system/health`` shows it:
    registering, registered, failed, …; ``reason``: why)."""

    trunk: str
    tenant_id: int
    state: str
    reason: str


class CallData(_Data):
    """A call's state (``tenant_id`` 0: a call of no tenant; ``user_ids``: the users in it)."""

    call_id: str
    direction: Literal["internal", "inbound", "outbound"] | str
    caller: str
    callee: str
    started: float
    answered: float | None
    ended: float | None
    status: int | None
    cause: str
    answered_by: str
    missed: bool
    tenant_id: int
    user_ids: list[int]


class CallControlData(_Data):
    """A user held, resumed or transferred a call through the API (``by_user_id``; ``tenant_id``
    and ``user_ids`` as in :class:`CallData`)."""

    call_id: str
    by_user_id: int
    tenant_id: int
    user_ids: list[int]


class ConferenceData(_Data):
    """A conference participant joined, left, was muted or unmuted (``leg_id`` names it in
    ``/calls/{call}/conference``; ``members``: how many are in the mix now)."""

    call_id: str
    leg_id: str
    party: str
    members: int
    tenant_id: int
    user_ids: list[int]


class CallTransferredData(CallControlData):
    """A call transferred: ``kind`` blind (to ``target``) or attended (into the user's other
    call); ``new_call_id`` is the call the remote party is in now."""

    kind: Literal["blind", "attended"]
    target: str
    new_call_id: str


class VoicemailChangedData(_Data):
    """A voicemail box's counts changed (a message arrived, was heard or deleted)."""

    tenant: str
    user: str
    user_id: int
    new: int
    old: int
    new_urgent: int
    old_urgent: int


class ChatMessageData(_Data):
    """A chat message was kept (sent over SIP MESSAGE or the API): the conversation of
    ``from_user_id`` and ``to_user_id`` has it (``id``; the text is read there)."""

    id: int
    message_id: str
    from_user_id: int
    to_user_id: int
    tenant_id: int
    user_ids: list[int]
    created_at: float
    source: Literal["sip", "api"] | str


class ChatReadData(_Data):
    """A user marked a conversation read up to message ``last_read_id``."""

    user_id: int
    other_id: int
    last_read_id: int
    unread: int


class GapData(_Data):
    """Events ``first`` … ``last`` are no longer kept: resynchronise from the resources."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class EventKind:
    """One kind: what it says and its data's model (``published``: False for ``gap``, which
    the WebSocket sends itself)."""

    summary: str
    data: type[BaseModel]
    published: bool = True


CATALOGUE: dict[str, EventKind] = {
    "settings.changed": EventKind("a user's feature setting changed (API, feature code, CLI)",
                                  SettingsChangedData),
    "codes.changed": EventKind("the feature-code table changed", CodesChangedData),
    "registration.added": EventKind("a device registered", RegistrationAddedData),
    "registration.removed": EventKind("a registration ended", RegistrationRemovedData),
    "trunk.state": EventKind("a trunk's registration changed state", TrunkStateData),
    "call.started": EventKind("a call began", CallData),
    "call.answered": EventKind("a call was answered", CallData),
    "call.ended": EventKind("a call ended", CallData),
    "call.held": EventKind("a user put the other party of a call on hold (API)",
                           CallControlData),
    "call.resumed": EventKind("a user took the other party of a call back from hold (API)",
                              CallControlData),
    "call.transferred": EventKind("a user transferred a call (API: blind or attended)",
                                  CallTransferredData),
    "voicemail.changed": EventKind("a voicemail box's counts changed (message arrived, "
                                   "heard, deleted)", VoicemailChangedData),
    "conference.joined": EventKind("a participant joined a conference", ConferenceData),
    "conference.left": EventKind("a participant left a conference", ConferenceData),
    "conference.muted": EventKind("a conference participant was muted", ConferenceData),
    "conference.unmuted": EventKind("a conference participant was unmuted", ConferenceData),
    "chat.message": EventKind("a chat message between two users was kept (SIP or API)",
                              ChatMessageData),
    "chat.read": EventKind("a user read a chat conversation", ChatReadData),
    "gap": EventKind("(WebSocket only) events were lost before a resume: resynchronise",
                     GapData, published=False),
}


def data_schemas() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(kind → the ``$ref`` of its data schema, the schemas by model name)."""
    models = list(dict.fromkeys(k.data for k in CATALOGUE.values()))
    refs, top = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    by_model = {m: refs[(m, "serialization")] for m in models}
    return ({kind: by_model[k.data] for kind, k in CATALOGUE.items()},
            dict(top.get("$defs", {})))


def _message_id(kind: str) -> str:
    return kind.replace(".", "_")


def asyncapi_document(*, version: str, host: str = "localhost",
                      secure: bool = False) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``/api/v1/events`` (``host``: as the client reached us)."""
    refs, schemas = data_schemas()
    messages: dict[str, Any] = {}
    for kind, entry in CATALOGUE.items():
        mid = _message_id(kind)
        schemas["Event_" + mid] = {
            "type": "object", "title": f"Event {kind}",
            "required": ["seq", "kind", "at", "data"],
            "properties": {"seq": {"type": "integer", "minimum": 0,
                                   "description": "resume with ?since=SEQ"},
                           "kind": {"const": kind},
                           "at": {"type": "number", "description": "POSIX seconds"},
                           "data": refs[kind]}}
        messages[mid] = {"name": kind, "title": kind, "summary": entry.summary,
                         "contentType": "application/json",
                         "payload": {"$ref": REF.format(model="Event_" + mid)}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "asyncpbx live events", "version": version or "0",
                 "description": "The events of GET /api/v1/events (WebSocket, one JSON "
                                "message per text frame) and of the webhooks. Authenticate "
                                "like the REST API (bearer token or portal session)."},
        "defaultContentType": "application/json",
        "servers": {"pbx": {"host": host, "protocol": "wss" if secure else "ws",
                            "pathname": "/api/v1",
                            "security": [{"$ref": "#/components/securitySchemes/bearer"}]}},
        "channels": {"events": {
            "address": "/events",
            "description": "Live events, filtered by what the credential may see; "
                           "?since=SEQ resumes, ?kinds=a,b.* filters.",
            "messages": {mid: {"$ref": f"#/components/messages/{mid}"} for mid in messages}}},
        "operations": {"receiveEvents": {
            "action": "receive", "channel": {"$ref": "#/channels/events"},
            "summary": "Receive live events",
            "messages": [{"$ref": f"#/channels/events/messages/{mid}"} for mid in messages]}},
        "components": {"messages": messages, "schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
