"""The running server: wires config, store, the SIP endpoint, digest auth and the registrar.

One asyncio process. The sans-IO :class:`~sipcore.endpoint.Endpoint` answers what the SIP core
answers by itself (OPTIONS, 405/420/415/482/483, retransmissions, CANCEL); this module is the
transaction user for the rest. Registrations live in memory (the registrar) and are written behind
to SQLite once a second in one transaction; they are restored at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from features import default_features
from media.aio import MediaEngine
from media.webrtc import IceSettings
from pbx import __version__
from pbx.b2bua import B2bua, CallSettings
from pbx.banfile import take_lift_requests, write_bans
from pbx.bans import Ban, BanPolicy, BanTable, TrustedNetworks
from pbx.callcontrol import CallRecord, FeatureRegistry
from pbx.chat import ChatService, SenderLimit
from pbx.config import Config, ConfigError
from pbx.directory import AsyncHistory, CallRecordHistory, Directory, directory_parties
from pbx.feature_codes import DigitsOnly
from pbx.gcwatch import GcWatch
from pbx.http import HttpService, parse_http_listen
from pbx.logsetup import configure_logging, get_logger
from pbx.mail import MailOutbox, MailSender
from pbx.moh import MusicOnHold
from pbx.mwi import MwiService
from pbx.origin import verify_with_bans
from pbx.overload import Admission, OverloadDetector
from pbx.phone import PhonePage
from pbx.prompts import PromptStore
from pbx.routing.router import Router
from pbx.services import EventBus, SettingsService
from pbx.services.codes import CodesService
from pbx.store import Store, User
from pbx.tls import ensure_self_signed, server_context
from pbx.trunks import TrunkConfig, TrunkManager
from pbx.webhooks import WebhookService
from sipcore import _compiled, stateless
from sipcore.aio.endpoint import AsyncEndpoint, sent_by
from sipcore.aio.transport import TransportLimits
from sipcore.digest import Credentials, DigestServer
from sipcore.endpoint import Endpoint, EndpointConfig, Event, RequestReceived
from sipcore.errors import ParseError
from sipcore.message import Request, Response, make_response
from sipcore.registrar import (
    Binding,
    BindingAdded,
    BindingChange,
    BindingRefreshed,
    BindingRemoved,
    Registrar,
)
from sipcore.transport import Peer
from sipcore.uri import SipURI

#: Methods this application handles (the endpoint answers 405 for the rest).
ALLOWED_METHODS = frozenset({"REGISTER", "OPTIONS", "INVITE", "ACK", "BYE", "CANCEL", "UPDATE",
                             "INFO", "MESSAGE", "SUBSCRIBE", "REFER", "NOTIFY"})
#: Option tags we implement (Require is checked against these; OPTIONS advertises them).
#: path: RFC 3327 — the registrar stores and echoes the Path of a proxy in front of us.
#: timer: RFC 4028 session timers (pbx.b2bua). replaces: RFC 3891 (pbx.legs.refer).
SUPPORTED_OPTIONS = frozenset({"path", "timer", "replaces"})
#: Seconds a registration's connection stays open past the binding's expiry (a late refresh).
FLOW_GRACE = 32.0
#: How often registration changes are written to the store, and expiries are applied.
FLUSH_INTERVAL = 1.0


def feature_registry(config: Config) -> FeatureRegistry:
    """Every feature the PBX runs, with the seed code table and the configured digits-only
    escapes (the server's and the CLI's registry — ``asyncpbx codes``, ``asyncpbx settings``;
    the stored code changes are put in force by :class:`pbx.services.codes.CodesService`)."""
    return FeatureRegistry(default_features(ring_timeout=config.calls.ring_timeout),
                           digits_only=DigitsOnly(config.features.digits_only_star,
                                                  config.features.digits_only_hash))



class PbxServer:
    """The asyncpbx server process (one per data directory)."""

    def __init__(self, config: Config, store: Store, *, out: TextIO | None = None) -> None:
        self.config = config
        self.store = store
        self.out = out if out is not None else sys.stdout
        self.log = get_logger("pbx")
        #: Resolved once: Config.domain derives it from the listen addresses on every call.
        self.domain = config.domain
        self.seclog = get_logger("security")
        sec = config.security
        self._trusted = TrustedNetworks(sec.trusted)
        #: Keys the To tags of stateless 503s (sipcore/stateless.py), per process.
        self._stateless_secret = os.urandom(32)
        #: Per-source bans (SECURITY.md): fed by authentication, asked by the transport layer.
        self.bans = BanTable(
            BanPolicy(failures=sec.failures, failure_window=sec.failure_window,
                      requests=sec.requests, request_window=sec.request_window,
                      ban_time=sec.ban_time, account_failures=sec.account_failures,
                      account_interval=sec.account_interval),
            exempt=self._trusted.__contains__, on_ban=self._log_ban)
        self._bans_written: list[Ban] | None = None
        #: Overload control (issue 12 §2): the event loop's lag, measured by _overload_probe;
        #: while overloaded, new INVITEs/REGISTERs from untrusted sources get 503 at once.
        self.overload = OverloadDetector(config.overload)
        #: Nonces issued before this instant only count as stale (every realm's digest server;
        #: one made lazily must not call the nonce of a request already in hand stale).
        self._start_time = time.time()
        self._credentials: dict[str, Credentials] = {}
        self.reload_users()
        #: The in-memory view of tenants, users, devices, numbers and trunks (write-through for
        #: this process's store object; other processes' changes are polled once a second).
        self.directory = Directory(store)
        self.router = Router(self.directory)
        #: The composition root's one import of the features: their registry (chains, codes),
        #: the event bus and the settings service every change of a setting goes through.
        self.features = feature_registry(config)
        self.events = EventBus()
        self.settings = SettingsService(store, self.directory, self.events, self.features.schema)
        #: The feature-code table: the seed with the stored changes in force (kept current
        #: after every directory reload, so ``asyncpbx codes set`` needs no restart).
        self.codes = CodesService(store, self.directory, self.features, self.events)
        #: realm → (REGISTER digest server, INVITE digest server (407), credentials lookup)
        self._realms: dict[str, tuple[DigestServer, DigestServer,
                                      Callable[[str], Credentials | None]]] = {}
        self.trunks: TrunkManager | None = None
        #: Directory.reloads when the trunk manager last took the directory's trunks.
        self._trunks_seen = -1
        self.history: AsyncHistory | None = None
        self.digest = DigestServer(
            config.realm,
            store.secret("nonce"),
            nonce_ttl=config.auth.nonce_ttl,
            algorithms=config.auth.algorithms,
            strict_uri=config.auth.strict_digest_uri,
            # The nonce secret is persisted: nonces from before this start only count as stale
            # (their nonce-count history died with the old process).
            start_time=self._start_time,
        )
        self.registrar = Registrar(
            min_expires=config.sip.min_expires,
            max_expires=config.sip.max_expires,
            default_expires=config.sip.default_expires,
            max_contacts=config.sip.max_contacts,
        )
        self.sip: AsyncEndpoint[Event] | None = None
        #: /health, the REST API and /metrics (pbx.http, pbx.api), started in run() when
        #: ``[http] listen`` is set; the API's event log (resumable live events).
        self.http: HttpService | None = None
        self.api_events: Any = None
        self.conferences: Any = None  # the API's conference operations (features)
        #: Calls (pbx.b2bua) and their media, set up in run().
        self.media: MediaEngine | None = None
        self.b2bua: B2bua | None = None
        #: Message waiting indication (pbx.mwi), set up in run() with the calls.
        self.mwi: MwiService | None = None
        #: who is in a call (a record's parties: ``directory_parties``), once calls run
        self._call_parties: Callable[[Any], Any] | None = None
        self._mwi_task: asyncio.Task[None] | None = None
        #: Voicemail mail (pbx.mail): the outbox a deposit fills (one of the store's deposit
        #: hooks, when the store has the voicemail box), the sender started in run().
        self.mail_outbox = MailOutbox(self.features.schema("voicemail_mail") or {},
                                      self.domain)
        deposit_hooks = getattr(store, "voicemail_deposit_hooks", None)
        if deposit_hooks is not None:
            deposit_hooks.append(self.mail_outbox.deposit_hook)
        self.mail: MailSender | None = None
        self._mail_task: asyncio.Task[None] | None = None
        #: Webhooks (pbx.webhooks): the bus's events into the store's outbox from the start
        #: (kept in memory until the service runs), delivered by the task run() starts.
        self.webhooks = WebhookService(store, config.webhooks, self._tenant_of_user)
        self.events.subscribe(self.webhooks.on_event)
        self._webhooks_task: asyncio.Task[None] | None = None
        #: The prompt set (pbx.prompts), loaded in run() before the listeners start.
        self.prompts: PromptStore | None = None
        #: The tenants' music on hold (pbx.moh: uploads through the API, in data/moh).
        self.moh = MusicOnHold(Path(config.data_dir) / "moh", config.media.moh_file)
        #: Call-history hooks: each is called with the CallRecord when a call starts, is
        #: answered and ends (direction, parties, start/answer/end times, final status).
        self.call_record_hooks: list[Callable[[CallRecord], None]] = []
        self._upserts: dict[tuple[str, str], Binding] = {}
        self._removals: set[tuple[str, str]] = set()
        self._stopping: asyncio.Event | None = None

    # -- users -----------------------------------------------------------------------------------

    def reload_users(self) -> None:
        """(Re)load device credentials (by SIP username) into the cache the hot path reads."""
        realm = self.config.realm
        # Devices of our realm win when another realm has the same username.
        devices = sorted(self.store.devices(), key=lambda d: d.realm == realm)
        self._credentials = {d.username: d.credentials() for d in devices}
        stale_realm = [d.username for d in devices if d.realm != realm]
        if stale_realm:
            self.log.warning("auth.realm_mismatch", realm=self.config.realm, users=stale_realm,
                             hint="these users were created for another realm; set their "
                                  "passwords again")

    def _lookup(self, username: str) -> Credentials | None:
        return self._credentials.get(username)

    # -- life cycle ------------------------------------------------------------------------------

    async def run(self, *, on_ready: Callable[[PbxServer], None] | None = None) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT)."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stopping.set)

        bindings = self.store.load_bindings(time.time())
        for binding in bindings:  # they authenticated before the restart: not strangers now
            if binding.received is not None:
                self.bans.succeeded(binding.received.host, time.time())
        restored = self.registrar.restore(bindings, time.time())
        # Calls that were in progress when the server last stopped end now in the history.
        closed = self.store.history_close_unfinished(time.time())
        if closed:
            self.log.info("history.closed_unfinished", entries=closed)
        self.history = AsyncHistory(
            self.store, on_error=lambda exc: self.log.error("history.write_failed",
                                                            error=repr(exc)))
        parties = directory_parties(self.directory, self.domain)
        self.call_record_hooks.append(CallRecordHistory(self.history, parties))
        self.call_record_hooks.append(self._call_events(parties))
        self._call_parties = parties  # the API's /calls: who is in a call in progress
        # the announcements, before any call can arrive: generated where the cache lacks them
        # (seconds, the first time), decoded into memory; off the event loop (subprocesses,
        # file I/O)
        self.prompts = await asyncio.to_thread(self._load_prompts)
        self._recover_voicemail()
        specs = self.config.sip.listen_specs()
        server_ssl = None
        if any(s.transport in ("tls", "wss") for s in specs):
            cert, key = self._tls_files()
            try:
                server_ssl = server_context(cert, key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("tls.cert", f"cannot load {cert} / {key}: {exc}") from None
        self.sip = AsyncEndpoint(
            self._make_endpoint,
            [str(s) for s in specs],
            server_ssl=server_ssl,
            ws_origins=self.config.sip.ws_origins,
            limits=TransportLimits(
                max_message_size=self.config.sip.max_message_size,
                max_connections_per_source=self.config.sip.max_connections_per_source,
                idle_timeout=self.config.sip.idle_timeout,
            ),
            on_event=self._on_event,
        )
        self.sip.on_transport_failed = self._flow_failed
        if self.config.security.ban_time > 0:
            self.sip.admit_source = self._admit_source
        await self.sip.start()
        self._sync_screen()  # [overload] force: refusing from the start
        try:
            # DESIGN.md principle 8: the services' task scopes (trunk DNS and registrations,
            # the calls) run inside the server's TaskGroup and end before it closes.
            async with asyncio.TaskGroup() as services:
                try:
                    self._start_trunks(services)
                    await self._start_http()
                    await self._start_calls(services)
                    if self.config.overload.enabled:  # after the start-up steps' stalls
                        services.create_task(self._overload_probe())
                    self.log.info("server.started", version=__version__,
                                  domain=self.config.domain,
                                  listening=[f"{t}:{h}:{p}" for t, h, p in self.sip.listening()],
                                  registrations_restored=len(restored) if restored else
                                  self.registrar.count())
                    if on_ready is not None:
                        on_ready(self)
                    await self._housekeeping()
                finally:
                    await self._stop_calls()
                    if self.trunks is not None:
                        await self.trunks.stop()
        finally:
            if self.http is not None:
                await self.http.close()
            if self.history is not None:
                await self.history.drain()
                self.history.close()
            stats = self.sip.statistics()
            await self.sip.close()
            self._flush_sync()
            self.log.info("server.stopped", **{k: v for k, v in sorted(stats.items()) if v})

    async def _start_calls(self, services: asyncio.TaskGroup) -> None:
        """Start the media engine and the B2BUA (after the SIP listeners are bound)."""
        assert self.sip is not None
        m, c = self.config.media, self.config.calls
        self.media = MediaEngine(m.host, (m.port_min, m.port_max))
        await self.media.start()
        self.b2bua = B2bua(
            self.sip, self.media,
            digest=DigestServer(self.config.realm, self.store.secret("nonce"),
                                nonce_ttl=self.config.auth.nonce_ttl,
                                algorithms=self.config.auth.algorithms, proxy=True,
                                start_time=time.time(),
                                strict_uri=self.config.auth.strict_digest_uri),
            lookup=self._lookup, registrar=self.registrar, domain=self.domain,
            user_exists=lambda ext: ext in self._credentials,
            settings=CallSettings(ring_timeout=c.ring_timeout, session_expires=c.session_expires,
                                  min_se=c.min_se, rtp_timeout=m.rtp_timeout,
                                  busy_tone=c.busy_tone, moh_file=m.moh_file, tones=c.tones,
                                  sdp_address=m.advertise),
            on_record=self._call_record, log=self.log, seclog=self.seclog,
            display_name=self._display_name, features=self.features,
        )
        self.b2bua.services.directory = self.directory
        self.b2bua.prompts = self.prompts
        self.b2bua.moh = self.moh
        self.b2bua.services.settings_service = self.settings
        self.settings.check = self.b2bua.services.check_settings
        services.create_task(self.b2bua.run(), name="calls")
        self.b2bua.auth_for = self._invite_auth
        self.b2bua.bans = self.bans
        self.b2bua.router = self.router
        self.b2bua.trunks = self.trunks
        self.b2bua.ice = self._ice_settings()
        self.b2bua.chat = ChatService(
            self.b2bua, self.store, self.directory, max_size=self.config.chat.max_size,
            limit=SenderLimit(self.config.chat.rate, self.config.chat.burst),
            events=self.events)
        self._start_mwi(services)
        self._start_mail(services)
        self._webhooks_task = services.create_task(self.webhooks.run(), name="webhooks")
        self._start_voicemail()

    def _tenant_of_user(self, user_id: int) -> int | None:
        """The tenant of a user (the webhooks' event filter)."""
        user = self.directory.user_by_id(user_id)
        return None if user is None else user.tenant_id

    def _start_mwi(self, services: asyncio.TaskGroup) -> None:
        """Message waiting indication: SUBSCRIBE/NOTIFY for the voicemail boxes (pbx.mwi)."""
        assert self.sip is not None and self.b2bua is not None
        counts = getattr(self.store, "voicemail_counts", None)
        self.mwi = MwiService(self.sip, auth_for=self._invite_auth, directory=self.directory,
                              registrar=self.registrar, settings=self.settings,
                              domain=self.domain, contact_for=self.b2bua.contact_for,
                              counts=counts, bans=self.bans, seclog=self.seclog)
        self.mwi.attach(self.events)
        self._mwi_task = services.create_task(self.mwi.run(), name="mwi")

    def _start_mail(self, services: asyncio.TaskGroup) -> None:
        """The voicemail mail sender: drains the outbox through ``[smtp]`` (pbx.mail)."""
        smtp = self.config.smtp
        self.mail = MailSender(self.store, smtp, smtp.from_address or f"voicemail@{self.domain}",
                               on_deleted=self._forwarded_and_removed)
        loop = asyncio.get_running_loop()
        mail = self.mail

        def queued() -> None:  # a deposit may run in a worker thread
            loop.call_soon_threadsafe(mail.wake)

        self.mail_outbox.on_queued = queued
        self._mail_task = services.create_task(self.mail.run(), name="mail")

    def _forwarded_and_removed(self, mail: Any) -> None:
        """A forwarded message left its box (forward without "also keep"): publish the box's
        counts as the box does after every change (the lamps follow)."""
        counts = getattr(self.store, "voicemail_counts", None)
        if counts is None or mail.user_id is None:
            return
        new, old, new_urgent, old_urgent = counts(mail.user_id)
        self.events.publish("voicemail.changed", {
            "tenant": mail.payload.get("tenant", ""), "user": mail.payload.get("extension", ""),
            "user_id": mail.user_id, "new": new, "old": old, "new_urgent": new_urgent,
            "old_urgent": old_urgent})

    def _recover_voicemail(self) -> None:
        """Voicemail files and rows agree again after a crash (pbx.voicemail.storage); the
        boxes that changed are published."""
        from pbx.voicemail import publish_counts, recover_boxes

        for user_id in sorted(recover_boxes(self.store, self.config.data_dir)):
            user = self.directory.user_by_id(user_id)
            tenant = self.directory.tenant(user.tenant_id) if user is not None else None
            if user is not None and tenant is not None:
                publish_counts(self.store, self.events, user_id, tenant.name, user.extension)

    def _voicemail_service(self) -> Any:
        """The voicemail service (pbx.voicemail), once the B2BUA exists."""
        from pbx.voicemail import VoicemailService

        def tenant_name(tenant_id: int | None) -> str:
            tenant = (self.directory.tenant(tenant_id) if tenant_id is not None
                      else self.directory.default_tenant)
            return tenant.name if tenant is not None else "default"

        def user_in_tenant(tenant_id: int | None, extension: str) -> Any:
            tenant = (self.directory.tenant(tenant_id) if tenant_id is not None
                      else self.directory.default_tenant)
            user = self.directory.user_in_tenant(tenant.id, extension) if tenant else None
            if user is None or self.b2bua is None:
                return None
            return self.b2bua.routing.view(user)

        def portal_tenant(call: Any) -> int | None:
            origin = self.b2bua.origins.get(call.id) if self.b2bua is not None else None
            trunk = origin.trunk if origin is not None else None
            number = self.directory.owner_of_did(call.record.callee)
            if trunk is None or number is None or number.tenant_id != trunk.tenant_id or \
                    not self.directory.is_voice_portal(number.e164):
                return None
            return number.tenant_id

        assert self.b2bua is not None
        return VoicemailService(self.store, self.config.data_dir, self.events, self.b2bua,
                                tenant_name=tenant_name, user_in_tenant=user_in_tenant,
                                seclog=self.seclog, portal_tenant=portal_tenant)

    def _start_voicemail(self) -> None:
        """Hand the voicemail feature its service (deposit, menu, portal)."""
        from features.voicemail import Voicemail

        feature = self.features.get("voicemail")
        if isinstance(feature, Voicemail):
            feature.service = self._voicemail_service()

    def _load_prompts(self) -> PromptStore:
        """The prompt set (pbx.prompts): ``[prompts] cache_dir``, else the data directory's
        cache; a tenant's recordings are found under its id, domain or name."""
        p = self.config.prompts
        data = Path(self.config.data_dir)
        store = PromptStore.load(data, cache=Path(p.cache_dir) if p.cache_dir else None,
                                 default_language=p.default_language)

        def names(tenant_id: int) -> tuple[str, ...]:
            tenant = self.directory.tenant(tenant_id)
            return (str(tenant_id),) if tenant is None else (
                str(tenant_id), tenant.domain, tenant.name)

        store.tenant_names = names
        return store

    def _start_trunks(self, services: asyncio.TaskGroup) -> None:
        """Build the trunk manager from the store's trunks and start registering (after the
        SIP listeners are bound: the Contact needs their address). A trunk row that does not
        make a usable trunk is logged and left out."""
        assert self.sip is not None
        advertise = self.config.sip.advertise or None
        self.trunks = TrunkManager(self._trunk_configs(), contact_host=advertise,
                                   user_agent=f"{self.config.sip.user_agent}/{__version__}")
        self.trunks.on_state = self._trunk_state_event
        services.create_task(self.trunks.run(self.sip), name="trunks")
        self._trunks_seen = self.directory.reloads

    def _trunk_configs(self) -> list[TrunkConfig]:
        """The directory's trunks as TrunkConfigs (a row that makes no usable trunk is logged
        and left out)."""
        configs = []
        for row in self.directory.all_trunks():
            tenant = self.directory.tenant(row.tenant_id)
            try:
                configs.append(TrunkConfig.from_store(row, tenant=tenant.name if tenant else ""))
            except ValueError as exc:
                self.log.error("trunk.unusable", trunk=row.name, error=str(exc))
        return configs

    def _reconcile_trunks(self) -> None:
        """After a directory reload (this process's write or another's, e.g. ``asyncpbx trunk
        add``): trunks added, removed or changed take effect without a restart."""
        if self.trunks is None or self.directory.reloads == self._trunks_seen:
            return
        self._trunks_seen = self.directory.reloads
        self.trunks.reconcile(self._trunk_configs())

    async def _stop_calls(self) -> None:
        """Release every call (BYE/CANCEL/5xx), then stop the media engine."""
        if self.mwi is not None:  # terminated;reason=deactivated: phones subscribe again
            self.mwi.shutdown()
            if self._mwi_task is not None:
                self._mwi_task.cancel()
        if self._mail_task is not None:  # what is pending stays in the outbox
            self._mail_task.cancel()
        if self._webhooks_task is not None:  # the queued events are written first
            self._webhooks_task.cancel()
        if self.b2bua is not None:
            await self.b2bua.close()
        if self.media is not None:
            await self.media.close()

    def _call_events(self, parties: Callable[[Any], Any]) -> Callable[[CallRecord], None]:
        """The hook publishing call.started/answered/ended on the event bus."""
        from pbx.api.events import CallEvents

        def tenant(record: CallRecord) -> int | None:
            if record.tenant_id is not None:
                return record.tenant_id
            found = self.directory.tenant_for_domain(self.domain)
            return found.id if found is not None else None

        return CallEvents(self.events, parties, tenant)

    def _trunk_state_event(self, trunk: TrunkConfig, state: str, reason: str) -> None:
        """trunk.state on the event bus (for the tenant's admins: the portal's overview and
        trunk list refresh on it)."""
        self.events.publish("trunk.state", {"trunk": trunk.name,
                                            "tenant_id": trunk.tenant_id or 0,
                                            "state": state, "reason": reason})

    def _registration_event(self, kind: str, b: Binding, **extra: object) -> None:
        """registration.added/removed on the event bus (with the user and tenant, so each
        token sees its own)."""
        rest = b.aor.split(":", 1)[-1]
        ext, _, host = rest.partition("@")
        user = self.directory.user(host, ext)
        self.events.publish(kind, {"aor": b.aor, "contact": b.uri,
                                   "user_id": user.id if user is not None else None,
                                   "tenant_id": user.tenant_id if user is not None else 0,
                                   **extra})

    def _call_record(self, record: CallRecord) -> None:
        for hook in self.call_record_hooks:
            try:
                hook(record)
            except Exception:
                self.log.exception("call.history_hook_failed", call_id=record.call_id)

    async def _start_http(self) -> None:
        """Serve /health, the REST API (/api/v1, pbx.api), /metrics and the /phone page on one
        aiohttp application. A port taken is logged, not fatal: monitoring must not keep the
        telephone service from starting."""
        address = parse_http_listen(self.config.http.listen)
        if address is None:
            return
        service = HttpService(self.health_figures)
        self._install_api(service)
        PhonePage(self.phone_settings).add_routes(service.app)
        try:
            await service.start(*address)
        except OSError as exc:
            self.log.error("http.listen_failed", listen=self.config.http.listen, error=str(exc))
            return
        self.http = service

    def _install_api(self, service: HttpService) -> None:
        """The REST API and /metrics on ``service``'s application (pbx.api)."""
        from pbx import api  # pydantic and prometheus-client load only with HTTP on
        from pbx.api.logins import SessionPolicy

        self.api_events = api.EventLog(self.events)
        ctx = api.ApiContext(
            store=self.store, directory=self.directory, settings=self.settings,
            codes=self.codes, features=self.features, bus=self.events, events=self.api_events,
            figures=self.health_figures,
            sip_statistics=lambda: self.sip.statistics() if self.sip is not None else {},
            bindings=self._bindings, version=__version__, bans=self.bans,
            call_back=self._call_back, chat_send=self._chat_send,
            live_calls=self._live_calls, hang_up=self._hang_up, webhooks=self.webhooks,
            sessions=SessionPolicy(idle=self.config.http.session_idle,
                                   lifetime=self.config.http.session_lifetime),
            call_control=self._live_call_service(),
            conferences=self._conference_control(), moh=self.moh)
        metrics = api.Metrics(self.health_figures, ctx.sip_statistics,
                              lambda: {"event_clients": self.api_events.clients
                                       if self.api_events is not None else 0,
                                       **self.webhooks.figures()})
        api.install(service.app, ctx, metrics, phone=self.phone_settings)

    def _conference_control(self) -> Any:
        """The conference operations of the API (features.conference_control), on our calls."""
        from features.conference_control import ConferenceControl

        def calls() -> list[Any]:
            return list(self.b2bua.calls.values()) if self.b2bua is not None else []

        def parties(call: Any) -> tuple[int, list[int]]:
            record = call.record
            found = self._call_parties(record) if self._call_parties else []
            default = self.directory.tenant_for_domain(self.domain)
            tenant = record.tenant_id if record.tenant_id is not None else (
                default.id if default is not None else 0)
            return tenant, sorted({p.user_id for p in found})

        self.conferences = ConferenceControl(calls, lambda: self.b2bua, self.events.publish, parties)
        return self.conferences

    def _is_conference(self, call: Any) -> bool:
        return bool(self.conferences is not None and self.conferences.is_conference(call))

    def _call_back(self, user: User, target: str, phone: str | None) -> str:
        """Start a call-back for ``user`` (the API's POST /users/{user}/call-backs)."""
        if self.b2bua is None:
            raise RuntimeError("calls are not running")
        return self.b2bua.call_back(user, target, phone=phone).record.call_id

    def _live_calls(self) -> list[Any]:
        """The calls in progress (the API's GET /calls), oldest first."""
        from pbx.api import LiveCall

        if self.b2bua is None:
            return []
        parties = self._call_parties
        default = self.directory.tenant_for_domain(self.domain)
        out = []
        for call in list(self.b2bua.calls.values()):
            record = call.record
            if call.released or record.ended is not None:
                continue
            users = sorted({p.user_id for p in parties(record)}) if parties else []
            tenant = record.tenant_id if record.tenant_id is not None else (
                default.id if default is not None else 0)
            out.append(LiveCall(
                call_id=record.call_id, tenant_id=tenant, user_ids=tuple(users),
                direction=record.direction, caller=record.caller, callee=record.callee,
                state="ringing" if record.answered is None else "answered",
                since=record.started, answered_at=record.answered,
                conference=self._is_conference(call)))
        return sorted(out, key=lambda c: c.since)

    def _live_call_service(self) -> Any:
        """Hold, resume and transfer of calls in progress (the API's /calls/{call}/...)."""
        from pbx.services.live_calls import LiveCallService

        def calls() -> list[Any]:
            return list(self.b2bua.calls.values()) if self.b2bua is not None else []

        def describe(call: Any) -> tuple[int, list[int]]:
            record = call.record
            parties = self._call_parties
            default = self.directory.tenant_for_domain(self.domain)
            tenant = record.tenant_id if record.tenant_id is not None else (
                default.id if default is not None else 0)
            return tenant, sorted({p.user_id for p in parties(record)}) if parties else []

        return LiveCallService(calls, lambda: self.b2bua, self.events, describe)

    def _hang_up(self, call_id: str) -> bool:
        """Hang up the call whose caller's Call-ID is ``call_id`` (the API's DELETE
        /calls/{call}); False when there is none."""
        if self.b2bua is None:
            return False
        call = next((c for c in list(self.b2bua.calls.values())
                     if c.record.call_id == call_id and not c.released), None)
        if call is None:
            return False
        self.log.info("call.hung_up_by_api", call_id=call_id)
        call.record.cause = "hung up (API)"
        call.hangup()
        return True

    async def _chat_send(self, sender: User, recipient: User, body: bytes,
                         content_type: str) -> tuple[Any, bool]:
        """Send a chat message as ``sender`` (the API's POST /users/{user}/chats/{other})."""
        chat = self.b2bua.chat if self.b2bua is not None else None
        if chat is None:
            raise RuntimeError("calls are not running")
        return await chat.send(sender, recipient, body, content_type=content_type)

    def _bindings(self) -> list[Binding]:
        """Every current registration (the API's /registrations)."""
        now = time.time()
        return [b for aor in self.registrar.aors() for b in self.registrar.bindings(aor, now)]

    def phone_settings(self) -> dict[str, object]:
        """What the /phone page needs: our SIP domain and WebSocket listeners (and the SIP
        listeners a phone is set up with)."""
        listening = self.sip.listening() if self.sip is not None else []
        # the keypad's long-press 1 dials the box: the code as the table has it now
        voicemail = next((code for code, (feature, fc) in self.features.code_table().items()
                          if feature == "voicemail" and fc.action == "listen"), "*86")
        return {"domain": self.domain,
                "websockets": [f"{t}://{h}:{p}/" for t, h, p in listening if t in ("ws", "wss")],
                "sip": [f"{h}:{p};transport={t}" for t, h, p in listening
                        if t in ("udp", "tcp", "tls")],
                "voicemail_code": voicemail}

    def health_figures(self) -> dict[str, object]:
        """What /health reports besides status and uptime."""
        calls = getattr(self, "b2bua", None)  # the call layer, once it runs
        return {"registrations": self.registrar.count(),
                "active_calls": len(calls.calls) if calls is not None else 0,
                "trunks": self.trunks.health_list() if self.trunks is not None else []}

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        if self._stopping is not None:
            self._stopping.set()

    def _tls_files(self) -> tuple[Path, Path]:
        if self.config.tls.cert:
            return Path(self.config.tls.cert), Path(self.config.tls.key)
        hosts = [self.config.domain, *(s.host for s in self.config.sip.listen_specs())]
        return ensure_self_signed(Path(self.config.data_dir), hosts)

    def _make_endpoint(self, listening: list[tuple[str, str, int]]) -> Endpoint:
        """The sans-IO endpoint, built once the listeners are bound (port 0 resolved)."""
        return Endpoint(EndpointConfig(
            sent_by=sent_by(listening, self.config.sip.advertise or None),
            user_agent=f"{self.config.sip.user_agent}/{__version__}",
            allow=ALLOWED_METHODS,
            supported=SUPPORTED_OPTIONS,
            t1=self.config.sip.t1,
            # a challenged INVITE gets its 407 without a 100 first, and a forwarded one none
            # either when the callee's 18x is relayed within 200 ms (§17.2.1): one message
            # less per call; a slow callee's caller gets the 100.
            trying_delay=min(0.2, self.config.sip.t1 / 2),
        ))

    async def _housekeeping(self) -> None:
        """Once a second: expire registrations and write registration changes behind."""
        assert self._stopping is not None
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FLUSH_INTERVAL)
            self._apply(self.registrar.expire(time.time()))
            await self._flush()
            self._bans_housekeeping(time.time())
            try:
                if self.directory.refresh_if_changed():
                    self.log.info("directory.reloaded", reloads=self.directory.reloads)
                    if self.mwi is not None:  # a box changed by the CLI: the lamps follow
                        self.mwi.recheck()
                self.codes.refresh()
            except Exception:
                self.log.exception("directory.reload_failed")
            try:
                self._reconcile_trunks()
            except Exception:
                self.log.exception("trunk.reconcile_failed")

    def _ice_settings(self) -> IceSettings | None:
        """``[webrtc]`` as the browser legs' ICE settings (None: no address to offer)."""
        w = self.config.webrtc
        addresses = w.host_addresses(self.config.media)
        if not addresses:
            return None
        return IceSettings(addresses, stun_servers=w.stun_servers, turn_servers=w.turn_servers,
                           turn_username=w.turn_username, turn_password=w.turn_password,
                           port_range=(w.port_min, w.port_max) if w.port_max else None)

    def _flow_failed(self, peer: Peer) -> None:
        """A WebSocket closed (or could not be written): its browsers' bindings go at once,
        and their calls end."""
        if peer.transport in ("ws", "wss") and peer.conn_id is not None:
            self._apply(self.registrar.remove_flow(peer.transport, peer.conn_id))
            calls = getattr(self, "b2bua", None)
            if calls is not None:
                calls.flow_closed(peer)

    def _keep_flow(self, b: Binding, removed: bool) -> None:
        """Keep a registration's TCP/TLS/WS connection open while its binding lives (RFC 5626
        §5.2): the phone can only be reached over it."""
        r = b.received
        if self.sip is None or r is None or r.conn_id is None or not r.reliable:
            return
        until = 0.0
        if not removed:
            until = asyncio.get_running_loop().time() + b.remaining(time.time()) + FLOW_GRACE
        self.sip.transports.keep_open(r.conn_id, until)

    def _apply(self, changes: list[BindingChange]) -> None:
        for change in changes:
            b = change.binding
            key = (b.aor, b.uri)
            self._keep_flow(b, isinstance(change, BindingRemoved))
            if isinstance(change, BindingRemoved):
                self._upserts.pop(key, None)
                self._removals.add(key)
                self.log.info("sip.register.removed", aor=b.aor, contact=b.uri,
                              reason=change.reason.value, call_id=b.call_id)
                self._registration_event("registration.removed", b,
                                         reason=change.reason.value)
            else:
                self._removals.discard(key)
                self._upserts[key] = b
                if isinstance(change, BindingAdded):
                    self.log.info("sip.register.added", aor=b.aor, contact=b.uri,
                                  expires=b.remaining(time.time()), call_id=b.call_id,
                                  src=f"{b.received.host}:{b.received.port}" if b.received else None)
                    self._registration_event("registration.added", b,
                                             expires=b.remaining(time.time()))
                    if self.b2bua is not None and self.b2bua.chat is not None:
                        self.b2bua.chat.registered(b)  # messages kept while offline
                elif isinstance(change, BindingRefreshed):
                    self.log.debug("sip.register.refreshed", aor=b.aor, contact=b.uri,
                                   call_id=b.call_id)
                    if self.b2bua is not None and self.b2bua.chat is not None:
                        self.b2bua.chat.registered(b, refresh=True)

    def _take_batch(self) -> tuple[list[Binding], list[tuple[str, str]]]:
        upserts, removals = list(self._upserts.values()), list(self._removals)
        self._upserts.clear()
        self._removals.clear()
        return upserts, removals

    async def _flush(self) -> None:
        if not self._upserts and not self._removals:
            return
        upserts, removals = self._take_batch()
        try:
            await asyncio.to_thread(self.store.save_bindings, upserts, removals)
        except Exception:
            self.log.exception("store.write_failed", rows=len(upserts) + len(removals))

    def _flush_sync(self) -> None:
        if self._upserts or self._removals:
            self.store.save_bindings(*self._take_batch())

    # -- SIP ---------------------------------------------------------------------------------------

    async def _overload_probe(self) -> None:
        """Sample the event loop's lag every ``[overload] interval`` seconds (pbx/overload.py);
        one ``overload.started`` / ``overload.ended`` line per change of state."""
        assert self._stopping is not None
        loop = asyncio.get_running_loop()
        detector = self.overload
        delay = detector.tick(loop.time(), self._queued_bytes())
        while not self._stopping.is_set():
            await asyncio.sleep(delay)
            was = detector.state
            delay = detector.tick(loop.time(), self._queued_bytes(), self._sojourn())
            if detector.state is not was:
                self._sync_screen()
                self.log.warning("overload.started" if detector.overloaded else "overload.ended",
                                 lag_ms=round(detector.lag * 1000, 1),
                                 queue_bytes=round(detector.queue),
                                 fraction=round(detector.fraction, 3),
                                 rejected=detector.stats["rejected"])

    def _queued_bytes(self) -> int:
        """What waits unread in the SIP UDP sockets (the overload detector's queue depth)."""
        if self.sip is None or self.overload.policy.queue_threshold <= 0:
            return 0
        try:
            return self.sip.transports.udp_queued_bytes()
        except RuntimeError:  # not listening (yet / any more)
            return 0

    def _sojourn(self) -> float | None:
        """The backlog's delay since the last sample (the transport's ``take_sojourn``)."""
        if self.sip is None or self.sip._transports is None:
            return None
        return self.sip.transports.take_sojourn()

    def _sync_screen(self) -> None:
        """While overloaded, new work is refused before it is parsed (the transport layer's
        screen, :meth:`_screen`); otherwise every message goes straight to the parser."""
        if self.sip is not None and self.sip._transports is not None:
            self.sip.transports.screen = self._screen if self.overload.overloaded else None

    def _screen(self, data: bytes, peer: Peer) -> tuple[bytes, Peer] | None:
        """Overload control's admission (pbx/overload.py) for one message, read only as far as
        it needs (sipcore/stateless.py): a new INVITE or a REGISTER from an untrusted source
        that is not admitted is answered 503 + Retry-After statelessly — no parse, no
        transaction, so refusing costs little of the capacity the admitted calls need — and
        the ACKs of those answers are dropped. Everything else (in-dialog requests, BYE,
        CANCEL, responses, trusted peers, credentialed retries of admitted first tries, and
        what :func:`stateless.peek` cannot read plainly) goes on to the parser."""
        head = stateless.peek(data)
        if head is None:
            return None
        method = head.method
        if method == "ACK":
            return (b"", peer) if stateless.is_ack_of(self._stateless_secret, head) else None
        if method != "INVITE" and method != "REGISTER":
            return None
        trusted = peer.host in self._trusted or (
            self.trunks is not None and self.trunks.identify(peer) is not None)
        if self.overload.decide(method, head.to_tag is not None, trusted,
                                credentials=head.credentials) is not Admission.REJECT:
            return None
        answer = stateless.reply(
            head, 503, "Service Unavailable", source=(peer.host, peer.port),
            to_tag=stateless.stateless_tag(self._stateless_secret, head),
            headers=(("Retry-After", str(self.overload.policy.retry_after)),))
        if peer.transport == "udp":
            port = stateless.reply_port(head, peer.port)
            if port != peer.port:
                peer = dataclasses.replace(peer, port=port)
        return answer, peer

    def _on_event(self, event: Event) -> None:
        if self.trunks is not None and self.trunks.on_event(event):
            return  # a response to one of the trunks' REGISTERs
        if (self.mwi is not None and isinstance(event, RequestReceived)
                and event.request.method == "SUBSCRIBE"):
            self.mwi.on_request(event)
            return
        if not isinstance(event, RequestReceived) or event.request.method != "REGISTER":
            # calls: INVITE/ACK/BYE/CANCEL/UPDATE/INFO, responses, transaction events
            if self.b2bua is not None:
                self.b2bua.handle_event(event)
            return
        if isinstance(event, RequestReceived):
            request = event.request
            try:
                if request.method == "REGISTER":
                    self._on_register(request, event.peer, event.transaction_id)
                else:  # pragma: no cover - the endpoint filters by ALLOWED_METHODS
                    self._respond(make_response(request, 405), event.transaction_id)
            except Exception:
                # The per-request supervisor: one bad request never takes the server down.
                self.log.exception("sip.request.failed", method=request.method,
                                   call_id=_safe_call_id(request))
                with contextlib.suppress(Exception):
                    self._respond(make_response(request, 500, "Server Internal Error"),
                                  event.transaction_id)

    def _respond(self, response: Response, transaction_id: str) -> None:
        """Answer through the request's server transaction (named: no matching by Via)."""
        assert self.sip is not None
        self.sip.send_response(response, transaction_id=transaction_id)

    def _aor_of(self, request: Request) -> tuple[str, str] | None:
        """(extension, canonical AOR) for the To of a REGISTER, or None when not ours."""
        uri = request.to.uri
        if not isinstance(uri, SipURI) or not uri.user:
            return None
        return uri.user, f"sip:{uri.user}@{self.domain}"

    # -- tenants and realms ------------------------------------------------------------------------

    def _realm_of(self, host: str) -> tuple[str, str]:
        """(realm, AOR domain) of the tenant a request to ``host`` belongs to: a tenant's SIP
        domain, else (our IP address, an unknown name) the default tenant, whose devices use
        the configured realm and whose AORs use our domain."""
        tenant = self.directory.tenant_for_domain(host) if host else None
        default = self.directory.default_tenant
        if tenant is None or (default is not None and tenant.id == default.id):
            return self.config.realm, self.domain
        return tenant.realm, tenant.domain

    def _auth_for_host(self, host: str) -> tuple[DigestServer, DigestServer,
                                                   Callable[[str], Credentials | None]]:
        """The digest servers (REGISTER 401, INVITE 407) and credentials lookup of the realm
        of ``host``'s tenant (made once per realm)."""
        realm = self._realm_of(host)[0]
        found = self._realms.get(realm)
        if found is None:
            if realm == self.config.realm:
                register = self.digest
            else:
                register = DigestServer(realm, self.store.secret("nonce"),
                                        nonce_ttl=self.config.auth.nonce_ttl,
                                        algorithms=self.config.auth.algorithms,
                                        start_time=self._start_time,
                                        strict_uri=self.config.auth.strict_digest_uri)
            invite = DigestServer(realm, self.store.secret("nonce"),
                                  nonce_ttl=self.config.auth.nonce_ttl,
                                  algorithms=self.config.auth.algorithms, proxy=True,
                                  start_time=self._start_time,
                                  strict_uri=self.config.auth.strict_digest_uri)
            directory = self.directory

            def lookup(username: str) -> Credentials | None:
                return directory.credentials(realm, username)

            found = (register, invite, lookup)
            self._realms[realm] = found
        return found

    def _invite_auth(self, request: Request) -> tuple[DigestServer,
                                                       Callable[[str], Credentials | None]]:
        """For the B2BUA: the 407 digest server and lookup of an INVITE's tenant."""
        _, invite, lookup = self._auth_for_host(_request_host(request))
        return invite, lookup

    def _register_target(self, request: Request, realm: str, username: str
                         ) -> tuple[str, str] | None:
        """(extension, AOR) a device may register: the To user must be the device's
        username or its user's extension; the AOR is the user's extension at the tenant's
        domain (so every device of a user rings). None: not this device's address."""
        uri = request.to.uri
        if not isinstance(uri, SipURI) or not uri.user:
            return None
        user = self.directory.user_of_device(realm, username)
        ext = user.extension if user is not None else username
        if uri.user not in (username, ext):
            return None
        domain = self._realm_of(uri.host.strip("[]"))[1]
        return ext, f"sip:{ext}@{domain}"

    def _admit_source(self, peer: Peer) -> bool:
        """The transport layer's question for every message and inbound connection: a
        trunk's source is always let in; anyone else unless banned (pbx/bans.py)."""
        if self.trunks is not None and self.trunks.identify(peer) is not None:
            return True
        return self.bans.admit(peer.host, time.time())

    def _bans_housekeeping(self, now: float) -> None:
        """Lift what ``asyncpbx bans lift`` asked for; write the bans in force to the data
        directory when they changed (pbx/banfile.py)."""
        try:
            for source in take_lift_requests(self.config.data_dir):
                lifted = self.bans.lift(source)
                self.seclog.warning("security.ban.lifted", src=source, was_banned=lifted)
            bans = self.bans.bans(now)
            if bans != self._bans_written:
                write_bans(self.config.data_dir, bans)
                self._bans_written = bans
        except OSError as exc:
            self.log.error("security.bans_file_failed", error=str(exc))

    def _log_ban(self, ban: Ban) -> None:
        """One line per ban, for fail2ban: ``security.ban src=<ip>``."""
        self.seclog.warning("security.ban", src=ban.source, reason=ban.reason, count=ban.count,
                            seconds=round(ban.until - ban.since))

    def _display_name(self, caller: str) -> str:
        user = self.directory.user(self.domain, caller)
        return user.name if user is not None else ""

    def _on_register(self, request: Request, peer: Peer, tx_id: str) -> None:
        now = time.time()
        digest, _, lookup = self._auth_for_host(_request_host(request))
        result = verify_with_bans(digest, self.bans, request, peer.host, lookup, now)
        if not result.ok:
            if result.failed and result.reason is not None and result.is_guess:
                # fail2ban: "security.auth.failed src=<ip>"
                self.seclog.warning("security.auth.failed", src=peer.host,
                                    user=result.username, reason=result.reason.value,
                                    method="REGISTER", call_id=_safe_call_id(request))
            self._respond(digest.challenge(request, peer.host, now, stale=result.stale),
                          tx_id)
            return
        try:
            target = self._register_target(request, digest.realm, result.username or "")
        except ParseError as exc:
            self._respond(make_response(request, 400, exc.reason), tx_id)
            return
        if target is None:
            # Authenticated, but for another user's address (RFC 3261 §10.3 step 6).
            self._respond(make_response(request, 403, "Forbidden: may not register this AOR"),
                          tx_id)
            return
        response, changes = self.registrar.handle_register(request, target[1], peer, now)
        self._apply(changes)
        self._respond(response, tx_id)


