"""Routing a call's dialled string: :class:`CallRouter` answers the call script's question
"where does this go, sent by whom?".

On behalf of a user (the caller, or the user whose feature redirected the call) the user's
tenant, permissions and caller number apply (:meth:`Router.outgoing`). A call from a trunk that
no user redirected reaches the DID's owner or an extension of the trunk's tenant. Without a
directory (a bare B2BUA in tests) an extension the PBX knows is the only destination.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pbx.callcontrol import Call, Prompt, Reject, Ring, Routed, Target, UserView
from pbx.origin import CallOrigin
from pbx.routing.router import Destination, Router
from pbx.store import User

__all__ = ["TRUNK_RING_TIMEOUT", "CallRouter", "RoutingHost"]

#: How long a call through a trunk may ring (the carrier applies its own no-answer timeout).
TRUNK_RING_TIMEOUT = 180.0


class RoutingHost(Protocol):
    """What routing reads from the B2BUA (set by the server after start-up)."""

    router: Router | None
    trunks: Any
    origins: dict[str, CallOrigin]
    user_exists: Callable[[str], bool]
    log: Any


class CallRouter:
    """Routes for the call script; remembers the caller number each trunk call goes out with."""

    def __init__(self, host: RoutingHost) -> None:
        self.host = host
        #: Call.id → the caller number (DID) its trunk leg presents.
        self.caller_dids: dict[str, str | None] = {}
        #: user id → (directory snapshot, view): rebuilt when the directory reloads.
        self._views: dict[int, tuple[object, UserView]] = {}

    # -- users as call control sees them ---------------------------------------------------------

    def user_key(self, user: User) -> str:
        """How call control addresses ``user``: the extension in the default tenant (whose
        domain is ours), ``ext@domain`` in the others."""
        router = self.host.router
        if router is None:
            return str(user.extension)
        tenant = router.directory.tenant(user.tenant_id)
        default = router.directory.default_tenant
        if tenant is None or default is None or tenant.id == default.id:
            return str(user.extension)
        return f"{user.extension}@{tenant.domain}"

    def view(self, user: User) -> UserView:
        """``user`` for features: key, extension, tenant, DIDs, language, name, numbers, the
        company's main number."""
        router = self.host.router
        snapshot = router.directory.snapshot if router is not None else None
        cached = self._views.get(user.id)
        if cached is not None and cached[0] is snapshot:
            return cached[1]
        numbers = (tuple(sorted(n.e164 for n in router.directory.numbers_of(user.id)))
                   if router is not None else ())
        tenant = router.directory.tenant(user.tenant_id) if router is not None else None
        view = UserView(key=self.user_key(user), extension=user.extension, id=user.id,
                        tenant_id=user.tenant_id, numbers=numbers, language=user.language,
                        name=user.name, mobile=user.mobile_number,
                        remote_office=user.remote_office_number,
                        company_number=tenant.main_number if tenant is not None else None)
        if len(self._views) > 10_000:
            self._views.clear()
        self._views[user.id] = (snapshot, view)
        return view

    def record_of(self, view: UserView) -> User | None:
        """The directory's record of a user view (None for a user the store does not know)."""
        router = self.host.router
        if router is None or view.id is None:
            return None
        return router.directory.user_by_id(view.id)

    def originator(self, call: Call) -> UserView | None:
        """The user who placed ``call`` (a device's user; None for a trunk's caller)."""
        origin = self.host.origins.get(call.id)
        if origin is None:
            return None
        if origin.user is not None:
            return self.view(origin.user)
        if origin.trunk is None and self.host.user_exists(origin.caller):
            return UserView(key=origin.caller, extension=origin.caller)  # a config-file user
        return None

    def digits_only(self, call: Call) -> UserView | None:
        """The user who may dial digits-only feature codes in ``call``: a mobile device's user,
        or the user whose own mobile number a trunk call comes from (codes only)."""
        origin = self.host.origins.get(call.id)
        if origin is None:
            return None
        if origin.code_user is not None:
            return self.view(origin.code_user)
        if origin.mobile and origin.user is not None:
            return self.view(origin.user)
        return None

    # -- routing ---------------------------------------------------------------------------------

    def destination(self, call: Call, dialled: str, on_behalf_of: UserView | None) -> (
            Destination | None):
        """The router's answer (None: no directory, extensions only)."""
        router = self.host.router
        if router is None:
            return None
        sender = self.record_of(on_behalf_of) if on_behalf_of is not None else None
        if sender is not None:
            return router.outgoing(sender, dialled)
        origin = self.host.origins.get(call.id)
        trunk = origin.trunk if origin is not None else None
        if trunk is None or trunk.tenant_id is None:
            return None
        dest = router.incoming(trunk.tenant_id, dialled)
        if dest.kind != "user":
            found = router.directory.user_in_tenant(trunk.tenant_id, dialled)
            if found is not None:
                dest = Destination("user", user=found)
        return dest

    def routable(self, user: UserView, dialled: str) -> bool:
        """Whether ``dialled`` reaches someone or a trunk for ``user`` (no call is made)."""
        router = self.host.router
        sender = self.record_of(user)
        if router is None or sender is None:
            return self.host.user_exists(dialled)
        return router.outgoing(sender, dialled).kind != "refused"

    def route(self, call: Call, dialled: str, on_behalf_of: UserView | None) -> (
            Routed | Ring | Reject):
        """Where ``dialled`` goes for ``on_behalf_of`` (see the module docstring): a user to
        ring, a :class:`Ring` of a number through the sender's tenant's trunk, or a
        :class:`Reject` (refused by the dial plan: nothing is sent to any trunk)."""
        dest = self.destination(call, dialled, on_behalf_of)
        if dest is None:
            if self.host.user_exists(dialled):
                return Routed(UserView(key=dialled, extension=dialled))
            return self._not_found(404, None, on_behalf_of)
        if dest.kind == "user" and dest.user is not None:
            return Routed(self.view(dest.user))
        if dest.kind == "trunk" and dest.trunk is not None and self.host.trunks is not None:
            return self._trunk(call, dest)
        self.host.log.info("call.refused", call_id=call.record.call_id,
                           caller=call.record.caller, dialled=dialled, status=dest.status,
                           reason=dest.reason,
                           on_behalf_of=on_behalf_of.key if on_behalf_of is not None else None)
        return self._not_found(dest.status or 404, dest.reason or None, on_behalf_of)

    @staticmethod
    def _not_found(status: int, reason: str | None, sender: UserView | None) -> Reject:
        """A refusal; a user who dialled a number that does not exist hears "the number you
        dialled is not available" first (a trunk's caller gets the status at once)."""
        prompt = (Prompt("not_available") if sender is not None and status in (404, 484)
                  else None)
        return Reject(status, reason, prompt=prompt)

    def number_targets(self, call: Call, user: UserView, number: str) -> tuple[Target, ...]:
        """Targets ringing ``user``'s own external ``number`` (mobile, remote office) over their
        trunk in ``call``; empty when the dial plan refuses it or it names a user."""
        dest = self.destination(call, number, user)
        if dest is None or dest.kind != "trunk" or dest.trunk is None \
                or self.host.trunks is None:
            return ()
        routed = self._trunk(call, dest, outgoing=False)
        return routed.targets if isinstance(routed, Ring) else ()

    def _trunk(self, call: Call, dest: Destination, *, outgoing: bool = True) -> Ring | Reject:
        assert dest.trunk is not None
        key = f"{dest.trunk.tenant_id}/{dest.trunk.name}"
        trunks = self.host.trunks
        if key not in trunks.trunks:
            self.host.log.warning("call.trunk_unavailable", call_id=call.record.call_id,
                                  trunk=key)
            return Reject(503, "Trunk Unavailable")
        if outgoing and call.record.direction == "internal":
            call.record.direction = "outbound"
        trunk = trunks.trunks[key]
        if trunk.named and not trunk.addresses:
            # Its DNS name has not resolved (yet): nothing to send an INVITE to. Refuse now
            # rather than after Timer B; Retry-After is the manager's DNS retry delay.
            self.host.log.warning("call.trunk_unresolved", call_id=call.record.call_id,
                                  trunk=key, host=trunk.host)
            return Reject(503, "Trunk Unresolved",
                          retry_after=max(1, round(trunks.resolve_retry)))
        self.host.log.info("call.outbound", call_id=call.record.call_id, trunk=key,
                           number=dest.number, caller_did=dest.caller_did)
        self.caller_dids[call.id] = dest.caller_did
        target = Target("number", user=dest.number, contact=key, label=f"{key}:{dest.number}")
        return Ring((target,), TRUNK_RING_TIMEOUT)

    def forget(self, call: Call) -> None:
        """The call ended."""
        self.caller_dids.pop(call.id, None)
