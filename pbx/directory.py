"""The directory: the in-memory view of the store that the hot path reads.

Who is this device, which tenant owns this domain, who owns this DID, which trunk sent this
request — answered from dicts, never from the database (DESIGN.md "Storage"). The directory is
an immutable :class:`Snapshot` swapped in whole, so readers on the event loop never see half an
update even when a store mutation runs in a worker thread.

Keeping it current:

* write-through: the directory registers with :meth:`pbx.store.Store.add_listener`; every
  mutation made through the same store object rebuilds the snapshot before the mutating call
  returns;
* other processes (``asyncpbx user add`` while the server runs): :meth:`Directory.refresh_if_changed`
  compares the store's ``data_version`` and reloads when another connection committed; the
  server calls it from its once-a-second housekeeping.

:class:`AsyncHistory` is the call-history hook for the B2BUA: non-blocking calls that queue the
writes to one worker thread, which commits whatever is queued in one transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pbx.settings_schema import SettingsSchema, stored_over_defaults
from pbx.store import (
    DEFAULT_TENANT,
    Device,
    HistoryEntry,
    HistoryWrite,
    Number,
    PbxStore,
    Tenant,
    Trunk,
    User,
    source_network,
)
from sipcore.digest import Credentials

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the hot path looks up, indexed (built by :meth:`Directory.load`)."""

    tenants: Mapping[int, Tenant] = field(default_factory=dict)
    tenant_by_domain: Mapping[str, Tenant] = field(default_factory=dict)
    default_tenant: Tenant | None = None
    users: Mapping[int, User] = field(default_factory=dict)
    user_by_ext: Mapping[tuple[int, str], User] = field(default_factory=dict)
    devices: Mapping[tuple[str, str], Device] = field(default_factory=dict)
    credentials: Mapping[tuple[str, str], Credentials] = field(default_factory=dict)
    devices_of: Mapping[int, tuple[Device, ...]] = field(default_factory=dict)
    numbers: Mapping[str, Number] = field(default_factory=dict)
    numbers_of: Mapping[int, tuple[Number, ...]] = field(default_factory=dict)
    trunks: Mapping[int, Trunk] = field(default_factory=dict)
    trunks_of: Mapping[int, tuple[Trunk, ...]] = field(default_factory=dict)
    trunk_by_ip: Mapping[str, Trunk] = field(default_factory=dict)
    trunk_networks: tuple[tuple[_Network, Trunk], ...] = ()
    settings: Mapping[tuple[int, str], Mapping[str, Any]] = field(default_factory=dict)
    #: (tenant id, E.164) → the user whose own mobile number it is (a number two users of a
    #: tenant give is nobody's: it cannot identify either)
    user_by_mobile: Mapping[tuple[int, str], User] = field(default_factory=dict)
    #: the administrator's feature-code changes: (feature, action) → (code, alternate)
    feature_codes: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    #: company DIDs whose trunk calls reach the voice portal (pbx.store.portal)
    portal_numbers: frozenset[str] = frozenset()


def _host_network(host: str) -> _Network | None:
    try:
        return ipaddress.ip_network(host.strip("[]"))
    except ValueError:
        return None


