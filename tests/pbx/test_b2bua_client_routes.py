"""The B2BUA's routes from client transactions to the legs that sent them (B2bua._client)."""

from __future__ import annotations

from types import SimpleNamespace

from features import default_features
from media.aio import MediaEngine
from pbx.b2bua import B2bua
from pbx.callcontrol import FeatureRegistry
from sipcore.digest import DigestServer
from sipcore.endpoint import Event
from sipcore.message import make_response
from sipcore.transaction import ResponseReceived, TransactionTimedOut, TransportErrored
from tests.pbx.test_b2bua_trunk_unresolved import PHONE, REALM, FakeSip, invite


def test_a_kept_invite_transaction_that_times_out_is_forgotten() -> None:
    """An INVITE client transaction kept for a late 2xx (keep=True) loses its event route when
    the transaction ends by a timeout or a transport error: nothing more can come for it (an
    overloaded bench run had ~7,000 such routes left behind by cancelled, never-answered legs).
    A final response keeps the route of a kept transaction (a 2xx may still follow)."""
    sip = FakeSip()
    b2b = B2bua(sip, MediaEngine("127.0.0.1", (48000, 48999)),
                digest=DigestServer(REALM, b"n" * 32, proxy=True, algorithms=("MD5",)),
                lookup=lambda username: None,
                registrar=SimpleNamespace(bindings=lambda aor, now: []),  # type: ignore[arg-type]
                domain="127.0.0.1", user_exists=lambda ext: False,
                features=FeatureRegistry(default_features()))
    seen: list[Event] = []
    timed_out = b2b.send_request(invite("kept-1"), PHONE, seen.append, keep=True)
    failed = b2b.send_request(invite("kept-2"), PHONE, seen.append, keep=True)
    answered = b2b.send_request(invite("kept-3"), PHONE, seen.append, keep=True)
    b2b.handle_event(TransactionTimedOut(timed_out))
    b2b.handle_event(TransportErrored(failed))
    request = sip.requests[2][0]
    b2b.handle_event(ResponseReceived(make_response(request, 487), answered, PHONE))
    assert len(seen) == 3  # each event still reached its callback once
    assert timed_out not in b2b._client and failed not in b2b._client
    assert timed_out not in b2b._keep and failed not in b2b._keep
    assert answered in b2b._client