def _request_host(request: Request) -> str:
    """The host a request is addressed to (Request-URI), which picks the tenant."""
    uri = request.uri
    return uri.host.strip("[]") if isinstance(uri, SipURI) else ""


def _safe_call_id(request: Request) -> str | None:
    try:
        return request.call_id
    except ParseError:
        return None


def _portal_url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/portal/"


def _print_banner(server: PbxServer, demo: list[tuple[str, str, str]],
                  demo_requested: bool = False) -> None:
    out, config = server.out, server.config
    assert server.sip is not None
    print(f"asyncpbx {__version__}: SIP domain {config.domain}, realm {config.realm}, "
          f"data in {Path(config.data_dir).resolve()}", file=out)
    listening = server.sip.listening()
    for transport, host, port in listening:
        print(f"listening {transport} {host} {port}", file=out)
    if server.http is not None:
        print(f"listening http {server.http.host} {server.http.port}", file=out)
    if demo:
        udp = next(((h, p) for t, h, p in listening if t == "udp"), None) or listening[0][1:]
        host = f"[{udp[0]}]" if ":" in udp[0] else udp[0]
        print("\ndemo users (created now; passwords are shown only once):", file=out)
        for ext, password, name in demo:
            print(f"  {ext}  password {password}  ({name})", file=out)
        ext, password, _ = demo[0]
        print(f"\nregister a phone: SIP server {host}:{udp[1]}, user {ext}, password {password}, "
              f"domain {config.domain}", file=out)
        print("\ntwo softphones talking: register one as "
              + " and one as ".join(e for e, _, _ in demo[:2])
              + f", then dial {demo[1][0] if len(demo) > 1 else ext} from the first", file=out)
        print("  baresip (~/.baresip/accounts, one line per phone; run each baresip with its "
              "own -f DIR):", file=out)
        for e, pw, _ in demo[:2]:
            print(f"    <sip:{e}@{config.domain}>;outbound=\"sip:{host}:{udp[1]}\";"
                  f"auth_pass={pw};regint=600", file=out)
        print("  a desktop softphone (Linphone, MicroSIP, Zoiper …): account type SIP, "
              f"username {ext}, password as above, domain {config.domain}, "
              f"proxy/registrar {host}:{udp[1]}, transport UDP, authentication user {ext}; "
              "codecs G.711 (PCMU/PCMA), G.722 or Opus", file=out)
        print(f"  from a shell: sipsak -U -s sip:{ext}@{host}:{udp[1]} -a {password}", file=out)
        if server.http is not None:
            print(f"\nthe portal: {_portal_url(server.http.host, server.http.port)} — log in "
                  "with an extension and its password above (the same for SIP and the portal); "
                  f"{ext} is the administrator, and /portal/phone is the browser softphone",
                  file=out)
    elif demo_requested and server.http is not None:
        print(f"\nthe portal: {_portal_url(server.http.host, server.http.port)}", file=out)
    if not demo and demo_requested and server.store.user_count():
        # a second start: the users are there, their passwords were printed when made
        users = ", ".join(u.extension for u in server.store.users()[:8])
        print(f"\nusers: {users} (their passwords were printed when they were made; "
              "`asyncpbx device add EXT --username NAME` makes a new SIP account, and an empty "
              "data directory starts the demo afresh)", file=out)
    elif not server.store.user_count():
        print("no users yet: add one with `asyncpbx user add 100 --password SECRET` "
              "(or start with --demo)", file=out)
    print("ready", file=out, flush=True)