def build_snapshot(store: PbxStore) -> Snapshot:
    """Read everything the directory indexes from ``store``."""
    tenants = {t.id: t for t in store.tenants()}
    users = {u.id: u for u in store.users()}
    devices = store.devices()
    numbers = store.numbers()
    trunks = store.trunks()
    devices_of: dict[int, list[Device]] = {}
    for d in devices:
        devices_of.setdefault(d.user_id, []).append(d)
    numbers_of: dict[int, list[Number]] = {}
    for n in numbers:
        if n.user_id is not None:
            numbers_of.setdefault(n.user_id, []).append(n)
    trunks_of: dict[int, list[Trunk]] = {}
    by_ip: dict[str, Trunk] = {}
    networks: list[tuple[_Network, Trunk]] = []
    for tr in trunks:
        trunks_of.setdefault(tr.tenant_id, []).append(tr)
        nets = [ipaddress.ip_network(source_network(s)) for s in tr.allowed_sources]
        if not nets:
            host = _host_network(tr.host)
            nets = [host] if host is not None else []
        for net in nets:
            if net.num_addresses == 1:
                by_ip.setdefault(str(net.network_address), tr)
            else:
                networks.append((net, tr))
    by_mobile: dict[tuple[int, str], User | None] = {}
    for u in users.values():
        if u.mobile_number:
            key = (u.tenant_id, u.mobile_number)
            by_mobile[key] = None if key in by_mobile else u
    # The most specific network wins when trunks' networks overlap.
    networks.sort(key=lambda item: -item[0].prefixlen)
    default = next((t for t in tenants.values() if t.name == DEFAULT_TENANT), None)
    return Snapshot(
        tenants=tenants,
        tenant_by_domain={t.domain.lower(): t for t in tenants.values()},
        default_tenant=default,
        users=users,
        user_by_ext={(u.tenant_id, u.extension): u for u in users.values()},
        devices={(d.realm, d.username): d for d in devices},
        credentials={(d.realm, d.username): d.credentials() for d in devices},
        devices_of={k: tuple(v) for k, v in devices_of.items()},
        numbers={n.e164: n for n in numbers},
        numbers_of={k: tuple(v) for k, v in numbers_of.items()},
        trunks={tr.id: tr for tr in trunks},
        trunks_of={k: tuple(v) for k, v in trunks_of.items()},
        trunk_by_ip=by_ip,
        trunk_networks=tuple(networks),
        settings=store.all_feature_settings(),
        user_by_mobile={k: u for k, u in by_mobile.items() if u is not None},
        portal_numbers=frozenset(getattr(store, "voice_portal_numbers", frozenset)()),
        feature_codes=store.feature_codes(),
    )


