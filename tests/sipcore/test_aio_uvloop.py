"""The same transports under uvloop (what `asyncpbx serve` runs on): OPTIONS over every transport,
keep-alive, limits, a malformed flood, and a clean close."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest

from sipcore.aio.endpoint import AsyncEndpoint
from sipcore.aio.transport import TransportLimits
from sipcore.endpoint import Endpoint, EndpointConfig
from sipcore.message import Response, parse_message
from sipcore.transaction import Event
from sipcore.transport import Peer
from tests.sipcore.test_aio_endpoint import make_endpoint, options_request
from tests.sipcore.test_aio_transport import (
    host_port,
    open_fds,
    options,
    read_eof,
    read_message,
    udp_client,
    wait_for,
    write_self_signed,
)

uvloop = pytest.importorskip("uvloop")
pytestmark = pytest.mark.timeout(60)


def run(coro_factory: object) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro_factory())  # type: ignore[operator]


def status_of(data: bytes) -> tuple[int, int]:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message.status, message.cseq.seq


def test_every_transport_under_uvloop(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        events: list[Event] = []
        aep: AsyncEndpoint[Event] = AsyncEndpoint(
            make_endpoint,
            ["udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0", "ws:127.0.0.1:0"],
            server_ssl=server_ctx,
            limits=TransportLimits(max_message_size=4000, max_connections_per_source=20),
            on_event=events.append,
        )
        await aep.start()
        # UDP, including an oversize datagram that must be dropped.
        client = await udp_client()
        assert client.transport is not None
        client.transport.sendto(options(1, pad=4500), host_port(aep, "udp"))
        client.transport.sendto(options(2), host_port(aep, "udp"))
        assert status_of(await client.recv()) == (200, 2)
        assert aep.statistics()["udp_dropped_oversize"] == 1
        # TCP with keep-alive, TLS.
        reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
        writer.write(b"\r\n\r\n" + options(3, via="TCP 127.0.0.1:5999"))
        assert await reader.readexactly(2) == b"\r\n"
        assert status_of(await read_message(reader)) == (200, 3)
        writer.write(options(4, via="TCP 127.0.0.1:5999", pad=5000))
        assert (await read_eof(reader)).startswith(b"SIP/2.0 513 ")
        writer.close()
        await writer.wait_closed()
        await wait_for(lambda: aep.statistics()["connections_current"] == 0)
        # libuv opens one /dev/null per loop on the first accept (its EMFILE reserve): count
        # descriptors from here on.
        baseline = open_fds()
        reader, writer = await asyncio.open_connection(*host_port(aep, "tls"), ssl=client_ctx)
        writer.write(options(5, via="TLS 127.0.0.1:5999"))
        assert status_of(await read_message(reader)) == (200, 5)
        writer.close()
        # WebSocket.
        host, port = host_port(aep, "ws")
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://{host}:{port}/", protocols=("sip",)) as ws:
                await ws.send_str(options(6, via="WS x.invalid").decode())
                assert status_of((await ws.receive(timeout=5)).data.encode()) == (200, 6)
        # Junk over every transport, then still answering.
        for i in range(1, 1001):
            client.transport.sendto(b"\x00garbage %d\r\n\r\n" % i, host_port(aep, "udp"))
            if i % 50 == 0:
                await wait_for(lambda i=i: aep.statistics()["udp_datagrams_received"] >= i + 2)
        for i in range(30):
            r, w = await asyncio.open_connection(*host_port(aep, ("tcp", "ws")[i % 2]))
            w.write(b"GARBAGE / HTTP/9\r\nContent-Length: x\r\n\r\n")
            await read_eof(r)
            w.close()
        client.transport.sendto(options(7), host_port(aep, "udp"))
        assert status_of(await client.recv()) == (200, 7)
        client.transport.close()
        await wait_for(lambda: aep.statistics()["connections_current"] == 0)
        await wait_for(lambda: open_fds() <= baseline)
        await aep.close()
        await wait_for(lambda: open_fds() <= baseline - 4)  # the four listeners are gone too

    run(scenario)


def test_timer_fires_under_uvloop() -> None:
    async def scenario() -> None:
        events: list[Event] = []
        listener = await udp_client()
        assert listener.transport is not None
        target = listener.transport.get_extra_info("sockname")[:2]
        endpoint = Endpoint(EndpointConfig(t1=0.01))
        async with AsyncEndpoint(endpoint, ["udp:127.0.0.1:0"], on_event=events.append) as aep:
            tx_id = aep.send_request(options_request(target, 0), Peer("udp", *target))
            await wait_for(lambda: events, 10)
            assert [getattr(e, "transaction_id", None) for e in events] == [tx_id]
            assert type(events[0]).__name__ == "TransactionTimedOut"
        listener.transport.close()

    run(scenario)
