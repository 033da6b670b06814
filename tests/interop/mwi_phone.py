"""A minimal message-waiting phone for the interop tests: one UDP socket on loopback that
SUBSCRIBEs to ``message-summary`` (answering the 407 digest challenge), refreshes, unsubscribes,
and answers each NOTIFY 200 — its subscription is :class:`sipcore.subscription.Subscriber`, the
same sans-IO table the PBX's notifier mirrors. It runs on the test's event loop (the in-process
server shares it), every receive bounded by a timeout."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from dataclasses import dataclass, field

from sipcore.digest import DigestClient
from sipcore.message import Request, Response, make_response, parse_message
from sipcore.message_summary import MessageSummary, parse
from sipcore.subscription import Subscriber

REALM = "asyncpbx-test"


@dataclass
class Notified:
    """One NOTIFY the phone got: its Subscription-State and its parsed body."""

    state: str
    summary: MessageSummary | None
    in_dialog: bool


@dataclass
class MwiPhone:
    """``user``/``password`` subscribing to its own box at the PBX ``target``."""

    user: str
    password: str
    target: tuple[str, int]
    sock: socket.socket = field(init=False)
    subscriber: Subscriber = field(init=False)
    call_id: str = field(init=False)
    to_tag: str | None = None
    notifies: list[Notified] = field(default_factory=list)
    #: how many of :attr:`notifies` :meth:`next_notify` has handed out
    taken: int = 0
    _seen: set[tuple[str, int]] = field(default_factory=set)
    _cseq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _branch: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.call_id = f"mwi-{self.user}-{time.monotonic_ns()}"
        self.subscriber = Subscriber(600)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str = "SUBSCRIBE", *, expires: int | None = 600,
                event: str = "message-summary", in_dialog: bool = False,
                call_id: str | None = None) -> Request:
        host, port = self.target
        to_tag = f";tag={self.to_tag}" if in_dialog and self.to_tag else ""
        lines = [
            f"{method} sip:{self.user}@{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-mwi{next(self._branch)}"
            f"-{time.monotonic_ns()};rport",
            f"From: <sip:{self.user}@{host}>;tag=phone-{self.user}",
            f"To: <sip:{self.user}@{host}>{to_tag}",
            f"Call-ID: {call_id or self.call_id}",
            f"CSeq: {next(self._cseq)} {method}",
            f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>",
            f"Event: {event}",
            "Accept: application/simple-message-summary",
            "Max-Forwards: 70",
        ]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        lines += ["Content-Length: 0", "", ""]
        req = parse_message("\r\n".join(lines).encode())
        assert isinstance(req, Request)
        return req

    async def recv(self, timeout: float = 5.0) -> Request | Response:
        """The next message (NOTIFYs are answered 200 and recorded as they arrive)."""
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), timeout)
        msg = parse_message(data)
        if isinstance(msg, Request) and msg.method == "NOTIFY":
            self.sock.sendto(make_response(msg, 200).serialize(), self.target)
            key = (msg.call_id, msg.cseq.seq)
            if key in self._seen:
                return msg  # a retransmission (our 200 was late): the same NOTIFY
            self._seen.add(key)
            state = msg.headers.get("Subscription-State") or ""
            in_dialog = msg.call_id == self.call_id
            if in_dialog:
                self.subscriber.notify(state, time.time())
            self.notifies.append(Notified(state, parse(msg.body) if msg.body else None,
                                          in_dialog))
        return msg

    async def response_to(self, req: Request, timeout: float = 5.0) -> Response:
        """Send ``req``; its final response (NOTIFYs meanwhile are answered and kept)."""
        self.sock.sendto(req.serialize(), self.target)
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.recv(max(0.1, deadline - time.monotonic()))
            if (isinstance(msg, Response) and msg.status >= 200
                    and msg.cseq.seq == req.cseq.seq and msg.cseq.method == req.method):
                return msg

    async def send_with_auth(self, req: Request) -> Response:
        """``req``; when challenged, again with credentials (CSeq + 1, new branch)."""
        resp = await self.response_to(req)
        if resp.status not in (401, 407):
            return resp
        again = self.request(req.method, expires=int(req.headers.get("Expires") or 600),
                             event=req.headers.get("Event") or "message-summary")
        authorized = DigestClient().authorize(again, resp, self.user, self.password,
                                              realm=REALM)
        return await self.response_to(authorized)

    async def subscribe(self) -> Response:
        """The initial SUBSCRIBE (through the challenge); the 2xx makes the dialog."""
        self.subscriber.start()
        resp = await self.send_with_auth(self.request())
        expires = resp.headers.get("Expires")
        self.subscriber.response(resp.status, int(expires) if expires else None, time.time())
        if resp.status < 300:
            self.to_tag = resp.to_tag
        return resp

    async def refresh(self, expires: int = 600) -> Response:
        resp = await self.response_to(self.request(expires=expires, in_dialog=True))
        got = resp.headers.get("Expires")
        self.subscriber.response(resp.status, int(got) if got else None, time.time())
        return resp

    async def unsubscribe(self) -> Response:
        self.subscriber.unsubscribe()
        resp = await self.response_to(self.request(expires=0, in_dialog=True))
        self.subscriber.response(resp.status, 0, time.time())
        return resp

    async def next_notify(self, timeout: float = 5.0) -> Notified:
        """Wait for the next NOTIFY (one already received and not yet taken comes first)."""
        deadline = time.monotonic() + timeout
        while len(self.notifies) <= self.taken:
            await self.recv(max(0.1, deadline - time.monotonic()))
        self.taken += 1
        return self.notifies[self.taken - 1]