class Directory:
    """The cache of tenants, users, devices, numbers, trunks and feature settings.

    All lookups are dict reads on the current snapshot (safe from the event loop while a worker
    thread rebuilds). ``on_reload`` (optional) is called after each rebuild, e.g. to let the
    server re-create digest servers for new realms or restart trunk registrations.
    """

    def __init__(self, store: PbxStore, *, listen: bool = True) -> None:
        self.store = store
        self.snapshot = Snapshot()
        self.reloads = 0
        self.on_reload: Callable[[Snapshot], None] | None = None
        self._data_version = -1
        #: serializes snapshot swaps (a settings write may run in a worker thread)
        self._swap = threading.Lock()
        #: the store tells which settings entry changed: no full reload for settings writes
        self._settings_notices = False
        self.load()
        if listen:
            store.add_listener(self._on_store_changed)
            add_settings_listener = getattr(store, "add_settings_listener", None)
            if add_settings_listener is not None:
                add_settings_listener(self._on_settings_changed)
                self._settings_notices = True

    # -- keeping current -------------------------------------------------------------------------

    def load(self) -> None:
        """Rebuild the snapshot from the store (full reload: the tables are small and a reload
        is rare — an administrator's change — so simplicity beats incremental updates)."""
        with self._swap:
            self._data_version = self.store.data_version()
            self.snapshot = build_snapshot(self.store)
            self.reloads += 1
        if self.on_reload is not None:
            self.on_reload(self.snapshot)

    def _on_store_changed(self, table: str) -> None:
        if table == "feature_settings" and self._settings_notices:
            return  # _on_settings_changed put the entry in already
        self.load()

    def _on_settings_changed(self, user_id: int, feature: str, value: Mapping[str, Any]) -> None:
        """One user's settings of one feature changed: a new snapshot with that entry (a
        settings write from the API or a feature code reloads nothing else — no rebuild of
        every user, device and trunk per PATCH, which blocked the event loop for ~1.5 ms)."""
        with self._swap:
            snap = self.snapshot
            settings = dict(snap.settings)
            settings[(user_id, feature)] = dict(value)
            self.snapshot = replace(snap, settings=settings)

    def refresh_if_changed(self) -> bool:
        """Reload when another process changed the store since the last load; True if it did.
        (Cheap: one ``PRAGMA data_version``.)"""
        if self.store.data_version() == self._data_version:
            return False
        self.load()
        return True

    # -- tenants ---------------------------------------------------------------------------------

    @property
    def default_tenant(self) -> Tenant | None:
        """The "default" tenant (single-company mode), if it exists."""
        return self.snapshot.default_tenant

    def tenant_for_domain(self, domain: str) -> Tenant | None:
        """The tenant whose SIP domain is ``domain`` (case-insensitive); any other host (our IP
        address, a name we do not know) belongs to the default tenant."""
        snap = self.snapshot
        return snap.tenant_by_domain.get(domain.lower(), snap.default_tenant)

    def tenant(self, tenant_id: int) -> Tenant | None:
        """A tenant by id."""
        return self.snapshot.tenants.get(tenant_id)

    def realms(self) -> set[str]:
        """Every realm a device has credentials for (one DigestServer each)."""
        return {realm for realm, _ in self.snapshot.credentials}

    # -- users and devices -----------------------------------------------------------------------

    def credentials(self, realm: str, username: str) -> Credentials | None:
        """Digest credentials of the device ``username`` in ``realm`` — the DigestServer lookup
        (``lambda u: directory.credentials(realm, u)``)."""
        return self.snapshot.credentials.get((realm, username))

    def device(self, realm: str, username: str) -> Device | None:
        """The device with SIP username ``username`` in ``realm``."""
        return self.snapshot.devices.get((realm, username))

    def user_of_device(self, realm: str, username: str) -> User | None:
        """The user a device belongs to (after authentication: who is calling)."""
        d = self.snapshot.devices.get((realm, username))
        return self.snapshot.users.get(d.user_id) if d is not None else None

    def user(self, domain: str, extension: str) -> User | None:
        """The user with ``extension`` in the tenant of ``domain`` (default tenant for unknown
        hosts, see :meth:`tenant_for_domain`)."""
        t = self.tenant_for_domain(domain)
        return self.snapshot.user_by_ext.get((t.id, extension)) if t is not None else None

    def user_in_tenant(self, tenant_id: int, extension: str) -> User | None:
        """The user with ``extension`` in a tenant given by id."""
        return self.snapshot.user_by_ext.get((tenant_id, extension))

    def user_by_id(self, user_id: int) -> User | None:
        """A user by id."""
        return self.snapshot.users.get(user_id)

    def feature_codes(self) -> Mapping[tuple[str, str], tuple[str, str]]:
        """The administrator's feature-code changes ((feature, action) → (code, alternate))."""
        return self.snapshot.feature_codes

    def user_by_mobile(self, tenant_id: int, e164: str) -> User | None:
        """The user of ``tenant_id`` whose own mobile number is ``e164``."""
        return self.snapshot.user_by_mobile.get((tenant_id, e164))

    def devices_of(self, user_id: int) -> tuple[Device, ...]:
        """A user's devices (parallel ringing rings each one's registrations)."""
        return self.snapshot.devices_of.get(user_id, ())

    # -- numbers ---------------------------------------------------------------------------------

    def owner_of_did(self, e164: str) -> Number | None:
        """Who owns a DID (E.164 with "+"); ``Number.owner_kind`` is user, group or company."""
        return self.snapshot.numbers.get(e164)

    def is_voice_portal(self, e164: str) -> bool:
        """Whether a trunk's call to the DID ``e164`` reaches the voice portal."""
        return e164 in self.snapshot.portal_numbers

    def numbers_of(self, user_id: int) -> tuple[Number, ...]:
        """The DIDs a user owns (the first is the caller ID towards trunks by default)."""
        return self.snapshot.numbers_of.get(user_id, ())

    def extension_of_did(self, tenant_id: int, e164: str) -> str | None:
        """The extension of the user of ``tenant_id`` who owns ``e164`` — the dial plan's
        ``own_did`` (a call to an own DID stays internal)."""
        n = self.snapshot.numbers.get(e164)
        if n is None or n.tenant_id != tenant_id or n.user_id is None:
            return None
        u = self.snapshot.users.get(n.user_id)
        return u.extension if u is not None else None

    # -- trunks ----------------------------------------------------------------------------------

    def trunk_for_source(self, ip: str) -> Trunk | None:
        """The trunk a request from ``ip`` comes from (exact address first, then the most
        specific network), or None: then it is not a carrier and must authenticate."""
        snap = self.snapshot
        found = snap.trunk_by_ip.get(ip)
        if found is not None or not snap.trunk_networks:
            return found
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return None
        if str(addr) != ip:
            found = snap.trunk_by_ip.get(str(addr))
            if found is not None:
                return found
        for net, trunk in snap.trunk_networks:
            if addr.version == net.version and addr in net:
                return trunk
        return None

    def trunks_of(self, tenant_id: int) -> tuple[Trunk, ...]:
        """A tenant's trunks, by name (outbound calls take the first)."""
        return self.snapshot.trunks_of.get(tenant_id, ())

    def all_trunks(self) -> tuple[Trunk, ...]:
        """Every trunk (the trunk manager registers the ``register`` ones)."""
        return tuple(self.snapshot.trunks.values())

    # -- feature settings ------------------------------------------------------------------------

    def settings(self, user_id: int, feature: str,
                 schema: SettingsSchema | None = None) -> dict[str, Any]:
        """A user's settings of ``feature`` over the schema's defaults (a fresh dict)."""
        stored = self.snapshot.settings.get((user_id, feature), {})
        if schema is None:
            return dict(stored)
        return stored_over_defaults(schema, stored)


