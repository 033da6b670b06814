"""A call answer-time prober: new calls through the PBX at a fixed low rate, INVITE → 200 OK.

The SIP answer time of a call as a caller sees it: the prober places calls as one user
(``caller``) to another (``callee``) that it is itself — it registers the callee's contact on
its own socket and answers the PBX's INVITE at once with 200 OK and SDP. So a probe crosses the
PBX twice (the caller's INVITE in, the callee's INVITE out; the callee's 200 in, the caller's 200
out), through routing, authentication, dialogs and the media allocator, on the event loop that
carries every other call; nothing but the PBX is between the two stamps. The time runs from
sending the INVITE that the PBX answers with 200 (the one with credentials: the first INVITE of
a call is challenged, then the nonce is reused with a rising nonce count, RFC 7616 §3.4.5, and
challenged again only when the PBX calls it stale) to the kernel's receive stamp of that 200
(``SO_TIMESTAMPNS``). Each answered call is ACKed and ended with BYE at once. As root the
process runs ``SCHED_FIFO`` (best effort), so the load generator beside it does not delay it.

The pipe protocol is :mod:`bench._sipprobe`'s: ``("mark",)`` answers with the answer times
(seconds) since the previous mark and the count of calls not answered within 2 s, ``("quit",)``
ends it once the calls still open have ended (at most 2 s): the PBX is left without them.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench._procs import _free_udp_port
from bench._sipprobe import LOST_AFTER, SO_TIMESTAMPNS, _realtime_priority
from bench.calls import register_contact
from sipcore.digest import DigestClient
from sipcore.errors import ParseError
from sipcore.message import Request, Response, make_response, new_tag, parse_message

SDP = ("v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
       "t=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


@dataclass
class _Call:
    """One probe call, from the caller's side."""

    call_id: str
    from_tag: str
    cseq: int = 1
    sent_ns: int = 0  # when the INVITE now outstanding went out (CLOCK_REALTIME)
    started_ns: int = 0
    answered: bool = False
    request: Request | None = field(default=None, repr=False)


