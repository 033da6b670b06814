"""The API's request and response models (pydantic v2). Requests forbid unknown fields; a PATCH
model has every field optional and only the fields sent change (``model_fields_set``)."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

__all__ = ["ListQuery", "Page", "Request"]

T = TypeVar("T")


class Request(BaseModel):
    """Base of request bodies and queries: unknown fields are refused, types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ListQuery(BaseModel):
    """``limit``/``offset`` paging and ``sort`` (a field name, ``-`` first for descending)."""

    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=500)] = 50
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    sort: Annotated[str, Field(max_length=40, pattern=r"^-?[a-z_]+$")] | None = None


class Page(BaseModel, Generic[T]):
    """A page of a list: the items and how many there are in all."""

    items: list[T]
    total: int


# -- principal / tenants ---------------------------------------------------------------------


class WhoAmI(BaseModel):
    """The token's principal."""

    token_id: int
    role: Literal["user", "tenant_admin", "system_admin"]
    tenant_id: int | None
    tenant: str | None
    user_id: int | None


class TenantOut(BaseModel):
    """A tenant (company)."""

    id: int
    name: str
    company: str
    domain: str
    realm: str
    ext_min_len: int
    ext_max_len: int
    main_number: str | None
    country_code: str
    area_code: str
    #: the default language of its new users and what its non-user callers hear
    language: Literal["de", "en"]


class TenantPage(Page[TenantOut]):
    """Tenants."""


class TenantCreate(Request):
    """A new tenant (a system admin's)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,32}$")]
    domain: Annotated[str, Field(min_length=1, max_length=253)]
    company: Annotated[str, Field(max_length=200)] = ""
    realm: Annotated[str, Field(max_length=253)] = ""
    ext_min_len: Annotated[StrictInt, Field(ge=2, le=8)] = 3
    ext_max_len: Annotated[StrictInt, Field(ge=2, le=8)] | None = None
    main_number: PhoneNumberText | None = None
    country_code: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,2}$")] = "49"
    area_code: Annotated[str, Field(pattern=r"^0?[0-9]{0,5}$")] = ""
    language: Literal["de", "en"] = "de"


PhoneNumberText = Annotated[str, Field(min_length=2, max_length=32,
                                       pattern=r"^\+?[0-9 ()/-]+$")]

# -- users -----------------------------------------------------------------------------------

Language = Literal["de", "en"]
PermissionName = Literal["internal", "national", "international"]
Extension = Annotated[str, Field(pattern=r"^[0-9]{2,8}$")]
PhoneNumber = Annotated[str, Field(min_length=2, max_length=32, pattern=r"^\+?[0-9 ()/-]+$")]
Pin = Annotated[str, Field(pattern=r"^[0-9]{4,8}$")]
Text = Annotated[str, Field(max_length=200)]


class UserOut(BaseModel):
    """A user (never the voicemail PIN, only whether one is set)."""

    id: int
    tenant_id: int
    extension: str
    name: str
    email: str
    language: Language
    mobile_number: str | None
    remote_office_number: str | None
    permission: PermissionName
    premium_allowed: bool
    has_voicemail_pin: bool


class UserPage(Page[UserOut]):
    """Users."""


class UserCreate(Request):
    """A new user (devices are added with POST /devices)."""

    extension: Extension
    name: Text = ""
    email: Text = ""
    #: default: the tenant's language
    language: Language | None = None
    mobile_number: PhoneNumber | None = None
    remote_office_number: PhoneNumber | None = None
    permission: PermissionName = "national"
    premium_allowed: StrictBool = False
    voicemail_pin: Pin | None = None
    #: the tenant's id (a system admin of every tenant must name one)
    tenant_id: StrictInt | None = None


class UserPatch(Request):
    """Changes to a user: fields not sent keep their value; ``null`` removes a number/PIN.
    ``permission`` and ``premium_allowed`` need a tenant admin."""

    name: Text | None = None
    email: Text | None = None
    language: Language | None = None
    mobile_number: PhoneNumber | None = None
    remote_office_number: PhoneNumber | None = None
    permission: PermissionName | None = None
    premium_allowed: StrictBool | None = None
    voicemail_pin: Pin | None = None


# -- devices ---------------------------------------------------------------------------------

DeviceKind = Literal["desk", "softphone", "browser", "mobile"]


class DeviceOut(BaseModel):
    """A SIP account of a user (the digests never leave the server)."""

    id: int
    user_id: int
    username: str
    realm: str
    kind: DeviceKind
    mobile: bool


class DevicePage(Page[DeviceOut]):
    """Devices."""


class DeviceCreate(Request):
    """A new SIP account; without ``password`` one is generated. Either way it is in the
    answer once and never again."""

    user_id: StrictInt
    username: Annotated[str, Field(pattern=r"^[A-Za-z0-9._+~-]{1,64}$")]
    password: Annotated[str, Field(min_length=8, max_length=128)] | None = None
    kind: DeviceKind = "softphone"


class DevicePassword(Request):
    """New SIP credentials for a device (without ``password``: a generated one)."""

    password: Annotated[str, Field(min_length=8, max_length=128)] | None = None


class DeviceCreated(DeviceOut):
    """The new device with its SIP password (shown this once)."""

    password: str
    domain: str


# -- numbers ---------------------------------------------------------------------------------


class NumberOut(BaseModel):
    """A DID and its owner."""

    e164: str
    tenant_id: int
    owner_kind: Literal["user", "group", "company"]
    user_id: int | None
    group_name: str | None


class NumberPage(Page[NumberOut]):
    """Numbers."""


class NumberCreate(Request):
    """Assign a DID to a user, a group, or (neither) the company."""

    number: PhoneNumber
    user_id: StrictInt | None = None
    group: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    tenant_id: StrictInt | None = None


# -- trunks ----------------------------------------------------------------------------------


class TrunkOut(BaseModel):
    """A carrier trunk (never its password)."""

    id: int
    tenant_id: int
    name: str
    kind: Literal["register", "ip"]
    host: str
    port: int
    transport: str
    username: str
    realm: str
    allowed_sources: list[str]
    trusted: bool
    register_expiry: int
    has_password: bool
    state: str | None = None


class TrunkPage(Page[TrunkOut]):
    """Trunks."""


class TrunkCreate(Request):
    """A new trunk (``password`` is write-only)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,32}$")]
    kind: Literal["register", "ip"]
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 5060
    transport: Literal["udp", "tcp", "tls"] = "udp"
    username: Annotated[str, Field(max_length=128)] = ""
    password: Annotated[str, Field(max_length=128)] = ""
    realm: Annotated[str, Field(max_length=128)] = ""
    allowed_sources: Annotated[list[Annotated[str, Field(max_length=80)]],
                               Field(max_length=32)] = []
    trusted: StrictBool = False
    register_expiry: Annotated[StrictInt, Field(ge=60, le=86400)] = 600
    tenant_id: StrictInt | None = None


