"""SIP parser benchmark: parse / access / serialize of a typical REGISTER and INVITE (with SDP).

Figures are microseconds per message (best of several rounds) and messages per second, each
with a baseline measured in the same run on the same bytes:

* ``splitlines`` — the floor: split head/body and every header line at its colon, no checks;
* ``email`` — the stdlib ``email`` header parser (``BytesHeaderParser``, compat32) on the
  same header block, a general-purpose RFC 5322 parser doing comparable work.

It also reports the slowest single input of a seeded mutation run over the torture corpus
(SECURITY.md asks for < 50 ms per input). Usage: ``python3 -m bench.parser [--json] [--quick]``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

from sipcore.errors import ParseError
from sipcore.message import Message, parse_message
from sipcore.sdp import parse_sdp

REGISTER = (
    b"REGISTER sip:pbx.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Alice" <sip:alice@pbx.example.net>\r\n'
    b'From: "Alice" <sip:alice@pbx.example.net>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    b"CSeq: 314159 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>;+sip.instance=\"<urn:uuid:1>\"\r\n"
    b"User-Agent: ExamplePhone/4.2.1\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, MESSAGE\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n\r\n"
)

_SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 9 0 8 101\r\n"
    b"a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:bob@pbx.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds8;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:bob@pbx.example.net>\r\n"
    b'From: "Alice" <sip:alice@pbx.example.net>;tag=9fxced76sl\r\n'
    b"Call-ID: 3848276298220188511@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: ExamplePhone/4.2.1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(_SDP)).encode() + b"\r\n\r\n" + _SDP
)


def _us_per_call(fn: Callable[[], Any], budget: float) -> float:
    """Best-of-5 microseconds per call, each round running ~budget seconds."""
    fn()
    best = float("inf")
    for _ in range(5):
        n = 0
        start = time.perf_counter()
        while True:
            for _ in range(50):
                fn()
            n += 50
            now = time.perf_counter()
            if now - start >= budget:
                break
        best = min(best, (now - start) / n * 1e6)
    return best


def _splitlines(data: bytes) -> list[list[bytes]]:
    head, _, _body = data.partition(b"\r\n\r\n")
    return [line.split(b":", 1) for line in head.split(b"\r\n")[1:]]


def _email(parser: BytesHeaderParser, data: bytes) -> Any:
    # the start line is no RFC 5322 header: hand the email parser the header block only
    return parser.parsebytes(data[data.index(b"\r\n") + 2 :])


def _access(m: Message) -> None:
    m.top_via  # noqa: B018 - the accessors under test
    m.cseq  # noqa: B018
    m.call_id  # noqa: B018
    m.from_  # noqa: B018
    m.to  # noqa: B018


def _worst_mutant_ms(count: int) -> float:
    corpus = Path(__file__).resolve().parent.parent / "tests" / "sipcore" / "torture"
    seeds = [p.read_bytes() for p in sorted(corpus.glob("*/*.sip"))]
    if not seeds:
        return 0.0
    rng = random.Random(4475)
    worst = 0.0
    for i in range(count):
        data = bytearray(seeds[i % len(seeds)])
        pos = rng.randrange(len(data) + 1)
        data[pos:pos] = rng.choice([b"\x00", b"\r\n ", b'"', b"<", b"4294967296", b";" * 50])
        start = time.perf_counter()
        try:
            parse_message(bytes(data)).validate()
        except ParseError:
            pass
        worst = max(worst, time.perf_counter() - start)
    return worst * 1e3


def main(argv: list[str]) -> int:
    """Run the benchmark; prints lines, then one JSON line (only that with ``--json``)."""
    as_json = "--json" in argv
    budget = 0.03 if "--quick" in argv else 0.2
    say: Callable[[str], None] = (lambda _s: None) if as_json else print
    email_parser = BytesHeaderParser(policy=compat32)
    results: dict[str, dict[str, float]] = {}
    say("parser: µs per message (best of 5), lower is better")
    for name, data in (("register", REGISTER), ("invite_sdp", INVITE)):
        msg = parse_message(data)
        row = {
            "bytes": float(len(data)),
            "parse": _us_per_call(lambda d=data: parse_message(d), budget),  # type: ignore[misc]
            "parse_access": _us_per_call(
                lambda d=data: _access(parse_message(d)), budget  # type: ignore[misc]
            ),
            "parse_validate": _us_per_call(
                lambda d=data: parse_message(d).validate(), budget  # type: ignore[misc]
            ),
            "serialize": _us_per_call(msg.serialize, budget),
            "splitlines": _us_per_call(lambda d=data: _splitlines(d), budget),  # type: ignore[misc]
            "email": _us_per_call(lambda d=data: _email(email_parser, d), budget),  # type: ignore[misc]
        }
        if msg.body:
            row["sdp_parse"] = _us_per_call(lambda b=msg.body: parse_sdp(b), budget)  # type: ignore[misc]
        row["msgs_per_s"] = 1e6 / (row["parse_access"] + row["serialize"])
        row["x_email"] = row["email"] / row["parse_access"]
        row["x_splitlines"] = row["parse_access"] / row["splitlines"]
        results[name] = row
        say(f"  {name:<10} {int(row['bytes'])} B: parse {row['parse']:5.1f}  "
            f"parse+access(via,cseq,call-id,from,to) {row['parse_access']:5.1f}  "
            f"parse+validate() {row['parse_validate']:5.1f}  serialize {row['serialize']:4.1f}"
            + (f"  sdp {row['sdp_parse']:5.1f}" if "sdp_parse" in row else ""))
        say(f"  {'':<10} baselines: splitlines {row['splitlines']:4.1f}  email {row['email']:5.1f}"
            f"  -> {row['msgs_per_s']:,.0f} msg/s parse+access+serialize; "
            f"{row['x_email']:.1f}x faster than email, {row['x_splitlines']:.1f}x the floor")
    worst = _worst_mutant_ms(2000 if "--quick" in argv else 20000)
    say(f"  slowest single mutant of the torture corpus: {worst:.2f} ms (limit 50 ms)")
    print(json.dumps({"bench": "parser", "unit": "us", "cases": results,
                      "worst_mutant_ms": worst}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
