"""AsyncEndpoint with the real sans-IO Endpoint on loopback: OPTIONS over every transport,
rport, the UDP→TCP switch for large requests, timers, and robustness under malformed input."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sipcore.aio.endpoint import AsyncEndpoint, sent_by
from sipcore.aio.transport import TransportLimits
from sipcore.endpoint import Endpoint, EndpointConfig
from sipcore.headers import Headers
from sipcore.message import Request, Response, make_response, new_branch, parse_message
from sipcore.transaction import (
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportErrored,
)
from sipcore.transport import Peer
from tests.sipcore.test_aio_transport import (
    host_port,
    open_fds,
    options,
    read_message,
    udp_client,
    wait_for,
    write_self_signed,
)

pytestmark = pytest.mark.timeout(60)

ALL = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0", "ws:127.0.0.1:0", "wss:127.0.0.1:0"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def contexts(certs: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(*certs)
    client = ssl.create_default_context(cafile=str(certs[0]))
    return server, client


def make_endpoint(listening: list[tuple[str, str, int]], t1: float = 0.5) -> Endpoint:
    return Endpoint(EndpointConfig(sent_by=sent_by(listening), t1=t1))


class Pbx:
    """An AsyncEndpoint around a real Endpoint, collecting events."""

    def __init__(self, aep: AsyncEndpoint[Event], events: list[Event]) -> None:
        self.aep = aep
        self.events = events


@pytest.fixture
async def pbx(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> AsyncIterator[Pbx]:
    events: list[Event] = []
    aep: AsyncEndpoint[Event] = AsyncEndpoint(
        make_endpoint,
        ALL,
        server_ssl=contexts[0],
        client_ssl=contexts[1],
        limits=TransportLimits(max_message_size=8000),
        on_event=events.append,
    )
    async with aep:
        yield Pbx(aep, events)


def check_ok(data: bytes, seq: int) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    assert message.status == 200
    assert message.cseq.seq == seq and message.cseq.method == "OPTIONS"
    return message


async def test_options_over_udp(pbx: Pbx) -> None:
    client = await udp_client()
    assert client.transport is not None
    client.transport.sendto(options(1), host_port(pbx.aep, "udp"))
    check_ok(await client.recv(), 1)
    client.transport.close()
    assert pbx.aep.statistics()["sip_responses_sent_2xx"] == 1


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_options_over_streams(
    pbx: Pbx, contexts: tuple[ssl.SSLContext, ssl.SSLContext], transport: str
) -> None:
    host, port = host_port(pbx.aep, transport)
    reader, writer = await asyncio.open_connection(
        host, port, ssl=contexts[1] if transport == "tls" else None
    )
    writer.write(options(1, via=f"{transport.upper()} 127.0.0.1:5999"))
    response = check_ok(await read_message(reader), 1)
    assert response.top_via.transport == transport.upper()
    writer.close()


@pytest.mark.parametrize("transport", ["ws", "wss"])
async def test_options_over_websocket(
    pbx: Pbx, contexts: tuple[ssl.SSLContext, ssl.SSLContext], transport: str
) -> None:
    host, port = host_port(pbx.aep, transport)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"{transport}://{host}:{port}/", protocols=("sip",), ssl=contexts[1]
        ) as ws:
            await ws.send_str(options(1, via=f"{transport.upper()} df7jal23ls0d.invalid").decode())
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.TEXT
            check_ok(msg.data.encode(), 1)


async def test_rport_response_goes_to_source_port(pbx: Pbx) -> None:
    client = await udp_client()
    other = await udp_client()
    assert client.transport is not None and other.transport is not None
    other_port = other.transport.get_extra_info("sockname")[1]
    # Via names another port; with rport the answer still goes where the request came from.
    client.transport.sendto(options(1, via=f"UDP 127.0.0.1:{other_port}"), host_port(pbx.aep, "udp"))
    response = check_ok(await client.recv(), 1)
    assert response.top_via.rport == client.transport.get_extra_info("sockname")[1]
    assert response.top_via.received == "127.0.0.1"
    # Without rport, §18.2.2 says: to the sent-by port.
    request = options(2, via=f"UDP 127.0.0.1:{other_port}").replace(b";rport", b"")
    client.transport.sendto(request, host_port(pbx.aep, "udp"))
    check_ok(await other.recv(), 2)
    assert client.queue.empty()
    client.transport.close()
    other.transport.close()


def options_request(target: tuple[str, int], pad: int) -> Request:
    host, port = target
    headers = Headers(
        [
            ("From", "<sip:pbx@127.0.0.1>;tag=x1"),
            ("To", f"<sip:peer@{host}:{port}>"),
            ("Call-ID", f"big-{new_branch()}"),
            ("CSeq", "1 OPTIONS"),
            ("Content-Type", "text/plain"),
        ]
    )
    return Request("OPTIONS", f"sip:peer@{host}:{port}", headers, b"y" * pad)


async def test_large_request_over_udp_goes_over_tcp(pbx: Pbx) -> None:
    seen: list[Request] = []

    async def far_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = parse_message(await read_message(reader))
        assert isinstance(request, Request)
        seen.append(request)
        writer.write(make_response(request, 200).serialize())
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    server = await asyncio.start_server(far_end, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[:2]
    tx_id = pbx.aep.send_request(options_request(target, 1400), Peer("udp", *target))
    await wait_for(lambda: any(isinstance(e, ResponseReceived) for e in pbx.events))
    event = next(e for e in pbx.events if isinstance(e, ResponseReceived))
    assert event.transaction_id == tx_id and event.response.status == 200
    assert seen[0].top_via.transport == "TCP"
    assert seen[0].top_via.port == host_port(pbx.aep, "tcp")[1]
    assert pbx.aep.statistics()["udp_switched_to_tcp"] == 1
    server.close()


async def test_small_request_stays_on_udp_and_times_out(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """The timer pump: an unanswered OPTIONS over UDP is retransmitted and times out (Timer F)."""
    events: list[Event] = []
    listener = await udp_client()  # a peer that never answers
    assert listener.transport is not None
    target = listener.transport.get_extra_info("sockname")[:2]
    async with AsyncEndpoint(
        lambda listening: make_endpoint(listening, t1=0.01),
        ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"],
        on_event=events.append,
    ) as aep:
        tx_id = aep.send_request(options_request(target, 10), Peer("udp", *target))
        await wait_for(lambda: events, 10)
        assert events == [TransactionTimedOut(tx_id)]
        copies = []
        while not listener.queue.empty():
            copies.append(listener.queue.get_nowait()[0])
        assert len(copies) > 3 and len(set(copies)) == 1  # retransmissions, byte-identical
        assert aep.statistics().get("udp_switched_to_tcp", 0) == 0
    listener.transport.close()


async def test_transport_failure_reaches_the_transaction(pbx: Pbx) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound but not listening: refused
    target = sock.getsockname()[:2]
    tx_id = pbx.aep.send_request(options_request(target, 10), Peer("tcp", *target))
    await wait_for(lambda: pbx.events)
    assert pbx.events == [TransportErrored(tx_id)]
    sock.close()


async def test_events_as_async_iterator() -> None:
    aep: AsyncEndpoint[Event] = AsyncEndpoint(make_endpoint, ["udp:127.0.0.1:0"])
    await aep.start()
    client = await udp_client()
    assert client.transport is not None
    invite_like = options(5).replace(b"OPTIONS", b"MESSAGE").replace(
        b"Content-Length: 0", b"Content-Type: text/plain\r\nContent-Length: 2"
    ) + b"hi"
    client.transport.sendto(invite_like, host_port(aep, "udp"))
    async for event in aep:
        assert isinstance(event, RequestReceived)
        request = event.request
        assert request.method == "MESSAGE" and request.body == b"hi"
        assert aep.send_response(make_response(request, 202))
        break
    response = parse_message(await client.recv())
    assert isinstance(response, Response) and response.status == 202
    client.transport.close()
    await aep.close()


async def test_malformed_flood_then_still_answers_and_fds_return(
    pbx: Pbx, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    baseline = open_fds()
    rnd = random.Random(1)
    good = options(1, via="TCP 127.0.0.1:5999")
    corpus = [
        b"\x00\xff" * 30,
        b"OPTIONS sip:x SIP/2.0\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n\r\n",
        good.replace(b"CSeq: 1 OPTIONS", b"CSeq: 99999999999 OPTIONS"),
        good.replace(b"Content-Length: 0", b"Content-Length: 5"),
        good.replace(b"Content-Length: 0", b"Content-Length: 100000"),
        good.replace(b"Via: ", b"Via : "),
        good.replace(b"Call-ID", b"Call-ID\x00"),
        b"INVITE sip:x SIP/2.0\r\n" + b"X: y\r\n" * 300 + b"\r\n",
    ]

    def mutant() -> bytes:
        data = bytearray(rnd.choice(corpus) if rnd.random() < 0.3 else good)
        for _ in range(rnd.randrange(1, 6)):
            i = rnd.randrange(len(data))
            op = rnd.randrange(3)
            if op == 0:
                data[i] = rnd.randrange(256)
            elif op == 1:
                del data[i]
            else:
                data[i:i] = bytes([rnd.randrange(256)]) * rnd.randrange(1, 20)
        return bytes(data)

    client = await udp_client()
    assert client.transport is not None
    for i in range(1, 3001):
        client.transport.sendto(mutant(), host_port(pbx.aep, "udp"))
        if i % 50 == 0:  # let the server drain its socket: no kernel drops, every one is read
            await wait_for(lambda i=i: pbx.aep.statistics().get("udp_datagrams_received", 0) >= i)
    for i in range(120):
        transport = ("tcp", "tls", "ws", "wss")[i % 4]
        host, port = host_port(pbx.aep, transport)
        use_tls = contexts[1] if transport in ("tls", "wss") else None
        reader, writer = await asyncio.open_connection(host, port, ssl=use_tls)
        for _ in range(rnd.randrange(1, 4)):
            chunk = mutant()
            cut = rnd.randrange(len(chunk))
            writer.write(chunk[:cut])
            writer.write(chunk[cut:])
        if i % 2:
            writer.transport.abort()
        else:
            writer.close()
    # Still answering, over UDP and TCP.
    client.transport.sendto(options(4242), host_port(pbx.aep, "udp"))
    async with asyncio.timeout(10):
        while b"CSeq: 4242 OPTIONS" not in await client.recv():
            pass
    client.transport.close()
    reader, writer = await asyncio.open_connection(*host_port(pbx.aep, "tcp"))
    writer.write(options(4243, via="TCP 127.0.0.1:5999"))
    check_ok(await read_message(reader), 4243)
    writer.close()
    await writer.wait_closed()
    stats = pbx.aep.statistics()
    assert stats["sip_parse_errors"] > 100
    assert stats.get("endpoint_errors", 0) == 0
    await wait_for(lambda: pbx.aep.statistics()["connections_current"] == 0, 15)
    await wait_for(lambda: open_fds() <= baseline, 10)


async def test_bound_ports_reach_an_endpoint_built_beforehand() -> None:
    """An Endpoint made before binding (sent-by port 0, or none) learns the real ports."""
    endpoint = Endpoint(EndpointConfig(sent_by={"udp": ("pbx.example.com", 0)}))
    async with AsyncEndpoint(endpoint, ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], on_event=print) as aep:
        assert endpoint.config.sent_by == {
            "udp": ("pbx.example.com", host_port(aep, "udp")[1]),
            "tcp": ("127.0.0.1", host_port(aep, "tcp")[1]),
        }


def test_sent_by_brackets_ipv6_and_advertises() -> None:
    listening = [("udp", "::1", 5060), ("udp", "127.0.0.1", 5062), ("tcp", "0.0.0.0", 5061)]
    assert sent_by(listening) == {"udp": ("[::1]", 5060), "tcp": ("0.0.0.0", 5061)}
    assert sent_by(listening, "pbx.example.com")["tcp"] == ("pbx.example.com", 5061)


async def test_listen_failure_cleans_up() -> None:
    async with AsyncEndpoint(make_endpoint, ["tcp:127.0.0.1:0"], on_event=print) as first:
        _, port = host_port(first, "tcp")
        baseline = open_fds()
        second: AsyncEndpoint[Any] = AsyncEndpoint(
            make_endpoint, ["udp:127.0.0.1:0", f"tcp:127.0.0.1:{port}"], on_event=print
        )
        with pytest.raises(OSError):
            await second.start()
        assert open_fds() <= baseline


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback")
async def test_options_over_ipv6() -> None:
    async with AsyncEndpoint(make_endpoint, ["udp:[::1]:0", "tcp:[::1]:0"], on_event=print) as aep:
        assert {(t, h) for t, h, _ in aep.listening()} == {("udp", "::1"), ("tcp", "::1")}
        assert aep.endpoint.config.sent_by["udp"][0] == "[::1]"  # type: ignore[attr-defined]
        client = await udp_client("::1")
        assert client.transport is not None
        client.transport.sendto(options(1, via="UDP [::1]:5999"), host_port(aep, "udp"))
        check_ok(await client.recv(), 1)
        client.transport.close()
        reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
        writer.write(options(2, via="TCP [::1]:5999"))
        response = check_ok(await read_message(reader), 2)
        assert response.top_via.received == "::1"
        writer.close()


class _BrokenEndpoint:
    """A real Endpoint with a bug in its receive path (a wrapper: the compiled class cannot be
    subclassed)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def receive_datagram(self, data: bytes, peer: Peer, now: float) -> None:
        raise RuntimeError("bug in the core")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._endpoint, name)


async def test_a_core_bug_is_logged_with_its_fields_and_the_transport_lives() -> None:
    """The adapters log through structlog: the peer's fields reach the log line (a stdlib
    ``extra=`` used to drop them)."""
    import structlog

    def factory(listening: list[tuple[str, str, int]]) -> Any:
        return _BrokenEndpoint(make_endpoint(listening))

    async with AsyncEndpoint(factory, ["udp:127.0.0.1:0"], on_event=print) as aep:
        client = await udp_client()
        assert client.transport is not None
        with structlog.testing.capture_logs() as logs:
            client.transport.sendto(options(1), host_port(aep, "udp"))
            await wait_for(lambda: aep.statistics().get("endpoint_errors", 0) == 1)
        client.transport.close()
    failed = [e for e in logs if e["event"] == "sip.endpoint.receive_failed"]
    assert len(failed) == 1
    line = failed[0]
    assert (line["src"], line["transport"], line["logger"]) == ("127.0.0.1", "udp", "sip.endpoint")
    assert isinstance(line["port"], int) and line["port"] > 0
    assert line["log_level"] == "error" and line.get("exc_info") is True
