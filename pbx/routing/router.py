"""Routing decisions from the directory and the dial plan (no SIP, no I/O): who or what a
dialled string reaches, for a user (their tenant, permissions and caller number) or for a call
from a trunk (the called DID's owner)."""

from __future__ import annotations

from dataclasses import dataclass

from pbx.directory import Directory
from pbx.routing.dialplan import route, to_e164
from pbx.store import Trunk, User

__all__ = ["Destination", "Router"]


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a call goes (:class:`Router`'s answer).

    ``kind`` is ``"user"`` (ring ``user``'s devices), ``"portal"`` (a trunk's call to a
    voice-portal DID ``number``: mailbox number and PIN), ``"trunk"`` (send ``number`` — E.164 or an
    emergency short code — to ``trunk`` with ``caller_did`` as the caller) or ``"refused"``
    (answer the caller ``status``/``reason``; nothing is sent anywhere).
    """

    kind: str
    user: User | None = None
    trunk: Trunk | None = None
    number: str = ""
    caller_did: str | None = None
    status: int = 0
    reason: str = ""


class Router:
    """Routing decisions from the directory and the dial plan (no SIP, no I/O).

    Outgoing: what a user dialled → an extension of their tenant, or a number through their
    tenant's trunk (permission checked: an unauthorised call never reaches a trunk; 110/112 are
    always allowed). Incoming from a trunk: the called number → the DID's owner.
    """

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def caller_did(self, user: User) -> str | None:
        """The number shown to the outside for ``user``: their first DID, else the tenant's main
        number, else None."""
        numbers = self.directory.numbers_of(user.id)
        if numbers:
            return sorted(n.e164 for n in numbers)[0]
        tenant = self.directory.tenant(user.tenant_id)
        return tenant.main_number if tenant is not None else None

    def outgoing(self, caller: User, dialled: str) -> Destination:
        """Route what ``caller`` dialled (see the class docstring)."""
        d = self.directory
        tenant = d.tenant(caller.tenant_id)
        if tenant is None:
            return Destination("refused", status=404, reason="Not Found")
        direct = d.user_in_tenant(tenant.id, dialled)
        if direct is not None:
            return Destination("user", user=direct)
        decided = route(tenant.dialplan, dialled, caller.permission, caller.premium_allowed,
                        lambda e164: d.extension_of_did(tenant.id, e164))
        if not decided.allowed:
            reason = decided.reason.value if decided.reason is not None else "Forbidden"
            return Destination("refused", status=decided.status or 403, reason=reason)
        if decided.extension is not None:
            target = d.user_in_tenant(tenant.id, decided.extension)
            if target is None:
                return Destination("refused", status=404, reason="Not Found")
            return Destination("user", user=target)
        number = decided.trunk_number
        trunks = d.trunks_of(tenant.id)
        if number is None or not trunks:
            return Destination("refused", status=404 if number is None else 503,
                               reason="Not Found" if number is None else "No Trunk")
        return Destination("trunk", trunk=trunks[0], number=number,
                           caller_did=self.caller_did(caller))

    def mobile_user(self, tenant_id: int, number: str) -> User | None:
        """The user of ``tenant_id`` whose own registered mobile number a trunk's caller
        number is (written as the carrier writes it, like :meth:`incoming`'s), or None."""
        for e164 in self._candidates(tenant_id, number):
            user = self.directory.user_by_mobile(tenant_id, e164)
            if user is not None:
                return user
        return None

    def _candidates(self, tenant_id: int, number: str) -> list[str]:
        """The E.164 numbers a carrier's ``number`` may be (national, E.164, without "+")."""
        tenant = self.directory.tenant(tenant_id)
        candidates: list[str] = []
        if tenant is not None:
            e164 = to_e164(tenant.dialplan, number)
            if e164 is not None:
                candidates.append(e164)
        digits = number.removeprefix("+")
        if digits.isdigit() and not digits.startswith("0"):
            candidates.append("+" + digits)  # carriers that send 4930… without the "+"
        return candidates

    def incoming(self, tenant_id: int, called: str) -> Destination:
        """Route a call from a trunk of ``tenant_id`` to the number ``called`` (as the carrier
        wrote it: E.164, national, or E.164 without the "+"); unknown DIDs are refused (404)."""
        d = self.directory
        for e164 in self._candidates(tenant_id, called):
            number = d.owner_of_did(e164)
            if number is None or number.tenant_id != tenant_id:
                continue
            if d.is_voice_portal(e164):
                return Destination("portal", number=e164)
            user = d.user_by_id(number.user_id) if number.user_id is not None else None
            if user is None:
                continue
            return Destination("user", user=user, number=e164)
        return Destination("refused", status=404, reason="Not Found")
