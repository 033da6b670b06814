"""What a chat MESSAGE may carry, and the MESSAGE we send (sans-IO: requests in, decisions and
requests out; no sockets, no store).

RFC 3428: a MESSAGE carries its content in the body; we take ``text/plain`` and
``message/cpim`` (RFC 3862, the wrapper IM clients use, whose ``imdn.Message-ID`` header,
RFC 5438, is the client's own id of the message). Anything else is refused with 415 and an
``Accept`` naming what we take (RFC 3261 §21.4.16); a body above the configured bound with 413;
an empty one with 400.

Every message has an id (:func:`message_id`): the CPIM ``imdn.Message-ID`` when there is one,
else one derived from the sender's Call-ID, CSeq and From tag (so the sender's own resend of
the same request is the same message). Each delivery attempt of a message carries it in the
``X-Message-ID`` header of our MESSAGE (and inside CPIM bodies, which pass unchanged): a client
that got it already drops the copy — delivery is at least once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sipcore.headers import Headers
from sipcore.message import Request, new_call_id, new_tag
from sipcore.uri import parse_uri

__all__ = ["ACCEPTED_TYPES", "MESSAGE_ID_HEADER", "Incoming", "Refusal", "check", "cpim_id",
           "delivery", "message_id"]

#: The content types a chat message may have.
ACCEPTED_TYPES = ("text/plain", "message/cpim")
#: The header that carries a message's id on every delivery attempt.
MESSAGE_ID_HEADER = "X-Message-ID"
_NAMESPACE = uuid.UUID("6f1c2f0e-3b1d-4a8e-9a57-0d6c1e9b7a21")


@dataclass(frozen=True, slots=True)
class Incoming:
    """An acceptable message: its content type (parameters dropped), body and id."""

    content_type: str
    body: bytes
    message_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a MESSAGE is refused: the status and extra response headers."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def check(request: Request, max_size: int) -> Incoming | Refusal:
    """Whether ``request``'s content is a chat message we take (see the module docstring)."""
    raw = request.content_type or ""
    kind = raw.split(";", 1)[0].strip().lower()
    if kind not in ACCEPTED_TYPES:
        return Refusal(415, "Unsupported Media Type", (("Accept", ", ".join(ACCEPTED_TYPES)),))
    body = request.body
    if len(body) > max_size:
        return Refusal(413, "Request Entity Too Large")
    if not body.strip():
        return Refusal(400, "Empty Message")
    return Incoming(kind, body, message_id(request, kind, body))


def cpim_id(body: bytes) -> str | None:
    """The ``imdn.Message-ID`` of a CPIM body (RFC 5438 §6.3; the ``imdn`` prefix is declared
    by an ``NS:`` header, which we do not insist on), None without one."""
    head = body.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for line in head.splitlines():
        name, sep, value = line.decode("utf-8", "replace").partition(":")
        if sep and name.strip().lower() == "imdn.message-id":
            found = value.strip()
            return found[:128] if found else None
    return None


def message_id(request: Request, kind: str, body: bytes) -> str:
    """The id of the message in ``request`` (the CPIM one, else derived from the request)."""
    if kind == "message/cpim":
        found = cpim_id(body)
        if found:
            return found
    key = f"{request.call_id}|{request.cseq.seq}|{request.from_tag or ''}"
    return uuid.uuid5(_NAMESPACE, key).hex


def delivery(*, contact: str, route: tuple[str, ...], sender_aor: str, sender_name: str,
             recipient_aor: str, content_type: str, body: bytes, message_id: str) -> Request:
    """Our MESSAGE to one device of the recipient (a new transaction outside any dialog:
    fresh Call-ID and From tag, CSeq 1; the endpoint adds Via and Max-Forwards)."""
    name = sender_name.replace('"', "").replace("\\", "")
    sender = f'"{name}" <{sender_aor}>' if name else f"<{sender_aor}>"
    headers = Headers([
        *(("Route", r) for r in route),
        ("From", f"{sender};tag={new_tag()}"),
        ("To", f"<{recipient_aor}>"),
        ("Call-ID", new_call_id()),
        ("CSeq", "1 MESSAGE"),
        (MESSAGE_ID_HEADER, message_id),
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
    ])
    return Request("MESSAGE", parse_uri(_bare(contact)), headers, body)


def _bare(contact: str) -> str:
    """A registered contact as a Request-URI (no escaped headers, RFC 3261 §19.1.1)."""
    return contact.split("?", 1)[0]
