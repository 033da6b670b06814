"""A minimal SIP phone in Python for the interop tests that need two dialogs in one phone (an
attended transfer by REFER with Replaces, an INVITE with Replaces), which SIPp cannot hold
together: one UDP socket, requests and responses built as text and parsed by sipcore, digest
by sipcore's client. Synchronous, every wait bounded; loopback only (no retransmissions of
our own: a lost packet fails the test, it does not hang it)."""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field

from sipcore.digest import DigestClient
from sipcore.message import Request, Response, parse_message

REALM = "asyncpbx-test"


@dataclass
class Dialog:
    """One dialog as the phone keeps it."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    cseq: int = 1
    messages: list[str] = field(default_factory=list)
    #: The audio address the PBX's SDP named for this dialog (where a phone sends its RTP).
    remote_media: tuple[str, int] | None = None


def sdp_audio_address(body: bytes | str) -> tuple[str, int] | None:
    """The connection address and audio port an SDP body names, or None."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    match = re.search(r"c=IN IP4 ([0-9.]+)\r?\n(?:.*\r?\n)*?m=audio (\d+)", text)
    return (match.group(1), int(match.group(2))) if match else None


class SipPhone:
    """User ``ext`` on ``port`` (register it first, from that port: register_port)."""

    def __init__(self, ext: str, password: str, port: int, server: tuple[str, int]) -> None:
        self.ext, self.password, self.server = ext, password, server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = port
        self.contact = f"<sip:{ext}@127.0.0.1:{port}>"
        #: requests that arrived while we waited for something else (in order)
        self.pending: list[Request] = []
        self.log: list[str] = []

    def close(self) -> None:
        self.sock.close()

    # -- wire -------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        self.log.append(text)
        self.sock.sendto(text.encode(), self.server)

    def receive(self, timeout: float = 5.0) -> Request | Response:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.ext}: nothing received; sent:\n" + "\n".join(
                    self.log[-3:]))
            self.sock.settimeout(left)
            data, _ = self.sock.recvfrom(65535)
            msg = parse_message(data)
            self.log.append(data.decode(errors="replace"))
            return msg

    def response(self, cseq_method: str, timeout: float = 5.0) -> Response:
        """The next final response to our ``cseq_method`` (requests meanwhile are kept;
        NOTIFY/BYE/INFO are answered 200 at once)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive(max(0.05, deadline - time.monotonic()))
            if isinstance(msg, Response):
                if msg.cseq.method == cseq_method and msg.status >= 200:
                    return msg
                continue
            self._auto(msg)

    def request(self, method: str, timeout: float = 5.0) -> Request:
        """The next request ``method`` (NOTIFY/BYE/INFO of other kinds answered 200)."""
        for i, req in enumerate(self.pending):
            if req.method == method:
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive(max(0.05, deadline - time.monotonic()))
            if isinstance(msg, Request):
                if msg.method == method:
                    if method in ("NOTIFY", "BYE", "INFO", "OPTIONS"):
                        self.reply(msg, 200)
                    return msg
                self._auto(msg)

    def _auto(self, req: Request) -> None:
        if req.method in ("NOTIFY", "BYE", "INFO", "OPTIONS"):
            self.reply(req, 200)
        if req.method != "ACK":
            self.pending.append(req)

    def reply(self, req: Request, status: int, *, to_tag: str | None = None,
              body: str = "", reason: str = "OK") -> None:
        to = req.headers.get("To") or ""
        if to_tag is not None and ";tag=" not in to:
            to += f";tag={to_tag}"
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in req.headers.get_all("Via")]
        lines += [f"From: {req.headers.get('From')}", f"To: {to}",
                  f"Call-ID: {req.call_id}", f"CSeq: {req.headers.get('CSeq')}",
                  f"Contact: {self.contact}"]
        if body:
            lines += ["Content-Type: application/sdp"]
        lines += [f"Content-Length: {len(body.encode())}", "", body]
        self.send("\r\n".join(lines))

    @staticmethod
    def sdp(rtp_port: int) -> str:
        return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")

    # -- calls ------------------------------------------------------------------------------

    def answer(self, rtp_port: int, timeout: float = 10.0, ring: float = 0.5) -> Dialog:
        """Answer the next INVITE (180, ``ring`` s later 200 with SDP), wait for its ACK."""
        invite = self.request("INVITE", timeout)
        tag = os.urandom(4).hex()
        self.reply(invite, 180, to_tag=tag, reason="Ringing")
        time.sleep(ring)  # the caller hears ringback (and its RTP peer learns our address)
        self.reply(invite, 200, to_tag=tag, body=self.sdp(rtp_port))
        contact = invite.contacts[0].uri
        dialog = Dialog(invite.call_id, tag, invite.from_tag or "",
                        local_uri=str(invite.to.uri), remote_uri=str(invite.from_.uri),
                        remote_target=str(contact), remote_media=sdp_audio_address(invite.body))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = self.receive(max(0.05, deadline - time.monotonic()))
            if isinstance(msg, Request) and msg.method == "ACK":
                return dialog
            if isinstance(msg, Request):
                self._auto(msg)
        raise TimeoutError("no ACK")

    def _invite_text(self, dst: str, call_id: str, tag: str, cseq: int, rtp_port: int,
                     extra: list[str]) -> str:
        host, port = self.server
        body = self.sdp(rtp_port)
        lines = [f"INVITE sip:{dst}@{host}:{port} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{os.urandom(6).hex()}"
                 ";rport",
                 f"From: <sip:{self.ext}@{host}>;tag={tag}", f"To: <sip:{dst}@{host}>",
                 f"Call-ID: {call_id}", f"CSeq: {cseq} INVITE", f"Contact: {self.contact}",
                 "Max-Forwards: 70", *extra, "Content-Type: application/sdp",
                 f"Content-Length: {len(body)}", "", body]
        return "\r\n".join(lines)

    def call(self, dst: str, rtp_port: int, *, extra: list[str] | None = None,
             timeout: float = 15.0) -> Dialog:
        """INVITE ``dst`` (answering the 407 with digest) until it is answered; ACK."""
        call_id, tag = os.urandom(8).hex(), os.urandom(4).hex()
        text = self._invite_text(dst, call_id, tag, 1, rtp_port, extra or [])
        self.send(text)
        challenge = self.response("INVITE")
        assert challenge.status == 407, challenge
        self._ack(challenge, dst, 1)
        first = parse_message(text.encode())
        assert isinstance(first, Request)
        authed = DigestClient().authorize(first, challenge, self.ext, self.password,
                                          realm=REALM)
        auth = authed.headers.get("Proxy-Authorization")
        text = self._invite_text(dst, call_id, tag, 2, rtp_port,
                                 [*(extra or []), f"Proxy-Authorization: {auth}"])
        self.send(text)
        ok = self.response("INVITE", timeout)
        assert ok.status == 200, ok
        contact = ok.contacts[0].uri
        dialog = Dialog(call_id, tag, ok.to_tag or "", local_uri=str(ok.from_.uri),
                        remote_uri=str(ok.to.uri), remote_target=str(contact), cseq=2,
                        remote_media=sdp_audio_address(ok.body))
        self._ack(ok, dst, 2, dialog)
        return dialog

    def _ack(self, resp: Response, dst: str, cseq: int, dialog: Dialog | None = None) -> None:
        host, port = self.server
        ruri = dialog.remote_target if dialog is not None else f"sip:{dst}@{host}:{port}"
        via = (resp.headers.get_all("Via")[0] if dialog is None else
               f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{os.urandom(6).hex()};rport")
        self.send("\r\n".join([
            f"ACK {ruri} SIP/2.0", f"Via: {via}", f"From: {resp.headers.get('From')}",
            f"To: {resp.headers.get('To')}", f"Call-ID: {resp.call_id}", f"CSeq: {cseq} ACK",
            "Max-Forwards: 70", "Content-Length: 0", "", ""]))

    def in_dialog(self, dialog: Dialog, method: str, extra: list[str] | None = None) -> Response:
        """Send ``method`` in ``dialog``; its final response."""
        dialog.cseq += 1
        self.send("\r\n".join([
            f"{method} {dialog.remote_target} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{os.urandom(6).hex()};rport",
            f"From: <{dialog.local_uri}>;tag={dialog.local_tag}",
            f"To: <{dialog.remote_uri}>;tag={dialog.remote_tag}",
            f"Call-ID: {dialog.call_id}", f"CSeq: {dialog.cseq} {method}",
            f"Contact: {self.contact}", "Max-Forwards: 70", *(extra or []),
            "Content-Length: 0", "", ""]))
        return self.response(method)
