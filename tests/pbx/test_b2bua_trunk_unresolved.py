"""An outbound call through a trunk whose host is a DNS name that has not resolved yet fails at
once: the caller gets 503 with Retry-After, the call is logged once (``call.trunk_unresolved``)
and nothing goes to the network for it. The same call once the name has resolved is sent to
the resolved address (the control that shows the test can fail).

The B2BUA runs with a fake SIP endpoint (records what would be sent), a real media engine on
loopback, and the real store → directory → router with a digest-authenticated caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from features import default_features
from media.aio import MediaEngine
from pbx.b2bua import B2bua
from pbx.callcontrol import CallRecord, FeatureRegistry
from pbx.directory import Directory
from pbx.routing.router import Router
from pbx.store import Store
from pbx.trunks import TrunkConfig
from sipcore.digest import DigestClient, DigestServer
from sipcore.message import Request, Response, parse_message
from sipcore.transaction import RequestReceived
from sipcore.transport import Peer

REALM = "asyncpbx"
PHONE = Peer("udp", "127.0.0.1", 5099)
CARRIER_NAME = "sip.carrier.example"
CARRIER_ADDRESS = "192.0.2.7"


class FakeSip:
    """What the B2BUA uses of an AsyncEndpoint; records requests and responses."""

    def __init__(self) -> None:
        self.endpoint = SimpleNamespace(
            config=SimpleNamespace(sent_by={"udp": ("127.0.0.1", 5060)}))
        self.requests: list[tuple[Request, Peer]] = []
        self.responses: list[tuple[Response, str | None]] = []
        self.cancelled: list[str] = []

    def send_request(self, request: Request, peer: Peer) -> str:
        self.requests.append((request, peer))
        return f"client-{len(self.requests)}"

    def send_response(self, response: Response, transaction_id: str | None = None) -> None:
        self.responses.append((response, transaction_id))

    def cancel(self, tx: str, reason: str | None = None) -> None:
        self.cancelled.append(tx)

    def finals(self, tx: str) -> list[Response]:
        return [r for r, t in self.responses if t == tx and r.status >= 200]


class FakeTrunks:
    """The TrunkManager surface the B2BUA reads for an outbound call."""

    def __init__(self, trunk: TrunkConfig, resolve_retry: float = 30.0) -> None:
        self.trunks = {trunk.key: trunk}
        self.resolve_retry = resolve_retry

    def inbound(self, request: Request, peer: Peer) -> TrunkConfig | None:
        return None  # the caller is a phone, not a carrier

    def contact_for(self, trunk: TrunkConfig, user: str | None = None) -> str:
        return f"sip:{user or 'asyncpbx'}@127.0.0.1:5060"

    def answer_challenge(self, *args: Any, **kwargs: Any) -> Request | None:
        return None


class LogRecorder:
    """A structlog-like logger: every call is recorded as (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def record(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))
        return record

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for _, event, fields in self.lines if event == name]


