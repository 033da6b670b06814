"""Who is calling: the origin of a new INVITE (a trunk by source, or an authenticated device).

:func:`find_origin` is the B2BUA's caller authentication: a trunk is recognised by where the
INVITE comes from (no digest), a device must answer a 407 challenge in its tenant's realm and
send From as itself or its user. :func:`presentation_of` reads how the INVITE presents its caller
(withheld: an anonymous From or one without a user, ``Privacy: id``/``header``/``user``,
RFC 3323/3325).

Feature codes from a trunk: a ``*``/``#`` string is refused (404) before any lookup; a
digits-only code (``78878``) from a user's own registered mobile number is let through as that
user's feature-code call (:attr:`CallOrigin.code_user`), anything else follows the DID.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pbx.bans import BanTable
from pbx.callcontrol import Presentation
from pbx.feature_codes import is_code
from pbx.trunks import TrunkConfig
from sipcore.digest import AuthFailure, AuthResult, AuthStatus, Credentials, DigestServer
from sipcore.endpoint import RequestReceived
from sipcore.errors import ParseError
from sipcore.message import Request
from sipcore.uri import SipURI, TelURI, parse_name_addr

if TYPE_CHECKING:
    from pbx.b2bua import B2bua

__all__ = ["CallOrigin", "asserted_number", "find_origin", "presentation_of", "verify_with_bans"]


@dataclass(frozen=True, slots=True)
class CallOrigin:
    """Who is calling (found before the call starts): ``caller`` as the other users see it
    (the extension internally, the caller's number from a trunk), the direction for the
    history, the callee already resolved from a trunk's DID, the caller's user and the trunk
    the call came in on; ``presentation`` how the INVITE presents the caller (the call starts
    with it)."""

    caller: str
    direction: str = "internal"
    callee: str = ""
    user: Any = None  # pbx.store.User
    trunk: TrunkConfig | None = None
    presentation: Presentation = field(default_factory=Presentation)
    #: the caller's device is flagged mobile (its user may dial digits-only feature codes)
    mobile: bool = False
    #: a trunk call from this user's own mobile number that dialled a digits-only feature
    #: code: it counts as the user's for that code only (pbx.store.User)
    code_user: Any = None


#: RFC 3323 §4.2 / RFC 3325 §9.3 privacy values that withhold the caller's identity.
_WITHHOLD = frozenset({"id", "header", "user"})


def presentation_of(request: Request) -> Presentation:
    """How ``request`` presents its caller: withheld when its From names nobody (no user part,
    user ``anonymous`` or host ``anonymous.invalid``, RFC 3323 §4.1.1.3) or it asks for privacy
    of the identity (``Privacy: id``, ``header`` or ``user``); otherwise as it is (the default
    presentation: the legs show the caller the call record names)."""
    from_uri = request.from_.uri
    user = from_uri.user if isinstance(from_uri, SipURI) else None
    host = from_uri.host if isinstance(from_uri, SipURI) else ""
    asked = {value.strip().lower() for header in request.headers.get_all("Privacy")
             for value in header.split(";")}
    if (asked & _WITHHOLD or not user or user.lower() == "anonymous"
            or host.lower() == "anonymous.invalid"):
        return Presentation(private=True)
    return Presentation()


def asserted_number(request: Request) -> str | None:
    """The number in the request's first P-Asserted-Identity (a SIP URI's user part or a tel
    URI's number; None without one, or when it does not parse). Read it only from a trusted
    trunk: everyone else's is stripped on arrival (:func:`pbx.trunks.sanitize_inbound`)."""
    values = request.headers.get_all("P-Asserted-Identity")
    if not values:
        return None
    try:
        uri = parse_name_addr(values[0].split(",", 1)[0].strip(), "P-Asserted-Identity").uri
    except ParseError:
        return None
    if isinstance(uri, TelURI):
        return uri.number or None
    if isinstance(uri, SipURI):
        return uri.user or None
    return None


def verify_with_bans(digest: DigestServer, bans: BanTable, request: Request, source: str,
                     lookup: Callable[[str], Credentials | None], now: float) -> AuthResult:
    """``digest.verify`` with the ban table told of the outcome: a guess (wrong password,
    unknown user) counts against ``source`` and its account, a success marks ``source`` as
    one that authenticated. While guesses at the claimed account are being slowed
    (:meth:`BanTable.may_verify`), credentials are not verified at all: the answer is a
    failure like a wrong password's (a fresh challenge), and nothing is counted."""
    result = digest.verify(request, source, lookup, now)
    if result.reason is AuthFailure.NO_CREDENTIALS:
        return result
    if not bans.may_verify(result.username, now):
        return AuthResult(AuthStatus.FAILED, result.username, AuthFailure.WRONG_RESPONSE)
    if result.ok:
        bans.succeeded(source, now)
    elif result.is_guess:
        bans.failed(source, result.username, now)
    return result


def find_origin(b2b: B2bua, event: RequestReceived, now: float) -> CallOrigin | None:
    """Who sends this new INVITE: a trunk (identified by source; untrusted identity and
    routing headers stripped; no digest; the called DID must have an owner, else 404) or an
    authenticated device (407 challenge in the realm of the request's tenant; From must be
    the device or its user). None when the request was answered here."""
    request, peer, tx = event.request, event.peer, event.transaction_id
    trunk = b2b.trunks.inbound(request, peer) if b2b.trunks is not None else None
    if trunk is not None:
        from_uri, ruri, to_uri = request.from_.uri, request.uri, request.to.uri
        number = from_uri.user if isinstance(from_uri, SipURI) and from_uri.user else ""
        called = ruri.user if isinstance(ruri, SipURI) and ruri.user else ""
        if not called and isinstance(to_uri, SipURI) and to_uri.user:
            called = to_uri.user
        if is_code(called):  # never routed: a carrier has no business with our codes
            b2b.log.info("call.inbound.feature_code_refused", trunk=trunk.key, called=called,
                          call_id=request.call_id)
            b2b.respond(request, 404, tx=tx)
            return None
        dest = (b2b.router.incoming(trunk.tenant_id, called)
                if b2b.router is not None and trunk.tenant_id is not None else None)
        # a trusted carrier asserts who calls even when the caller withholds it (RFC 3325):
        # the history keeps that number (and a mobile's codes are matched on it), the callee
        # still sees the presentation
        asserted = asserted_number(request) if trunk.trusted else None
        caller = asserted or number
        if (dest is None or dest.kind != "user") and caller:
            mobile_user = _mobile_code_user(b2b, trunk, caller, called)
            if mobile_user is not None:
                b2b.log.info("call.inbound.mobile_code", trunk=trunk.key, caller=caller,
                              user=mobile_user.extension, call_id=request.call_id)
                return CallOrigin(caller=caller, direction="inbound", callee=called,
                                  trunk=trunk, code_user=mobile_user)
        if dest is None or dest.kind not in ("user", "portal"):
            b2b.log.info("call.inbound.unknown_number", trunk=trunk.key, called=called,
                          call_id=request.call_id)
            b2b.respond(request, 404, tx=tx)
            return None
        return CallOrigin(caller=caller or "anonymous", direction="inbound",
                          callee=dest.number, trunk=trunk, presentation=presentation_of(request))
    digest, lookup = (b2b.auth_for(request) if b2b.auth_for is not None
                      else (b2b.digest, b2b.lookup))
    bans = b2b.bans
    result = (verify_with_bans(digest, bans, request, peer.host, lookup, now)
              if bans is not None else digest.verify(request, peer.host, lookup, now))
    if not result.ok:
        if result.failed and result.reason is not None and result.is_guess:
            b2b.stats["rejected_auth"] += 1
            b2b.seclog.warning("security.auth.failed", src=peer.host, user=result.username,
                                reason=result.reason.value, method="INVITE",
                                call_id=request.call_id)
        b2b.sip.send_response(digest.challenge(request, peer.host, now, stale=result.stale),
                               transaction_id=tx)
        return None
    username = result.username or ""
    device = (b2b.router.directory.device(digest.realm, username)
              if b2b.router is not None else None)
    user = (b2b.router.directory.user_of_device(digest.realm, username)
            if b2b.router is not None else None)
    caller = user.extension if user is not None else username
    from_uri = request.from_.uri
    if not isinstance(from_uri, SipURI) or from_uri.user not in (username, caller):
        b2b.respond(request, tx=tx, status=403, extra=[])
        return None
    # a phone may withhold its user's identity itself (Privacy: id)
    return CallOrigin(caller=caller, user=user,
                      mobile=user is not None and device is not None and device.mobile,
                      presentation=presentation_of(request))


def _mobile_code_user(b2b: B2bua, trunk: TrunkConfig, number: str, called: str) -> Any:
    """The user whose own registered mobile number ``number`` is, when ``called`` is one of
    the feature codes in their digits-only form (else None: the call is no code). Only from a
    trusted trunk: anyone can put a user's mobile number in the From of a call through an
    untrusted one, and a forward set that way is toll fraud."""
    if b2b.router is None or trunk.tenant_id is None or not trunk.trusted:
        return None
    user = b2b.router.mobile_user(trunk.tenant_id, number)
    if user is None or b2b.features.match(called, digits_only=True) is None:
        return None
    return user
