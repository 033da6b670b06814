"""TrunkManager (the asyncio driver) over a real AsyncEndpoint on loopback, against small
scripted carriers on 127.0.0.2. Short SIP timers (T1 = 10 ms, so Timer F = 0.64 s) keep the
timeout cases quick; every wait is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from pbx.trunks import TrunkConfig, TrunkManager
from sipcore.aio.endpoint import AsyncEndpoint, sent_by
from sipcore.digest import DigestServer, make_credentials
from sipcore.endpoint import Endpoint, EndpointConfig, Event
from sipcore.message import Request, Response, make_response, new_tag, parse_message
from sipcore.transaction import RequestReceived, ResponseReceived, TransactionTimedOut
from sipcore.transport import Peer

CARRIER = "127.0.0.2"
REALM = "carrier.test"
Script = Callable[[Request], Response | None]


class FakeCarrier(asyncio.DatagramProtocol):
    """Answers each REGISTER with what ``script`` returns (None: silence)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[Request] = []
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if not isinstance(message, Request):
            return
        if any(r.headers.get("Via") == message.headers.get("Via") for r in self.received):
            return  # a retransmission
        self.received.append(message)
        response = self.script(message)
        if response is not None and self.transport is not None:
            self.transport.sendto(response.serialize(), addr)  # type: ignore[attr-defined]


