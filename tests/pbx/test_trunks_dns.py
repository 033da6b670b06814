"""Trunks whose host is a DNS name: TrunkManager resolves it (a fake resolver here, the real
``getaddrinfo`` for ``localhost``), sends to the resolved address, counts challenges and inbound
requests from the resolved addresses only, reports a name that does not resolve as "failed"
(logged once per change, retried) and follows a name that moves. Real AsyncEndpoint on
loopback against scripted carriers on 127.0.0.2 / 127.0.0.4, a forger on 127.0.0.3."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Sequence

import pytest
import structlog

from pbx.trunks import (
    ChallengeRefusedError,
    TrunkConfig,
    TrunkManager,
    answer_challenge,
    build_outbound_request,
    resolve_host,
)
from sipcore.aio.endpoint import AsyncEndpoint, sent_by
from sipcore.digest import DigestClient, DigestServer, make_credentials
from sipcore.endpoint import Endpoint, EndpointConfig
from sipcore.message import Request, Response, make_response, new_tag
from sipcore.transport import Peer, TransportName
from tests.pbx.test_trunks_manager import REALM, FakeCarrier, carrier, manager_for, ok, until

NAME = "sip.carrier.test"
CARRIER = "127.0.0.2"
FORGER = "127.0.0.3"
CARRIER_B = "127.0.0.4"


class FakeResolver:
    """Answers from ``table`` (a name missing: OSError as getaddrinfo raises); records calls."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = dict(table or {})
        self.calls: list[tuple[str, int, TransportName]] = []

    async def __call__(self, host: str, port: int, transport: TransportName) -> Sequence[str]:
        self.calls.append((host, port, transport))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