# -- call history hook -----------------------------------------------------------------------------


class HistoryHook(Protocol):
    """What the B2BUA calls for the call history (non-blocking; see :class:`AsyncHistory`)."""

    def call_started(self, user_id: int, call_id: str, direction: str, other_name: str,
                     other_number: str, at: float) -> HistoryRecord: ...
    def call_answered(self, record: HistoryRecord, at: float) -> None: ...
    def call_ended(self, record: HistoryRecord, at: float) -> None: ...


class HistoryRecord:
    """A handle on one history entry being written: ``entry_id`` is set by the writer once the
    entry is stored (None before, and for good when its insert failed)."""

    __slots__ = ("_write", "entry_id", "failed", "user_id")

    def __init__(self, user_id: int, write: HistoryWrite) -> None:
        self.user_id = user_id
        self.entry_id: int | None = None
        self.failed = False
        #: the not-yet-committed write of this entry (None once a batch took it)
        self._write: HistoryWrite | None = write


class AsyncHistory:
    """Call history written from the event loop without waiting on the disk.

    Writes are queued to one worker thread that commits everything queued since its last
    commit in one transaction (group commit): under load a commit's fsync (``synchronous=FULL``)
    is shared by hundreds of writes instead of paid six times per call, and an entry whose start,
    answer and end meet in one batch is a single INSERT. Order per entry is kept (start before
    answer before end); a failed batch is retried write by write so one bad entry (say, its user
    was deleted meanwhile) costs only itself. Failures go to ``on_error(exc)`` (the server logs
    them); they never reach the call. :meth:`drain` waits for everything queued (shutdown, tests).
    """

    def __init__(self, store: PbxStore,
                 on_error: Callable[[BaseException], None] | None = None,
                 *, linger: float = 0.05) -> None:
        self.store = store
        self.on_error = on_error
        #: After the first write of a batch arrives the worker waits this long for more: one
        #: commit (one fsync, one wake-up of the worker) per ``linger`` under load instead of
        #: one per call; an entry is on disk at most ``linger`` + one commit after its event.
        self.linger = linger
        self._cond = threading.Condition()
        #: queued writes in order; a record's later events merge into its queued write
        self._queue: list[tuple[HistoryRecord, HistoryWrite, bool]] = []  # (…, is update)
        self._busy = False
        self._closed = False
        self._idle_waiters: list[concurrent.futures.Future[None]] = []
        self._thread = threading.Thread(target=self._run, name="history", daemon=True)
        self._thread.start()
        #: batches committed and writes in them (for tests and the bench)
        self.batches = 0
        self.writes = 0

    # -- called from the event loop ------------------------------------------------------------

    def call_started(self, user_id: int, call_id: str, direction: str, other_name: str,
                     other_number: str, at: float) -> HistoryRecord:
        """A call of ``user_id`` started (direction "in" or "out"; the other party's name and
        number as shown to the user)."""
        write = HistoryWrite(user_id, call_id, direction, other_name, other_number, at)
        record = HistoryRecord(user_id, write)
        self._enqueue(record, write)
        return record

    def call_answered(self, record: HistoryRecord, at: float) -> None:
        """The call was answered (by or for this user)."""
        with self._cond:
            write = self._pending(record)
            if write.answered_at is None:
                write.answered_at = at

    def call_ended(self, record: HistoryRecord, at: float) -> None:
        """The call ended: duration and missed are computed from the times."""
        with self._cond:
            write = self._pending(record)
            if write.ended_at is None:
                write.ended_at = at

    def _pending(self, record: HistoryRecord) -> HistoryWrite:
        # Under the lock: the record's queued write, or a new update write queued behind the
        # batch that took the previous one (its entry id is read when that update runs).
        write = record._write
        if write is None:
            write = HistoryWrite(record.user_id, "", "in", "", "", 0.0)
            record._write = write
            self._queue.append((record, write, True))
            if len(self._queue) == 1:
                self._cond.notify()
        return write

    def _enqueue(self, record: HistoryRecord, write: HistoryWrite) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("call history is closed")
            self._queue.append((record, write, False))
            if len(self._queue) == 1:  # the worker sleeps only on an empty queue
                self._cond.notify()

    # -- the worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._wake_idle_waiters()
                    self._cond.wait()
                if not self._queue:  # closed and drained
                    self._wake_idle_waiters()
                    return
                self._busy = True
            if self.linger > 0 and not self._closed:
                time.sleep(self.linger)  # gather what the next calls bring (group commit)
            with self._cond:
                batch, self._queue = self._queue, []
                for record, _, _ in batch:
                    record._write = None  # later events start a new write
                self._busy = True
            self._commit(batch)
            with self._cond:
                self._busy = False

    def _wake_idle_waiters(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            fut.set_result(None)

    def _commit(self, batch: list[tuple[HistoryRecord, HistoryWrite, bool]]) -> None:
        writes: list[tuple[HistoryRecord, HistoryWrite]] = []
        for record, write, is_update in batch:
            if is_update:  # of an entry stored by an earlier batch
                if record.entry_id is None:
                    continue  # its insert failed: nothing to update
                write.entry_id = record.entry_id
            writes.append((record, write))
        if not writes:
            return
        try:
            ids = self.store.history_write([w for _, w in writes])
        except Exception:
            # Isolate the bad write: the others go in one by one (rare path).
            for record, write in writes:
                try:
                    (entry_id,) = self.store.history_write([write])
                except Exception as exc:  # reported, never raised into a call
                    if write.entry_id is None:
                        record.failed = True
                    self._report(exc)
                else:
                    record.entry_id = entry_id
            self.batches += 1
            self.writes += len(writes)
            return
        for (record, _), entry_id in zip(writes, ids, strict=True):
            record.entry_id = entry_id
        self.batches += 1
        self.writes += len(writes)

    def _report(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(exc)

    # -- reading, draining, closing ------------------------------------------------------------

    def history(self, user_id: int, limit: int = 200) -> list[HistoryEntry]:
        """A user's history, newest first (synchronous: for the API/portal via to_thread)."""
        return self.store.history(user_id, limit)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued write is committed (threads other than the worker)."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._cond:
            if not self._queue and not self._busy:
                return True
            self._idle_waiters.append(fut)
            self._cond.notify()
        try:
            fut.result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True

    async def drain(self) -> None:
        """Wait until every queued write has been committed."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._cond:
            if not self._queue and not self._busy:
                return
            self._idle_waiters.append(fut)
        await asyncio.wrap_future(fut)

    def close(self) -> None:
        """Finish queued writes and stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()


class CallRecordLike(Protocol):
    """The fields of :class:`pbx.callcontrol.CallRecord` the history adapter reads."""

    @property
    def call_id(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def caller(self) -> str: ...
    @property
    def callee(self) -> str: ...
    @property
    def started(self) -> float: ...
    @property
    def answered(self) -> float | None: ...
    @property
    def ended(self) -> float | None: ...
    @property
    def tenant_id(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Party:
    """One user's view of a call: their id, "in"/"out", and the other side as shown."""

    user_id: int
    direction: str
    other_name: str
    other_number: str


def directory_parties(directory: Directory, domain: str) -> Callable[[CallRecordLike], list[Party]]:
    """The users of a call as the B2BUA records it (caller = the caller's extension or device
    username, callee = what was dialled / the DID), looked up in the record's tenant
    (``record.tenant_id``; records without one belong to ``domain``'s tenant): the caller gets
    an "out" entry, the callee an "in" entry, each showing the other."""

    def lookup(party: str, tenant: Tenant | None) -> User | None:
        user = directory.user_in_tenant(tenant.id, party) if tenant is not None else None
        if user is None and tenant is not None:
            user = directory.user_of_device(tenant.realm, party)
        if user is None and party.startswith("+"):
            n = directory.owner_of_did(party)
            user = directory.user_by_id(n.user_id) if n and n.user_id is not None else None
        return user

    def parties(record: CallRecordLike) -> list[Party]:
        out = []
        tenant_id = record.tenant_id
        tenant = (directory.tenant(tenant_id) if tenant_id is not None
                  else directory.tenant_for_domain(domain))
        caller = lookup(record.caller, tenant) if record.direction != "inbound" else None
        callee = lookup(record.callee, tenant) if record.direction != "outbound" else None
        if caller is not None:
            out.append(Party(caller.id, "out", callee.name if callee else "",
                             callee.extension if callee else record.callee))
        if callee is not None:
            out.append(Party(callee.id, "in", caller.name if caller else "",
                             caller.extension if caller else record.caller))
        return out

    return parties


class CallRecordHistory:
    """The call-control history hook (append to ``PbxServer.call_record_hooks``): the B2BUA
    calls it with the same record when a call starts, is answered and ends; each user of the
    call gets one entry, written through :class:`AsyncHistory` without blocking."""

    def __init__(self, history: AsyncHistory,
                 parties: Callable[[CallRecordLike], list[Party]]) -> None:
        self.history = history
        self.parties = parties
        #: call id → (entries, answered already)
        self._open: dict[str, tuple[list[HistoryRecord], bool]] = {}

    def __call__(self, record: CallRecordLike) -> None:
        state = self._open.get(record.call_id)
        if state is None:
            entries = [self.history.call_started(p.user_id, record.call_id, p.direction,
                                                 p.other_name, p.other_number, record.started)
                       for p in self.parties(record)]
            state = (entries, False)
        entries, answered = state
        if record.answered is not None and not answered:
            for e in entries:
                self.history.call_answered(e, record.answered)
            answered = True
        if record.ended is not None:
            for e in entries:
                self.history.call_ended(e, record.ended)
            self._open.pop(record.call_id, None)
            return
        self._open[record.call_id] = (entries, answered)
