"""Configuration: one TOML file plus ``ASYNCPBX_*`` environment overrides → frozen dataclasses.

The file is read once at start-up. Every error names the offending key (``sip.listen[2]: …``)
so an administrator can fix it without reading code. Unknown keys are errors too: a typo must not
silently fall back to a default.

Environment overrides use ``ASYNCPBX_<TABLE>_<KEY>`` (e.g. ``ASYNCPBX_SIP_DOMAIN=pbx.example.com``,
``ASYNCPBX_SIP_LISTEN=udp:0.0.0.0:5060,tcp:0.0.0.0:5060``); lists are comma-separated, booleans
``true``/``false``, numbers as written.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from pbx.overload import OverloadPolicy
from sipcore.aio.listen import ListenSpec, parse_listen_spec


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def parse_listen(text: str, key: str = "sip.listen") -> ListenSpec:
    """Parse ``udp:127.0.0.1:5060`` / ``tcp:[::1]:5060`` (:func:`sipcore.aio.listen.
    parse_listen_spec`); raises ConfigError naming ``key``."""
    try:
        return parse_listen_spec(text)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


@dataclass(frozen=True, slots=True)
class SipConfig:
    """The ``[sip]`` table."""

    listen: tuple[str, ...] = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    #: The SIP domain users register in; defaults to the first listen address.
    domain: str = ""
    #: The host written into our Via headers (and later Contact/Record-Route): needed when
    #: listening on a wildcard address (0.0.0.0, ::) or behind NAT; default: the bound address.
    advertise: str = ""
    user_agent: str = "asyncpbx"
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 10
    #: RFC 3261 T1 in seconds.
    t1: float = 0.5
    max_message_size: int = 65535
    max_connections_per_source: int = 64
    idle_timeout: float = 60.0
    #: Allowed WebSocket Origins; empty allows any.
    ws_origins: tuple[str, ...] = ()

    def listen_specs(self) -> list[ListenSpec]:
        """The parsed listen addresses."""
        return [parse_listen(s, f"sip.listen[{i}]") for i, s in enumerate(self.listen)]


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The ``[tls]`` table; without cert/key a self-signed pair is made in the data directory."""

    cert: str = ""
    key: str = ""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The ``[auth]`` table (digest authentication, RFC 7616/8760)."""

    realm: str = ""
    nonce_ttl: float = 300.0
    #: Challenge algorithms, one WWW-Authenticate header each, in this order. MD5 alone is the
    #: default because deployed UAs fail on anything else: baresip 1.0 refuses the whole challenge
    #: when any header names SHA-256, and SIPp 3.6 and sipsak read only the first header and give
    #: up unless it is MD5 (measured against all three). Fleets of RFC 8760 phones set
    #: ``["SHA-256", "MD5"]``.
    algorithms: tuple[str, ...] = ("MD5",)
    #: The digest ``uri`` must be the Request-URI itself (RFC 3261 §22.4). Off by default:
    #: SIPp 3.6's ``[authentication]`` sends ``uri="sip:host:port"`` for an INVITE to
    #: ``sip:202@host:port`` (Kamailio accepts it), so a ``uri`` with the Request-URI's scheme,
    #: host and port and no user part is accepted too; the response must match it either way.
    strict_digest_uri: bool = False


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """The ``[media]`` table: where RTP ports are allocated and how dead calls are found."""

    #: Local address the RTP sockets bind to.
    host: str = "127.0.0.1"
    #: Address written into SDP (``c=``) when it differs from ``host`` (wildcard bind, NAT).
    advertise: str = ""
    #: Even/odd RTP/RTCP port pairs are allocated from this inclusive range.
    port_min: int = 40000
    port_max: int = 44999
    #: Seconds without RTP on an answered, not-held leg before the call is ended (0: never).
    rtp_timeout: float = 60.0
    #: Music-on-hold file (WAV/MP3/Opus/FLAC); empty: a generated melody.
    moh_file: str = ""


@dataclass(frozen=True, slots=True)
class CallsConfig:
    """The ``[calls]`` table."""

    #: Seconds to ring before "no answer" (480): 4 rings of 5 s (German cadence).
    ring_timeout: float = 20.0
    #: RFC 4028 session interval we grant at most, and the smallest we accept (422 below).
    session_expires: int = 1800
    min_se: int = 90
    #: Seconds of busy tone (as early media) before 486 — what a caller hears when the callee
    #: is busy or pressed "reject"; 0 sends the 486 at once.
    busy_tone: float = 4.0
    #: Country of the call-progress tones (ringback, busy): see media.tones.
    tones: str = "DE"


@dataclass(frozen=True, slots=True)
class FeaturesConfig:
    """The ``[features]`` table."""

    #: The digits-only form of feature codes for mobiles (whose network takes ``*``/``#``
    #: strings for itself): these digits stand for ``*`` and ``#`` (``78843`` is ``*43``).
    digits_only_star: str = "788"
    digits_only_hash: str = "789"


@dataclass(frozen=True, slots=True)
class PromptsConfig:
    """The ``[prompts]`` table: the announcements (pbx.prompts)."""

    #: Where the generated prompt set is cached; empty: ``<data_dir>/prompts/generated``.
    cache_dir: str = ""
    #: The language of callers and callees who are not users (a trunk caller): ``de``/``en``.
    default_language: str = "de"


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The ``[log]`` table."""

    level: str = "info"
    json: bool = False


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The ``[http]`` table: ``/health``, the REST API (``/api/v1``) and ``/metrics``."""

    #: ``host:port`` (port 0: any free port, printed as ``listening http HOST PORT``); an empty
    #: string turns HTTP off.
    listen: str = "127.0.0.1:8080"
    #: A portal session ends after this many seconds without a request ...
    session_idle: float = 1800.0
    #: ... and this many seconds after its login at the latest.
    session_lifetime: float = 12 * 3600.0


@dataclass(frozen=True, slots=True)
class WebRtcConfig:
    """The ``[webrtc]`` table: ICE of the browser legs (aiortc, :mod:`media.webrtc`).

    aioice never gathers loopback and a server must offer only the addresses it is reachable
    at, so the host candidates are configuration.
    """

    #: Host candidates the PBX offers (IP literals); empty: the media address
    #: (``media.advertise`` when it is an IP address, else ``media.host``).
    ice_addresses: tuple[str, ...] = ()
    #: STUN servers for server-reflexive candidates behind NAT (``stun:host[:port]``).
    stun_servers: tuple[str, ...] = ()
    #: TURN servers for relayed candidates (``turn:host[:port][?transport=udp|tcp]`` or
    #: ``turns:``), with one username/password for all of them.
    turn_servers: tuple[str, ...] = ()
    turn_username: str = ""
    turn_password: str = ""
    #: Inclusive UDP port range of the ICE sockets; 0/0: ports the OS picks.
    port_min: int = 0
    port_max: int = 0

    def host_addresses(self, media: MediaConfig) -> tuple[str, ...]:
        """The ICE host candidates to offer: ``ice_addresses``, else the media address."""
        if self.ice_addresses:
            return self.ice_addresses
        for candidate in (media.advertise, media.host):
            try:
                ip = ipaddress.ip_address(candidate)
            except ValueError:
                continue
            if not ip.is_unspecified:
                return (str(ip),)
        return ()


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """The ``[smtp]`` table: the mail server voicemail mail goes out through (pbx.mail)."""

    #: The SMTP server; empty: no mail is sent (the outbox keeps what is queued).
    host: str = ""
    port: int = 587
    #: STARTTLS after connecting (RFC 3207); ``tls``: TLS from the start (port 465).
    starttls: bool = True
    tls: bool = False
    #: SMTP AUTH (both or neither).
    username: str = ""
    password: str = ""
    #: The sender; empty: ``voicemail@<sip.domain>``.
    from_address: str = ""
    #: Seconds one delivery attempt may take.
    timeout: float = 30.0
    #: Back-off while the server is down or says 4xx: the first retry after ``retry_initial``
    #: seconds, doubling up to ``retry_max``; a mail still not out after ``give_up_after``
    #: seconds (or refused with 5xx) is failed (``asyncpbx mail outbox`` lists it).
    retry_initial: float = 30.0
    retry_max: float = 1800.0
    give_up_after: float = 259200.0


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    """The ``[webhooks]`` table: how events are delivered to the tenants' endpoints
    (pbx.webhooks)."""

    #: Deliver to loopback, link-local and private addresses too (tests, an in-house CRM);
    #: off: such targets are refused (SSRF guard), when created and when resolved.
    allow_private: bool = False
    #: Seconds one attempt may take (connect, send, the answer).
    timeout: float = 10.0
    #: Attempts in flight at once (over every endpoint).
    max_in_flight: int = 8
    #: Back-off: the first retry after ``retry_initial`` seconds, doubling up to ``retry_max``,
    #: each with jitter (between half and the whole of it).
    retry_initial: float = 5.0
    retry_max: float = 3600.0
    #: An endpoint is disabled (with the reason, re-enabled through the API) after
    #: ``max_failures`` failed attempts in a row, or when every attempt failed for
    #: ``disable_after`` seconds.
    max_failures: int = 50
    disable_after: float = 86400.0


def _validate_webhooks(w: WebhooksConfig) -> None:
    if w.timeout <= 0:
        raise ConfigError("webhooks.timeout", "must be positive (seconds)")
    if not 1 <= w.max_in_flight <= 1000:
        raise ConfigError("webhooks.max_in_flight", "must lie between 1 and 1000")
    if w.retry_initial <= 0:
        raise ConfigError("webhooks.retry_initial", "must be positive (seconds)")
    if w.retry_max < w.retry_initial:
        raise ConfigError("webhooks.retry_max", "must not be below webhooks.retry_initial")
    if w.max_failures < 1:
        raise ConfigError("webhooks.max_failures", "must be at least 1")
    if w.disable_after <= 0:
        raise ConfigError("webhooks.disable_after", "must be positive (seconds)")


def _validate_smtp(smtp: SmtpConfig) -> None:
    if any(c in smtp.host for c in " <>;@\"/"):
        raise ConfigError("smtp.host", f"{smtp.host!r} is not a host name or address")
    if not 1 <= smtp.port <= 65535:
        raise ConfigError("smtp.port", "must lie between 1 and 65535")
    if smtp.starttls and smtp.tls:
        raise ConfigError("smtp.tls", "smtp.tls (TLS from the start) and smtp.starttls exclude "
                          "each other")
    if bool(smtp.username) != bool(smtp.password):
        raise ConfigError("smtp.password" if smtp.username else "smtp.username",
                          "smtp.username and smtp.password go together")
    if smtp.from_address and (smtp.from_address.count("@") != 1
                              or any(c in smtp.from_address for c in " <>\r\n")):
        raise ConfigError("smtp.from_address", f"{smtp.from_address!r} is not an address")
    if smtp.timeout <= 0:
        raise ConfigError("smtp.timeout", "must be positive (seconds)")
    if smtp.retry_initial <= 0:
        raise ConfigError("smtp.retry_initial", "must be positive (seconds)")
    if smtp.retry_max < smtp.retry_initial:
        raise ConfigError("smtp.retry_max", "must not be below smtp.retry_initial")
    if smtp.give_up_after <= 0:
        raise ConfigError("smtp.give_up_after", "must be positive (seconds)")


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """The ``[security]`` table: per-source bans (SECURITY.md, pbx/bans.py). A source with
    ``failures`` authentication failures in ``failure_window`` seconds, or more than
    ``requests`` messages in ``request_window`` seconds without ever having authenticated, is
    banned for ``ban_time`` seconds (dropped unanswered); an account with ``account_failures``
    failures in ``failure_window`` is verified at most once per ``account_interval`` seconds.
    ``trusted``: addresses/networks never counted nor banned (a load balancer, an office's
    own network); trunks' sources are always trusted. ``ban_time = 0`` turns bans off."""

    failures: int = 5
    failure_window: float = 60.0
    requests: int = 16
    request_window: float = 2.0
    ban_time: float = 300.0
    account_failures: int = 20
    account_interval: float = 2.0
    trusted: tuple[str, ...] = ()