class CallProber:
    """The prober's SIP: the caller's calls and the callee's answers on one UDP socket."""

    def __init__(self, sock: socket.socket, target: tuple[str, int], realm: str,
                 caller: tuple[str, str], callee: tuple[str, str], media_port: int) -> None:
        self.sock = sock
        self.target = target
        self.realm = realm
        self.caller, self.callee = caller, callee
        self.local = sock.getsockname()
        self.media_port = media_port
        self.digest = DigestClient()
        #: the last challenge, answered again for the next call (nonce reuse, nc + 1)
        self.challenge: Response | None = None
        self.calls: dict[str, _Call] = {}
        self.times: list[float] = []
        self.lost = 0
        self._n = 0

    def _branch(self) -> str:
        return f"z9hG4bK-cp-{os.urandom(6).hex()}"

    def _invite(self, call: _Call) -> Request:
        host, port = self.target
        lhost, lport = self.local
        body = SDP.format(port=self.media_port)
        text = (f"INVITE sip:{self.callee[0]}@{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {lhost}:{lport};branch={self._branch()};rport\r\n"
                f"From: <sip:{self.caller[0]}@{host}>;tag={call.from_tag}\r\n"
                f"To: <sip:{self.callee[0]}@{host}>\r\n"
                f"Call-ID: {call.call_id}\r\nCSeq: {call.cseq} INVITE\r\n"
                f"Contact: <sip:{self.caller[0]}@{lhost}:{lport}>\r\n"
                "Max-Forwards: 70\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}")
        msg = parse_message(text.encode())
        assert isinstance(msg, Request)
        return msg

    def _send_invite(self, call: _Call, challenge: Response | None) -> None:
        request = self._invite(call)
        if challenge is not None:
            request = self.digest.authorize(request, challenge, self.caller[0], self.caller[1],
                                            realm=self.realm)
        call.request = request
        call.sent_ns = time.time_ns()
        self.sock.sendto(request.serialize(), self.target)

    def start_call(self) -> None:
        """Place one probe call (with the last challenge's nonce when there is one)."""
        self._n += 1
        call = _Call(f"cp-{self._n}-{os.getpid()}@127.0.0.1", new_tag())
        call.started_ns = time.time_ns()
        self.calls[call.call_id] = call
        self._send_invite(call, self.challenge)

    def _in_dialog(self, call: _Call, method: str, cseq: int, response: Response,
                   branch: str | None = None) -> None:
        host, port = self.target
        lhost, lport = self.local
        contact = response.contacts[0].uri if response.status == 200 and response.contacts else None
        uri = str(contact) if contact is not None else f"sip:{self.callee[0]}@{host}:{port}"
        text = (f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {lhost}:{lport};branch={branch or self._branch()};rport\r\n"
                f"From: <sip:{self.caller[0]}@{host}>;tag={call.from_tag}\r\n"
                f"To: {response.headers.get('To')}\r\n"
                f"Call-ID: {call.call_id}\r\nCSeq: {cseq} {method}\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        self.sock.sendto(text.encode(), self.target)

    def on_response(self, response: Response, stamp_ns: int) -> None:
        """A response to one of the caller's requests."""
        call = self.calls.get(response.call_id)
        if call is None:
            return
        method = response.cseq.method
        if method == "BYE":
            if response.status >= 200:
                del self.calls[call.call_id]
            return
        if method != "INVITE" or response.status < 200 or response.cseq.seq != call.cseq:
            return
        if response.status in (401, 407):
            # ACK the challenge in its transaction (same branch), then again with credentials
            assert call.request is not None
            branch = call.request.vias[0].branch
            self._in_dialog(call, "ACK", call.cseq, response, branch)
            self.challenge = response
            call.cseq += 1
            self._send_invite(call, response)
            return
        if response.status != 200:  # a failed probe: counted as lost
            self.calls.pop(call.call_id, None)
            self.lost += 1
            return
        if not call.answered:
            call.answered = True
            self.times.append((stamp_ns - call.sent_ns) / 1e9)
        self._in_dialog(call, "ACK", call.cseq, response)
        self._in_dialog(call, "BYE", call.cseq + 1, response)

    def on_request(self, request: Request) -> None:
        """A request to the callee (the PBX's INVITE, its ACK and BYE) — answered at once."""
        if request.method == "ACK":
            return
        response = make_response(request, 200, to_tag=request.to.tag or new_tag())
        if request.method == "INVITE":
            lhost, lport = self.local
            response.headers.set("Contact", f"<sip:{self.callee[0]}@{lhost}:{lport}>")
            response.headers.set("Content-Type", "application/sdp")
            response.body = SDP.format(port=self.media_port).encode()
        self.sock.sendto(response.serialize(), self.target)

    def expire(self) -> None:
        """Calls not answered within :data:`LOST_AFTER` count as lost."""
        cutoff = time.time_ns() - int(LOST_AFTER * 1e9)
        for call_id in [c.call_id for c in self.calls.values()
                        if not c.answered and c.started_ns < cutoff]:
            del self.calls[call_id]
            self.lost += 1


def _stamp(anc: list[tuple[int, int, bytes]]) -> int:
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = struct.unpack("qq", value[:16])
            return int(sec * 1_000_000_000 + nsec)
    return time.time_ns()


def run(conn: Connection, target: tuple[str, int], rate: float, cpu: int | None,
        realm: str, caller: tuple[str, str], callee: tuple[str, str]) -> None:
    """The prober's process body (see the module doc): registers ``callee`` (extension,
    password) on its socket, then calls it as ``caller`` ``rate`` times a second."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    _realtime_priority()
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the SDP's port (no RTP sent)
    media.bind(("127.0.0.1", 0))
    port = _free_udp_port()
    register_contact(target, port, realm, callee[0], callee[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("127.0.0.1", port))
    prober = CallProber(sock, target, realm, caller, callee, media.getsockname()[1])
    conn.send(("ready", port))
    interval = 1.0 / rate
    next_call = time.monotonic()
    drain_until: float | None = None  # after "quit": no new calls, the open ones end first
    while drain_until is None or (prober.calls and time.monotonic() < drain_until):
        waitables: list[Any] = [sock] if drain_until is not None else [sock, conn]
        wait = 0.05 if drain_until is not None else max(0.0, next_call - time.monotonic())
        ready, _, _ = select.select(waitables, [], [], wait)
        if sock in ready:
            data, anc, _, _ = sock.recvmsg(65535, socket.CMSG_SPACE(16))
            stamp = _stamp(anc)
            try:
                msg = parse_message(data)
            except ParseError:
                msg = None
            if isinstance(msg, Response):
                prober.on_response(msg, stamp)
            elif isinstance(msg, Request):
                prober.on_request(msg)
        if conn in ready:
            cmd: Any = conn.recv()
            if cmd[0] == "quit":
                drain_until = time.monotonic() + LOST_AFTER
                continue
            if cmd[0] == "mark":
                prober.expire()
                conn.send((prober.times, prober.lost))
                prober.times, prober.lost = [], 0
        if drain_until is None and time.monotonic() >= next_call:
            prober.start_call()
            next_call += interval
            if next_call < time.monotonic() - 1.0:  # fell far behind (suspended): no burst
                next_call = time.monotonic()
    sock.close()
    media.close()

