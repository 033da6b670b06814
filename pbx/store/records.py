"""The store's records: frozen dataclasses of what the tables hold, and its error type."""

from __future__ import annotations

from dataclasses import dataclass

from pbx.routing.dialplan import DialPlan, Permission
from sipcore.digest import Credentials

#: The tenant of single-company mode (and of migrated v1 users).
DEFAULT_TENANT = "default"


class StoreError(ValueError):
    """A request to the store that cannot be carried out (message says why)."""


# -- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tenant:
    """A company: its SIP domain, digest realm, extension plan and numbering context."""

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
    #: the tenant's language ("de"/"en"): new users get it; callers who are not users hear it
    language: str = "de"

    @property
    def dialplan(self) -> DialPlan:
        """The dial plan context for this tenant's users."""
        return DialPlan(country_code=self.country_code, area_code=self.area_code,
                        ext_min_len=self.ext_min_len, ext_max_len=self.ext_max_len)


@dataclass(frozen=True, slots=True)
class User:
    """A PBX user (without secrets: the voicemail PIN hash stays in the store)."""

    id: int
    tenant_id: int
    extension: str
    name: str
    email: str
    language: str
    mobile_number: str | None
    remote_office_number: str | None
    permission: Permission
    premium_allowed: bool
    has_voicemail_pin: bool


@dataclass(frozen=True, slots=True)
class Device:
    """A SIP account of a user: username and HA1 digests for one realm."""

    id: int
    user_id: int
    username: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    kind: str
    mobile: bool

    def credentials(self) -> Credentials:
        """The digest credentials (stored HA1s, never the password)."""
        return Credentials(
            username=self.username,
            realm=self.realm,
            ha1={"MD5": self.ha1_md5, "SHA-256": self.ha1_sha256},
        )


@dataclass(frozen=True, slots=True)
class Number:
    """An E.164 DID and its owner (a user, a group by name, or the company)."""

    e164: str
    tenant_id: int
    owner_kind: str
    user_id: int | None
    group_name: str | None


@dataclass(frozen=True, slots=True)
class Trunk:
    """A carrier connection of a tenant.

    ``password`` is kept in clear because answering the carrier's challenge needs it; it is only
    ever used for challenges from this trunk's host with ``realm`` (SECURITY.md: no digest leak).
    ``allowed_sources`` are where calls from this trunk may come from
    (``[transport:]address[/prefix][:port]``); empty means the host (when it is an address).
    """

    id: int
    tenant_id: int
    name: str
    kind: str
    host: str
    port: int
    transport: str
    username: str
    password: str
    realm: str
    allowed_sources: tuple[str, ...]
    trusted: bool
    register_expiry: int


@dataclass(slots=True)
class HistoryWrite:
    """What one batch knows of one history entry (see :meth:`Store.history_write`):
    ``entry_id`` None → a new entry (inserted with whatever times are known already), else the
    stored entry gets ``answered_at``/``ended_at`` where given (the first answer and the first end
    count, as with :meth:`Store.history_answered` / :meth:`Store.history_end`)."""

    user_id: int
    call_id: str
    direction: str
    other_name: str
    other_number: str
    started_at: float
    entry_id: int | None = None
    answered_at: float | None = None
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One call in a user's history. ``ended_at`` is None while the call is in progress."""

    id: int
    user_id: int
    call_id: str
    direction: str
    other_name: str
    other_number: str
    started_at: float
    answered_at: float | None
    ended_at: float | None
    duration: float
    missed: bool