#: The ``[overload]`` table is the overload detector's policy itself (pbx/overload.py):
#: above ``lag_threshold`` seconds of smoothed event-loop lag, new INVITEs and REGISTERs from
#: untrusted sources get 503 + Retry-After.
OverloadConfig = OverloadPolicy


@dataclass(frozen=True, slots=True)
class ChatConfig:
    """The ``[chat]`` table: SIP MESSAGE between users (pbx.chat)."""

    #: The largest message body taken (bytes); a larger one gets 413.
    max_size: int = 8192
    #: Messages a user may send per second, sustained ...
    rate: float = 2.0
    #: ... and in a burst; beyond that a MESSAGE gets 503 + Retry-After (the API 429).
    burst: int = 30


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    sip: SipConfig = field(default_factory=SipConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    overload: OverloadConfig = field(default_factory=OverloadConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    data_dir: str = "asyncpbx-data"

    @property
    def domain(self) -> str:
        """The SIP domain: configured, else the advertised host, else the first listen host."""
        if self.sip.domain:
            return self.sip.domain
        if self.sip.advertise:
            return self.sip.advertise
        return self.sip.listen_specs()[0].host

    @property
    def realm(self) -> str:
        """The digest realm: configured, else the domain."""
        return self.auth.realm or self.domain


_LOG_LEVELS = ("debug", "info", "warning", "error")
_ALGORITHMS = ("SHA-256", "MD5")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check/convert one value against its dataclass type, naming ``key`` on failure."""
    origin = get_origin(hint)
    if origin is tuple:
        (item_type, _ellipsis) = get_args(hint)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"must be a list, not {type(value).__name__}")
        return tuple(_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value))
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(key, f"must be a whole number, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be a whole number, not {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(key, f"must be a number, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, not {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, not {value!r}")
        return value
    raise ConfigError(key, "unsupported type")  # pragma: no cover - a bug in this module


def _build(cls: type[Any], table: Mapping[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if name not in known:
            raise ConfigError(key, f"unknown key (known: {', '.join(sorted(known))})")
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(key, "must be a table")
            kwargs[name] = _build(hint, value, f"{key}.")  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(key, value, hint)
    return cls(**kwargs)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tables = {f.name for f in fields(Config) if dataclasses.is_dataclass(f.type) or f.name != "data_dir"}
    for name, value in environ.items():
        if not name.startswith("ASYNCPBX_") or name == "ASYNCPBX_NO_EXTENSIONS":
            continue
        rest = name[len("ASYNCPBX_"):].lower()
        if rest == "data_dir":
            out["data_dir"] = value
            continue
        table, sep, key = rest.partition("_")
        if not sep or table not in tables:
            raise ConfigError(name, "unknown environment override (ASYNCPBX_<TABLE>_<KEY>)")
        out.setdefault(table, {})[key] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping):
            merged[k] = _merge(dict(merged[k]), v)
        else:
            merged[k] = v
    return merged


def _validate_security(sec: SecurityConfig) -> None:
    for key in ("failures", "requests", "account_failures"):
        if getattr(sec, key) < 1:
            raise ConfigError(f"security.{key}", "must be at least 1")
    for key in ("failure_window", "request_window", "account_interval"):
        if getattr(sec, key) <= 0:
            raise ConfigError(f"security.{key}", "must be positive")
    if sec.ban_time < 0:
        raise ConfigError("security.ban_time", "must not be negative (0 turns bans off)")
    for i, net in enumerate(sec.trusted):
        try:
            ipaddress.ip_network(net.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"security.trusted[{i}]", f"{net!r} is no address or network") from None


def _validate_overload(o: OverloadConfig) -> None:
    if not 0.001 <= o.interval <= 5:
        raise ConfigError("overload.interval", "must lie between 0.001 and 5 seconds")
    if o.lag_threshold <= 0:
        raise ConfigError("overload.lag_threshold", "must be positive (seconds)")
    if o.queue_threshold < 0:
        raise ConfigError("overload.queue_threshold", "must not be negative (0: not used)")
    if not 0 < o.recover_below <= 1:
        raise ConfigError("overload.recover_below", "must lie in (0, 1]")
    if o.recover_after < 0:
        raise ConfigError("overload.recover_after", "must not be negative")
    if not 0 < o.smoothing <= 1:
        raise ConfigError("overload.smoothing", "must lie in (0, 1]")
    if not 1 <= o.retry_after <= 3600:
        raise ConfigError("overload.retry_after", "must lie between 1 and 3600 seconds")
    if o.target_lag <= 0:
        raise ConfigError("overload.target_lag", "must be positive (seconds)")
    if o.control_interval <= 0:
        raise ConfigError("overload.control_interval", "must be positive (seconds)")
    if not 0 <= o.target_sojourn <= 1:
        raise ConfigError("overload.target_sojourn",
                          "must lie between 0 and 1 second (0: steer on lag and queue size)")
    if not 0 < o.min_fraction <= o.start_fraction <= 1:
        raise ConfigError("overload.start_fraction",
                          "must lie in (min_fraction, 1] with min_fraction > 0")
    if not 0 < o.decrease < 1:
        raise ConfigError("overload.decrease", "must lie in (0, 1)")
    if not 0 < o.increase <= 1:
        raise ConfigError("overload.increase", "must lie in (0, 1]")


def validate(config: Config) -> Config:
    """Cross-field checks that types alone cannot express."""
    specs = config.sip.listen_specs()
    if not specs:
        raise ConfigError("sip.listen", "needs at least one address")
    seen: set[tuple[str, str, int]] = set()
    for i, spec in enumerate(specs):
        if spec.port != 0 and (spec.transport, spec.host, spec.port) in seen:
            raise ConfigError(f"sip.listen[{i}]", f"{spec} is listed twice")
        seen.add((spec.transport, spec.host, spec.port))
    s = config.sip
    if s.min_expires < 1:
        raise ConfigError("sip.min_expires", "must be at least 1")
    if s.max_expires < s.min_expires:
        raise ConfigError("sip.max_expires", "must not be below sip.min_expires")
    if not s.min_expires <= s.default_expires <= s.max_expires:
        raise ConfigError("sip.default_expires", "must lie between min_expires and max_expires")
    if s.max_contacts < 1:
        raise ConfigError("sip.max_contacts", "must be at least 1")
    if not 0.01 <= s.t1 <= 10:
        raise ConfigError("sip.t1", "must lie between 0.01 and 10 seconds")
    if not 1024 <= s.max_message_size <= 1 << 20:
        raise ConfigError("sip.max_message_size", "must lie between 1024 and 1048576")
    if s.max_connections_per_source < 1:
        raise ConfigError("sip.max_connections_per_source", "must be at least 1")
    if s.idle_timeout <= 0:
        raise ConfigError("sip.idle_timeout", "must be positive")
    _validate_calls(config)
    if config.prompts.default_language not in ("de", "en"):
        raise ConfigError("prompts.default_language", "must be de or en")
    if config.log.level.lower() not in _LOG_LEVELS:
        raise ConfigError("log.level", f"must be one of {', '.join(_LOG_LEVELS)}")
    for i, algo in enumerate(config.auth.algorithms):
        if algo not in _ALGORITHMS:
            raise ConfigError(f"auth.algorithms[{i}]", f"{algo!r} is not one of {', '.join(_ALGORITHMS)}")
    if not config.auth.algorithms:
        raise ConfigError("auth.algorithms", "needs at least one algorithm")
    if config.auth.nonce_ttl < 10:
        raise ConfigError("auth.nonce_ttl", "must be at least 10 seconds")
    _validate_security(config.security)
    _validate_overload(config.overload)
    _validate_smtp(config.smtp)
    _validate_webhooks(config.webhooks)
    if bool(config.tls.cert) != bool(config.tls.key):
        raise ConfigError("tls.cert" if not config.tls.cert else "tls.key",
                          "tls.cert and tls.key go together")
    if config.sip.advertise and any(c in config.sip.advertise for c in " <>;@\"/"):
        raise ConfigError("sip.advertise", f"{config.sip.advertise!r} is not a host name or address")
    if not 60 <= config.http.session_idle <= config.http.session_lifetime:
        raise ConfigError("http.session_idle",
                          "must be at least 60 seconds and not above http.session_lifetime")
    if config.http.session_lifetime > 90 * 86400:
        raise ConfigError("http.session_lifetime", "must be at most 90 days (in seconds)")
    if config.http.listen.strip():
        from pbx.http import parse_http_listen  # parsing only; aiohttp is imported lazily

        try:
            parse_http_listen(config.http.listen)
        except ValueError as exc:
            raise ConfigError("http.listen", str(exc)) from None
    if any(c in config.domain for c in " <>;@\"") or not config.domain:
        raise ConfigError("sip.domain", f"{config.domain!r} is not a valid domain")
    return config


def _validate_calls(config: Config) -> None:
    m, c = config.media, config.calls
    try:
        ipaddress.ip_address(m.host)
    except ValueError:
        raise ConfigError("media.host", f"{m.host!r} is not an IP address") from None
    if m.advertise and any(ch in m.advertise for ch in " <>;@\"/"):
        raise ConfigError("media.advertise", f"{m.advertise!r} is not a host name or address")
    if not 1024 <= m.port_min <= 65534:
        raise ConfigError("media.port_min", "must lie between 1024 and 65534")
    if not m.port_min + 1 <= m.port_max <= 65535:
        raise ConfigError("media.port_max", "must lie above media.port_min and at most 65535")
    if m.rtp_timeout < 0:
        raise ConfigError("media.rtp_timeout", "must be 0 (off) or a positive number of seconds")
    if m.moh_file and not Path(m.moh_file).is_file():
        raise ConfigError("media.moh_file", f"{m.moh_file!r} is not a file")
    if not 1 <= c.ring_timeout <= 600:
        raise ConfigError("calls.ring_timeout", "must lie between 1 and 600 seconds")
    if not 1 <= config.chat.max_size <= 60000:
        raise ConfigError("chat.max_size", "must lie between 1 and 60000 bytes (one datagram)")
    if not config.chat.rate > 0:
        raise ConfigError("chat.rate", "must be a positive number of messages per second")
    if not 1 <= config.chat.burst <= 100000:
        raise ConfigError("chat.burst", "must lie between 1 and 100000 messages")
    if c.min_se < 90:
        raise ConfigError("calls.min_se", "must be at least 90 seconds (RFC 4028)")
    if c.session_expires < c.min_se:
        raise ConfigError("calls.session_expires", "must not be below calls.min_se")
    if not 0 <= c.busy_tone <= 30:
        raise ConfigError("calls.busy_tone", "must lie between 0 and 30 seconds")
    from media.tones import TONE_PLANS

    if c.tones.upper() not in TONE_PLANS and c.tones.upper() != "GB":
        raise ConfigError("calls.tones", f"{c.tones!r} is not one of {', '.join(sorted(TONE_PLANS))}")
    from pbx.feature_codes import DigitsOnly

    problem = DigitsOnly(config.features.digits_only_star,
                         config.features.digits_only_hash).problem()
    if problem is not None:
        raise ConfigError(f"features.digits_only_{problem[0]}", problem[1])
    _validate_webrtc(config.webrtc)


_ICE_SCHEMES = {"stun_servers": ("stun:", "stuns:"), "turn_servers": ("turn:", "turns:")}


def _validate_webrtc(w: WebRtcConfig) -> None:
    for i, address in enumerate(w.ice_addresses):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"webrtc.ice_addresses[{i}]",
                              f"{address!r} is not an IP address") from None
        if ip.is_unspecified:
            raise ConfigError(f"webrtc.ice_addresses[{i}]",
                              f"{address!r} is a wildcard, not an address to offer")
    for name, schemes in _ICE_SCHEMES.items():
        for i, url in enumerate(getattr(w, name)):
            host = url.partition(":")[2].split("?")[0].rsplit(":", 1)[0] if ":" in url else ""
            bad = any(ch in url for ch in " <>;@\"/")
            if not url.lower().startswith(schemes) or not host or bad:
                raise ConfigError(f"webrtc.{name}[{i}]",
                                  f"{url!r} is not a {' or '.join(schemes)}host[:port] URL")
    if w.turn_servers and not (w.turn_username and w.turn_password):
        key = "webrtc.turn_username" if not w.turn_username else "webrtc.turn_password"
        raise ConfigError(key, "TURN servers need a username and a password")
    if (w.port_min, w.port_max) != (0, 0):
        if not 1024 <= w.port_min <= 65535:
            raise ConfigError("webrtc.port_min",
                              "must lie between 1024 and 65535 (or 0 with port_max 0)")
        if not w.port_min <= w.port_max <= 65535:
            raise ConfigError("webrtc.port_max", "must lie between webrtc.port_min and 65535")


def load_config(
    path: str | Path | None = None,
    *,
    data_dir: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load the TOML file at ``path`` (or the embedded default), apply environment and explicit
    overrides, validate, and return the frozen :class:`Config`."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(str(path), "configuration file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    raw = _merge(raw, _env_overrides(os.environ if environ is None else environ))
    if overrides:
        raw = _merge(raw, overrides)
    if data_dir is not None:
        raw["data_dir"] = data_dir
    return validate(_build(Config, raw, ""))
