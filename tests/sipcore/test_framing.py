"""StreamFramer: Content-Length framing of TCP/TLS streams, keep-alive pings, limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipcore.errors import ParseError
from sipcore.framing import KeepAlivePing, StreamFramer
from sipcore.message import MAX_MESSAGE_SIZE, parse_message

from .test_message import INVITE, REGISTER

OPTIONS = (
    b"OPTIONS sip:pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.7:5060;branch=z9hG4bKopt\r\n"
    b"From: <sip:mon@example.com>;tag=1\r\nTo: <sip:pbx.example.com>\r\n"
    b"Call-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nl: 4\r\n\r\nbody"
)


def _feed_all(framer: StreamFramer, chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    for c in chunks:
        out.extend(framer.feed(c))
    return out


def test_several_messages_in_one_chunk_with_crlf_between() -> None:
    f = StreamFramer()
    out = f.feed(REGISTER + b"\r\n" + INVITE + OPTIONS)
    assert out == [REGISTER, INVITE, OPTIONS]
    assert f.buffered == 0
    assert parse_message(out[2]).body == b"body"  # type: ignore[arg-type]


def test_byte_by_byte() -> None:
    stream = INVITE + b"\r\n\r\n" + OPTIONS + REGISTER
    f = StreamFramer()
    out = _feed_all(f, [stream[i : i + 1] for i in range(len(stream))])
    assert out == [INVITE, KeepAlivePing(), OPTIONS, REGISTER]


@given(st.lists(st.integers(min_value=1, max_value=len(INVITE) * 3), max_size=12))
def test_any_split_points(cuts: list[int]) -> None:
    stream = INVITE + OPTIONS + b"\r\n\r\n" + REGISTER
    points = sorted({c % len(stream) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    out = _feed_all(StreamFramer(), chunks)
    assert out == [INVITE, OPTIONS, KeepAlivePing(), REGISTER]


def test_keepalive_ping_split_and_lone_crlf() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n") == []
    assert f.feed(b"\r") == []
    assert f.feed(b"\n") == [KeepAlivePing()]
    # a lone CRLF (a pong) followed by a message is skipped
    assert f.feed(b"\r\n" + OPTIONS) == [OPTIONS]


def test_missing_content_length_closes() -> None:
    f = StreamFramer()
    msg = OPTIONS.replace(b"l: 4\r\n", b"")
    out = f.feed(OPTIONS + msg)
    assert out[0] == OPTIONS
    assert isinstance(out[1], ParseError) and out[1].reason == "Missing Content-Length"
    assert f.closed and f.feed(OPTIONS) == []


@pytest.mark.parametrize("value", [b"-1", b"abc", b"99999999999", b"1, 2"])
def test_bad_content_length(value: bytes) -> None:
    out = StreamFramer().feed(OPTIONS.replace(b"l: 4", b"Content-Length: " + value))
    assert len(out) == 1 and isinstance(out[0], ParseError)


def test_limits() -> None:
    f = StreamFramer()
    out = f.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * (MAX_MESSAGE_SIZE // 6 + 1))
    assert len(out) == 1 and isinstance(out[0], ParseError) and f.closed
    f = StreamFramer()
    out = f.feed(OPTIONS.replace(b"l: 4", b"Content-Length: 70000"))
    assert isinstance(out[0], ParseError) and out[0].status_hint == 513
