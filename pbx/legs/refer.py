"""REFER inside a call (RFC 3515), taken by the PBX itself, and INVITE with Replaces (RFC 3891).

A REFER in the dialog of an answered leg is never passed to the other party: the PBX carries
out the transfer (:mod:`pbx.callcontrol.transfer`) and answers 202. The implicit subscription gets
NOTIFYs with ``message/sipfrag`` bodies (RFC 3515 §2.4.4): ``SIP/2.0 100 Trying`` at once, the
new call's final status when it is known (``200 OK`` when the target answered), the last one
with ``Subscription-State: terminated``. The transferor is expected to hang up after the final
NOTIFY (RFC 5589); a leg still up :data:`TRANSFEROR_GRACE` seconds later is hung up by us.

* ``Refer-To: <sip:201@pbx>`` — blind transfer of the other party to ``201``
  (:func:`pbx.callcontrol.transfer.transfer_blind`: routed on behalf of the transferor, the target's
  terminating features apply).
* ``Refer-To: <sip:201@pbx?Replaces=CALLID%3Bto-tag%3DX%3Bfrom-tag%3DY>`` — attended transfer:
  the Replaces names the transferor's other dialog with us (its consultation call); the other
  parties of both are connected (:func:`pbx.callcontrol.transfer.attended_transfer`), the NOTIFY says
  200 at once.

An INVITE with ``Replaces`` (:func:`on_replacing_invite`) from a user, naming an answered leg
of one of that user's phones, takes that leg's place in its call (the new leg is answered and
bridged to the other party, the replaced leg hung up): a phone picking up its own call on
another device, or completing an attended transfer itself.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from pbx.callcontrol.incall import InCallDispatcher
from pbx.callcontrol.transfer import (
    TransferError,
    attended_transfer,
    bridge_of,
    transfer_blind,
)
from sipcore.errors import ParseError
from sipcore.uri import SipURI, parse_name_addr

if TYPE_CHECKING:
    from pbx.legs.sip import SipLeg
    from sipcore.endpoint import RequestReceived

__all__ = [
    "TRANSFEROR_GRACE",
    "find_dialog_leg",
    "on_refer",
    "on_replacing_invite",
    "owner_of",
    "parse_replaces",
    "send_notify",
]

log = structlog.get_logger("pbx.calls")

#: Seconds after the final NOTIFY before we hang up a transferor that did not.
TRANSFEROR_GRACE = 4.0


def parse_replaces(value: str) -> tuple[str, str, str] | None:
    """``callid;to-tag=X;from-tag=Y`` → (call id, to-tag, from-tag); None when malformed."""
    call_id, _, params = value.strip().partition(";")
    tags: dict[str, str] = {}
    for param in params.split(";"):
        name, _, val = param.strip().partition("=")
        tags[name.strip().lower()] = val.strip()
    if not call_id or "to-tag" not in tags or "from-tag" not in tags:
        return None
    return call_id.strip(), tags["to-tag"], tags["from-tag"]


def find_dialog_leg(b2bua: Any, call_id: str, tag_a: str, tag_b: str) -> SipLeg | None:
    """Our leg whose dialog is ``call_id`` with these two tags, in either role."""
    legs: dict[tuple[str, str, str], SipLeg] = b2bua.dialog_legs
    return legs.get((call_id, tag_a, tag_b)) or legs.get((call_id, tag_b, tag_a))


def send_notify(leg: SipLeg, status: int, reason: str, *, final: bool) -> None:
    """One NOTIFY of the REFER's implicit subscription (``Event: refer``)."""
    state = "terminated;reason=noresource" if final else "active;expires=60"
    leg.send_in_dialog("NOTIFY", body=f"SIP/2.0 {status} {reason}\r\n".encode(),
                       content_type="message/sipfrag;version=2.0",
                       extra=[("Event", "refer"), ("Subscription-State", state),
                              ("Contact", leg.contact)],
                       on_response=lambda event: None)


