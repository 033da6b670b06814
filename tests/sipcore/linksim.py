"""An in-memory network of sans-IO endpoints on a fake clock, with drop/delay/duplicate switches.

Every endpoint is a :class:`Node` at ``(host, port)``; what it queues in ``data_to_send`` is
delivered to the node at the destination address after ``delay`` seconds, unless the link drops
it; it may also be delivered twice.  Time only moves when :meth:`Net.run` jumps to the next
packet arrival or endpoint timer, so a 32 s Timer B costs microseconds of real time.  The clock
is kept on a microsecond grid.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from sipcore.endpoint import Endpoint, EndpointConfig, Event
from sipcore.message import Request, Response, parse_message
from sipcore.transport import Peer, TransportName

Handler = Callable[["Node", Event], None]


@dataclass
class Packet:
    """One message on the wire (for assertions)."""

    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    data: bytes
    dropped: bool

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode("latin-1")

    def message(self) -> Request | Response:
        return parse_message(self.data)


@dataclass
class Node:
    """An endpoint on the simulated network plus the TU logic the test gives it."""

    net: Net
    host: str
    port: int
    endpoint: Endpoint
    transport: TransportName = "udp"
    handler: Handler | None = None
    events: list[Event] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def peer_of(self, other: Node) -> Peer:
        """How this node addresses ``other``."""
        conn = 1 if self.transport != "udp" else None
        return Peer(self.transport, other.host, other.port, conn)

    def send_request(self, request: Request, to: Node) -> str:
        tx = self.endpoint.send_request(request, self.peer_of(to), self.net.now)
        self.net.pump()
        return tx

    def send_response(self, response: Response) -> bool:
        ok = self.endpoint.send_response(response, self.net.now)
        self.net.pump()
        return ok

    def of_type(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


class Net:
    """The simulated network and clock."""

    def __init__(self, *, delay: float = 0.01, seed: int = 0) -> None:
        self.now = 0.0
        self.delay = delay
        #: Probability that a packet is lost / delivered twice.
        self.drop_rate = 0.0
        self.duplicate_rate = 0.0
        #: A predicate deciding per packet whether to drop it (in addition to drop_rate).
        self.drop_if: Callable[[Packet], bool] | None = None
        self.rng = random.Random(seed)
        self.nodes: dict[tuple[str, int], Node] = {}
        self.log: list[Packet] = []
        self._queue: list[tuple[float, int, tuple[str, int], tuple[str, int], bytes]] = []
        self._seq = 0

    def add(
        self,
        host: str,
        port: int = 5060,
        *,
        transport: TransportName = "udp",
        handler: Handler | None = None,
        t1: float = 0.5,
        **config: object,
    ) -> Node:
        cfg = EndpointConfig(sent_by={transport: (host, port)}, t1=t1, **config)  # type: ignore[arg-type]
        node = Node(self, host, port, Endpoint(cfg), transport, handler)
        self.nodes[node.address] = node
        return node

    # -- moving packets
    def pump(self) -> None:
        """Move queued output of every endpoint onto the wire and hand events to handlers."""
        busy = True
        while busy:
            busy = False
            for node in list(self.nodes.values()):
                for data, peer in node.endpoint.data_to_send():
                    busy = True
                    self._launch(node, data, (peer.host, peer.port))
                for event in node.endpoint.events():
                    busy = True
                    node.events.append(event)
                    if node.handler is not None:
                        node.handler(node, event)

    def _launch(self, node: Node, data: bytes, dst: tuple[str, int]) -> None:
        packet = Packet(self.now, node.address, dst, data, False)
        lost = self.rng.random() < self.drop_rate or (
            self.drop_if is not None and self.drop_if(packet)
        )
        packet.dropped = lost
        self.log.append(packet)
        if lost:
            return
        copies = 2 if self.rng.random() < self.duplicate_rate else 1
        for i in range(copies):
            self._seq += 1
            at = round(self.now + self.delay * (1 + i), 6)
            heapq.heappush(self._queue, (at, self._seq, node.address, dst, data))

    def next_time(self) -> float | None:
        times = [t for n in self.nodes.values() if (t := n.endpoint.get_timer()) is not None]
        if self._queue:
            times.append(self._queue[0][0])
        return min(times) if times else None

    def step(self) -> bool:
        """Advance to the next thing that happens; False when nothing is left."""
        t = self.next_time()
        if t is None:
            return False
        self.now = max(self.now, t)
        while self._queue and self._queue[0][0] <= self.now:
            _, _, src, dst, data = heapq.heappop(self._queue)
            target = self.nodes.get(dst)
            if target is None:
                continue
            conn = 1 if target.transport != "udp" else None
            target.endpoint.receive_datagram(
                data, Peer(target.transport, src[0], src[1], conn), self.now
            )
        for node in self.nodes.values():
            node.endpoint.handle_timer(self.now)
        self.pump()
        return True

    def run(self, until: float = 300.0, stop: Callable[[], bool] | None = None) -> None:
        """Run until ``stop()`` holds, nothing is left to do, or the clock passes ``until``."""
        self.pump()
        while (stop is None or not stop()) and (t := self.next_time()) is not None:
            if t > until:
                break
            self.step()

    def sent(self, src: Node, prefix: str) -> list[Packet]:
        """Packets sent by ``src`` whose first line starts with ``prefix``."""
        return [p for p in self.log if p.src == src.address and p.first_line.startswith(prefix)]