@asynccontextmanager
async def carrier(script: Script) -> AsyncIterator[tuple[FakeCarrier, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: FakeCarrier(script), local_addr=(CARRIER, 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


@asynccontextmanager
async def manager_for(*trunks: TrunkConfig, stop_timeout: float = 5.0,
                      **kw: object) -> AsyncIterator[tuple[TrunkManager, list[object]]]:
    manager = TrunkManager(trunks, **kw)  # type: ignore[arg-type]
    unconsumed: list[object] = []

    def factory(listening: list[tuple[str, str, int]]) -> Endpoint:
        return Endpoint(EndpointConfig(sent_by=sent_by(listening), t1=0.01, t2=0.04))

    def on_event(event: Event) -> None:
        if not manager.on_event(event):
            unconsumed.append(event)

    sip: AsyncEndpoint[Event] = AsyncEndpoint(factory, ["udp:127.0.0.1:0"], on_event=on_event)
    await sip.start()
    try:
        manager.start(sip)
        yield manager, unconsumed
    finally:
        await manager.stop(timeout=stop_timeout)
        await sip.close()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def reg_trunk(port: int, **kw: object) -> TrunkConfig:
    args: dict[str, object] = dict(name="carrier", kind="register", host=CARRIER, port=port,
                                   username="4930111", password="s3cret", realm=REALM,
                                   register_expiry=300)
    args.update(kw)
    return TrunkConfig(**args)  # type: ignore[arg-type]


def ok(request: Request, expires: int = 300) -> Response:
    response = make_response(request, 200, to_tag=new_tag())
    response.headers.add("Contact", f"{request.headers.get('Contact')};expires={expires}")
    return response


async def test_registers_through_a_challenge_and_consumes_only_its_own_events() -> None:
    server = DigestServer(REALM, b"s" * 32, algorithms=("MD5",))
    creds = {"4930111": make_credentials("4930111", REALM, "s3cret", ("MD5",))}

    def script(request: Request) -> Response:
        if request.headers.get("Expires") == "0":
            return ok(request, 0)
        if server.verify(request, "127.0.0.1", creds.get, 0.0).ok:
            return ok(request)
        return server.challenge(request, "127.0.0.1", 0.0)

    async with carrier(script) as (fake, port), manager_for(reg_trunk(port)) as (manager, other):
        await until(lambda: manager.states()["carrier"] == "registered")
        health = manager.health()["carrier"]
        assert health["failures"] == 0 and 295 <= int(str(health["expires_in"])) <= 300
        contact = fake.received[0].headers.get("Contact") or ""
        assert contact.startswith("<sip:4930111@127.0.0.1:")
        assert manager.contact_for(manager.trunks["carrier"]) in contact
        # events that are not ours are left to the server
        stray = ResponseReceived(ok(fake.received[0]), "t-unknown", Peer("udp", CARRIER, port))
        assert manager.on_event(stray) is False
        assert manager.on_event(TransactionTimedOut("t-unknown")) is False
        assert manager.on_event(RequestReceived(fake.received[0], Peer("udp", CARRIER, port),
                                                "t-x")) is False
        assert other == []
    assert [r.headers.get("Expires") for r in fake.received] == ["300", "300", "0"]
    assert manager.states()["carrier"] == "stopped"


async def test_silent_carrier_times_out_backs_off_and_stop_is_bounded() -> None:
    async with carrier(lambda request: None) as (fake, port), \
            manager_for(reg_trunk(port), retry_base=0.2, stop_timeout=3.0) as (manager, _):
        await until(lambda: int(str(manager.health()["carrier"].get("failures", 0))) >= 2)
        health = manager.health()["carrier"]
        assert health["state"] in ("failed", "registering")
        assert manager.registrations["carrier"].last_error == "timeout"
        assert len(fake.received) >= 2
    # stopped from FAILED (nothing sent) or REGISTERING (the Expires: 0 times out in 0.64 s)
    assert manager.states()["carrier"] == "stopped"


async def test_423_then_registered_with_min_expires() -> None:
    def script(request: Request) -> Response:
        if request.headers.get("Expires") == "60":
            response = make_response(request, 423, to_tag=new_tag())
            response.headers.add("Min-Expires", "900")
            return response
        return ok(request, int(request.headers.get("Expires") or 0))

    async with carrier(script) as (fake, port), \
            manager_for(reg_trunk(port, register_expiry=60)) as (manager, _):
        await until(lambda: manager.states()["carrier"] == "registered")
        assert manager.registrations["carrier"].granted == 900
    assert [r.headers.get("Expires") for r in fake.received][:2] == ["60", "900"]


async def test_wrong_realm_is_refused_and_logged_as_security_event() -> None:
    evil = DigestServer("evil.test", b"e" * 32, algorithms=("MD5",))
    async with carrier(lambda r: evil.challenge(r, "127.0.0.1", 0.0)) as (fake, port), \
            manager_for(reg_trunk(port), retry_base=0.1) as (manager, _):
        await until(lambda: int(str(manager.health()["carrier"]["refused_challenges"])) >= 2)
        assert manager.health()["carrier"]["state"] in ("failed", "registering")
    assert fake.received and all("Authorization" not in r.headers for r in fake.received)


async def test_unusable_trunk_does_not_stop_the_others() -> None:
    async with carrier(lambda r: ok(r)) as (_fake, port), manager_for(
        reg_trunk(port, name="tcp-only", transport="tcp"),  # we listen on UDP only
        reg_trunk(port, name="good"),
        TrunkConfig(name="static", kind="ip", host="203.0.113.1"),
    ) as (manager, _):
        await until(lambda: manager.states()["good"] == "registered")
        assert manager.states()["tcp-only"] == "idle"
        assert manager.states()["static"] == "ip"
        assert manager.identify(Peer("udp", "203.0.113.1", 5060)) is manager.trunks["static"]


async def test_state_changes_are_told_to_on_state() -> None:
    seen: list[tuple[str, str]] = []

    def script(request: Request) -> Response:
        return ok(request, 0 if request.headers.get("Expires") == "0" else 300)

    async with carrier(script) as (_fake, port), manager_for(reg_trunk(port)) as (manager, _):
        manager.on_state = lambda trunk, state, reason: seen.append((trunk.name, state))
        await until(lambda: ("carrier", "registered") in seen)
    assert seen[-1] == ("carrier", "stopped") or ("carrier", "registered") in seen