def named(port: int = 5060, **kw: object) -> TrunkConfig:
    args: dict[str, object] = dict(name="carrier", kind="register", host=NAME, port=port,
                                   username="4930111", password="s3cret", realm=REALM,
                                   register_expiry=300)
    args.update(kw)
    return TrunkConfig(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ TrunkConfig


def test_resolved_name_sends_to_its_first_address_and_counts_only_its_addresses() -> None:
    t = named(5070).with_addresses(["127.0.0.2", "::ffff:127.0.0.9", "2001:db8::7"])
    assert t.addresses == ("127.0.0.2", "::ffff:7f00:9", "2001:db8::7")
    assert t.peer == Peer("udp", CARRIER, 5070)
    assert t == named(5070)  # resolving anew is not a configuration change
    # challenges: from a resolved address and our port only
    assert t.responds_from(Peer("udp", CARRIER, 5070))
    assert t.responds_from(Peer("udp", "2001:db8::7", 5070))
    assert t.responds_from(Peer("tcp", CARRIER, 5070))  # the UDP request went over TCP
    assert not t.responds_from(Peer("udp", CARRIER, 5071))
    assert not t.responds_from(Peer("udp", FORGER, 5070))
    assert not t.responds_from(Peer("tls", CARRIER, 5070))
    # inbound requests: from a resolved address, any port (carriers send from pools)
    assert t.matches_source(Peer("udp", CARRIER, 40000))
    assert not t.matches_source(Peer("udp", FORGER, 5070))
    assert t.sends_to(CARRIER) and t.sends_to(NAME.upper()) and not t.sends_to(FORGER)
    # unresolved: nothing counts (as before), allowed_sources still do
    assert not named(5070).responds_from(Peer("udp", CARRIER, 5070))
    assert named(5070).peer == Peer("udp", NAME, 5070)
    listed = named(5070, allowed_sources=("127.0.0.8",)).with_addresses([CARRIER])
    assert listed.responds_from(Peer("udp", "127.0.0.8", 5070))
    assert listed.responds_from(Peer("udp", CARRIER, 5070))


def test_tls_trunk_keeps_the_name_for_its_certificate_but_knows_its_addresses() -> None:
    t = named(5061, transport="tls").with_addresses([CARRIER])
    assert t.peer == Peer("tls", NAME, 5061)
    assert t.responds_from(Peer("tls", CARRIER, 5061))
    assert not t.responds_from(Peer("tls", FORGER, 5061))


@pytest.mark.parametrize(("host", "addresses"), [("203.0.113.1", ["203.0.113.1"]),
                                                 (NAME, ["not-an-address"])])
def test_addresses_only_for_a_name_and_only_addresses(host: str, addresses: list[str]) -> None:
    with pytest.raises(ValueError, match="trunk"):
        named(host=host).with_addresses(addresses)


def _challenged() -> tuple[Request, Response]:
    request = build_outbound_request(named(kind="ip"), number="+49301234567",
                                     caller_did="+49309876543", contact="sip:127.0.0.1:5060")
    request.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1")
    challenge = DigestServer(REALM, b"k" * 32, proxy=True, algorithms=("MD5",)).challenge(
        request, CARRIER, 1.0)
    return request, challenge


def test_invite_challenge_answered_when_sent_to_a_resolved_address_from_it() -> None:
    t = named(kind="ip").with_addresses([CARRIER])
    request, challenge = _challenged()
    again = answer_challenge(t, DigestClient(), request, challenge, sent_to=t.peer,
                             source=Peer("udp", CARRIER, 5060))
    assert again.cseq.seq == 2 and f'realm="{REALM}"' in str(
        again.headers.get("Proxy-Authorization"))
    with pytest.raises(ChallengeRefusedError, match="came from"):
        answer_challenge(t, DigestClient(), request, challenge, sent_to=t.peer,
                         source=Peer("udp", FORGER, 5060))
    with pytest.raises(ChallengeRefusedError, match="request went to"):
        answer_challenge(t, DigestClient(), request, challenge,
                         sent_to=Peer("udp", FORGER, 5060))


# --------------------------------------------------------------------------- the resolver


async def test_default_resolver_uses_getaddrinfo() -> None:
    assert "127.0.0.1" in await resolve_host("localhost", 5060, "udp")
    with pytest.raises(OSError):
        await resolve_host("nowhere.invalid", 5060, "udp")


# ---------------------------------------------------------------------------- TrunkManager


async def test_named_trunk_registers_at_its_resolved_address_through_its_challenge() -> None:
    server = DigestServer(REALM, b"k" * 32, algorithms=("MD5",))
    creds = {"4930111": make_credentials("4930111", REALM, "s3cret", ("MD5",))}

    def script(request: Request) -> Response:
        if "Authorization" not in request.headers:
            return server.challenge(request, CARRIER, 1.0)
        assert server.verify(request, CARRIER, creds.get, 1.0).ok
        return ok(request)

    async with carrier(script) as (proto, port):
        resolver = FakeResolver({NAME: [CARRIER]})
        async with manager_for(named(port), resolver=resolver) as (manager, unconsumed):
            await until(lambda: manager.states().get("carrier") == "registered")
            assert resolver.calls[0] == (NAME, port, "udp")
            assert [r.headers.get("Authorization") is not None for r in proto.received] == [False, True]
            assert str(proto.received[0].uri) == f"sip:{NAME}:{port}"  # the name stays in URIs
            entry = manager.health()["carrier"]
            assert entry["addresses"] == [CARRIER] and "dns_error" not in entry
            assert entry["foreign_challenges"] == 0 and entry["refused_challenges"] == 0
            assert manager.registrations["carrier"].peer == Peer("udp", CARRIER, port)
            assert unconsumed == []


async def test_forged_challenge_to_a_named_trunk_is_dropped_the_carriers_answered() -> None:
    """Before, a DNS-named registrar made the endpoint accept a challenge from anywhere;
    now the REGISTER goes to an address and only that address's challenge is answered."""
    server = DigestServer(REALM, b"k" * 32, algorithms=("MD5",))
    first: list[Request] = []

    def script(request: Request) -> Response | None:
        if "Authorization" not in request.headers:
            first.append(request)
            return None  # silent: the forger answers first
        return ok(request)

    loop = asyncio.get_running_loop()
    forger, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                    local_addr=(FORGER, 0))
    try:
        async with carrier(script) as (proto, port):
            resolver = FakeResolver({NAME: [CARRIER]})
            async with manager_for(named(port), resolver=resolver) as (manager, _):
                await until(lambda: bool(first))
                pbx = next(iter(manager.sip.listening()))[1:]
                forged = make_response(first[0], 401, to_tag=new_tag())
                forged.headers.add("WWW-Authenticate",
                                   f'Digest realm="{REALM}", nonce="f0rged", algorithm=MD5')
                with structlog.testing.capture_logs() as logs:
                    forger.sendto(forged.serialize(), pbx)  # type: ignore[attr-defined]
                    await until(lambda: manager.health()["carrier"]["foreign_challenges"] == 1)
                lines = [e for e in logs if e["event"] == "security.trunk.foreign_challenge"]
                assert len(lines) == 1 and lines[0]["src"] == FORGER
                assert not any(r.headers.get("Authorization") is not None for r in proto.received)
                # the carrier's own challenge to the same REGISTER: answered, to the carrier
                real = server.challenge(first[0], CARRIER, 1.0)
                carrier_sock = proto.transport
                assert carrier_sock is not None
                carrier_sock.sendto(real.serialize(), pbx)  # type: ignore[attr-defined]
                await until(lambda: manager.states().get("carrier") == "registered")
                assert proto.received[-1].headers.get("Authorization") is not None
    finally:
        forger.close()


