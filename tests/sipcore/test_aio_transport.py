"""The asyncio transports (UDP, TCP, TLS, WS, WSS) driven on loopback through a tiny fake Endpoint.

The fake answers every request with 200 (copying Via/From/To/Call-ID/CSeq, RFC 3261 §8.2.6) and
records what it received, so these tests exercise only the transport layer: framing, keep-alives,
connection reuse, limits, timeouts and WebSocket handshakes.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import socket
import ssl
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sipcore.aio.endpoint import AsyncEndpoint
from sipcore.aio.listen import ListenSpec, parse_listen_spec
from sipcore.aio.stream import bad_request
from sipcore.aio.transport import _PENDING_MAX_AGE, TransportLimits
from sipcore.transport import Peer

pytestmark = pytest.mark.timeout(60)

# -- a fake sans-IO endpoint ------------------------------------------------------------------------


def answer(data: bytes, status: bytes = b"200 OK") -> bytes | None:
    """A response copying the §8.2.6 headers, or None for anything that is not a sane request."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.split(b"\r\n")
    if lines[0].startswith(b"SIP/2.0") or not lines[0].endswith(b" SIP/2.0"):
        return None
    keep = [
        line
        for line in lines[1:]
        if line.split(b":", 1)[0].strip().lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
    ]
    if len(keep) < 5:
        return None
    return b"\r\n".join([b"SIP/2.0 " + status, *keep, b"Content-Length: 0"]) + b"\r\n\r\n"


class FakeEndpoint:
    """Implements the Endpoint contract just enough for the transports."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Peer]] = []
        self.failed: list[Peer] = []
        self.sent: list[tuple[Any, Peer]] = []
        self.timer: float | None = None
        self.fired: list[float] = []
        self._out: list[tuple[bytes, Peer]] = []
        self._events: list[tuple[str, bytes, Peer]] = []

    def receive_datagram(self, data: bytes, peer: Peer, now: float) -> None:
        self.received.append((data, peer))
        response = answer(data)
        if response is not None:
            self._out.append((response, peer))
            self._events.append(("request", data, peer))
        elif data.startswith(b"SIP/2.0 "):
            self._events.append(("response", data, peer))

    def transport_failed(self, peer: Peer, now: float) -> None:
        self.failed.append(peer)

    def set_owner(self, transaction_id: str, owner: object) -> bool:
        return True

    def send_request(self, request: Any, peer: Peer, now: float, *,
                     owner: object = None) -> str:
        data = request.serialize()
        data = data.replace(b"SIP/2.0/UDP", b"SIP/2.0/" + peer.via_transport.encode(), 1)
        self.sent.append((request, peer))
        self._out.append((data, peer))
        return f"key{len(self.sent)}"

    def send_response(
        self, response: Any, now: float, *, transaction_id: str | None = None
    ) -> bool:
        raise AssertionError("not used")

    def cancel(self, transaction_id: str, now: float, reason: str | None = None) -> None:
        raise AssertionError("not used")

    def statistics(self) -> dict[str, int]:
        return {"received": len(self.received)}

    def data_to_send(self) -> list[tuple[bytes, Peer]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[tuple[str, bytes, Peer]]:
        out, self._events = self._events, []
        return out

    def flush_trying(self, now: float) -> bool:
        return False

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        if self.timer is not None and now >= self.timer:
            self.fired.append(now)
            self.timer = None


class RawRequest:
    """Stands in for sipcore.message.Request (only serialize() and wire_size() are used)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data

    def wire_size(self) -> int:
        return len(self.data)


def options(n: int = 1, via: str = "UDP 127.0.0.1:5999", pad: int = 0) -> bytes:
    body = b"x" * pad
    return (
        f"OPTIONS sip:pbx@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{via};branch=z9hG4bK-{n};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@127.0.0.1>;tag=a{n}\r\n"
        f"To: <sip:pbx@127.0.0.1>\r\n"
        f"Call-ID: call-{n}@test\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# -- clients ---------------------------------------------------------------------------------------


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))

    async def recv(self, timeout: float = 5.0) -> bytes:
        data, _ = await asyncio.wait_for(self.queue.get(), timeout)
        return data


async def udp_client(host: str = "127.0.0.1") -> UdpClient:
    _, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        UdpClient, local_addr=(host, 0)
    )
    return proto


