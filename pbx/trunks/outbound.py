"""Outbound requests toward trunks: the initial INVITE (:func:`build_outbound_request`) and the
answer to the carrier's digest challenge with the trunk's credentials (:func:`answer_challenge`).

Security (SECURITY.md "credential leaks"): credentials are only ever computed in answer to a
challenge on a transaction we sent to that trunk's host, in that trunk's realm, that came from
the trunk (:meth:`TrunkConfig.responds_from`).
"""

from __future__ import annotations

import re

from pbx.trunks.config import TrunkConfig
from sipcore.digest import DigestClient
from sipcore.errors import LocalProtocolError, ParseError
from sipcore.headers import Headers
from sipcore.message import Request, Response, new_call_id, new_tag
from sipcore.transport import Peer
from sipcore.uri import quote_string

_NUMBER = re.compile(r"\+?[0-9]{1,15}")
#: RFC 3323 §4.1.1.3: the From of a caller who withholds their identity.
ANONYMOUS_URI = "sip:anonymous@anonymous.invalid"


def build_outbound_request(
    trunk: TrunkConfig,
    *,
    number: str,
    caller_did: str | None,
    contact: str,
    caller_name: str | None = None,
    anonymous: bool = False,
    method: str = "INVITE",
    call_id: str | None = None,
    from_tag: str | None = None,
    cseq: int = 1,
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """The initial request of an outbound call toward ``trunk`` (no Via: the endpoint adds it).

    ``number``: the dialled number, normalised by the dial plan — E.164 with ``+`` or a short
    code such as 110/112. ``caller_did``: the calling user's DID (E.164) or None.
    ``anonymous`` (CLIR, RFC 3323/3325): From is ``"Anonymous" <sip:anonymous@anonymous.invalid>``
    and ``Privacy: id``; a trusted trunk still gets the real identity in P-Asserted-Identity
    (it must withhold it because of Privacy: id). P-Asserted-Identity is sent only to trusted
    trunks. ``contact``: our Contact URI. Raises :class:`LocalProtocolError` for a number or
    DID that is not digits.
    """
    if _NUMBER.fullmatch(number) is None:
        raise LocalProtocolError(f"not a dialable number for a trunk: {number!r}")
    if caller_did is not None and _NUMBER.fullmatch(caller_did) is None:
        raise LocalProtocolError(f"caller DID is not a number: {caller_did!r}")
    target = f"sip:{number}@{trunk.uri_host}{trunk.uri_params}"
    identity = (f"<sip:{caller_did}@{trunk.aor_domain}>" if caller_did
                else f"<sip:{trunk.username or 'anonymous'}@{trunk.aor_domain}>")
    headers = Headers()
    if anonymous:
        headers.add("From", f'"Anonymous" <{ANONYMOUS_URI}>;tag={from_tag or new_tag()}')
    elif caller_name:
        headers.add("From", f"{quote_string(caller_name)} {identity};tag={from_tag or new_tag()}")
    else:
        headers.add("From", f"{identity};tag={from_tag or new_tag()}")
    headers.add("To", f"<sip:{number}@{trunk.aor_domain}>")
    headers.add("Call-ID", call_id or new_call_id())
    headers.add("CSeq", f"{cseq} {method}")
    headers.add("Contact", f"<{contact}>")
    headers.add("Max-Forwards", "70")
    if trunk.trusted and caller_did:
        headers.add("P-Asserted-Identity", identity)
    if anonymous:
        headers.add("Privacy", "id")
    if body:
        headers.add("Content-Type", content_type or "application/sdp")
    headers.add("Content-Length", str(len(body)))
    try:
        return Request(method, target, headers, body)
    except ParseError as exc:
        raise LocalProtocolError(f"cannot build a request to trunk {trunk.name}: {exc.reason}") \
            from None


class ChallengeRefusedError(LocalProtocolError):
    """We will not answer this challenge with the trunk's credentials (the message says why)."""


def answer_challenge(
    trunk: TrunkConfig,
    digest: DigestClient,
    request: Request,
    response: Response,
    *,
    sent_to: Peer,
    source: Peer | None = None,
) -> Request:
    """The request to send again after ``trunk`` challenged ``request`` with ``response``.

    ``request`` is the one we sent in the challenged transaction and ``sent_to`` where we sent
    it: it must be this trunk's host; ``source`` (when the caller knows where the response came
    from) must be the trunk (:meth:`TrunkConfig.responds_from`). The challenge must be for the trunk's ``realm``. The returned copy has
    CSeq + 1 and no Via (the endpoint adds a fresh branch): send it in a new client transaction
    and use that CSeq from then on (RFC 3261 §22.2). Raises :class:`ChallengeRefusedError`.
    """
    if response.status not in (401, 407):
        raise ChallengeRefusedError(f"{response.status} is not a challenge")
    if not trunk.sends_to(sent_to.host):
        raise ChallengeRefusedError(
            f"request went to {sent_to.host}, not to trunk {trunk.name} ({trunk.host})")
    if source is not None and not trunk.responds_from(source):
        raise ChallengeRefusedError(
            f"challenge came from {source.transport}:{source.host}:{source.port}, not from "
            f"trunk {trunk.name} ({trunk.transport}:{trunk.host}:{trunk.port})")
    if not trunk.realm:
        raise ChallengeRefusedError(f"trunk {trunk.name} has no realm configured")
    if not trunk.username:
        raise ChallengeRefusedError(f"trunk {trunk.name} has no credentials")
    try:
        authorized = digest.authorize(request, response, trunk.username, trunk.password,
                                      realm=trunk.realm)
        cseq = request.cseq
    except ParseError as exc:
        raise ChallengeRefusedError(exc.reason) from None
    except LocalProtocolError as exc:
        raise ChallengeRefusedError(str(exc)) from None
    authorized.headers.remove("Via")
    authorized.headers.set("CSeq", f"{cseq.seq + 1} {cseq.method}")
    return authorized