def _drop_later(leg: SipLeg) -> None:
    def drop() -> None:
        if leg.answered:
            log.info("transfer.transferor_dropped", leg=leg.id)
            leg.hangup()

    asyncio.get_running_loop().call_later(TRANSFEROR_GRACE, drop)


def on_refer(leg: SipLeg, event: RequestReceived) -> None:
    """A REFER in ``leg``'s dialog (see the module docstring)."""
    b2b = leg.b2bua
    request, tx = event.request, event.transaction_id
    refer_to = request.headers.get("Refer-To")
    log.info("transfer.refer", leg=leg.id, refer_to=refer_to, call_id=request.call_id)
    if not refer_to or request.headers.get_all("Refer-To")[1:]:
        b2b.respond(request, 400, tx=tx)  # exactly one Refer-To (RFC 3515 §2.4.1)
        return
    try:
        uri = parse_name_addr(refer_to, "Refer-To").uri
    except ParseError as exc:
        log.info("transfer.refer_refused", leg=leg.id, reason=str(exc))
        b2b.respond(request, 400, tx=tx)
        return
    call = leg.call
    if not isinstance(uri, SipURI) or not uri.user or call is None or not leg.answered:
        b2b.respond(request, 403 if call is not None else 481, tx=tx)
        return
    focus = b2b.focus
    replaces = next((v for k, v in uri.headers.items() if k.lower() == "replaces"), None)
    owner = owner_of(b2b, leg) if focus is not None else None
    if owner is not None and focus.is_focus(owner, call):
        _refer_in_focus(leg, event, focus, owner, uri.user, replaces)
        return
    if focus is not None and uri.user.startswith(focus.conference_user("")):
        _refer_to_focus(leg, event, focus, uri.user)
        return
    if replaces is not None:
        ids = parse_replaces(replaces)
        other = find_dialog_leg(b2b, *ids) if ids is not None else None
        if other is None or other.call is None or other is leg:
            b2b.respond(request, 403 if ids is not None else 400, tx=tx)
            return
        try:
            attended_transfer(call, leg, other.call, other)
        except TransferError:
            b2b.respond(request, 403, tx=tx)
            return
        b2b.respond(request, 202, tx=tx, extra=[("Contact", leg.contact)])
        send_notify(leg, 200, "OK", final=True)
        _drop_later(leg)
        _drop_later(other)
        return
    host = b2b

    def progress(status: int, reason: str) -> None:
        final = status >= 200
        if not leg.ended:
            send_notify(leg, status, reason, final=final)
        if final:
            _drop_later(leg)

    try:
        # 202 first: the NOTIFYs follow it (transfer_blind reports 100 Trying at once)
        b2b.respond(request, 202, tx=tx, extra=[("Contact", leg.contact)])
        transfer_blind(call, leg, uri.user, host=host, progress=progress)
    except TransferError:
        send_notify(leg, 503, "Service Unavailable", final=True)


def _refer_to_focus(leg: SipLeg, event: RequestReceived, focus: Any, uri_user: str) -> None:
    """``Refer-To: <sip:conf-EXT@…>`` (RFC 4579 §5.6): the other party of ``leg``'s call
    joins the REFERring user's conference (:mod:`features.conference_focus`); only that
    user may (403). 202, NOTIFY ``100 Trying``, then ``200 OK`` once the party is in the mix
    (the phone hangs its leg up; we do after the grace if it does not)."""
    b2b, request, tx = leg.b2bua, event.request, event.transaction_id
    owner = owner_of(b2b, leg)
    call = leg.call
    if owner is None or call is None or focus.uri_of(owner) != uri_user:
        log.info("conference.refer_refused", leg=leg.id, refer_to=uri_user, owner=owner)
        b2b.respond(request, 403, tx=tx)
        return
    b2b.respond(request, 202, tx=tx, extra=[("Contact", leg.contact)])
    send_notify(leg, 100, "Trying", final=False)
    try:
        focus.bring(owner, call, leg)
    except (LookupError, ValueError) as exc:
        log.info("conference.refer_failed", leg=leg.id, reason=str(exc))
        send_notify(leg, 480, "Temporarily Unavailable", final=True)
        return
    send_notify(leg, 200, "OK", final=True)
    _drop_later(leg)