def tune_gc() -> None:
    """Garbage-collector settings for a server that allocates fast and keeps state.

    Everything alive after start-up (modules, config, caches) is frozen out of the collector's
    scans, and young generations are collected less often: with the default threshold of 700
    allocations, thousands of requests a second trigger a collection every few requests and
    the oldest generation is rescanned so often that the pauses (tens to hundreds of ms at
    load, measured) overflow the UDP receive buffer. The middle generation is collected after
    every second young one: what it holds at load (transactions waiting out Timer J/K, calls)
    survives for seconds and is freed by reference counting, not by the collector, so each
    pass over it is pure pause — at 500 calls/s a middle generation of 20 young rounds took
    ~200 ms a pass, of 2 rounds ≤ 45 ms (bench overload's server, measured with gc.callbacks),
    for the same total work. Reference cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 2, 100)
    GcWatch().start()  # a pass long enough to hurt calls is logged (gc.pause)



def serve(config: Config, *, demo: bool = False) -> int:
    """Run the server in the foreground until SIGTERM/SIGINT; returns the exit status."""
    configure_logging(config.log.level, json=config.log.json)
    log = get_logger("pbx")
    interpreted, stale = _compiled.missing(), _compiled.stale()
    if interpreted:  # a build without mypyc: it works, but at a fraction of the speed
        log.warning("build.not_compiled", modules=interpreted,
                    fix="pip install mypy, then pip install -e . again")
    if stale:  # an edited checkout: the compiled modules still run the code of the last build
        log.warning("build.stale", modules=stale, fix="pip install --no-build-isolation -e . again")
    store = Store(config.data_dir, domain=config.domain)
    store.ensure_default_tenant(config.domain, config.realm)
    created = []
    if demo:
        from pbx.cli import demo_users

        created = demo_users(store, config.realm, config.domain)
    server = PbxServer(config, store)
    tune_gc()

    def ready(s: PbxServer) -> None:
        _print_banner(s, created, demo_requested=demo)

    try:
        _run(server.run(on_ready=ready))
    except OSError as exc:
        print(f"asyncpbx: cannot listen: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _run(coro: Any) -> None:
    """Run on uvloop when it is installed (it is a dependency), else the default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)