async def read_message(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return head + await reader.readexactly(length)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def read_eof(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Read until the server closes; returns what came before the close."""
    async with asyncio.timeout(timeout):
        data = b""
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


def host_port(aep: AsyncEndpoint[Any], transport: str) -> tuple[str, int]:
    for name, host, port in aep.listening():
        if name == transport:
            return host, port
    raise AssertionError(f"no {transport} listener")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- TLS material ----------------------------------------------------------------------------------


def write_self_signed(d: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1 and its key, as PEM files in ``d``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return d / "cert.pem", d / "key.pem"


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server_ctx(cert_files: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert_files)
    return ctx


@pytest.fixture
def client_ctx(cert_files: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert_files[0]))
    return ctx


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
async def server(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> AsyncIterator[tuple[AsyncEndpoint[Any], FakeEndpoint]]:
    fake = FakeEndpoint()
    aep: AsyncEndpoint[Any] = AsyncEndpoint(
        fake,
        ["udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0", "ws:127.0.0.1:0", "wss:127.0.0.1:0"],
        server_ssl=server_ctx,
        client_ssl=client_ctx,
        limits=TransportLimits(max_message_size=4000, max_connections_per_source=8),
        on_event=lambda event: None,
    )
    await aep.start()
    yield aep, fake
    await aep.close()


# -- listen specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("udp:127.0.0.1:5060", ListenSpec("udp", "127.0.0.1", 5060)),
        ("TCP:[::1]:5061", ListenSpec("tcp", "::1", 5061)),
        ("tls:0.0.0.0:0", ListenSpec("tls", "0.0.0.0", 0)),
        ("ws:localhost:8080", ListenSpec("ws", "localhost", 8080)),
        ("wss:[::]:443", ListenSpec("wss", "::", 443)),
    ],
)
def test_parse_listen_spec(text: str, spec: ListenSpec) -> None:
    assert parse_listen_spec(text) == spec
    assert parse_listen_spec(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("127.0.0.1:5060", "unknown transport"),
        ("sctp:127.0.0.1:5060", "unknown transport"),
        ("udp", "expected 'transport:host:port'"),
        ("udp:127.0.0.1", "missing port"),
        ("udp:127.0.0.1:abc", "not a number"),
        ("udp:127.0.0.1:70000", "outside 0-65535"),
        ("tcp:::1:5060", "must be written '[addr]:port'"),
        ("tcp:[::1:5060", "must be written '[addr]:port'"),
        ("tcp:[nonsense]:5060", "not an IPv6 address"),
        ("tcp::5060", "not an IP address or host name"),
    ],
)
def test_parse_listen_spec_names_the_fault(text: str, fault: str) -> None:
    with pytest.raises(ValueError, match=fault.replace("[", r"\[").replace("]", r"\]")):
        parse_listen_spec(text)


def test_bad_listen_spec_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        AsyncEndpoint(FakeEndpoint(), ["quic:127.0.0.1:0"])


# -- UDP -------------------------------------------------------------------------------------------


async def test_listening_reports_bound_ports(server: tuple[AsyncEndpoint[Any], FakeEndpoint]) -> None:
    aep, _ = server
    names = sorted(name for name, _, _ in aep.listening())
    assert names == ["tcp", "tls", "udp", "ws", "wss"]
    assert all(port > 0 and host == "127.0.0.1" for _, host, port in aep.listening())


async def test_udp_round_trip_answers_the_source_port(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    client = await udp_client()
    assert client.transport is not None
    client.transport.sendto(options(1), host_port(aep, "udp"))
    response = await client.recv()
    assert response.startswith(b"SIP/2.0 200 OK\r\n")
    assert b"CSeq: 1 OPTIONS" in response
    _, peer = fake.received[-1]
    assert peer.transport == "udp" and peer.conn_id is None
    assert peer.port == client.transport.get_extra_info("sockname")[1]
    client.transport.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_MEMINFO is Linux's")
async def test_udp_queued_bytes_shows_what_waits_unread(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    # the overload detector's queue depth: datagrams sent while the loop is not reading
    # (this coroutine does not yield) wait in the kernel buffer, and are gone once read
    aep, fake = server
    assert aep.transports.udp_queued_bytes() == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(50):
            s.sendto(options(100 + i), host_port(aep, "udp"))
        queued = aep.transports.udp_queued_bytes()
        assert queued >= 50 * len(options(100)), queued
        for _ in range(200):
            await asyncio.sleep(0.01)
            if aep.transports.udp_queued_bytes() == 0 and len(fake.received) >= 50:
                break
        assert aep.transports.udp_queued_bytes() == 0


async def test_a_screen_answers_statelessly_and_keeps_the_order_of_what_it_lets_through(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    # the overload screen (sipcore/stateless.py via pbx/app.py): a refused message is answered
    # by the screen and never reaches the endpoint; what passes reaches it in arrival order,
    # handed on in turns; an empty answer drops silently
    aep, fake = server
    layer = aep.transports

    def screen(data: bytes, peer: Peer) -> tuple[bytes, Peer] | None:
        if b"CSeq: 5 " in data:
            return b"SIP/2.0 503 Service Unavailable\r\nCSeq: 5 OPTIONS\r\n\r\n", peer
        if b"CSeq: 6 " in data:
            return b"", peer
        return None

    layer.screen = screen
    client = await udp_client()
    assert client.transport is not None
    for n in range(1, 80):
        client.transport.sendto(options(n), host_port(aep, "udp"))
    answers = [await client.recv() for _ in range(78)]  # 77 from the endpoint, 1 refusal
    refused = [a for a in answers if a.startswith(b"SIP/2.0 503")]
    assert len(refused) == 1 and b"CSeq: 5 " in refused[0]
    for _ in range(300):
        if len(fake.received) >= 77:
            break
        await asyncio.sleep(0.01)
    seqs = [int(data.split(b"CSeq: ")[1].split(b" ")[0]) for data, _ in fake.received]
    assert seqs == [n for n in range(1, 80) if n not in (5, 6)]
    stats = layer.statistics()
    assert stats["answered_statelessly"] == 1 and stats["absorbed_statelessly"] == 1
    layer.screen = None
    client.transport.sendto(options(200), host_port(aep, "udp"))
    for _ in range(300):
        if len(fake.received) >= 78:
            break
        await asyncio.sleep(0.01)
    assert b"CSeq: 200 " in fake.received[-1][0]
    assert layer.udp_queued_bytes() == 0
    client.transport.close()


async def test_what_waited_behind_the_screen_longer_than_t1_is_dropped(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    # a stalled loop (here: a blocking sleep) leaves the screened backlog older than T1: its
    # senders have retransmitted by then, so the old copies are dropped, not worked through
    import time

    aep, fake = server
    layer = aep.transports
    layer.screen = lambda data, peer: None  # everything passes, and queues while screening
    before = len(fake.received)
    for n in range(20):
        layer.deliver(options(300 + n), Peer("udp", "127.0.0.1", 5999))
    time.sleep(0.6)
    layer.deliver(options(400), Peer("udp", "127.0.0.1", 5999))  # fresh: handed on
    for _ in range(100):
        await asyncio.sleep(0.01)
        if layer.udp_queued_bytes() == 0 and len(fake.received) > before:
            break
    layer.screen = None
    assert [d.split(b"CSeq: ")[1].split(b" ")[0] for d, _ in fake.received[before:]] == [b"400"]
    assert layer.statistics()["dropped_screened_stale"] == 20


async def test_the_backlog_delay_is_the_shortest_wait_behind_the_screen(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    # take_sojourn (the overload detector's CoDel signal): the shortest wait in the screened
    # backlog of what was handed on since the last call; None when nothing was
    import time

    aep, fake = server
    layer = aep.transports
    assert layer.take_sojourn() is None
    layer.screen = lambda data, peer: None
    before = len(fake.received)
    for n in range(12):
        layer.deliver(options(500 + n), Peer("udp", "127.0.0.1", 5999))
    time.sleep(0.1)  # the loop is busy: all twelve wait at least 100 ms
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(fake.received) >= before + 12:
            break
    waited = layer.take_sojourn()
    assert waited is not None and 0.1 <= waited < _PENDING_MAX_AGE
    assert layer.take_sojourn() is None  # taken: the next interval starts empty
    layer.deliver(options(600), Peer("udp", "127.0.0.1", 5999))  # no stall: handed on at once
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(fake.received) >= before + 13:
            break
    layer.screen = None
    quick = layer.take_sojourn()
    assert quick is not None and quick < 0.05


async def test_udp_oversize_dropped_then_still_answers(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    client = await udp_client()
    assert client.transport is not None
    client.transport.sendto(options(1, pad=5000), host_port(aep, "udp"))
    client.transport.sendto(b"\r\n\r\n", host_port(aep, "udp"))
    client.transport.sendto(options(2), host_port(aep, "udp"))
    response = await client.recv()
    assert b"CSeq: 2 OPTIONS" in response
    assert aep.statistics()["udp_dropped_oversize"] == 1
    assert aep.statistics()["udp_keepalives_received"] == 1
    assert len(fake.received) == 1
    # CPython's transport reads max_size bytes per datagram: ours is the limit + 1, not 256 KiB.
    listener = aep.transports._udp[0].transport
    assert getattr(listener, "max_size", 4001) == 4001
    client.transport.close()


# -- TCP -------------------------------------------------------------------------------------------


async def test_tcp_round_trip_on_the_same_connection(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
    writer.write(options(1, via="TCP 127.0.0.1:5999"))
    response = await read_message(reader)
    assert response.startswith(b"SIP/2.0 200 OK") and b"CSeq: 1 OPTIONS" in response
    _, peer = fake.received[-1]
    assert peer.transport == "tcp" and peer.conn_id is not None
    assert peer.port == writer.get_extra_info("sockname")[1]
    assert aep.statistics()["connections_tcp"] == 1
    writer.close()
    await wait_for(lambda: fake.failed)
    assert fake.failed == [peer]  # the connection is gone: the Endpoint learns it


async def test_tcp_message_split_at_every_byte(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = options(7, via="TCP 127.0.0.1:5999", pad=10)
    for cut in range(1, len(message)):
        writer.write(message[:cut])
        await writer.drain()
        await asyncio.sleep(0)
        writer.write(message[cut:])
        response = await read_message(reader)
        assert b"CSeq: 7 OPTIONS" in response
    assert [data for data, _ in fake.received] == [message] * (len(message) - 1)
    writer.close()


async def test_tcp_one_byte_at_a_time(server: tuple[AsyncEndpoint[Any], FakeEndpoint]) -> None:
    aep, fake = server
    reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
    message = options(3, via="TCP 127.0.0.1:5999", pad=3)
    for i in range(len(message)):
        writer.write(message[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0)
    assert b"CSeq: 3 OPTIONS" in await read_message(reader)
    assert fake.received[-1][0] == message
    writer.close()


async def test_tcp_several_messages_in_one_segment(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
    writer.write(b"".join(options(n, via="TCP 127.0.0.1:5999", pad=n) for n in (1, 2, 3)))
    seqs = [await read_message(reader) for _ in range(3)]
    assert [b"CSeq: %d OPTIONS" % n in r for n, r in zip((1, 2, 3), seqs, strict=True)] == [True] * 3
    assert len({peer.conn_id for _, peer in fake.received}) == 1
    writer.close()


async def test_tcp_crlf_keepalive_answered_with_crlf(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    writer.write(b"\r\n\r\n" + options(4, via="TCP 127.0.0.1:5999"))
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    assert b"CSeq: 4 OPTIONS" in await read_message(reader)
    assert aep.statistics()["stream_keepalives_received"] == 2
    assert len(fake.received) == 1
    writer.close()


async def test_tcp_oversize_closes_connection_server_still_answers(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
    writer.write(options(5, via="TCP 127.0.0.1:5999", pad=6000))
    rest = await read_eof(reader)
    assert rest.startswith(b"SIP/2.0 513 Message Too Large\r\n")  # then closed
    assert b"CSeq: 5 OPTIONS" in rest
    assert not any(b"CSeq: 5 " in data for data, _ in fake.received)
    writer.close()
    reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
    writer.write(options(6, via="TCP 127.0.0.1:5999"))
    assert b"CSeq: 6 OPTIONS" in await read_message(reader)
    assert aep.statistics()["stream_parse_errors"] == 1
    writer.close()


async def test_tcp_missing_content_length_answered_400_and_closed(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
    good = options(1, via="TCP 127.0.0.1:5999")
    writer.write(good + good.replace(b"Content-Length: 0\r\n", b"").replace(b"CSeq: 1", b"CSeq: 2"))
    assert b"CSeq: 1 OPTIONS" in await read_message(reader)
    rest = await read_eof(reader)
    assert rest.startswith(b"SIP/2.0 400 Missing Content-Length\r\n")
    assert b"CSeq: 2 OPTIONS" in rest
    assert len(fake.received) == 1
    writer.close()


async def test_connection_limit_per_source() -> None:
    fake = FakeEndpoint()
    limits = TransportLimits(max_connections_per_source=3)
    async with AsyncEndpoint(fake, ["tcp:127.0.0.1:0"], limits=limits, on_event=print) as aep:
        addr = host_port(aep, "tcp")
        conns = [await asyncio.open_connection(*addr) for _ in range(5)]
        # The two beyond the limit are closed at once, without a byte.
        for reader, _ in conns[3:]:
            assert await read_eof(reader) == b""
        for n, (reader, writer) in enumerate(conns[:3]):
            writer.write(options(n, via="TCP 127.0.0.1:5999"))
            assert b"CSeq: %d OPTIONS" % n in await read_message(reader)
        # Another source address is not affected.
        reader, writer = await asyncio.open_connection(*addr, local_addr=("127.0.0.2", 0))
        writer.write(options(9, via="TCP 127.0.0.2:5999"))
        assert b"CSeq: 9 OPTIONS" in await read_message(reader)
        assert aep.statistics()["connections_rejected_source_limit"] == 2
        # Closing one frees a slot for that source.
        conns[0][1].close()
        await wait_for(lambda: aep.statistics()["connections_current"] == 3)
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(options(10, via="TCP 127.0.0.1:5999"))
        assert b"CSeq: 10 OPTIONS" in await read_message(reader)
        for _, w in [*conns, (reader, writer)]:
            w.close()


async def test_total_connection_limit() -> None:
    fake = FakeEndpoint()
    limits = TransportLimits(max_connections=2)
    async with AsyncEndpoint(fake, ["tcp:127.0.0.1:0"], limits=limits, on_event=print) as aep:
        addr = host_port(aep, "tcp")
        conns = [
            await asyncio.open_connection(*addr, local_addr=(f"127.0.0.{n}", 0)) for n in (1, 2, 3)
        ]
        assert await read_eof(conns[2][0]) == b""
        assert aep.statistics()["connections_rejected_total_limit"] == 1
        for _, w in conns:
            w.close()


async def test_idle_connection_closed() -> None:
    fake = FakeEndpoint()
    limits = TransportLimits(idle_timeout=0.3)
    async with AsyncEndpoint(fake, ["tcp:127.0.0.1:0"], limits=limits, on_event=print) as aep:
        reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
        writer.write(options(1, via="TCP 127.0.0.1:5999"))
        await read_message(reader)
        assert await read_eof(reader) == b""
        assert aep.statistics()["connections_closed_idle"] == 1
        await wait_for(lambda: len(fake.failed) == 1)
        assert fake.failed[0].conn_id == fake.received[0][1].conn_id
        writer.close()


async def test_half_sent_message_closed_slowloris() -> None:
    fake = FakeEndpoint()
    limits = TransportLimits(partial_message_timeout=0.3, idle_timeout=30)
    async with AsyncEndpoint(fake, ["tcp:127.0.0.1:0"], limits=limits, on_event=print) as aep:
        reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
        message = options(1, via="TCP 127.0.0.1:5999")
        writer.write(message[:40])

        async def trickle() -> None:
            # A byte every 50 ms keeps the connection "active" but never finishes the message.
            for i in range(40, len(message) - 1):
                await asyncio.sleep(0.05)
                if writer.is_closing():
                    return
                writer.write(message[i : i + 1])

        task = asyncio.create_task(trickle())
        assert await read_eof(reader) == b""
        task.cancel()
        assert aep.statistics()["connections_closed_slow"] == 1
        assert fake.received == []
        writer.close()


# -- TLS -------------------------------------------------------------------------------------------


async def test_tls_round_trip(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint], client_ctx: ssl.SSLContext
) -> None:
    aep, fake = server
    host, port = host_port(aep, "tls")
    reader, writer = await asyncio.open_connection(host, port, ssl=client_ctx)
    writer.write(options(1, via="TLS 127.0.0.1:5999"))
    assert b"CSeq: 1 OPTIONS" in await read_message(reader)
    assert fake.received[-1][1].transport == "tls"
    # Several messages in one write, one split over TLS records, keep-alive included.
    writer.write(b"".join(options(n, via="TLS 127.0.0.1:5999", pad=1500) for n in (2, 3)))
    writer.write(b"\r\n\r\n")
    for n in (2, 3):
        assert b"CSeq: %d OPTIONS" % n in await read_message(reader)
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    assert len({peer.conn_id for _, peer in fake.received}) == 1
    writer.close()


async def test_tls_below_1_2_refused(server: tuple[AsyncEndpoint[Any], FakeEndpoint]) -> None:
    aep, _ = server
    assert aep.transports.server_ssl is not None
    assert aep.transports.server_ssl.minimum_version >= ssl.TLSVersion.TLSv1_2
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # that is the point here
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.wait_for(asyncio.open_connection(*host_port(aep, "tls"), ssl=ctx), 5)


async def test_tls_handshakes_in_progress_count_against_limits(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """Plain TCP connections to the TLS port that never start a handshake are admitted (and
    limited) at accept time, and closed after tls_handshake_timeout."""
    fake = FakeEndpoint()
    limits = TransportLimits(max_connections_per_source=2, tls_handshake_timeout=0.5)
    async with AsyncEndpoint(
        fake, ["tls:127.0.0.1:0"], server_ssl=server_ctx, limits=limits, on_event=print
    ) as aep:
        addr = host_port(aep, "tls")
        idle = [await asyncio.open_connection(*addr) for _ in range(3)]
        assert await read_eof(idle[2][0]) == b""  # third from this source: closed at once
        assert aep.statistics()["connections_rejected_source_limit"] == 1
        for reader, _ in idle[:2]:
            assert await read_eof(reader) == b""  # no handshake: closed after the timeout
        assert aep.statistics()["tls_handshake_timeouts"] == 2
        # Garbage instead of a ClientHello fails the handshake.
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
        await read_eof(reader)
        assert aep.statistics()["tls_handshakes_failed"] == 1
        # A real client still gets through.
        reader, writer = await asyncio.open_connection(*addr, ssl=client_ctx)
        writer.write(options(1, via="TLS 127.0.0.1:5999"))
        assert b"CSeq: 1 OPTIONS" in await read_message(reader)
        assert aep.statistics()["tls_handshakes_completed"] == 1
        for _, w in [*idle, (reader, writer)]:
            w.close()


# -- outbound connections ----------------------------------------------------------------------------


async def test_outbound_tcp_opens_then_reuses_a_connection(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, _ = server
    accepted: list[asyncio.StreamReader] = []
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(reader)
        while True:
            try:
                got.put_nowait(await read_message(reader, 30))
            except (asyncio.IncompleteReadError, TimeoutError):
                writer.close()
                return

    remote = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = remote.sockets[0].getsockname()[1]
    for n in (1, 2):
        aep.send_request(RawRequest(options(n, via="TCP 127.0.0.1:5999")), Peer("tcp", "127.0.0.1", port))
    assert b"CSeq: 1 OPTIONS" in await asyncio.wait_for(got.get(), 5)
    assert b"CSeq: 2 OPTIONS" in await asyncio.wait_for(got.get(), 5)
    assert len(accepted) == 1
    assert aep.statistics()["connections_opened"] == 1
    remote.close()


async def test_outbound_connect_failure_reported(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]  # bound, not listening: connection refused
    peer = Peer("tcp", "127.0.0.1", port)
    aep.send_request(RawRequest(options(1, via="TCP 127.0.0.1:5999")), peer)
    await wait_for(lambda: fake.failed)
    assert fake.failed == [peer]
    assert aep.statistics()["connections_open_failed"] == 1
    sock.close()


async def test_outbound_tls_verifies_certificates(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint], server_ctx: ssl.SSLContext
) -> None:
    aep, _ = server  # its client context trusts our test certificate
    fake2 = FakeEndpoint()
    async with AsyncEndpoint(
        fake2, ["tls:127.0.0.1:0"], server_ssl=server_ctx, on_event=print
    ) as other:
        host, port = host_port(other, "tls")
        # Trusted: the message arrives.
        aep.send_request(RawRequest(options(1, via="TLS 127.0.0.1:5999")), Peer("tls", host, port))
        await wait_for(lambda: fake2.received)
        # Not trusted (default context, self-signed certificate): refused, reported as a failure.
        fake3 = FakeEndpoint()
        async with AsyncEndpoint(fake3, ["udp:127.0.0.1:0"], on_event=print) as third:
            peer = Peer("tls", host, port)
            third.send_request(RawRequest(options(2, via="TLS 127.0.0.1:5999")), peer)
            await wait_for(lambda: fake3.failed)
            assert fake3.failed == [peer]
        # Verification off: accepted.
        fake4 = FakeEndpoint()
        async with AsyncEndpoint(
            fake4, ["udp:127.0.0.1:0"], verify_tls=False, on_event=print
        ) as fourth:
            fourth.send_request(RawRequest(options(3, via="TLS 127.0.0.1:5999")), Peer("tls", host, port))
            await wait_for(lambda: len(fake2.received) == 2)
            assert b"CSeq: 3 OPTIONS" in fake2.received[1][0]


async def test_response_goes_back_on_the_connection_it_came_from(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
    writer.write(options(1, via="TCP 127.0.0.1:5999"))
    await read_message(reader)
    _, peer = fake.received[-1]
    # A request from us to that address reuses the connection (no new connect, conn_id or not).
    aep.send_request(RawRequest(options(2, via="TCP 127.0.0.1:5999")), Peer("tcp", peer.host, peer.port))
    assert b"CSeq: 2 OPTIONS" in await read_message(reader)
    assert aep.statistics().get("connections_opened", 0) == 0
    writer.close()


async def test_large_request_over_udp_switches_to_tcp(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.put_nowait(await read_message(reader))
        writer.close()

    remote = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = remote.sockets[0].getsockname()[1]
    small = RawRequest(options(1, pad=100))
    large = RawRequest(options(2, pad=1300))
    assert aep.choose_peer(small, Peer("udp", "127.0.0.1", port)).transport == "udp"
    aep.send_request(large, Peer("udp", "127.0.0.1", port))
    message = await asyncio.wait_for(got.get(), 5)
    assert b"CSeq: 2 OPTIONS" in message
    assert b"Via: SIP/2.0/TCP " in message  # the Endpoint wrote the Via for the TCP peer
    assert fake.sent[-1][1] == Peer("tcp", "127.0.0.1", port)
    assert aep.statistics()["udp_switched_to_tcp"] == 1
    remote.close()


async def test_no_tcp_listener_no_switch() -> None:
    fake = FakeEndpoint()
    async with AsyncEndpoint(fake, ["udp:127.0.0.1:0"], on_event=print) as aep:
        large = RawRequest(options(2, pad=1500))
        assert aep.choose_peer(large, Peer("udp", "127.0.0.1", 9)).transport == "udp"


# -- WebSocket -------------------------------------------------------------------------------------


async def ws_url(aep: AsyncEndpoint[Any], transport: str) -> str:
    host, port = host_port(aep, transport)
    return f"{'wss' if transport == 'wss' else 'ws'}://{host}:{port}/"


@pytest.mark.parametrize("transport", ["ws", "wss"])
async def test_ws_round_trip(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint], client_ctx: ssl.SSLContext, transport: str
) -> None:
    aep, fake = server
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            await ws_url(aep, transport), protocols=("sip",), ssl=client_ctx
        ) as ws:
            assert ws.protocol == "sip"
            await ws.send_str(options(1, via="WS invalid.invalid").decode())
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.TEXT
            assert msg.data.startswith("SIP/2.0 200 OK") and "CSeq: 1 OPTIONS" in msg.data
            await ws.send_bytes(options(2, via="WS invalid.invalid"))
            msg = await ws.receive(timeout=5)
            assert "CSeq: 2 OPTIONS" in msg.data
    _, peer = fake.received[-1]
    assert peer.transport == transport and peer.conn_id is not None


async def test_ws_without_sip_subprotocol_refused(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, _ = server
    async with aiohttp.ClientSession() as session:
        for protocols in [(), ("chat",)]:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(await ws_url(aep, "ws"), protocols=protocols)
            assert info.value.status == 400
    assert aep.statistics()["ws_rejected_subprotocol"] == 2


async def test_ws_origin_allow_list() -> None:
    fake = FakeEndpoint()
    async with AsyncEndpoint(
        fake, ["ws:127.0.0.1:0"], ws_origins=["https://pbx.example.com"], on_event=print
    ) as aep:
        url = await ws_url(aep, "ws")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(url, protocols=("sip",), origin="https://evil.example")
            assert info.value.status == 403
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(url, protocols=("sip",))  # no Origin at all
            assert info.value.status == 403
            async with session.ws_connect(
                url, protocols=("sip",), origin="https://PBX.example.com"
            ) as ws:
                await ws.send_str(options(1, via="WS invalid.invalid").decode())
                assert "CSeq: 1 OPTIONS" in (await ws.receive(timeout=5)).data
        assert aep.statistics()["ws_rejected_origin"] == 2


async def test_ws_message_over_limit_closes(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    aep, fake = server
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(await ws_url(aep, "ws"), protocols=("sip",)) as ws:
            await ws.send_str(options(1, via="WS x.invalid", pad=5000).decode())
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert msg.data == 1009  # RFC 6455 §7.4.1: message too big
        async with session.ws_connect(await ws_url(aep, "ws"), protocols=("sip",)) as ws:
            await ws.send_str(options(2, via="WS x.invalid").decode())
            assert "CSeq: 2 OPTIONS" in (await ws.receive(timeout=5)).data
    assert aep.statistics()["ws_dropped_oversize"] == 1
    assert not any(b"CSeq: 1 " in data for data, _ in fake.received)


async def test_ws_fragmented_message_and_ping_raw_client(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint],
) -> None:
    """A message in three fragments with a ping in between; the pong and the answer come back."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        Ping,
        Pong,
        Request,
        TextMessage,
    )

    aep, fake = server
    reader, writer = await asyncio.open_connection(*host_port(aep, "ws"))
    client = WSConnection(ConnectionType.CLIENT)
    writer.write(client.send(Request(host="127.0.0.1", target="/", subprotocols=["sip"])))
    events: list[Any] = []

    async def more() -> None:
        client.receive_data(await asyncio.wait_for(reader.read(65536), 5))
        events.extend(client.events())

    while not events:
        await more()
    assert isinstance(events.pop(0), AcceptConnection)
    text = options(1, via="WS x.invalid").decode()
    parts = [text[:10], text[10:100], text[100:]]
    writer.write(client.send(TextMessage(data=parts[0], message_finished=False)))
    writer.write(client.send(Ping(payload=b"hi")))
    writer.write(client.send(TextMessage(data=parts[1], message_finished=False)))
    writer.write(client.send(TextMessage(data=parts[2], message_finished=True)))
    received = ""
    got_pong = False
    async with asyncio.timeout(5):
        while "CSeq: 1 OPTIONS" not in received or not got_pong:
            if not events:
                await more()
            event = events.pop(0)
            if isinstance(event, Pong):
                got_pong = event.payload == b"hi"
            elif isinstance(event, TextMessage):
                received += event.data
    assert fake.received[-1][0] == text.encode()
    writer.close()


async def test_ws_keepalive_and_server_ping_keep_a_quiet_ua() -> None:
    """CRLFCRLF in a text message is answered with CRLF; a quiet UA that answers our Ping stays
    connected past the idle timeout, one that does not is closed."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import Request

    fake = FakeEndpoint()
    limits = TransportLimits(idle_timeout=0.4)
    async with AsyncEndpoint(fake, ["ws:127.0.0.1:0"], limits=limits, on_event=print) as aep:
        url = await ws_url(aep, "ws")
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, protocols=("sip",), autoping=True) as ws:
                await ws.send_str("\r\n\r\n")
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.TEXT and msg.data == "\r\n"
                # Quiet for three idle timeouts; aiohttp answers the server's pings meanwhile
                # (inside receive(), which returns only for a real message).
                pending = asyncio.create_task(ws.receive())
                await asyncio.sleep(1.2)
                assert not pending.done() and not ws.closed
                await ws.send_str(options(1, via="WS x.invalid").decode())
                assert "CSeq: 1 OPTIONS" in (await asyncio.wait_for(pending, 5)).data
        stats = aep.statistics()
        assert stats["ws_pings_sent"] >= 2 and stats.get("connections_closed_idle", 0) == 0
        # A client that never answers pings.
        reader, writer = await asyncio.open_connection(*host_port(aep, "ws"))
        client = WSConnection(ConnectionType.CLIENT)
        writer.write(client.send(Request(host="127.0.0.1", target="/", subprotocols=["sip"])))
        await read_eof(reader)
        assert aep.statistics()["connections_closed_idle"] == 1
        writer.close()


async def test_ws_handshake_never_finished_is_closed() -> None:
    fake = FakeEndpoint()
    limits = TransportLimits(partial_message_timeout=0.3)
    async with AsyncEndpoint(fake, ["ws:127.0.0.1:0"], limits=limits, on_event=print) as aep:
        reader, writer = await asyncio.open_connection(*host_port(aep, "ws"))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert await read_eof(reader) == b""
        assert aep.statistics()["connections_closed_slow"] == 1
        writer.close()


# -- pump: timer and events --------------------------------------------------------------------------


async def test_timer_and_event_iterator() -> None:
    fake = FakeEndpoint()
    aep: AsyncEndpoint[Any] = AsyncEndpoint(fake, ["udp:127.0.0.1:0"])
    await aep.start()
    loop = asyncio.get_running_loop()
    deadline = fake.timer = loop.time() + 0.05
    aep.pump()
    await wait_for(lambda: fake.fired)
    assert fake.fired == [pytest.approx(fake.fired[0])] and fake.fired[0] >= deadline
    assert aep._timer is None  # the core asked for no further timer

    client = await udp_client()
    assert client.transport is not None
    client.transport.sendto(options(1), host_port(aep, "udp"))
    events = []
    async for event in aep:
        events.append(event)
        break
    assert events[0][0] == "request" and b"CSeq: 1 OPTIONS" in events[0][1]
    client.transport.close()
    await aep.close()
    assert [e async for e in aep] == []


# -- robustness --------------------------------------------------------------------------------------


def test_bad_request_copies_headers() -> None:
    head = options(1, via="TCP 127.0.0.1:5999").replace(b"Content-Length: 0", b"Content-Length: x")
    response = bad_request(head, 400, "Bad Content-Length")
    assert response is not None
    assert response.startswith(b"SIP/2.0 400 Bad Content-Length\r\n")
    assert b"Call-ID: call-1@test" in response and b"CSeq: 1 OPTIONS" in response
    assert bad_request(b"garbage\r\n\r\n", 400, "x") is None
    assert bad_request(head.replace(b"Call-ID: call-1@test\r\n", b""), 400, "x") is None
    assert bad_request(head.replace(b"OPTIONS sip", b"ACK sip").replace(b"1 OPTIONS", b"1 ACK"), 400, "x") is None


async def test_malformed_flood_then_still_answers_and_fds_return(
    server: tuple[AsyncEndpoint[Any], FakeEndpoint], client_ctx: ssl.SSLContext
) -> None:
    aep, _ = server
    baseline = open_fds()
    rnd = __import__("random").Random(7)
    good = options(1, via="TCP 127.0.0.1:5999")
    junk = [
        b"\n",
        b"\x00" * 40,
        b"INVITE\r\n\r\n",
        b"SIP/2.0 200\r\nContent-Length: 99999999999\r\n\r\n",
        good.replace(b"Content-Length: 0", b"Content-Length: -1"),
        good.replace(b"Content-Length: 0", b"Content-Length: 99999"),
        good[:60],
        bytes(rnd.randrange(256) for _ in range(300)),
    ]
    client = await udp_client()
    assert client.transport is not None
    for i in range(1, 3001):
        sample = junk[i % len(junk)]
        if i % 3 == 0:
            cut = rnd.randrange(len(good))
            sample = good[:cut] + bytes([rnd.randrange(256)]) + good[cut + 1 :]
        client.transport.sendto(sample, host_port(aep, "udp"))
        if i % 50 == 0:  # let the server drain its socket: no kernel drops, every one is read
            await wait_for(lambda i=i: aep.statistics().get("udp_datagrams_received", 0) >= i)
    for i in range(150):
        transport = ("tcp", "tls", "ws")[i % 3]
        host, port = host_port(aep, transport)
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=client_ctx if transport == "tls" else None
            )
        except OSError:
            continue
        for _ in range(3):
            writer.write(junk[rnd.randrange(len(junk))] or b"x")
        if i % 2:
            writer.transport.abort()
        else:
            writer.close()
    # The server still answers over every transport.
    client.transport.sendto(options(77), host_port(aep, "udp"))
    while True:
        response = await client.recv()
        if b"CSeq: 77 OPTIONS" in response:
            break
    client.transport.close()
    reader, writer = await asyncio.open_connection(*host_port(aep, "tcp"))
    writer.write(options(78, via="TCP 127.0.0.1:5999"))
    assert b"CSeq: 78 OPTIONS" in await read_message(reader)
    writer.close()
    await writer.wait_closed()
    await wait_for(lambda: aep.statistics()["connections_current"] == 0, 10)
    await wait_for(lambda: open_fds() <= baseline, 10)


async def test_close_closes_everything() -> None:
    baseline = open_fds()
    fake = FakeEndpoint()
    aep: AsyncEndpoint[Any] = AsyncEndpoint(
        fake, ["udp:127.0.0.1:0", "tcp:127.0.0.1:0", "ws:127.0.0.1:0"], on_event=print
    )
    await aep.start()
    conns = [await asyncio.open_connection(*host_port(aep, "tcp")) for _ in range(3)]
    await wait_for(lambda: aep.statistics()["connections_current"] == 3)
    await aep.close()
    for reader, writer in conns:
        assert await read_eof(reader) == b""
        writer.close()
        await writer.wait_closed()
    assert fake.failed == []  # our own shutdown is not a transport failure
    await wait_for(lambda: open_fds() <= baseline)


# -- the layer's TaskGroup ---------------------------------------------------------------------


async def test_close_ends_a_name_lookup_in_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer's tasks live in its TaskGroup: close() cancels them and waits for them."""
    looking_up = asyncio.Event()
    ended: list[str] = []

    async def hanging_getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        looking_up.set()
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append("lookup")
        return []

    aep: AsyncEndpoint[Any] = AsyncEndpoint(FakeEndpoint(), ["udp:127.0.0.1:0"], on_event=print)
    await aep.start()
    monkeypatch.setattr(aep.transports.loop, "getaddrinfo", hanging_getaddrinfo)
    aep.transports.send(b"OPTIONS", Peer("udp", "pbx.invalid", 5060))
    await asyncio.wait_for(looking_up.wait(), 5)
    assert aep.statistics()["tasks_current"] == 1
    await aep.close()
    assert ended == ["lookup"] and aep.transports.statistics()["tasks_current"] == 0


async def test_a_bug_in_a_transport_task_is_logged_and_the_layer_lives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A task that raises something unexpected (here getaddrinfo's UnicodeError for a bad
    name) is logged with its name; the other tasks and the layer go on."""
    import structlog

    async def broken_getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        raise UnicodeError("label empty or too long")

    fake = FakeEndpoint()
    async with AsyncEndpoint(fake, ["udp:127.0.0.1:0"], on_event=print) as aep:
        monkeypatch.setattr(aep.transports.loop, "getaddrinfo", broken_getaddrinfo)
        with structlog.testing.capture_logs() as logs:
            aep.transports.send(b"OPTIONS", Peer("udp", "a..b", 5060))
            await wait_for(lambda: aep.transports.statistics()["task_failures"] == 1)
        failed = [e for e in logs if e["event"] == "task_scope.child_failed"]
        assert failed and failed[0]["task"] == "udp resolve a..b"
        client = await udp_client()
        assert client.transport is not None
        client.transport.sendto(options(1), host_port(aep, "udp"))
        assert b"200 OK" in await client.recv()
        client.transport.close()
