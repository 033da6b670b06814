"""Registrar logic of RFC 3261 §10.3, sans-IO (with RFC 3327 Path).

Theory of operation
-------------------
The application authenticates a REGISTER (see :mod:`sipcore.digest`), decides which
address-of-record it may bind (normally the To URI, after checking the authenticated user owns
it), then calls :meth:`Registrar.handle_register`. That runs the steps of RFC 3261 §10.3 that
belong to the location service:

* step 5 — no Contact: a query; the 200 lists the current bindings.
* step 6 — ``Contact: *`` only with ``Expires: 0`` and no other Contact, else 400; each
  contact's expiry is its ``expires`` parameter, else the Expires header, else
  ``default_expires``; a malformed value counts as the default (§20.19); longer than
  ``max_expires`` is shortened; non-zero but below ``min_expires`` → 423 with Min-Expires.
* step 7 — per contact, an existing binding (same URI by §19.1.4, or same ``+sip.instance``
  and ``reg-id``) with the same Call-ID and a CSeq not higher than the stored one aborts the
  whole request with 500; otherwise it is refreshed, or removed when the expiry is 0. Updates
  are committed only if all of them succeed.
* step 8 — the 200 carries every current binding with its remaining ``expires`` and a Date.

With ``Supported: path`` the Path header values (RFC 3327 §5.3) are stored with the bindings
and echoed in the 200; without it a Path is ignored.

Bindings live in a dict per AOR (a handful each), so a REGISTER costs a few dict operations.
Expiry uses a heap of deadlines with lazy deletion (entries of refreshed bindings are skipped
when they surface; the heap is rebuilt when mostly stale), so :meth:`Registrar.get_timer` is
O(1) amortised. Every change comes out as a frozen event (:class:`BindingAdded`,
:class:`BindingRefreshed`, :class:`BindingRemoved`) for the application to write through to its
store; :meth:`Registrar.restore` loads what was stored at start-up.

``now`` must be POSIX wall-clock seconds (``time.time()``): binding deadlines are persisted
across restarts and the 200 OK carries a ``Date`` header.
"""

from __future__ import annotations

import enum
import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate

from sipcore.errors import LocalProtocolError, ParseError
from sipcore.message import Request, Response, make_response, new_tag
from sipcore.transport import Peer
from sipcore.uri import URI, NameAddr, parse_uri, uri_equal

