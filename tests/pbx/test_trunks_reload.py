"""TrunkManager while running: trunks added, removed and changed take effect without a
restart (:meth:`TrunkManager.reconcile`), a challenge from anywhere but the trunk is dropped and
logged once, and the per-trunk health that ``/health`` shows. Real AsyncEndpoint on loopback
against scripted carriers on 127.0.0.2 (the forger on 127.0.0.3); every wait is bounded."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import structlog

from pbx.http import start_http
from pbx.trunks import TrunkConfig, TrunkManager
from sipcore.aio.endpoint import AsyncEndpoint, sent_by
from sipcore.digest import DigestServer, make_credentials
from sipcore.endpoint import Endpoint, EndpointConfig, Event
from sipcore.message import Request, Response, make_response, new_tag
from sipcore.transport import Peer
from tests.pbx.test_trunks_manager import CARRIER, REALM, carrier, ok, reg_trunk, until

FORGER = "127.0.0.3"


@asynccontextmanager
async def running(*trunks: TrunkConfig, t1: float = 0.01,
                  **kw: object) -> AsyncIterator[tuple[TrunkManager, AsyncEndpoint[Event]]]:
    """A started manager over an endpoint on 127.0.0.1 (T1 = ``t1``)."""
    manager = TrunkManager(trunks, **kw)  # type: ignore[arg-type]

    def factory(listening: list[tuple[str, str, int]]) -> Endpoint:
        return Endpoint(EndpointConfig(sent_by=sent_by(listening), t1=t1, t2=max(t1 * 4, 0.04)))

    def on_event(event: Event) -> None:
        manager.on_event(event)

    sip: AsyncEndpoint[Event] = AsyncEndpoint(factory, ["udp:127.0.0.1:0"], on_event=on_event)
    await sip.start()
    try:
        manager.start(sip)
        yield manager, sip
    finally:
        await manager.stop(timeout=3.0)
        await sip.close()


def answer_all(request: Request) -> Response:
    return ok(request, int(request.headers.get("Expires") or 0))


def expires_of(requests: list[Request]) -> list[str | None]:
    return [r.headers.get("Expires") for r in requests]


def ip_trunk(name: str = "peer", host: str = "127.0.0.5") -> TrunkConfig:
    return TrunkConfig(name=name, kind="ip", host=host, tenant_id=1, tenant="acme")


async def test_added_trunk_registers_removed_one_unregisters_ip_trunks_follow() -> None:
    async with carrier(answer_all) as (fake, port), running() as (manager, _):
        assert manager.trunks == {} and manager.identify(Peer("udp", "127.0.0.5", 5060)) is None
        added, removed, changed = manager.reconcile([reg_trunk(port), ip_trunk()])
        assert (added, removed, changed) == (["carrier", "1/peer"], [], [])
        await until(lambda: manager.states().get("carrier") == "registered")
        assert expires_of(fake.received) == ["300"]
        peer_trunk = manager.identify(Peer("udp", "127.0.0.5", 5060))
        assert peer_trunk is not None and peer_trunk.key == "1/peer"
        # the same trunks again: nothing happens
        assert manager.reconcile([reg_trunk(port), ip_trunk()]) == ([], [], [])
        # the registration trunk is removed: Expires 0, then it is gone
        assert manager.reconcile([ip_trunk()]) == ([], ["carrier"], [])
        assert "carrier" not in manager.trunks and "carrier" not in manager.registrations
        await until(lambda: expires_of(fake.received) == ["300", "0"])
        await until(lambda: not manager._retiring)
        # the IP trunk disappears for inbound matching (and the B2BUA's routing table)
        assert manager.reconcile([]) == ([], ["1/peer"], [])
        assert manager.identify(Peer("udp", "127.0.0.5", 5060)) is None
        assert manager.trunks == {}
    assert expires_of(fake.received) == ["300", "0"]  # nothing left to unregister at stop


async def test_changed_trunk_removes_the_old_binding_before_making_the_new_one() -> None:
    async with carrier(answer_all) as (fake, port), running(reg_trunk(port)) as (manager, _):
        await until(lambda: manager.states()["carrier"] == "registered")
        first = manager.registrations["carrier"]
        assert manager.reconcile([reg_trunk(port, register_expiry=120)]) == ([], [], ["carrier"])
        await until(lambda: manager.states()["carrier"] == "registered"
                    and manager.registrations["carrier"] is not first)
        # same registrar and AOR: the Expires 0 went out (and was answered) before the new one
        assert expires_of(fake.received) == ["300", "0", "120"]
        assert manager.registrations["carrier"].call_id != first.call_id
        assert manager.trunks["carrier"].register_expiry == 120


async def test_removed_while_failing_stops_without_sending() -> None:
    def refuse(request: Request) -> Response:
        return make_response(request, 403, to_tag=new_tag())

    async with carrier(refuse) as (fake, port), \
            running(reg_trunk(port), retry_base=60.0) as (manager, _):
        await until(lambda: manager.states()["carrier"] == "failed")
        health = manager.health()["carrier"]
        assert health["last_status"] == 403 and health["last_error"] == "403 Forbidden"
        assert 55 <= int(str(health["next_refresh"])) <= 60
        manager.reconcile([])
        assert not manager._retiring and manager.trunks == {}  # FAILED: no binding to remove
        await asyncio.sleep(0.1)
        assert expires_of(fake.received) == ["300"]


def forged_challenge(request: Request) -> bytes:
    """What an attacker who saw our REGISTER sends: a 401 with its Via/From/To/Call-ID/CSeq."""
    response = make_response(request, 401, to_tag=new_tag())
    response.headers.add("WWW-Authenticate", f'Digest realm="{REALM}", nonce="abc123", '
                                             'algorithm=MD5, qop="auth"')
    return response.serialize()


async def test_challenge_from_elsewhere_is_dropped_and_logged_once_then_real_one_answered() -> None:
    server = DigestServer(REALM, b"s" * 32, algorithms=("MD5",))
    creds = {"4930111": make_credentials("4930111", REALM, "s3cret", ("MD5",))}

    def script(request: Request) -> Response | None:
        if "Authorization" in request.headers and server.verify(
                request, "127.0.0.1", creds.get, 0.0).ok:
            return ok(request)
        return None  # the first REGISTER: the test answers it by hand

    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger.bind((FORGER, 0))
    forger.setblocking(False)
    try:
        async with carrier(script) as (fake, port), running(reg_trunk(port), t1=0.5) \
                as (manager, sip):
            await until(lambda: len(fake.received) == 1)
            first = fake.received[0]
            ours = next((h, p) for t, h, p in sip.listening() if t == "udp")
            with structlog.testing.capture_logs() as logs:
                for _ in range(3):  # a flood of forgeries: counted, logged once
                    forger.sendto(forged_challenge(first), ours)
                await until(lambda: manager.health()["carrier"]["foreign_challenges"] == 3)
                await asyncio.sleep(0.3)  # time for an (unwanted) answer to arrive
            assert len(fake.received) == 1 and "Authorization" not in fake.received[0].headers
            assert manager.states()["carrier"] == "registering"
            lines = [e for e in logs if e["event"] == "security.trunk.foreign_challenge"]
            assert len(lines) == 1
            assert (lines[0]["src"], lines[0]["trunk"], lines[0]["status"]) == \
                (FORGER, "carrier", 401)
            assert lines[0]["log_level"] == "warning"
            # the carrier itself challenges the same transaction: answered, to it only
            assert fake.transport is not None
            fake.transport.sendto(server.challenge(first, "127.0.0.1", 0.0).serialize(),  # type: ignore[attr-defined]
                                  ours)
            await until(lambda: manager.states()["carrier"] == "registered")
            assert "Authorization" in fake.received[1].headers
            assert manager.health()["carrier"]["refused_challenges"] == 0
    finally:
        forger.close()


async def test_health_list_and_http_health_show_trunks() -> None:
    async with carrier(answer_all) as (_fake, port), \
            running(reg_trunk(port, tenant="default", tenant_id=1),
                    ip_trunk("carrier-b")) as (manager, _):
        await until(lambda: manager.states()["1/carrier"] == "registered")
        entries = manager.health_list()
        assert [(e["tenant"], e["name"], e["kind"], e["state"]) for e in entries] == [
            ("acme", "carrier-b", "ip", "ip"), ("default", "carrier", "register", "registered")]
        reg = entries[1]
        assert 250 <= int(str(reg["next_refresh"])) <= 255  # 85 % of 300 s
        assert "next_refresh" not in entries[0]

        service = await start_http("127.0.0.1:0", lambda: {
            "registrations": 0, "active_calls": 0, "trunks": manager.health_list()},
            started=time.monotonic())
        assert service is not None
        try:
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{service.port}/health") as resp:
                assert resp.status == 200
                body = await resp.json()
        finally:
            await service.close()
        shown = {t["name"]: t for t in body["trunks"]}
        assert shown["carrier"]["state"] == "registered" and shown["carrier"]["kind"] == "register"
        assert shown["carrier"]["tenant"] == "default"
        assert 250 <= shown["carrier"]["next_refresh"] <= 255
        assert shown["carrier-b"] == {"name": "carrier-b", "tenant": "acme", "kind": "ip",
                                      "state": "ip", "refused_challenges": 0,
                                      "foreign_challenges": 0}
        assert "s3cret" not in str(body)


async def test_http_health_rejects_bad_trunk_figures() -> None:
    service = await start_http("127.0.0.1:0", lambda: {"trunks": "nonsense"})
    assert service is not None
    try:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{service.port}/health") as resp:
            assert resp.status == 503
            assert (await resp.json())["status"] == "error"
    finally:
        await service.close()


def test_responds_from_is_the_address_we_send_to() -> None:
    t = reg_trunk(5070)
    assert t.responds_from(Peer("udp", CARRIER, 5070))
    assert t.responds_from(Peer("udp", f"::ffff:{CARRIER}", 5070))
    assert not t.responds_from(Peer("udp", CARRIER, 5071))
    assert not t.responds_from(Peer("udp", FORGER, 5070))
    assert t.responds_from(Peer("tcp", CARRIER, 5070, conn_id=1))  # too large for UDP
    assert not reg_trunk(5070, transport="tcp").responds_from(Peer("udp", CARRIER, 5070))
    assert not reg_trunk(5070, transport="tls").responds_from(Peer("tcp", CARRIER, 5070))
    # a DNS name: only its listed addresses count
    named = reg_trunk(5070, host="carrier.example", allowed_sources=("127.0.0.2/32",))
    assert named.responds_from(Peer("udp", CARRIER, 5070))
    assert not named.responds_from(Peer("udp", FORGER, 5070))
    assert not reg_trunk(5070, host="carrier.example").responds_from(Peer("udp", CARRIER, 5070))


async def test_stop_waits_for_retiring_registrations() -> None:
    async with carrier(answer_all) as (fake, port):
        async with running(reg_trunk(port)) as (manager, _):
            await until(lambda: manager.states()["carrier"] == "registered")
            manager.reconcile([reg_trunk(port, name="other")])  # one retires, one starts
        assert manager._retiring == {}
        # both bindings made and both removed: the retiring one and the new one at stop
        assert sorted(expires_of(fake.received), key=str) == ["0", "0", "300", "300"]
