"""Robustness: the parser turns any bytes into a message or ParseError, nothing else.

* Hypothesis: generated messages survive serialize -> parse (normalized comparison);
* Hypothesis: arbitrary bytes and mutants of the torture corpus, fed to ``parse_message`` and
  to a ``StreamFramer`` (whole and byte by byte);
* a seeded, deterministic mutation run over >= 50,000 mutants of the corpus (bit flips,
  truncations, duplications, inserted NUL/CR/LF/huge numbers/separators), every accessor touched.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from sipcore.errors import ParseError
from sipcore.framing import KeepAlivePing, StreamFramer
from sipcore.headers import Headers
from sipcore.message import Message, Request, Response, _parse, parse_message
from sipcore.sdp import parse_sdp
from sipcore.uri import SipURI

from .test_torture import CORPUS, normalized

SEEDS = [p.read_bytes() for p in sorted(CORPUS.glob("*/*.sip")) if p.stat().st_size < 6000]


def exercise(data: bytes) -> Message | None:
    """Parse and touch everything; return the message, None on ParseError; anything else fails.

    Calls the parser below ``parse_message``'s last-resort net (which turns stray ValueErrors
    and the like into ParseError), so a bug in a corner of the parser fails the test.
    """
    try:
        m = _parse(data)
    except ParseError:
        return None
    for getter in (
        lambda: m.validate(), lambda: m.vias, lambda: m.from_, lambda: m.to, lambda: m.cseq,
        lambda: m.call_id, lambda: m.contacts, lambda: m.contact_star, lambda: m.expires,
        lambda: m.max_forwards, lambda: m.routes, lambda: m.record_routes,
        lambda: m.content_length, lambda: m.from_tag, lambda: m.to_tag,
    ):
        try:
            getter()
        except ParseError:
            pass
    assert m.content_type is None or isinstance(m.content_type, str)
    if m.body and m.content_type == "application/sdp":
        try:
            parse_sdp(m.body)
        except ParseError:
            pass
    wire = m.serialize()
    assert isinstance(wire, bytes)
    return m


def frame(data: bytes, step: int) -> None:
    """Feed ``data`` to a framer in ``step``-byte chunks; outputs must be well-typed."""
    f = StreamFramer()
    for i in range(0, len(data), step):
        for item in f.feed(data[i : i + step]):
            assert isinstance(item, bytes | KeepAlivePing | ParseError)
            if isinstance(item, bytes):
                exercise(item)


# -- generated messages round-trip -------------------------------------------------------------

_token = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9\-.!%*_+`'~]{0,10}", fullmatch=True)
_value = st.text(
    st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=30
).map(lambda s: s.strip(" \t"))
_names = st.one_of(
    _token.map(lambda t: "X-" + t),
    st.sampled_from(["Allow", "Supported", "Subject", "User-Agent", "Date", "Warning",
                     "WWW-Authenticate", "Route", "Require", "Accept", "Organization"]),
)
_hosts = st.sampled_from(["pbx.example.net", "192.0.2.7", "[2001:db8::1]"])


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE", "FOO-BAR", "msg"]))
    uri = SipURI("sip", draw(st.one_of(st.none(), _token)), None, draw(_hosts),
                 draw(st.one_of(st.none(), st.integers(0, 65535))))
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {draw(_hosts)};branch=z9hG4bK{draw(_token)}")
    h.add("From", f"<sip:a@{draw(_hosts)}>;tag={draw(_token)}")
    h.add("To", f'"{draw(_token)}" <sip:b@x>')
    h.add("Call-ID", draw(_token))
    h.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    for name, value in draw(st.lists(st.tuples(_names, _value), max_size=8)):
        h.add(name, value)
    return Request(method, uri, h, draw(st.binary(max_size=40)))


@st.composite
def responses(draw: st.DrawFn) -> Response:
    h = Headers()
    for name, value in draw(st.lists(st.tuples(_names, _value), max_size=8)):
        h.add(name, value)
    reason = draw(_value)
    return Response(draw(st.integers(100, 699)), reason, h, draw(st.binary(max_size=40)))


@given(st.one_of(requests(), responses()))
def test_round_trip(m: Message) -> None:
    wire = m.serialize()
    again = parse_message(wire)
    assert normalized(again) == normalized(m)
    assert again.serialize() == wire
    # and the same bytes through a stream framer, byte by byte
    f = StreamFramer()
    out: list[object] = []
    for i in range(len(wire)):
        out.extend(f.feed(wire[i : i + 1]))
    assert out == [wire]


# -- arbitrary input ---------------------------------------------------------------------------


@given(st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    exercise(data)
    frame(data, len(data) or 1)
    frame(data, 1)


@given(st.sampled_from(SEEDS), st.integers(0, 10**6), st.binary(min_size=0, max_size=6),
       st.integers(0, 8))
def test_corpus_mutants(seed: bytes, pos: int, junk: bytes, cut: int) -> None:
    p = pos % (len(seed) + 1)
    mutant = seed[:p] + junk + seed[p + cut :]
    exercise(mutant)
    frame(mutant, 1)
    frame(mutant + mutant, 97)


# -- the seeded mutation run -------------------------------------------------------------------

_INSERTS = [b"\x00", b"\r", b"\n", b"\r\n", b"\r\n ", b"\r\n\r\n", b":", b";", b",", b'"', b"<",
            b">", b"@", b"%", b"[", b"]", b"/", b"=", b" ", b"\t", b"\xff", b"\xc3",
            b"4294967296", b"99999999999999999999", b"-1", b"2147483648", b"65536",
            b"Content-Length: 99999\r\n", b"l: 1\r\n", b"Via: x\r\n", b";tag=", b"%00"]


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 3)):
        n = len(data)
        op = rng.randrange(6)
        pos = rng.randrange(n + 1)
        if op == 0 and n:  # bit flip
            i = min(pos, n - 1)
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncation
            del data[pos:]
        elif op == 2 and n:  # duplicate a slice
            end = min(n, pos + rng.randint(1, 80))
            data[pos:pos] = data[pos:end]
        elif op == 3:  # insert a nasty token
            data[pos:pos] = rng.choice(_INSERTS)
        elif op == 4:  # delete a slice
            del data[pos : pos + rng.randint(1, 20)]
        else:  # replace a digit run by a huge number
            data[pos:pos] = str(rng.choice([2**31, 2**32, 2**64, 10**30, -5])).encode()
    return bytes(data)


def test_seeded_mutation_run() -> None:
    rng = random.Random(4475)
    parsed = rejected = 0
    for i in range(50_000):
        mutant = _mutate(rng, SEEDS[i % len(SEEDS)])
        if exercise(mutant) is None:
            rejected += 1
        else:
            parsed += 1
        if i % 50 == 0:
            frame(mutant, 1 + i % 13)
    # the mutants must exercise both outcomes, or the run proves little
    assert parsed > 5_000 and rejected > 5_000, (parsed, rejected)


def _with_header(name: str, value: str) -> bytes:
    return (
        "OPTIONS sip:pbx.example.net SIP/2.0\r\n"
        "Via: SIP/2.0/UDP h;branch=z9hG4bKp\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n"
        f"Call-ID: p\r\nCSeq: 1 OPTIONS\r\n{name}: {value}\r\n\r\n"
    ).encode()


PATHOLOGICAL = [
    ("Contact", '"' + "\\a" * 3000 + '" <sip:a@b>'),
    ("Contact", '"' + '\\"' * 3000),
    ("Contact", '"' * 7000),
    ("Contact", ',"' * 3000),
    ("Contact", "<" * 7000),
    ("From", "<sip:a@b>" + ";x" * 3000),
    ("To", '<sip:a@b>;x="' + "\\" * 7000),
    ("Via", "SIP/2.0/UDP h" + ";branch=" * 800),
    ("Via", "SIP/2.0/UDP " + "[" * 7000),
    ("Route", ", ".join(["<sip:p;lr>"] * 300)),
    ("X-Long", "\\" * 8000),
]


def test_pathological_inputs() -> None:
    outcomes = set()
    for name, value in PATHOLOGICAL:
        m = exercise(_with_header(name, value))
        outcomes.add(m is None)
        try:
            if m is not None:
                m.validate()
                m.headers.get_all(name)
        except ParseError:
            outcomes.add(True)
    assert outcomes == {True, False}