__all__ = [
    "Binding",
    "BindingAdded",
    "BindingChange",
    "BindingRefreshed",
    "BindingRemoved",
    "Registrar",
    "RemovalReason",
    "gruu_instance",
    "public_gruu",
]


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact bound to an address-of-record.

    ``contact`` is the Contact value as we echo it (``<uri>`` plus its parameters except
    ``expires`` and ``q``, e.g. ``+sip.instance`` and ``reg-id``); ``uri`` the contact URI alone
    (where requests go). ``expires_at`` is POSIX time. ``path`` is the stored Path vector
    (RFC 3327), first element nearest to us. ``received`` is where the REGISTER came from
    (transport, host, port, connection) for reaching a UA behind NAT.
    """

    aor: str
    uri: str
    contact: str
    expires_at: float
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    path: tuple[str, ...] = ()
    received: Peer | None = None
    user_agent: str | None = None
    instance: str | None = None
    reg_id: int | None = None

    def remaining(self, now: float) -> int:
        """Seconds left, rounded, never negative (the ``expires`` we report)."""
        left = round(self.expires_at - now)
        return left if left > 0 else 0


class RemovalReason(enum.Enum):
    """Why a binding went away."""

    UNREGISTERED = "unregistered"  # expires=0 or Contact: *
    EXPIRED = "expired"
    REPLACED = "replaced"  # same +sip.instance/reg-id registered a new contact URI
    EVICTED = "evicted"  # oldest binding dropped to stay within max_contacts
    ADMINISTRATIVE = "administrative"  # Registrar.remove_aor
    FLOW_CLOSED = "flow_closed"  # Registrar.remove_flow: its WebSocket connection closed


@dataclass(frozen=True, slots=True)
class BindingAdded:
    """A new binding (insert into the store)."""

    binding: Binding


@dataclass(frozen=True, slots=True)
class BindingRefreshed:
    """An existing binding re-registered (update the store row of ``(aor, uri)``)."""

    binding: Binding


@dataclass(frozen=True, slots=True)
class BindingRemoved:
    """A binding removed (delete the store row of ``(aor, uri)``)."""

    binding: Binding
    reason: RemovalReason


BindingChange = BindingAdded | BindingRefreshed | BindingRemoved

# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )   (RFC 3261 §25.1)
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_DIGITS = re.compile(r"[0-9]{1,10}")
_MAX_CONTACTS_PER_REQUEST = 64


class _Slot:
    """A stored binding plus its parsed URI (for §19.1.4 comparison without re-parsing)."""

    __slots__ = ("binding", "parsed")

    def __init__(self, binding: Binding, parsed: URI | None) -> None:
        self.binding = binding
        self.parsed = parsed


class _Reject(Exception):
    def __init__(self, status: int, reason: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


def _parse_expires(value: str | None) -> int | None:
    """A delta-seconds value, None when absent; malformed counts as absent (§20.19: default)."""
    if value is None:
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value) is None:
        return None
    return int(value)


class _Contact:
    """What the registrar needs from one Contact entry, decoded once per distinct text."""

    __slots__ = ("contact", "expires", "instance", "parsed", "q", "reg_id", "uri_text")

    def __init__(self, na: NameAddr) -> None:
        params = na.params
        self.parsed: URI = na.uri
        self.uri_text = str(na.uri)
        #: the ``expires`` parameter; None when absent or malformed (then the header counts)
        self.expires = _parse_expires(params.get("expires"))
        self.q = 1.0
        q_text = params.get("q")
        if q_text is not None:
            if _QVALUE.fullmatch(q_text) is None:
                raise _Reject(400, "Bad q Value")
            self.q = float(q_text)
        instance = params.get("+sip.instance")
        if instance is not None and len(instance) >= 2 and instance[0] == '"':
            instance = instance[1:-1]  # the quoted "<urn:...>" form (RFC 5626 §4.1)
        self.instance = instance
        reg_text = params.get("reg-id")
        self.reg_id = int(reg_text) if reg_text and _DIGITS.fullmatch(reg_text) else None
        # What we store and echo: the URI and the parameters except expires and q.
        self.contact = (
            "<"
            + self.uri_text
            + ">"
            + "".join(
                (f";{k}" if v is None else f";{k}={v}")
                for k, v in params.items()
                if k != "expires" and k != "q"
            )
        )


#: Distinct Contact texts remembered (a refresh repeats the same text: no re-parsing).
_CONTACT_CACHE_SIZE = 4096


def public_gruu(aor: str, instance: str) -> str:
    """The public GRUU of ``instance`` (``<urn:...>`` as the Contact's ``+sip.instance``) at
    ``aor``: the AOR with ``gr`` set to the instance URN (RFC 5627 §3.1, §5.1)."""
    return f"{aor};gr={instance.strip().strip('<>')}"


def gruu_instance(params: dict[str, str | None]) -> str | None:
    """The ``+sip.instance`` (``<urn:...>``) a Request-URI's ``gr`` parameter names, or None
    when it names none (no ``gr``, or an empty one)."""
    gr = params.get("gr")
    return f"<{gr}>" if gr else None


class Registrar:
    """The location service of one PBX: bindings per address-of-record, sans-IO.

    ``max_contacts`` bounds the bindings of one AOR: a request with more contacts than that is
    refused (403); otherwise the bindings closest to expiry that the request did not touch are
    evicted to make room (a phone that keeps changing its address does not lock itself out).
    """

    def __init__(
        self,
        *,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        max_contacts: int = 10,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise LocalProtocolError("need 0 < min_expires <= default_expires <= max_expires")
        if max_contacts < 1:
            raise LocalProtocolError("max_contacts must be at least 1")
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_contacts = max_contacts
        self._aors: dict[str, dict[str, _Slot]] = {}
        self._count = 0
        # (expires_at, aor, uri); an entry is live iff that binding still expires then.
        self._heap: list[tuple[float, str, str]] = []
        self._date_second = -1
        self._date = ""
        self._contact_cache: dict[str, _Contact] = {}
        #: (transport, connection id) → the (aor, uri) of the bindings registered over it.
        self._flows: dict[tuple[str, int], set[tuple[str, str]]] = {}

    # -- queries --------------------------------------------------------------------------

    def bindings(self, aor: str, now: float) -> list[Binding]:
        """Current (unexpired) bindings of ``aor``, highest q first, then most recent."""
        slots = self._aors.get(aor)
        if not slots:
            return []
        found = [s.binding for s in slots.values() if s.binding.expires_at > now]
        found.sort(key=lambda b: (-b.q, -b.expires_at))
        return found

    def count(self) -> int:
        """Number of stored bindings (including expired ones not yet collected)."""
        return self._count

    def aors(self) -> list[str]:
        """Addresses-of-record with at least one stored binding."""
        return list(self._aors)

    def get_timer(self) -> float | None:
        """When the next binding expires (call :meth:`expire` then), or None."""
        heap = self._heap
        while heap:
            expires_at, aor, uri = heap[0]
            slot = self._aors.get(aor, {}).get(uri)
            if slot is not None and slot.binding.expires_at == expires_at:
                return expires_at
            heapq.heappop(heap)
        return None

    # -- time and persistence -------------------------------------------------------------

    def expire(self, now: float) -> list[BindingChange]:
        """Remove every binding whose time has come; one BindingRemoved(EXPIRED) each."""
        changes: list[BindingChange] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires_at, aor, uri = heapq.heappop(heap)
            slots = self._aors.get(aor)
            slot = slots.get(uri) if slots else None
            if slot is None or slot.binding.expires_at != expires_at:
                continue
            self._drop(aor, uri)
            changes.append(BindingRemoved(slot.binding, RemovalReason.EXPIRED))
        return changes

    def restore(self, bindings: Iterable[Binding], now: float) -> list[BindingChange]:
        """Load persisted bindings at start-up; expired ones are dropped and reported.

        Replaces any binding already held for the same (aor, uri). Returns a BindingRemoved
        (EXPIRED) per dropped binding so the store can delete it.
        """
        changes: list[BindingChange] = []
        for binding in bindings:
            if binding.expires_at <= now:
                changes.append(BindingRemoved(binding, RemovalReason.EXPIRED))
                continue
            try:
                parsed: URI | None = parse_uri(binding.uri)
            except ParseError:
                parsed = None
            self._put(binding, parsed)
        return changes

    def remove_aor(self, aor: str) -> list[BindingChange]:
        """Drop every binding of ``aor`` (user deleted, device de-provisioned)."""
        slots = self._aors.get(aor)
        if not slots:
            return []
        changes: list[BindingChange] = [
            BindingRemoved(slot.binding, RemovalReason.ADMINISTRATIVE) for slot in slots.values()
        ]
        for uri in list(slots):
            self._drop(aor, uri)
        return changes

    def remove_flow(self, transport: str, conn_id: int) -> list[BindingChange]:
        """Drop every binding registered over connection ``conn_id`` of ``transport`` (a
        WebSocket that closed: its contacts, ``*.invalid`` hosts, RFC 7118 §5, can be reached
        over nothing else)."""
        keys = self._flows.pop((transport, conn_id), None)
        changes: list[BindingChange] = []
        for aor, uri in sorted(keys or ()):
            slot = self._aors.get(aor, {}).get(uri)
            if slot is None:
                continue
            changes.append(BindingRemoved(slot.binding, RemovalReason.FLOW_CLOSED))
            self._drop(aor, uri)
        return changes

    # -- REGISTER -------------------------------------------------------------------------

    def handle_register(
        self, request: Request, aor: str, source: Peer, now: float
    ) -> tuple[Response, list[BindingChange]]:
        """Apply a REGISTER for ``aor`` (already authorised by the caller) from ``source``.

        Returns the response to send (200, or 400/403/423/500 with nothing changed) and the
        binding changes to write through. Never raises for anything in the request.
        """
        if request.method != "REGISTER":
            raise LocalProtocolError("handle_register needs a REGISTER")
        # Bindings past their time are gone, whether or not expire() ran yet; that is reported
        # even when the request itself is then refused.
        changes: list[BindingChange] = []
        slots = self._aors.get(aor)
        if slots:
            for uri, slot in list(slots.items()):
                if slot.binding.expires_at <= now:
                    self._drop(aor, uri)
                    changes.append(BindingRemoved(slot.binding, RemovalReason.EXPIRED))
        try:
            return self._handle(request, aor, source, now, changes), changes
        except _Reject as reject:
            response = self._response(request, reject.status, reject.reason)
            for name, value in reject.extra:
                response.headers.add(name, value)
            return response, changes
        except ParseError as exc:
            return self._response(request, exc.status_hint, exc.reason), changes

    def _response(self, request: Request, status: int, reason: str | None = None) -> Response:
        try:
            return make_response(request, status, reason, to_tag=new_tag())
        except ParseError:  # an unparsable To: answer without adding a tag
            return make_response(request, status, reason)

    def _handle(
        self, request: Request, aor: str, source: Peer, now: float, changes: list[BindingChange]
    ) -> Response:
        """Validate, then commit; raises _Reject/ParseError before changing anything."""
        slots = self._aors.get(aor)

        headers = request.headers
        raw_contacts = [c for c in headers.get_all("Contact") if c]
        if not raw_contacts:  # step 5: a query
            return self._ok(request, aor, now, ())
        star = raw_contacts == ["*"]
        contacts = [] if star else self._decode_contacts(request, raw_contacts)

        call_id = request.call_id
        cseq = request.cseq.seq
        header_expires = _parse_expires(headers.get("Expires"))

        if star:  # "*" mixed with other contacts was refused by _decode_contacts
            if header_expires != 0:
                raise _Reject(400, "Contact * Needs Expires 0")
            for slot in (slots or {}).values():
                b = slot.binding
                if b.call_id == call_id and cseq <= b.cseq:
                    raise _Reject(500, "Out Of Order CSeq")
            for uri, slot in list((slots or {}).items()):
                self._drop(aor, uri)
                changes.append(BindingRemoved(slot.binding, RemovalReason.UNREGISTERED))
            return self._ok(request, aor, now, ())

        if len(contacts) > self.max_contacts:
            raise _Reject(403, "Too Many Contacts")

        if header_expires is None:
            header_expires = self.default_expires
        path: tuple[str, ...] = ()
        if headers.get("Path") is not None and any(
            s.strip().lower() == "path" for s in headers.get_all("Supported")
        ):
            path = tuple(headers.get_all("Path"))
        outbound = any(ct.reg_id is not None and ct.instance is not None for ct in contacts)
        if outbound and path and ";ob" not in path[0].split(">", 1)[0].lower():
            # RFC 5626 §6: the flow ends at a proxy in front of us that does not keep it
            raise _Reject(439, "First Hop Lacks Outbound Support")
        user_agent = headers.get("User-Agent")

        # Pass 1: validate everything and decide, changing nothing (§10.3: all or nothing).
        plan: list[tuple[str | None, Binding | None, URI]] = []  # (matched uri, new, parsed)
        seen: set[str] = set()
        for ct in contacts:
            expires = ct.expires
            if expires is None:
                expires = header_expires
            if 0 < expires < self.min_expires:
                raise _Reject(423, "Interval Too Brief", (("Min-Expires", str(self.min_expires)),))
            expires = min(expires, self.max_expires)
            uri_text = ct.uri_text
            matched = self._match(slots, uri_text, ct.parsed, ct.instance, ct.reg_id)
            if matched is not None:
                assert slots is not None  # _match only finds something in existing slots
                prev = slots[matched]
                if prev.binding.call_id == call_id and cseq <= prev.binding.cseq:
                    raise _Reject(500, "Out Of Order CSeq")
                if (
                    matched != uri_text
                    and prev.parsed is not None
                    and uri_equal(prev.parsed, ct.parsed)
                ):
                    uri_text = matched  # an equivalent spelling: keep the stored key
            if uri_text in seen or (matched is not None and matched in seen):
                continue  # the same contact twice in one request: the first one counts
            seen.add(uri_text)
            if matched is not None:
                seen.add(matched)
            new = None
            if expires > 0:
                contact = ct.contact
                if uri_text != ct.uri_text:  # stored key spelling wins (see above)
                    contact = "<" + uri_text + ">" + contact[len(ct.uri_text) + 2 :]
                new = Binding(
                    aor,
                    uri_text,
                    contact,
                    now + expires,
                    ct.q,
                    call_id,
                    cseq,
                    path,
                    source,
                    user_agent,
                    ct.instance,
                    ct.reg_id,
                )
            plan.append((matched, new, ct.parsed))

        # Pass 2: commit.
        touched: set[str] = set()
        for matched, new, parsed in plan:
            old_slot = slots.get(matched) if (slots and matched is not None) else None
            if new is None:
                if old_slot is not None and matched is not None:
                    self._drop(aor, matched)
                    changes.append(BindingRemoved(old_slot.binding, RemovalReason.UNREGISTERED))
                continue
            if old_slot is not None and matched is not None and matched != new.uri:
                self._drop(aor, matched)
                changes.append(BindingRemoved(old_slot.binding, RemovalReason.REPLACED))
                old_slot = None
            self._put(new, parsed)
            touched.add(new.uri)
            changes.append(BindingRefreshed(new) if old_slot is not None else BindingAdded(new))
            slots = self._aors.get(aor)

        slots = self._aors.get(aor)
        if slots and len(slots) > self.max_contacts:
            victims = sorted(
                (s.binding for u, s in slots.items() if u not in touched),
                key=lambda b: b.expires_at,
            )
            for victim in victims[: len(slots) - self.max_contacts]:
                self._drop(aor, victim.uri)
                changes.append(BindingRemoved(victim, RemovalReason.EVICTED))

        return self._ok(request, aor, now, path, outbound=outbound)

    def _decode_contacts(self, request: Request, raw_contacts: list[str]) -> list[_Contact]:
        """Decode Contact entries, from the cache when the same text was seen before."""
        if len(raw_contacts) > _MAX_CONTACTS_PER_REQUEST:
            raise _Reject(403, "Too Many Contacts")
        cache = self._contact_cache
        out = []
        for raw in raw_contacts:
            ct = cache.get(raw)
            if ct is None:
                break
            out.append(ct)
        else:
            return out
        # Something new: parse through the message (its errors and "*" rules apply), then
        # remember each entry by its text.
        name_addrs = request.contacts
        if request.contact_star:
            raise _Reject(400, "Contact * Must Be Alone")
        out = [_Contact(na) for na in name_addrs]
        if len(out) == len(raw_contacts):
            if len(cache) + len(out) > _CONTACT_CACHE_SIZE:
                cache.clear()
            for raw, ct in zip(raw_contacts, out, strict=True):
                cache[raw] = ct
        return out

    def _match(
        self,
        slots: dict[str, _Slot] | None,
        uri_text: str,
        uri: URI,
        instance: str | None,
        reg_id: int | None,
    ) -> str | None:
        """The stored binding a contact refers to (RFC 3261 §10.3 step 7 / RFC 5626 §6)."""
        if not slots:
            return None
        if instance is not None and reg_id is not None:
            for key, slot in slots.items():
                b = slot.binding
                if b.instance == instance and b.reg_id == reg_id:
                    return key
        if uri_text in slots:
            return uri_text
        for key, slot in slots.items():
            if slot.parsed is not None and uri_equal(slot.parsed, uri):
                return key
        return None

    def _ok(self, request: Request, aor: str, now: float, path: tuple[str, ...], *,
            outbound: bool = False) -> Response:
        """The 2xx: every current binding; with ``Supported: gruu`` each binding with an
        instance gets its public GRUU (RFC 5627 §5.1); a registration of an Outbound flow
        (``reg-id`` + ``+sip.instance``, ``Supported: outbound``) gets ``Require: outbound``
        (RFC 5626 §6)."""
        response = self._response(request, 200, "OK")
        headers = response.headers
        supported = {s.strip().lower() for s in request.headers.get_all("Supported")}
        slots = self._aors.get(aor)
        if slots is None:
            current: list[Binding] = []
        elif len(slots) == 1:  # the common case: one phone, no sorting
            current = [b for s in slots.values() if (b := s.binding).expires_at > now]
        else:
            current = self.bindings(aor, now)
        for b in current:
            value = f"{b.contact};expires={b.remaining(now)}"
            if b.q != 1.0:
                value += f";q={b.q:g}"
            if b.instance is not None and "gruu" in supported:
                value += f';pub-gruu="{public_gruu(aor, b.instance)}"'
            headers.add("Contact", value)
        if outbound and "outbound" in supported:
            headers.add("Require", "outbound")
        for hop in path:
            headers.add("Path", hop)
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date = formatdate(second, usegmt=True)
        headers.add("Date", self._date)
        return response

    # -- storage --------------------------------------------------------------------------

    def _put(self, binding: Binding, parsed: URI | None) -> None:
        slots = self._aors.get(binding.aor)
        if slots is None:
            slots = self._aors[binding.aor] = {}
        if binding.uri not in slots:
            self._count += 1
        old = slots.get(binding.uri)
        if old is not None:
            self._unindex_flow(old.binding)
        slots[binding.uri] = _Slot(binding, parsed)
        r = binding.received
        if r is not None and r.conn_id is not None:
            self._flows.setdefault((r.transport, r.conn_id), set()).add((binding.aor, binding.uri))
        heapq.heappush(self._heap, (binding.expires_at, binding.aor, binding.uri))
        # Lazy deletion leaves one dead entry per refresh; rebuild once they dominate.
        if len(self._heap) > 2 * self._count + 1024:
            self._heap = [
                (s.binding.expires_at, a, u) for a, ss in self._aors.items() for u, s in ss.items()
            ]
            heapq.heapify(self._heap)

    def _unindex_flow(self, binding: Binding) -> None:
        r = binding.received
        if r is None or r.conn_id is None:
            return
        keys = self._flows.get((r.transport, r.conn_id))
        if keys is not None:
            keys.discard((binding.aor, binding.uri))
            if not keys:
                del self._flows[(r.transport, r.conn_id)]

    def _drop(self, aor: str, uri: str) -> None:
        slots = self._aors[aor]
        self._unindex_flow(slots[uri].binding)
        del slots[uri]
        self._count -= 1
        if not slots:
            del self._aors[aor]