def invite(call_id: str, dialled: str = "0301234567") -> Request:
    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
           "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
    text = (f"INVITE sip:{dialled}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-{call_id};rport\r\n"
            "From: <sip:100@127.0.0.1>;tag=caller1\r\n"
            f"To: <sip:{dialled}@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            "Contact: <sip:100@127.0.0.1:5099>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@asynccontextmanager
async def pbx_with_trunk(tmp_path: Path, *, resolved: bool) -> AsyncIterator[
        tuple[B2bua, FakeSip, LogRecorder, list[CallRecord]]]:
    store = Store(tmp_path, domain="127.0.0.1")
    store.ensure_default_tenant("127.0.0.1", REALM)
    directory = Directory(store)
    store.add_user("100", "pw100", REALM)
    store.add_number("+49309876543", user="100")
    # A DNS-named IP trunk needs no --allow now (the trunk manager resolves its name).
    row = store.add_trunk("carrier", kind="ip", host=CARRIER_NAME)
    trunk = TrunkConfig.from_store(row, tenant="default")
    assert trunk.named and not trunk.addresses
    if resolved:
        trunk = trunk.with_addresses([CARRIER_ADDRESS])

    sip, log = FakeSip(), LogRecorder()
    records: list[CallRecord] = []
    digest = DigestServer(REALM, b"n" * 32, proxy=True, algorithms=("MD5",))

    def lookup(username: str) -> Any:
        return directory.credentials(REALM, username)

    engine = MediaEngine("127.0.0.1", (48000, 48999))
    await engine.start()
    b2b = B2bua(sip, engine, digest=digest, lookup=lookup, registrar=SimpleNamespace(bindings=lambda aor, now: []),  # type: ignore[arg-type]
                domain="127.0.0.1", user_exists=lambda ext: False, log=log, seclog=log,
                on_record=records.append, features=FeatureRegistry(default_features()))
    b2b.auth_for = lambda request: (digest, lookup)
    b2b.router = Router(directory)
    b2b.trunks = FakeTrunks(trunk)  # type: ignore[assignment]
    try:
        yield b2b, sip, log, records
    finally:
        await b2b.close()
        await engine.close()
        store.close()


async def place_call(b2b: B2bua, sip: FakeSip, call_id: str) -> str:
    """Send the caller's INVITE, answer the 407 with the device's credentials; the id of the
    authenticated INVITE's server transaction."""
    first = invite(call_id)
    b2b.handle_event(RequestReceived(first, PHONE, f"{call_id}-tx1"))
    (challenge,) = sip.finals(f"{call_id}-tx1")
    assert challenge.status == 407
    again = DigestClient().authorize(first, challenge, "100", "pw100", realm=REALM)
    b2b.handle_event(RequestReceived(again, PHONE, f"{call_id}-tx2"))
    return f"{call_id}-tx2"


async def test_call_to_an_unresolved_trunk_fails_fast_with_retry_after(tmp_path: Path) -> None:
    async with pbx_with_trunk(tmp_path, resolved=False) as (b2b, sip, log, records):
        tx = await place_call(b2b, sip, "unresolved-1")
        await until(lambda: bool(sip.finals(tx)))
        (final,) = sip.finals(tx)
        assert final.status == 503
        assert final.headers.get("Retry-After") == "30"  # the manager's DNS retry delay
        await until(lambda: not b2b.calls)
        assert sip.requests == [] and sip.cancelled == []  # nothing to the network
        (logged,) = log.events("call.trunk_unresolved")
        assert logged["trunk"].endswith("/carrier") and logged["host"] == CARRIER_NAME
        assert logged["call_id"] == "unresolved-1"
        assert log.events("call.outbound") == []
        assert records and records[-1].status == 503
        assert records[-1].direction == "outbound"


async def test_retry_after_follows_the_managers_retry_delay(tmp_path: Path) -> None:
    async with pbx_with_trunk(tmp_path, resolved=False) as (b2b, sip, log, _):
        assert isinstance(b2b.trunks, FakeTrunks)
        b2b.trunks.resolve_retry = 0.2  # never "Retry-After: 0"
        tx = await place_call(b2b, sip, "unresolved-2")
        await until(lambda: bool(sip.finals(tx)))
        assert sip.finals(tx)[0].headers.get("Retry-After") == "1"
        await until(lambda: not b2b.calls)
        assert len(log.events("call.trunk_unresolved")) == 1 and sip.requests == []


async def test_call_to_a_resolved_named_trunk_goes_to_its_address(tmp_path: Path) -> None:
    async with pbx_with_trunk(tmp_path, resolved=True) as (b2b, sip, log, _):
        tx = await place_call(b2b, sip, "resolved-1")
        await until(lambda: bool(sip.requests))
        (request, peer), *_ = sip.requests
        assert request.method == "INVITE" and peer == Peer("udp", CARRIER_ADDRESS, 5060)
        assert str(request.uri).startswith("sip:+49301234567@" + CARRIER_NAME)
        assert sip.finals(tx) == []  # ringing the carrier, not refused
        assert log.events("call.trunk_unresolved") == []
        assert len(log.events("call.outbound")) == 1