# -- feature codes, registrations, history, system ------------------------------------------


class CodeOut(BaseModel):
    """A row of the feature-code table in force."""

    key: str
    feature: str
    action: str
    code: str
    alternate: str
    mobile: str
    argument: str
    description: str
    implemented: bool
    changed: bool


class CodePage(Page[CodeOut]):
    """The feature-code table."""


class CodePatch(Request):
    """A new main code and/or alternate ('' removes the alternate)."""

    code: Annotated[str, Field(min_length=2, max_length=16)] | None = None
    alternate: Annotated[str, Field(max_length=16)] | None = None


class RegistrationOut(BaseModel):
    """A device's current registration."""

    aor: str
    contact: str
    expires_in: int
    user_agent: str | None
    source: str | None
    transport: str | None
    user_id: int | None
    tenant_id: int | None


class RegistrationPage(Page[RegistrationOut]):
    """Registrations."""


class HistoryOut(BaseModel):
    """One call in a user's history (times are POSIX seconds)."""

    id: int
    user_id: int
    call_id: str
    direction: Literal["in", "out"]
    other_name: str
    other_number: str
    started_at: float
    answered_at: float | None
    ended_at: float | None
    duration: float
    missed: bool


class HistoryPage(Page[HistoryOut]):
    """Call history."""


class HistoryQuery(ListQuery):
    """Filters of the call history (``since``/``until``: POSIX seconds)."""

    direction: Literal["in", "out"] | None = None
    missed: bool | None = None
    since: float | None = None
    until: float | None = None
    number: Annotated[str, Field(max_length=32)] | None = None


class Deleted(BaseModel):
    """How many things went."""

    deleted: int


class TrunkHealth(BaseModel):
    """A trunk's state as /health reports it."""

    model_config = ConfigDict(extra="allow")

    name: str
    state: str


class HealthOut(BaseModel):
    """The node's figures."""

    status: Literal["ok"]
    registrations: int
    active_calls: int
    event_clients: int
    last_event_seq: int
    trunks: list[dict[str, Any]]


class EventMessage(BaseModel):
    """One message on /api/v1/events (``kind`` from the event catalogue, or ``gap``)."""

    seq: int
    kind: str
    at: float
    data: dict[str, Any]