def _refer_in_focus(leg: SipLeg, event: RequestReceived, focus: Any, owner: str,
                    target: str, replaces: str | None) -> None:
    """A REFER in the dialog of ``owner``'s conference (RFC 4579 §5.5): bring the party of
    the dialog ``replaces`` names (one of the owner's, 403 otherwise; that dialog ends), or
    ring ``target`` and join it; NOTIFY 100, then 200 when the party is in (or the failure).
    The focus dialog itself stays up."""
    b2b, request, tx = leg.b2bua, event.request, event.transaction_id
    if replaces is not None:
        ids = parse_replaces(replaces)
        other = find_dialog_leg(b2b, *ids) if ids is not None else None
        if other is None or other.call is None or other is leg \
                or owner_of(b2b, other) != owner:
            b2b.respond(request, 403 if ids is not None else 400, tx=tx)
            return
        b2b.respond(request, 202, tx=tx, extra=[("Contact", leg.contact)])
        send_notify(leg, 100, "Trying", final=False)
        try:
            focus.bring(owner, other.call, other)
        except (LookupError, ValueError) as exc:
            log.info("conference.refer_failed", leg=leg.id, reason=str(exc))
            send_notify(leg, 480, "Temporarily Unavailable", final=True)
            return
        send_notify(leg, 200, "OK", final=True)
        other.hangup()  # the replaced dialog is over
        return
    b2b.respond(request, 202, tx=tx, extra=[("Contact", leg.contact)])
    send_notify(leg, 100, "Trying", final=False)

    def done(status: int, reason: str) -> None:
        if not leg.ended:
            send_notify(leg, status, reason, final=True)

    try:
        focus.invite(owner, target, b2b, done)
    except LookupError:
        done(480, "Temporarily Unavailable")


def owner_of(b2bua: Any, leg: SipLeg) -> str | None:
    """The user key whose phone ``leg`` reaches (an outbound leg to a device) or comes from
    (a call's caller leg); None for anybody else."""
    target = leg.target
    if target is not None and target.kind != "number":
        return target.user
    call = leg.call
    origin = b2bua.origins.get(call.id) if call is not None else None
    if origin is not None and origin.user is not None and call is not None \
            and leg is call.caller:
        return str(b2bua.routing.user_key(origin.user))
    return None


def on_replacing_invite(b2bua: Any, leg: SipLeg, value: str, user: Any) -> None:
    """An INVITE with ``Replaces: value`` (RFC 3891) from the authenticated ``user``: when it
    names an answered leg of one of ``user``'s own phones, ``leg`` takes its place in its
    call (answered, bridged to the other party, the replaced leg hung up); 481 when there
    is no such dialog, 403 when it belongs to somebody else."""
    ids = parse_replaces(value)
    old = find_dialog_leg(b2bua, *ids) if ids is not None else None
    call = old.call if old is not None else None
    bridge = bridge_of(call, old) if call is not None and old is not None else None
    if old is None or call is None or bridge is None or not old.answered:
        leg.reject(481, "Call/Transaction Does Not Exist")
        leg.close_media()
        return
    if user is None or owner_of(b2bua, old) != b2bua.routing.user_key(user):
        leg.reject(403, "Forbidden")
        leg.close_media()
        return
    log.info("transfer.replaced", call_id=call.record.call_id, old=old.id, new=leg.id)
    call.adopt(leg)
    dispatcher = call.per_call.get(InCallDispatcher.KEY)
    if isinstance(dispatcher, InCallDispatcher) and old in dispatcher.users:
        dispatcher.watch(leg, dispatcher.users[old])
    leg.answer()
    call.replace(bridge, old, leg)
    old.hangup()
