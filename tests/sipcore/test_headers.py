"""Headers: canonical names, compact forms, comma-list splitting, ordered multi-map semantics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.headers import Headers, canonical_name, split_header_list


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("v", "Via"), ("V", "Via"), ("i", "Call-ID"), ("call-id", "Call-ID"),
        ("CALL-ID", "Call-ID"), ("cseq", "CSeq"), ("www-authenticate", "WWW-Authenticate"),
        ("m", "Contact"), ("l", "Content-Length"), ("k", "Supported"), ("o", "Event"),
        ("X-Unknown-Thing", "X-Unknown-Thing"), ("x-unknown-thing", "x-unknown-thing"),
    ],
)
def test_canonical_name(given: str, canonical: str) -> None:
    assert canonical_name(given) == canonical


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a, b ,c", ["a", "b", "c"]),
        ('"Doe, John" <sip:j@x>;q=1, <sip:k@y>', ['"Doe, John" <sip:j@x>;q=1', "<sip:k@y>"]),
        ("<sip:a@b;x=1,2>, <sip:c@d>", ["<sip:a@b;x=1,2>", "<sip:c@d>"]),
        (r'"a \" , b" <sip:x@y>, <sip:z@w>', [r'"a \" , b" <sip:x@y>', "<sip:z@w>"]),
        (r'"a \\", <sip:z@w>', [r'"a \\"', "<sip:z@w>"]),
        ('"unterminated, <sip:a@b>', ['"unterminated, <sip:a@b>']),
        ("<sip:unterminated, x", ["<sip:unterminated, x"]),
        ("a,,b,", ["a", "b"]),
        ("", [""]),
    ],
)
def test_split_header_list(value: str, parts: list[str]) -> None:
    assert split_header_list(value) == parts


def test_multimap_semantics() -> None:
    h = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
                 ("From", "<sip:x@y>;tag=1"), ("X-Foo", "1, 2"),
                 ("WWW-Authenticate", 'Digest realm="a", nonce="b"'), ("Date", "Sat, 13 Nov 2010")])
    assert h.get_all("VIA") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2"]
    assert h.get("x-foo") == "1, 2"  # unknown headers stay whole
    assert h.get("www-authenticate") == 'Digest realm="a", nonce="b"'
    assert h.get("date") == "Sat, 13 Nov 2010"
    assert "from" in h and "f" in h and "To" not in h and 3 not in h
    assert h.get("To") is None and h.get("To", "dflt") == "dflt"
    assert [n for n, _ in h] == ["Via", "Via", "From", "X-Foo", "WWW-Authenticate", "Date"]
    assert len(h) == 6

    v0 = h.version
    h.insert("Via", "SIP/2.0/TCP top;branch=z9hG4bK0")
    assert h.get("Via") == "SIP/2.0/TCP top;branch=z9hG4bK0" and h.version > v0
    h.insert("Record-Route", "<sip:p1;lr>")  # none yet: goes to the very top
    assert next(iter(h)) == ("Record-Route", "<sip:p1;lr>")
    h.add("Route", "<sip:r1;lr>, <sip:r2;lr>")
    assert h.get_all("route") == ["<sip:r1;lr>", "<sip:r2;lr>"]
    assert h.remove_first("Route") == "<sip:r1;lr>" and h.get_all("Route") == ["<sip:r2;lr>"]
    assert h.remove("Via") == 3 and "Via" not in h
    assert h.remove("Via") == 0
    h.set("from", "<sip:new@y>")
    assert h.get_all("From") == ["<sip:new@y>"]
    h.set("Contact", "<sip:c@d>")  # absent: appended
    assert h.items()[-1] == ("Contact", "<sip:c@d>")

    c = h.copy()
    assert c == h and c is not h
    c.add("X-Bar", "1")
    assert c != h and h.get("X-Bar") is None
    assert Headers([("x-a", "1")]) == Headers([("X-A", "1")])  # names compare case-insensitively
    assert Headers([("X-A", "1")]) != Headers([("X-A", "2")])


def test_lookup_keys_are_lower_case_canonical_names() -> None:
    h = Headers([("v", "SIP/2.0/UDP a"), ("P-Asserted-Identity", "<sip:x@y>"), ("X-Foo", "1"),
                 ("Call-ID", "c")])
    assert set(h.lookup_keys()) == {"via", "p-asserted-identity", "x-foo", "call-id"}
    h.add("ROUTE", "<sip:r>")
    assert "route" in h.lookup_keys()


_NAMES = ["Via", "v", "Route", "Contact", "m", "Call-ID", "X-Thing", "x-thing", "Allow"]
_OPS = st.tuples(
    st.sampled_from(["add", "insert", "set", "remove", "replace_first", "remove_first", "get"]),
    st.sampled_from(_NAMES),
    st.sampled_from(["a", "b, c", "<sip:x@y,z>;lr", "d"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_OPS, max_size=25))
def test_index_stays_current_through_mutations(ops: list[tuple[str, str, str]]) -> None:
    """The lookup index is kept up to date per mutated name (not rebuilt): after any sequence
    of mutations and lookups it answers exactly what a fresh scan of the entries gives."""
    h = Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("Call-ID", "c1")])
    for op, name, value in ops:
        if op == "get":
            h.get(name)  # builds the index (first time) mid-sequence
        elif op in ("add", "insert", "set", "replace_first"):
            getattr(h, op)(name, value)
        else:
            getattr(h, op)(name)
        fresh = Headers(h.items())  # no index yet: scans the entries
        for n in _NAMES:
            assert h.get_all(n) == fresh.get_all(n), (n, ops)
            assert (n in h) == (n in fresh)
        assert sorted(h.lookup_keys()) == sorted(fresh.lookup_keys())
