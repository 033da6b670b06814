"""Stateless answers to requests read only as far as the answer needs (RFC 3261 §8.2.7).

Under overload the cheapest refusal is one that parses almost nothing and keeps no state: no
message object, no server transaction, no timers. :func:`peek` reads a datagram's request line
and the five header fields a response echoes (Via, From, To, Call-ID, CSeq, compact forms
included) plus whether credentials are present; :func:`reply` writes the response from those
bytes, as received, with ``received``/``rport`` stamped on the top Via (§18.2.1, RFC 3581) and
a To tag when the request had none.

A stateless UAS answers a retransmission again rather than from a transaction, so its To tag
must be the same for every copy of a request (§8.2.7): :func:`stateless_tag` derives it from the
Call-ID and the top Via's branch under a secret. The ACK a client sends for a non-2xx final
response carries the same Call-ID and branch and that tag, which is how :func:`is_ack_of` tells
the ACKs of our stateless answers apart (so they can be dropped as cheaply as they were
caused).

Whatever :func:`peek` cannot read plainly (a response, folded or unusual request lines, a bare
LF as line end, a missing field) it returns ``None`` for: such a message takes the full parser's
path, which answers what is malformed with the right status.

Nothing here does I/O or keeps state between calls.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["RequestHead", "is_ack_of", "peek", "reply", "stateless_tag"]

#: Header names (lower case) :func:`peek` keeps, with their compact forms (RFC 3261 §7.3.3).
_NAMES = {b"via": b"via", b"v": b"via", b"from": b"from", b"f": b"from", b"to": b"to",
          b"t": b"to", b"call-id": b"call-id", b"i": b"call-id", b"cseq": b"cseq"}
_CREDENTIALS = (b"authorization", b"proxy-authorization")
_RPORT_FLAG = re.compile(rb";[ \t]*rport(?=[ \t]*(?:;|$))", re.IGNORECASE)
_BRANCH = re.compile(rb";[ \t]*branch[ \t]*=[ \t]*([^;, \t]+)", re.IGNORECASE)
_HOST = re.compile(rb"^\s*SIP\s*/\s*2\.0\s*/\s*[A-Za-z]+\s+(\[[^\]]*\]|[^:;, \t]+)", re.IGNORECASE)
_TOKEN = re.compile(rb"^[!%'*+\-.0-9A-Z_`a-z~]+$")
#: Tags our stateless answers carry start with this (never a tag of sipcore.message.new_tag,
#: which is hex only).
TAG_PREFIX = "sl-"


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What a stateless answer needs of a request, as received (values are raw bytes)."""

    method: str
    #: Each Via header field's value in order (one field may hold several Vias).
    vias: tuple[bytes, ...]
    from_: bytes
    to: bytes
    call_id: bytes
    cseq: bytes
    #: An Authorization or Proxy-Authorization header is present.
    credentials: bool

    @property
    def to_tag(self) -> str | None:
        """The To header field's tag parameter (outside the ``<>`` of its URI), if any."""
        return _tag_of(self.to)

    @property
    def branch(self) -> str:
        """The top Via's branch ('' without one)."""
        top = self.vias[0].split(b",", 1)[0]
        found = _BRANCH.search(top)
        return found.group(1).decode("latin-1") if found else ""


def _tag_of(value: bytes) -> str | None:
    close = value.rfind(b">")
    params = value[close + 1:] if close >= 0 else value[value.find(b";") :] if b";" in value else b""
    for param in params.split(b";"):
        name, _, val = param.partition(b"=")
        if name.strip().lower() == b"tag":
            return val.strip().decode("latin-1")
    return None


def peek(data: bytes) -> RequestHead | None:
    """The request line's method and the echoed header fields of ``data``; ``None`` when it is
    not a plainly readable request (see the module docstring)."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"SIP/2.0" or not _TOKEN.match(parts[0]):
        return None
    fields: dict[bytes, list[bytes]] = {}
    credentials = False
    for line in lines[1:]:
        if not line or line[:1] in b" \t" or b"\n" in line:
            return None  # folded or LF-only lines: the full parser's job
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        key = name.strip().lower()
        canonical = _NAMES.get(key)
        if canonical is not None:
            fields.setdefault(canonical, []).append(value.strip())
        elif key in _CREDENTIALS:
            credentials = True
    try:
        (from_,), (to,), (call_id,), (cseq,) = (fields[b"from"], fields[b"to"],
                                                fields[b"call-id"], fields[b"cseq"])
        vias = tuple(fields[b"via"])
    except (KeyError, ValueError):  # missing or duplicated: let the parser answer 400
        return None
    return RequestHead(parts[0].decode("ascii"), vias, from_, to, call_id, cseq, credentials)


def stateless_tag(secret: bytes, head: RequestHead) -> str:
    """The To tag of our stateless answer to ``head``: the same for each retransmission of it
    (and for the ACK of that answer), unguessable without ``secret``."""
    digest = hashlib.blake2s(head.call_id + b"\x00" + head.branch.encode("latin-1"),
                             key=secret[:32], digest_size=6).hexdigest()
    return TAG_PREFIX + digest


def is_ack_of(secret: bytes, head: RequestHead) -> bool:
    """``head`` is the ACK of one of our stateless answers (its To tag is ours for it)."""
    return head.method == "ACK" and head.to_tag == stateless_tag(secret, head)


def reply(head: RequestHead, status: int, reason: str, *, source: tuple[str, int],
          to_tag: str | None, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The response ``status reason`` to ``head`` (§8.2.6): every Via in order with
    ``received``/``rport`` stamped on the top one for ``source`` (the address the request came
    from), From, To (with ``to_tag`` when it had none), Call-ID, CSeq, ``headers``, and an empty
    body."""
    host, port = source
    top, sep, rest = head.vias[0].partition(b",")
    sent_by = _HOST.match(top)
    rport = _RPORT_FLAG.search(top) is not None
    stamped = top.rstrip()
    if rport:
        stamped = _RPORT_FLAG.sub(b";rport=" + str(port).encode(), stamped, count=1)
    if rport or sent_by is None or sent_by.group(1).strip(b"[]") != host.strip("[]").encode():
        stamped += b";received=" + host.strip("[]").encode()
    vias = [stamped + sep + rest, *head.vias[1:]]
    to = head.to
    if to_tag is not None and head.to_tag is None:
        to = to + b";tag=" + to_tag.encode()
    out = [f"SIP/2.0 {status} {reason}".encode()]
    out += [b"Via: " + via for via in vias]
    out += [b"From: " + head.from_, b"To: " + to, b"Call-ID: " + head.call_id,
            b"CSeq: " + head.cseq]
    out += [f"{name}: {value}".encode() for name, value in headers]
    out += [b"Content-Length: 0", b"", b""]
    return b"\r\n".join(out)


def reply_port(head: RequestHead, source_port: int) -> int:
    """Where a UDP response to ``head`` goes (§18.2.2, RFC 3581): the source port when the top
    Via asks for ``rport``, else its sent-by port (5060 when it names none)."""
    top = head.vias[0].split(b",", 1)[0]
    if _RPORT_FLAG.search(top) is not None:
        return source_port
    sent_by = _SENT_BY_PORT.match(top)
    return int(sent_by.group(1)) if sent_by else 5060


_SENT_BY_PORT = re.compile(rb"^\s*SIP\s*/\s*2\.0\s*/\s*[A-Za-z]+\s+(?:\[[^\]]*\]|[^:;, \t]+)\s*:\s*(\d{1,5})",
                           re.IGNORECASE)