async def test_name_that_does_not_resolve_fails_clearly_is_retried_and_recovers() -> None:
    resolver = FakeResolver()
    async with carrier(ok) as (proto, port):
        with structlog.testing.capture_logs() as logs:
            async with manager_for(named(port), named(port, name="ip-sbc", kind="ip",
                                                      host="sbc.carrier.test"),
                                   resolver=resolver, resolve_retry=0.02,
                                   resolve_interval=0.2) as (manager, _):
                await until(lambda: len(resolver.calls) >= 6)  # both trunks retried
                for key, host in (("carrier", NAME), ("ip-sbc", "sbc.carrier.test")):
                    entry = manager.health()[key]
                    assert entry["state"] == "failed", entry
                    assert str(entry["last_error"]).startswith(f"cannot resolve {host}: ")
                    assert "Name or service not known" in str(entry["last_error"])
                    assert entry["addresses"] == []
                assert manager.identify(Peer("udp", CARRIER, port)) is None
                assert proto.received == []  # nothing sent anywhere
                failed = [e for e in logs if e["event"] == "trunk.dns.failed"]
                assert sorted(e["trunk"] for e in failed) == ["carrier", "ip-sbc"]  # once each

                resolver.table[NAME] = [CARRIER]  # the names appear
                resolver.table["sbc.carrier.test"] = [CARRIER_B]
                await until(lambda: manager.states().get("carrier") == "registered")
                await until(lambda: manager.states()["ip-sbc"] == "ip")
                assert manager.identify(Peer("udp", CARRIER_B, 40000)) is manager.trunks["ip-sbc"]
                assert manager.identify(Peer("udp", CARRIER, 40000)) is manager.trunks["carrier"]
                assert "dns_error" not in manager.health()["carrier"]
            resolved = [e for e in logs if e["event"] == "trunk.dns.resolved"]
            assert sorted(e["trunk"] for e in resolved) == ["carrier", "ip-sbc"]


async def test_dns_outage_keeps_the_last_addresses_and_shows_the_error() -> None:
    resolver = FakeResolver({NAME: [CARRIER]})
    async with carrier(ok) as (_, port), \
            manager_for(named(port), resolver=resolver, resolve_interval=0.05,
                        resolve_retry=0.05) as (manager, _):
        await until(lambda: manager.states().get("carrier") == "registered")
        del resolver.table[NAME]
        await until(lambda: "dns_error" in manager.health()["carrier"])
        entry = manager.health()["carrier"]
        assert entry["state"] == "registered" and entry["addresses"] == [CARRIER]
        assert manager.trunks["carrier"].peer == Peer("udp", CARRIER, port)


async def test_a_name_that_moves_is_followed_by_the_next_register() -> None:
    async with carrier(lambda r: ok(r, 2)) as (old, port):
        loop = asyncio.get_running_loop()
        moved, moved_proto = await loop.create_datagram_endpoint(
            lambda: FakeCarrier(lambda r: ok(r, 2)), local_addr=(CARRIER_B, port))
        try:
            resolver = FakeResolver({NAME: [CARRIER]})
            async with manager_for(named(port, register_expiry=2), resolver=resolver,
                                   refresh_fraction=0.5) as (manager, _):
                await until(lambda: manager.states().get("carrier") == "registered")
                resolver.table[NAME] = [CARRIER_B, CARRIER]
                manager.resolve_now("carrier")
                await until(lambda: manager.trunks["carrier"].addresses == (CARRIER_B, CARRIER))
                assert manager.registrations["carrier"].peer.host == CARRIER_B
                await until(lambda: len(moved_proto.received) >= 1, timeout=5)  # the refresh
                assert moved_proto.received[0].method == "REGISTER"
                assert moved_proto.received[0].call_id == old.received[0].call_id
        finally:
            moved.close()


