"""The trunks' asyncio driver (:class:`TrunkManager`): registrations, DNS names, the trunk table.

One sans-IO :class:`~sipcore.uac_register.Registration` per registration trunk over the
server's :class:`~sipcore.aio.endpoint.AsyncEndpoint`, one timer handle for all of them, the
endpoint's events for our transactions (:meth:`TrunkManager.on_event`), per-trunk state for
``/health`` (:meth:`TrunkManager.health_list`), trunks added/removed/changed while running
(:meth:`TrunkManager.reconcile`: new ones register, removed ones de-register), de-registration
on :meth:`TrunkManager.stop`.

DNS names: a trunk ``host`` that is a name (``sip.carrier.de``) is resolved by the manager's
:class:`~pbx.trunks.dns.DnsWatcher` (A/AAAA via the loop's ``getaddrinfo``, or any
:data:`~pbx.trunks.dns.Resolver`; no SRV/NAPTR — the port is configured) at start, on
reconcile, every ``resolve_interval``, just before each registration refresh and at once after
a registration failure; failures are retried with a growing delay. The resolved addresses live
in :attr:`TrunkConfig.addresses`: requests go to the first one (so the endpoint's
foreign-challenge check applies as for an IP trunk), challenges count from any of them with
the trunk's port, inbound requests from any of them. A name that has never resolved leaves the
trunk "failed" (``last_error`` "cannot resolve …"); one that stops resolving keeps its last
addresses.

Security (SECURITY.md "credential leaks", "toll fraud"): every refused challenge is a
``security.trunk.challenge_refused`` log line carrying ``src=``. A challenge from another
address never even reaches the transaction (the endpoint drops it,
:class:`~sipcore.transaction.ForeignChallengeDropped`): it is logged once per transaction as
``security.trunk.foreign_challenge src=…`` and the real answer is still awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pbx.logsetup import get_logger
from pbx.trunks.config import TrunkConfig
from pbx.trunks.dns import DnsWatcher, HostQuery, Resolver, resolve_host
from pbx.trunks.inbound import identify_trunk, sanitize_inbound
from pbx.trunks.outbound import ChallengeRefusedError, answer_challenge
from sipcore.address import format_host
from sipcore.aio.endpoint import AsyncEndpoint
from sipcore.aio.tasks import TaskScope
from sipcore.digest import DigestClient
from sipcore.errors import LocalProtocolError, ParseError
from sipcore.message import Request, Response
from sipcore.transaction import (
    ForeignChallengeDropped,
    ResponseReceived,
    TransactionTimedOut,
    TransportErrored,
)
from sipcore.transport import Peer, TransportName
from sipcore.uac_register import (
    ChallengeRefused,
    Registration,
    RegistrationState,
    StateChanged,
)


# -------------------------------------------------------------------------------------- driver
@dataclass(slots=True)
class _Pending:
    #: The registration slot: a trunk key, or a retiring registration's id.
    slot: str
    cseq: int


#: Transactions whose foreign challenges were logged (bounded: a flood must not grow it).
_FOREIGN_LOGGED_MAX = 1024


class TrunkManager:
    """Registration trunks over an :class:`AsyncEndpoint`, and the trunk table for the B2BUA.

    Life cycle: build it with the trunks, call :meth:`start` once the endpoint is started,
    forward every endpoint event to :meth:`on_event` (it returns True for the ones it
    consumed), call :meth:`reconcile` with the store's trunks whenever they may have changed
    (the server does after each directory reload), and ``await`` :meth:`stop` before closing
    the endpoint. ``contact_host`` is the address written into our Contact (needed when
    listening on a wildcard address); otherwise the listener's own address is used.
    """

    def __init__(
        self,
        trunks: Iterable[TrunkConfig] = (),
        *,
        contact_host: str | None = None,
        refresh_fraction: float = 0.85,
        retry_base: float = 30.0,
        retry_max: float = 1800.0,
        user_agent: str | None = None,
        digest: DigestClient | None = None,
        resolver: Resolver | None = None,
        resolve_interval: float = 300.0,
        resolve_retry: float = 30.0,
        resolve_timeout: float = 10.0,
    ) -> None:
        #: Called with (trunk, new registration state, reason) when a trunk's registration
        #: changes state (the server publishes ``trunk.state``; None: nobody listens).
        self.on_state: Callable[[TrunkConfig, str, str], None] | None = None
        #: The current trunks by :attr:`TrunkConfig.key` (the B2BUA routes and identifies by it).
        self.trunks: dict[str, TrunkConfig] = {}
        for trunk in trunks:
            if trunk.key in self.trunks:
                raise ValueError(f"trunk.name: {trunk.key!r} is defined twice")
            self.trunks[trunk.key] = trunk
        self.contact_host = contact_host
        self.refresh_fraction = refresh_fraction
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.user_agent = user_agent
        #: Shared by the INVITE challenges (:meth:`answer_challenge`); registrations have their own.
        self.digest = digest if digest is not None else DigestClient()
        self.log = get_logger("trunks")
        self.seclog = get_logger("security")
        #: The registration of each current registration trunk, by trunk key.
        self.registrations: dict[str, Registration] = {}
        #: Registrations of removed or changed trunks that are still de-registering, by an id
        #: of their own (the trunk key may already name the new registration).
        self._retiring: dict[str, tuple[TrunkConfig, Registration]] = {}
        self._retired = 0
        self._sip: AsyncEndpoint[Any] | None = None
        self._pending: dict[str, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopped: asyncio.Event | None = None
        self._refused: dict[str, int] = dict.fromkeys(self.trunks, 0)
        self._foreign: dict[str, int] = dict.fromkeys(self.trunks, 0)
        self._foreign_logged: dict[str, None] = {}
        #: Resolves named trunk hosts (default :func:`resolve_host`); re-resolved every
        #: ``resolve_interval`` seconds, after a failure in ``resolve_retry`` seconds doubling up
        #: to ``resolve_interval``; a query taking longer than ``resolve_timeout`` has failed.
        self.resolver: Resolver = resolver if resolver is not None else resolve_host
        self.resolve_interval = resolve_interval
        self.resolve_retry = resolve_retry
        self.resolve_timeout = resolve_timeout
        #: The manager's tasks (one DNS query loop per named trunk) live in its TaskGroup,
        #: from :meth:`start` (or :meth:`run`) to :meth:`stop`.
        self._tasks = TaskScope("trunks")
        self._dns = DnsWatcher(self, self._tasks, self.log)

    # -- the trunk table (inbound/outbound helpers for the B2BUA) ----------------------------------

    def identify(self, peer: Peer) -> TrunkConfig | None:
        """The trunk ``peer`` belongs to, or None."""
        return identify_trunk(self.trunks.values(), peer)

    def inbound(self, request: Request, peer: Peer) -> TrunkConfig | None:
        """Call on every inbound request: identifies the trunk it came from (None: a device or
        a stranger) and strips P-Asserted-Identity, Remote-Party-ID, Route and ``P-*`` headers
        unless that trunk is trusted. The request is changed in place."""
        trunk = self.identify(peer)
        removed = sanitize_inbound(request, trusted=trunk is not None and trunk.trusted)
        if removed:
            self.log.debug("trunk.inbound.stripped", src=peer.host, headers=removed,
                           trunk=trunk.key if trunk else None)
        return trunk

    def contact_for(self, trunk: TrunkConfig, user: str | None = None) -> str:
        """Our Contact URI toward ``trunk`` (from the endpoint's listener on its transport)."""
        sip = self._require_sip()
        listening = [(h, p) for t, h, p in sip.listening() if t == trunk.transport]
        if not listening:
            raise LocalProtocolError(
                f"trunk {trunk.name}: not listening on {trunk.transport} to receive its requests")
        host, port = listening[0]
        host = format_host(self.contact_host or host)
        name = user if user is not None else trunk.username
        userinfo = f"{name}@" if name else ""
        params = "" if trunk.transport == "udp" else f";transport={trunk.transport}"
        return f"sip:{userinfo}{host}:{port}{params}"

    def answer_challenge(
        self, trunk_key: str, request: Request, response: Response, *,
        sent_to: Peer, source: Peer | None = None,
    ) -> Request | None:
        """:func:`answer_challenge` for the B2BUA's outbound INVITE; None (and a security log
        line) when refused."""
        trunk = self.trunks.get(trunk_key)
        if trunk is None:
            self.seclog.warning("security.trunk.challenge_refused", trunk=trunk_key,
                                src=source.host if source else sent_to.host,
                                reason="unknown trunk", status=response.status)
            return None
        try:
            return answer_challenge(trunk, self.digest, request, response, sent_to=sent_to,
                                    source=source)
        except ChallengeRefusedError as exc:
            self._refused[trunk.key] = self._refused.get(trunk.key, 0) + 1
            self.seclog.warning("security.trunk.challenge_refused", trunk=trunk.key,
                                src=source.host if source else sent_to.host, reason=str(exc),
                                status=response.status, method=request.method)
            return None

    # -- life cycle --------------------------------------------------------------------------------

    def start(self, sip: AsyncEndpoint[Any]) -> None:
        """Begin registering every registration trunk over ``sip`` (already started); a trunk
        whose host is a DNS name first resolves it (in the background), then registers. The
        manager's TaskGroup runs in a task of its own until :meth:`stop` (an owner with a
        TaskGroup of its own runs :meth:`run` in it instead)."""
        self._begin_all(sip)
        self._tasks.start()

    async def run(self, sip: AsyncEndpoint[Any]) -> None:
        """:meth:`start` for an owner with a TaskGroup: ``tg.create_task(trunks.run(sip))``
        runs the manager's TaskGroup in the owner's until :meth:`stop`."""
        self._begin_all(sip)
        await self._tasks.run()

    def _begin_all(self, sip: AsyncEndpoint[Any]) -> None:
        if self._sip is not None:
            raise RuntimeError("TrunkManager started twice")
        self._sip = sip
        for trunk in self.trunks.values():
            self._watch(trunk)
            self._begin(trunk)
        self._arm()

    def resolve_now(self, key: str | None = None) -> None:
        """Resolve the DNS name of trunk ``key`` (all named trunks: None) again now rather
        than at the next interval."""
        self._dns.resolve_now(key)

    def reconcile(self, trunks: Iterable[TrunkConfig]) -> tuple[list[str], list[str], list[str]]:
        """Make ``trunks`` (the store's, after a change) the current trunk table while running.

        A new registration trunk starts registering; a removed one de-registers (REGISTER with
        Expires: 0) and stops; a changed one does both (old binding removed, new one made). IP
        trunks appear and disappear for inbound source matching and outbound routing at once.
        A key given twice keeps the first. Returns the keys (added, removed, changed).
        """
        wanted: dict[str, TrunkConfig] = {}
        for trunk in trunks:
            if trunk.key in wanted:
                self.log.error("trunk.duplicate", trunk=trunk.key)
                continue
            wanted[trunk.key] = trunk
        added = [k for k in wanted if k not in self.trunks]
        removed = [k for k in self.trunks if k not in wanted]
        changed = [k for k, t in wanted.items() if k in self.trunks and self.trunks[k] != t]
        if not (added or removed or changed):
            return added, removed, changed
        # A changed trunk whose binding would be the same one (same registrar and AOR) starts
        # registering only once the old binding is removed: the Expires: 0 arriving after the
        # new REGISTER would delete the new binding (_drain begins it then).
        later = {key for key in removed + changed
                 if self._retire(key) and key in changed
                 and _same_binding(self.trunks[key], wanted[key])}
        for key, trunk in wanted.items():
            # What a name resolved to stays valid for the same name (the query runs on).
            old = self.trunks.get(key)
            if old is not None and old.addresses and _query(old) == _query(trunk):
                wanted[key] = trunk if trunk is old else trunk.with_addresses(old.addresses)
        self.trunks = wanted
        for key in added + changed:
            self._refused.setdefault(key, 0)
            self._foreign.setdefault(key, 0)
            if self._sip is not None:
                self._watch(wanted[key])
                if key not in later:
                    self._begin(wanted[key])
        for key in removed:
            self._refused.pop(key, None)
            self._foreign.pop(key, None)
            self._unwatch(key)
        self.log.info("trunk.reconciled", added=added, removed=removed, changed=changed)
        if self._sip is not None:
            self._arm()
        return added, removed, changed

    async def stop(self, timeout: float = 5.0) -> None:
        """De-register every trunk (REGISTER with Expires: 0) and wait up to ``timeout``
        seconds for the outcomes; then forget the timer and stop resolving names. Call before
        closing the endpoint."""
        self._dns.stop()
        # Bounded by the timeout: a loop that misses its cancellation (on Python 3.11
        # asyncio.wait_for can swallow one that races with its completion) still ends on its
        # own once unwatched, but stop does not wait for that.
        await self._tasks.close(timeout)
        if self._sip is None:
            return
        self._stopped = asyncio.Event()
        now = self._now()
        for name, registration in list(self.registrations.items()):
            registration.stop(now)
            self._drain(name)
        self._check_stopped()
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except TimeoutError:
            waiting = [n for n, r in self.registrations.items()
                       if r.state is not RegistrationState.STOPPED]
            waiting += [t.key for t, _ in self._retiring.values()]
            self.log.warning("trunk.unregister.timeout", trunks=waiting)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._timer_at = None
            self._pending.clear()
            self._retiring.clear()

    # -- events ------------------------------------------------------------------------------------

    def on_event(self, event: object) -> bool:
        """Handle an endpoint event of one of our REGISTER transactions, and log every
        challenge the endpoint dropped because it came from elsewhere; True when consumed
        (the caller then ignores it)."""
        if isinstance(event, ForeignChallengeDropped):
            self._foreign_challenge(event)
            return True
        if not isinstance(event, ResponseReceived | TransactionTimedOut | TransportErrored):
            return False
        pending = self._pending.get(event.transaction_id)
        if pending is None:
            return False
        slot = self._slot(pending.slot)
        now = self._now()
        if isinstance(event, ResponseReceived):
            if event.response.status < 200:
                return True
            del self._pending[event.transaction_id]
            if slot is not None:
                trunk, registration = slot
                # The endpoint only lets a challenge through from where the REGISTER went, or
                # when that was a DNS name: then we vouch for an allowed source (None) or hand
                # the source over, and the registration refuses the challenge.
                source = None if trunk.responds_from(event.peer) else event.peer
                registration.handle_response(event.response, now, source)
        else:
            del self._pending[event.transaction_id]
            if slot is not None:
                reason = "timeout" if isinstance(event, TransactionTimedOut) else "transport error"
                slot[1].handle_failure(pending.cseq, now, reason)
        self._drain(pending.slot)
        self._arm()
        return True

    def _foreign_challenge(self, event: ForeignChallengeDropped) -> None:
        """SECURITY.md "credential leaks": someone else answered our request with a challenge.
        One security line per transaction (a flood of forgeries is counted, not logged)."""
        pending = self._pending.get(event.transaction_id)
        trunk: TrunkConfig | None = None
        if pending is not None:
            slot = self._slot(pending.slot)
            trunk = slot[0] if slot is not None else None
        else:  # an INVITE of a trunk leg: known by where it went
            trunk = next((t for t in self.trunks.values() if t.peer == event.sent_to), None)
        if trunk is not None and trunk.key in self._foreign:
            self._foreign[trunk.key] += 1
        if event.transaction_id in self._foreign_logged:
            return
        if len(self._foreign_logged) >= _FOREIGN_LOGGED_MAX:
            del self._foreign_logged[next(iter(self._foreign_logged))]
        self._foreign_logged[event.transaction_id] = None
        self.seclog.warning(
            "security.trunk.foreign_challenge", src=event.peer.host, port=event.peer.port,
            transport=event.peer.transport, status=event.response.status,
            trunk=trunk.key if trunk is not None else None,
            sent_to=f"{event.sent_to.host}:{event.sent_to.port}",
            method=event.response.cseq.method if _has_cseq(event.response) else None)

    # -- health ------------------------------------------------------------------------------------

    def health(self) -> dict[str, dict[str, object]]:
        """Per trunk key: name, tenant, kind, host, state ("registering"/"registered"/
        "failed"/"stopped"/"idle"; "ip" for IP trunks; "resolving" while a DNS-named host has
        not resolved yet, "failed" with ``last_error`` "cannot resolve …" when it does not),
        ``next_refresh`` (seconds until the next REGISTER: refresh or retry), ``expires_in``
        (seconds until the binding expires), consecutive failures, last error and status,
        refused and foreign challenges; for a named host also ``addresses`` (what it resolved
        to), ``next_resolve`` (seconds) and ``dns_error`` while the last query failed."""
        now = self._now() if self._sip is not None else None
        out: dict[str, dict[str, object]] = {}
        for key, trunk in self.trunks.items():
            entry: dict[str, object] = {
                "name": trunk.name, "tenant": trunk.tenant, "kind": trunk.kind,
                "host": trunk.host, "refused_challenges": self._refused.get(key, 0),
                "foreign_challenges": self._foreign.get(key, 0)}
            registration = self.registrations.get(key)
            dns = self._dns.get(key)
            if trunk.named:
                entry["addresses"] = list(trunk.addresses)
                if dns is not None and dns.error is not None:
                    entry["dns_error"] = dns.error
                if dns is not None and dns.next_at is not None and now is not None:
                    entry["next_resolve"] = max(0, round(dns.next_at - now))
            if trunk.named and not trunk.addresses and registration is None:
                # Nothing to send to, nothing to recognise it by: not usable until it resolves.
                failed = dns is not None and dns.error is not None
                entry["state"] = "failed" if failed else "resolving"
                entry["last_error"] = dns.error if dns is not None else None
                if dns is not None:
                    entry["failures"] = dns.failures
            elif trunk.kind == "ip":
                entry["state"] = "ip"
            elif registration is None:
                entry["state"] = "idle"
            else:
                entry["state"] = _health_state(registration.state)
                entry["failures"] = registration.failures
                entry["last_error"] = registration.last_error
                entry["last_status"] = _status_of(registration.last_error)
                deadline = registration.get_timer()
                if deadline is not None and now is not None:
                    entry["next_refresh"] = max(0, round(deadline - now))
                if registration.expires_at is not None and now is not None:
                    entry["expires_in"] = max(0, round(registration.expires_at - now))
            out[key] = entry
        return out

    def health_list(self) -> list[dict[str, object]]:
        """:meth:`health` as a list sorted by tenant and name (what ``/health`` shows)."""
        return sorted(self.health().values(),
                      key=lambda e: (str(e["tenant"]), str(e["name"])))

    def states(self) -> Mapping[str, str]:
        """trunk key → health state (see :meth:`health`)."""
        return {name: str(entry["state"]) for name, entry in self.health().items()}

    # -- internals ---------------------------------------------------------------------------------

    @property
    def sip(self) -> AsyncEndpoint[Any]:
        """The endpoint given to :meth:`start` (RuntimeError before)."""
        return self._require_sip()

    def _require_sip(self) -> AsyncEndpoint[Any]:
        if self._sip is None:
            raise RuntimeError("TrunkManager.start() has not run")
        return self._sip

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _slot(self, slot: str) -> tuple[TrunkConfig, Registration] | None:
        """(trunk, registration) of a current trunk key or a retiring registration's id."""
        retiring = self._retiring.get(slot)
        if retiring is not None:
            return retiring
        registration = self.registrations.get(slot)
        trunk = self.trunks.get(slot)
        return (trunk, registration) if registration is not None and trunk is not None else None

    def _begin(self, trunk: TrunkConfig) -> None:
        """Start registering ``trunk`` (a registration trunk without a registration)."""
        if trunk.kind != "register" or trunk.key in self.registrations:
            return
        if trunk.named and not trunk.addresses:
            return  # registers once its name resolves (dns_resolved)
        try:
            registration = self._registration(trunk)
        except LocalProtocolError as exc:
            self.log.error("trunk.register.unusable", trunk=trunk.key, error=str(exc))
            return
        self.registrations[trunk.key] = registration
        registration.start(self._now())
        self._drain(trunk.key)

    def _retire(self, key: str) -> bool:
        """Take the registration of trunk ``key`` out of service: de-register (Expires: 0)
        under an id of its own until it has stopped. True while that is under way."""
        registration = self.registrations.pop(key, None)
        trunk = self.trunks[key]
        if registration is None or self._sip is None:
            return False
        self._retired += 1
        slot = f"{key}#retired{self._retired}"
        self._retiring[slot] = (trunk, registration)
        for pending in self._pending.values():
            if pending.slot == key:
                pending.slot = slot
        registration.stop(self._now())
        self._drain(slot)
        return slot in self._retiring

    def _registration(self, trunk: TrunkConfig) -> Registration:
        aor = f"sip:{trunk.username}@{trunk.aor_domain}"
        return Registration(
            registrar=f"sip:{trunk.uri_host}{trunk.uri_params}",
            aor=aor,
            contact=self.contact_for(trunk),
            peer=trunk.peer,
            username=trunk.username,
            password=trunk.password,
            realm=trunk.realm,
            expires=trunk.register_expiry,
            refresh_fraction=self.refresh_fraction,
            retry_base=self.retry_base,
            retry_max=self.retry_max,
            user_agent=self.user_agent,
        )

    def _drain(self, slot_id: str) -> None:
        """Send what the registration wants sent; log what it reports."""
        slot = self._slot(slot_id)
        if slot is None:
            return
        trunk, registration = slot
        name = trunk.key
        sip = self._require_sip()
        for request in registration.requests_to_send():
            cseq = registration.cseq
            try:
                tx_id = sip.send_request(request, registration.peer)
            except (LocalProtocolError, OSError) as exc:
                self.log.error("trunk.register.send_failed", trunk=name, error=str(exc))
                registration.handle_failure(cseq, self._now(), f"send failed: {exc}")
                continue
            self._pending[tx_id] = _Pending(slot_id, cseq)
        for event in registration.events():
            if isinstance(event, ChallengeRefused):
                if name in self._refused:
                    self._refused[name] += 1
                self.seclog.warning(
                    "security.trunk.challenge_refused", trunk=name,
                    src=event.source.host if event.source else trunk.host,
                    reason=event.reason, status=event.status, method="REGISTER")
            elif isinstance(event, StateChanged):
                fields: dict[str, object] = {"trunk": name, "host": trunk.host,
                                             "state": event.state.value, "reason": event.reason}
                if event.expires is not None:
                    fields["expires"] = event.expires
                if event.state is RegistrationState.FAILED:
                    deadline = registration.get_timer()
                    if deadline is not None:
                        fields["retry_in"] = round(deadline - self._now(), 1)
                    self.log.warning("trunk.register.failed", **fields)
                    self.resolve_now(name)  # the carrier may have moved: look again
                else:
                    self.log.info("trunk.register." + event.state.value, **fields)
                    if event.state is RegistrationState.REGISTERED:
                        self._dns.replan(name)  # resolve again before the next refresh
                if self.on_state is not None:
                    self.on_state(trunk, _health_state(event.state), event.reason)
        if slot_id in self._retiring and registration.state is RegistrationState.STOPPED:
            del self._retiring[slot_id]
            successor = self.trunks.get(name)
            if successor is not None and successor is not trunk and self._stopped is None:
                self._begin(successor)  # a changed trunk that waited for this (reconcile)
        self._check_stopped()

    def _check_stopped(self) -> None:
        if self._stopped is not None and not self._retiring and all(
            r.state is RegistrationState.STOPPED for r in self.registrations.values()
        ):
            self._stopped.set()

    def _all_registrations(self) -> list[tuple[str, Registration]]:
        return [*self.registrations.items(),
                *((slot, reg) for slot, (_, reg) in self._retiring.items())]

    # -- DNS (the DnsWatcher's owner) -------------------------------------------------------------

    def _watch(self, trunk: TrunkConfig) -> None:
        """Keep resolving ``trunk``'s host when it is a DNS name."""
        if trunk.named:
            self._dns.watch(trunk.key, _query(trunk))
        else:
            self._dns.unwatch(trunk.key)

    def _unwatch(self, key: str) -> None:
        self._dns.unwatch(key)

    def refresh_deadline(self, key: str) -> float | None:
        """When trunk ``key``'s registration refreshes (loop time), while it is bound."""
        registration = self.registrations.get(key)
        if registration is None or registration.state is not RegistrationState.REGISTERED:
            return None
        return registration.get_timer()

    def dns_failed(self, key: str, dns: HostQuery, error: str, retry_in: float) -> None:
        """Log a new resolution error. What the name resolved to before stays in use (a DNS
        outage must not cut a working trunk)."""
        if error != dns.error:
            trunk = self.trunks.get(key)
            self.log.warning("trunk.dns.failed", trunk=key, host=dns.query[0], error=error,
                             retry_in=round(retry_in, 1),
                             keeping=list(trunk.addresses) if trunk is not None else [])

    def dns_resolved(self, key: str, dns: HostQuery, addresses: tuple[str, ...]) -> None:
        """Take a query's answer: the trunk's requests go to its first address, challenges and
        inbound requests count from all of them; a registration trunk waiting for it begins."""
        trunk = self.trunks.get(key)
        if trunk is None or _query(trunk) != dns.query:
            return  # changed meanwhile: its own query is under way
        if addresses != trunk.addresses or dns.error is not None:
            self.log.info("trunk.dns.resolved", trunk=key, host=trunk.host,
                          addresses=list(addresses), previous=list(trunk.addresses))
        dns.error = None
        dns.failures = 0
        dns.resolved_at = self._now()
        if addresses != trunk.addresses:
            trunk = trunk.with_addresses(addresses)
            self.trunks[key] = trunk
            registration = self.registrations.get(key)
            if registration is not None:
                registration.peer = trunk.peer  # the next REGISTER goes there
        if (trunk.kind == "register" and key not in self.registrations and self._stopped is None
                and self._sip is not None
                and not any(_same_binding(old, trunk) for old, _ in self._retiring.values())):
            self._begin(trunk)
            self._arm()

    def _arm(self) -> None:
        deadlines = [d for _, r in self._all_registrations() if (d := r.get_timer()) is not None]
        deadline = min(deadlines) if deadlines else None
        if deadline == self._timer_at and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        deadline = self._timer_at
        self._timer = None
        self._timer_at = None
        now = self._now()
        if deadline is not None:
            now = max(now, deadline)  # asyncio may fire a hair early
        for slot, registration in self._all_registrations():
            try:
                registration.handle_timer(now)
                self._drain(slot)
            except Exception:  # one broken trunk must not stop the others' timers
                self.log.exception("trunk.timer_failed", trunk=slot)
        self._arm()


def _same_binding(old: TrunkConfig, new: TrunkConfig) -> bool:
    """Would both trunks' registrations bind the same AOR at the same registrar?"""
    return (_query(old), old.username, old.aor_domain) == (_query(new), new.username,
                                                          new.aor_domain)


def _query(trunk: TrunkConfig) -> tuple[str, int, TransportName]:
    """What names a trunk's registrar: its configured host (name or address), port, transport."""
    return (trunk.host.lower(), trunk.port, trunk.transport)


def _health_state(state: RegistrationState) -> str:
    if state is RegistrationState.REFRESHING:
        return "registered"  # still bound while the refresh is out
    return str(state.value)


def _status_of(error: str | None) -> int | None:
    """The status code a registration's ``last_error`` starts with ("403 Forbidden" → 403;
    None for a timeout or a refused challenge)."""
    if error is None:
        return None
    head = error.split(" ", 1)[0].rstrip(":")
    return int(head) if head.isdigit() and len(head) == 3 else None


def _has_cseq(response: Response) -> bool:
    try:
        response.cseq  # noqa: B018 - parsing is the check
    except ParseError:
        return False
    return True
