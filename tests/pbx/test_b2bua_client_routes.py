"""Events reach the leg that sent a request through sipcore's own transaction (its owner),
not through a second transaction-id table in the B2BUA."""

from __future__ import annotations

from types import SimpleNamespace

from features import default_features
from media.aio import MediaEngine
from pbx.b2bua import B2bua
from pbx.callcontrol import FeatureRegistry
from sipcore.digest import DigestServer
from sipcore.endpoint import Endpoint, EndpointConfig, Event
from sipcore.message import make_response
from sipcore.transaction import ResponseReceived, TransactionTimedOut, TransportErrored
from tests.pbx.test_b2bua_trunk_unresolved import PHONE, REALM, FakeSip, invite


def make_b2bua(sip: FakeSip) -> B2bua:
    return B2bua(sip, MediaEngine("127.0.0.1", (48000, 48999)),
                 digest=DigestServer(REALM, b"n" * 32, proxy=True, algorithms=("MD5",)),
                 lookup=lambda username: None,
                 registrar=SimpleNamespace(bindings=lambda aor, now: []),  # type: ignore[arg-type]
                 domain="127.0.0.1", user_exists=lambda ext: False,
                 features=FeatureRegistry(default_features()))


def test_events_go_to_the_owner_they_carry_and_nowhere_else() -> None:
    sip = FakeSip()
    b2b = make_b2bua(sip)
    seen: list[Event] = []
    tx = b2b.send_request(invite("owned"), PHONE, seen.append)
    owner = sip.owners[-1]
    assert owner == seen.append
    request = sip.requests[-1][0]
    b2b.handle_event(ResponseReceived(make_response(request, 180), tx, PHONE, owner))
    b2b.handle_event(TransactionTimedOut(tx, owner))
    b2b.handle_event(TransportErrored(tx, owner))
    b2b.handle_event(ResponseReceived(make_response(request, 200), tx, PHONE))  # no owner
    assert [type(e) for e in seen] == [ResponseReceived, TransactionTimedOut, TransportErrored]
    assert not hasattr(b2b, "_client")  # the second table is gone


def test_the_endpoint_carries_the_owner_on_every_client_event() -> None:
    ep = Endpoint(EndpointConfig(sent_by={"udp": ("127.0.0.1", 5060)}))
    ringing, silent = object(), object()
    request = invite("ep-1")
    tx1 = ep.send_request(request, PHONE, 0.0, owner=ringing)
    tx2 = ep.send_request(invite("ep-2"), PHONE, 0.0, owner=silent)
    ep.receive_datagram(make_response(request, 180).serialize(), PHONE, 0.1)
    ep.handle_timer(40.0)  # Timer B for the INVITE that got no answer at all
    events = [(type(e), e.transaction_id, e.owner) for e in ep.events()
              if isinstance(e, ResponseReceived | TransactionTimedOut)]
    assert events == [(ResponseReceived, tx1, ringing), (TransactionTimedOut, tx2, silent)]