async def test_name_is_resolved_again_before_each_registration_refresh() -> None:
    """With a long resolve interval, every refresh REGISTER is still preceded by a query."""
    order: list[str] = []
    resolver = FakeResolver({NAME: [CARRIER]})

    async def recording(host: str, port: int, transport: TransportName) -> Sequence[str]:
        order.append("resolve")
        return await resolver(host, port, transport)

    def script(request: Request) -> Response:
        order.append("REGISTER")
        return ok(request, 2)

    async with carrier(script) as (_, port), \
            manager_for(named(port, register_expiry=2), resolver=recording,
                        refresh_fraction=0.5, resolve_interval=3600,
                        resolve_timeout=0.2) as (manager, _):
        await until(lambda: order.count("REGISTER") >= 3)
        registers = [i for i, what in enumerate(order) if what == "REGISTER"][:3]
        assert order[0] == "resolve" and registers[0] > 0
        for previous, refresh in itertools.pairwise(registers):
            assert "resolve" in order[previous:refresh], order  # looked again before it
        assert manager.states()["carrier"] == "registered"


async def test_reconcile_resolves_added_keeps_unchanged_and_stops_removed_names() -> None:
    resolver = FakeResolver({NAME: [CARRIER], "other.carrier.test": [CARRIER_B]})
    ip = named(5090, name="sbc", kind="ip")
    async with manager_for(resolver=resolver, resolve_interval=0.05) as (manager, _):
        manager.reconcile([ip])
        await until(lambda: manager.trunks["sbc"].addresses == (CARRIER,))
        # the same trunk again, and one changed only in trust: what it resolved to stays
        manager.reconcile([named(5090, name="sbc", kind="ip", trusted=True)])
        assert manager.trunks["sbc"].trusted and manager.trunks["sbc"].addresses == (CARRIER,)
        # a new host is a new query; the old addresses no longer count
        manager.reconcile([named(5090, name="sbc", kind="ip", host="other.carrier.test")])
        assert not manager.trunks["sbc"].addresses
        assert manager.identify(Peer("udp", CARRIER, 5090)) is None
        await until(lambda: manager.trunks["sbc"].addresses == (CARRIER_B,))
        assert manager.identify(Peer("udp", CARRIER_B, 5090)) is manager.trunks["sbc"]
        manager.reconcile([])
        await asyncio.sleep(0.02)
        calls = len(resolver.calls)
        await asyncio.sleep(0.2)  # four intervals: nobody resolves a removed trunk's name
        assert len(resolver.calls) == calls


async def test_resolver_that_hangs_times_out_and_stop_is_bounded() -> None:
    async def hangs(host: str, port: int, transport: TransportName) -> Sequence[str]:
        await asyncio.sleep(3600)
        return []

    async with manager_for(named(5060), resolver=hangs, resolve_timeout=0.05,
                           resolve_retry=10) as (manager, _):
        await until(lambda: manager.health()["carrier"]["state"] == "failed")
        assert "no answer in 0.05 s" in str(manager.health()["carrier"]["last_error"])


def _trunk_tasks() -> list[str]:
    return sorted(t.get_name() for t in asyncio.all_tasks()
                  if t.get_name().startswith(("trunk-dns", "trunks scope")))


async def test_dns_loops_live_in_the_managers_task_group_and_end_with_stop() -> None:
    """DESIGN.md principle 8: the query loops are children of the manager's TaskGroup; stop()
    leaves no task of the manager behind, and a removed trunk's loop ends at once."""
    resolver = FakeResolver({NAME: [CARRIER], "other.carrier.test": [CARRIER_B]})
    a = named(5090, name="a", kind="ip")
    b = named(5090, name="b", kind="ip", host="other.carrier.test")
    async with manager_for(a, b, resolver=resolver) as (manager, _):
        await until(lambda: bool(manager.trunks["a"].addresses and manager.trunks["b"].addresses))
        assert _trunk_tasks() == ["trunk-dns a", "trunk-dns b", "trunks scope"]
        manager.reconcile([a])
        await until(lambda: _trunk_tasks() == ["trunk-dns a", "trunks scope"])
    assert _trunk_tasks() == []


async def test_run_puts_the_manager_in_its_owners_task_group() -> None:
    """The structured form: the owner runs the manager in its own TaskGroup until stop()."""
    resolver = FakeResolver({NAME: [CARRIER]})
    manager = TrunkManager([named(5090, kind="ip")], resolver=resolver)

    def factory(listening: list[tuple[str, str, int]]) -> Endpoint:
        return Endpoint(EndpointConfig(sent_by=sent_by(listening)))

    async with AsyncEndpoint(factory, ["udp:127.0.0.1:0"], on_event=manager.on_event) as sip:
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(manager.run(sip))
            await until(lambda: manager.trunks["carrier"].addresses == (CARRIER,))
            assert _trunk_tasks() == ["trunk-dns carrier"]  # no scope task of its own
            await manager.stop()
        assert runner.done() and not runner.cancelled()
    assert _trunk_tasks() == []
    with pytest.raises(RuntimeError, match="started twice"):
        manager.start(sip)
