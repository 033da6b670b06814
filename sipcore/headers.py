"""SIP header fields: canonical names, compact forms and an ordered, case-insensitive multi-map.

RFC 3261 §7.3: header names are case-insensitive and several have a one-letter compact form
(§7.3.3, plus the ones registered later: ``o`` Event, ``r`` Refer-To, ``k`` Supported ...). A
header whose grammar is a comma-separated list (``Via``, ``Contact``, ``Route`` ...) may appear as
one line with several values or as several lines; both are stored here as separate entries
(§7.3.1), so every layer sees the same header set. Headers whose values may contain unquoted
commas (the authentication headers, ``Date``) and every header we do not know are kept whole.

Names are normalised once, when an entry is added: known headers get their canonical spelling,
unknown ones keep the spelling they arrived with (so they are forwarded byte-exact) and are
looked up case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, KeysView

__all__ = [
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "Headers",
    "canonical_name",
    "split_header_list",
]

#: Compact forms (RFC 3261 §7.3.3, RFC 3265, RFC 3515, RFC 3892, RFC 4028, RFC 3841, RFC 8224).
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Diversion", "Error-Info", "Event", "Expires", "From",
    "History-Info", "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version",
    "Min-Expires", "Min-SE", "Organization", "P-Asserted-Identity", "P-Preferred-Identity",
    "Path", "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require",
    "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces",
    "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route", "RSeq",
    "Security-Client", "Security-Server", "Security-Verify", "Server", "Service-Route",
    "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State", "Supported",
    "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
)

#: Headers whose grammar is ``#element`` (a comma-separated list); their lines are split into
#: entries. Everything else (authentication challenges/credentials, Date, From/To, unknown
#: headers ...) is kept as one value.
LIST_HEADERS: frozenset[str] = frozenset(
    {
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
        "Error-Info", "History-Info", "In-Reply-To", "P-Asserted-Identity",
        "P-Preferred-Identity", "Path", "Proxy-Require", "Reason", "Record-Route",
        "Reject-Contact", "Require", "Route", "Security-Client", "Security-Server",
        "Security-Verify", "Service-Route", "Supported", "Unsupported", "Via", "Warning",
        "Diversion",
    }
)

# spelling -> (lookup key, canonical name). Filled with canonical, lower-case and compact
# spellings so the common cases cost one dict lookup.
_NAMES: dict[str, tuple[str, str]] = {}
for _name in _KNOWN:
    _NAMES[_name] = _NAMES[_name.lower()] = (_name.lower(), _name)
for _short, _long in COMPACT_FORMS.items():
    _NAMES[_short] = _NAMES[_short.upper()] = (_long.lower(), _long)
_LIST_KEYS: frozenset[str] = frozenset(n.lower() for n in LIST_HEADERS)

#: For the message parser: spelling -> (key, canonical name, kind); kind bit 1 = a header the
#: parser checks (presence, duplicates, Content-Length), bit 2 = a comma-list header.
PARSER_TRACKED = frozenset({"call-id", "cseq", "from", "to", "max-forwards", "content-length",
                            "via"})
_PARSE_NAMES: dict[str, tuple[str, str, int]] = {
    spelling: (key, canon, (1 if key in PARSER_TRACKED else 0) | (2 if key in _LIST_KEYS else 0))
    for spelling, (key, canon) in _NAMES.items()
}

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


#: spelling -> lookup key, for the read paths (a dict hit instead of a _lookup call)
_KEYS: dict[str, str] = {spelling: key for spelling, (key, _) in _NAMES.items()}


def _lookup(name: str) -> tuple[str, str]:
    """Return (lookup key, name to keep) for a header name as given."""
    hit = _NAMES.get(name)
    if hit is not None:
        return hit
    low = name.lower()
    hit = _NAMES.get(low)
    if hit is not None:
        return hit
    return low, name


def canonical_name(name: str) -> str:
    """Canonical spelling of a header name: ``"v"`` -> ``"Via"``, ``"call-id"`` -> ``"Call-ID"``.

    Unknown names are returned as given.
    """
    return _lookup(name)[1]


def is_token(text: str) -> bool:
    """True when ``text`` is an RFC 3261 ``token`` (header names, methods, parameter names)."""
    return _TOKEN.fullmatch(text) is not None


_SPLIT_STOP = re.compile(r'[",<]')


def split_header_list(value: str) -> list[str]:
    """Split a ``#element`` header value at the commas that separate entries.

    Commas inside quoted strings (with ``\\`` escapes) and inside ``<...>`` do not split. An
    unterminated quote or bracket swallows the rest of the value into the last entry (the
    structured parser of that header reports the fault later). Empty entries are dropped.
    """
    if '"' not in value and "<" not in value:
        parts = value.split(",")
    else:
        parts = []
        start = pos = 0
        n = len(value)
        while True:
            m = _SPLIT_STOP.search(value, pos)
            if m is None:
                break
            ch = m.group()
            pos = m.end()
            if ch == ",":
                parts.append(value[start : pos - 1])
                start = pos
            elif ch == "<":
                close = value.find(">", pos)
                if close < 0:
                    pos = n
                    break
                pos = close + 1
            else:  # a quoted string: skip to its closing quote, honouring backslash escapes
                q = value.find('"', pos)
                while True:
                    b = value.find("\\", pos, q if q >= 0 else n)
                    if b < 0:
                        pos = q + 1 if q >= 0 else n
                        break
                    pos = b + 2
                    if pos > q >= 0:  # that quote was escaped: find the next one
                        q = value.find('"', pos)
                if pos >= n:
                    break
        parts.append(value[start:])
    out = [p.strip(" \t") for p in parts]
    return [p for p in out if p] or [""]


class Headers:
    """An ordered multi-map of SIP headers with case-insensitive names.

    Compact forms are expanded to the canonical name; list headers (:data:`LIST_HEADERS`) given
    as one comma-separated value are stored as separate entries. Iteration yields
    ``(name, value)`` pairs in wire order. Every mutation bumps :attr:`version`, which
    :class:`sipcore.message.Message` uses to invalidate its parsed-header cache.
    """

    __slots__ = ("_changed", "_index", "_items", "version")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        #: entries as (lookup key, name, value)
        self._items: list[tuple[str, str, str]] = []
        self.version = 0
        #: lookup key -> version at which entries of that name last changed (Message reads it
        #: to drop only the parsed values a change made stale)
        self._changed: dict[str, int] = {}
        #: lookup key -> values in order; built on the first lookup and kept current by each
        #: mutation for the one name it changed (a message is looked into a dozen times,
        #: mostly for headers it does not have, and ours are built header by header)
        self._index: dict[str, list[str]] | None = None
        for name, value in items:
            self._append(name, value)

    @classmethod
    def _trusted(cls, entries: list[tuple[str, str, str]]) -> Headers:
        """Build from already-normalised entries (the parser's fast path)."""
        # cls() then replacing the empty list, not cls.__new__: mypyc's native classes have
        # no Python-level __new__ to call
        h = cls()
        h._items = entries
        return h

    def _entries(self, name: str, value: str) -> list[tuple[str, str, str]]:
        key, canon = _lookup(name)
        if key in _LIST_KEYS and ("," in value):
            return [(key, canon, v) for v in split_header_list(value)]
        return [(key, canon, value.strip(" \t"))]

    def _append(self, name: str, value: str) -> None:
        self._items.extend(self._entries(name, value))

    # -- reading -----------------------------------------------------------------------------

    def _build_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for k, _, v in self._items:
            values = index.get(k)
            if values is None:
                index[k] = [v]
            else:
                values.append(v)
        self._index = index
        return index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` or ``default``."""
        index = self._index if self._index is not None else self._build_index()
        values = index.get(_KEYS.get(name) or _lookup(name)[0])
        return default if values is None else values[0]

    def get_all(self, name: str) -> list[str]:
        """All values of ``name`` in order (comma lists already split into entries)."""
        index = self._index if self._index is not None else self._build_index()
        values = index.get(_KEYS.get(name) or _lookup(name)[0])
        return [] if values is None else values.copy()

    def count(self, name: str) -> int:
        """How many entries of ``name`` there are."""
        index = self._index if self._index is not None else self._build_index()
        return len(index.get(_lookup(name)[0], ()))

    def lookup_keys(self) -> KeysView[str]:
        """The lookup keys present: lower-case canonical names (``"v"`` counts as ``"via"``)."""
        index = self._index if self._index is not None else self._build_index()
        return index.keys()

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        index = self._index if self._index is not None else self._build_index()
        return (_KEYS.get(name) or _lookup(name)[0]) in index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self._items)

    def items(self) -> list[tuple[str, str]]:
        """A list of ``(name, value)`` pairs in order."""
        return [(n, v) for _, n, v in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def copy(self) -> Headers:
        """A shallow copy (values are immutable strings)."""
        return Headers._trusted(list(self._items))

    # -- mutation ----------------------------------------------------------------------------

    def _touch(self, key: str, appended: list[tuple[str, str, str]] | None = None) -> None:
        """Record a change of ``key``'s entries (``appended``: they were only added at the end)
        and keep the index current for that one name."""
        self.version += 1
        self._changed[key] = self.version
        index = self._index
        if index is None:
            return
        if appended is not None and key in index:
            index[key].extend(v for _, _, v in appended)
            return
        values = [v for k, _, v in self._items if k == key]
        if values:
            index[key] = values
        else:
            index.pop(key, None)

    def add(self, name: str, value: str) -> None:
        """Append ``name: value`` at the end."""
        new = self._entries(name, value)
        self._items.extend(new)
        self._touch(new[0][0], new)

    def insert(self, name: str, value: str) -> None:
        """Insert before the first header of that name, else at the top (Via, Record-Route)."""
        new = self._entries(name, value)
        key = new[0][0]
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items[i:i] = new
                break
        else:
            self._items[0:0] = new
        self._touch(key)

    def set(self, name: str, value: str) -> None:
        """Replace all values of ``name`` by ``value`` (at the place of the first one)."""
        new = self._entries(name, value)
        key = new[0][0]
        items = self._items
        pos = next((i for i, (k, _, _) in enumerate(items) if k == key), len(items))
        rest = [e for e in items[pos:] if e[0] != key]
        self._items = items[:pos] + new + rest
        self._touch(key)

    def remove(self, name: str) -> int:
        """Remove every entry of ``name``; return how many were removed."""
        key = _lookup(name)[0]
        before = len(self._items)
        self._items = [e for e in self._items if e[0] != key]
        removed = before - len(self._items)
        if removed:
            self._touch(key)
        return removed

    def replace_first(self, name: str, value: str) -> bool:
        """Replace the first entry of ``name`` in place (e.g. the top Via stamped with
        ``received``); False when there is none. The header order is kept."""
        new = self._entries(name, value)
        key = new[0][0]
        items = self._items
        for i, (k, _, _) in enumerate(items):
            if k == key:
                items[i : i + 1] = new
                self._touch(key)
                return True
        return False

    def remove_first(self, name: str) -> str | None:
        """Remove the first entry of ``name`` (e.g. the top Via or Route); return its value."""
        key = _lookup(name)[0]
        for i, (k, _, v) in enumerate(self._items):
            if k == key:
                del self._items[i]
                self._touch(key)
                return v
        return None
