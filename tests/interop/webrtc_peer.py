"""A browser phone in Python for the interop tests: SIP over a WebSocket (RFC 7118, aiohttp) and
an aiortc peer connection sending a tone, the way JsSIP in a browser does (a ``*.invalid``
contact, trickle-less ICE with every candidate in the SDP, Opus, DTLS-SRTP, rtcp-mux).

ICE of this peer offers 127.0.0.1 only (:func:`media.webrtc.ice_host_addresses`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import aiohttp
import numpy as np

from sipcore.digest import DigestClient
from sipcore.message import Request, Response, parse_message
from tests.media.test_webrtc import Browser

REALM = "asyncpbx-test"


def _rand(n: int = 6) -> str:
    return os.urandom(n).hex()


class WsPhone:
    """One browser tab: a WebSocket to the PBX, a registration, at most one call."""

    def __init__(self, url: str, ext: str, password: str, tone_hz: float) -> None:
        self.url, self.ext, self.password = url, ext, password
        self.domain = url.split("//")[1].split("/")[0].split(":")[0]
        self.host = f"{_rand(5)}.invalid"
        self.contact = f"<sip:{ext}@{self.host};transport=ws>"
        self.tone_hz = tone_hz
        self.browser = Browser(tone_hz)
        self._session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[tuple[str, str], asyncio.Queue[Response]] = {}
        self.invites: asyncio.Queue[Request] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.requests: list[Request] = []
        #: INVITEs we sent 180 for and have not answered: call id → (INVITE, our tag)
        self._ringing: dict[str, tuple[Request, str]] = {}
        # the dialog of the current call
        self.call_id = ""
        self.local_tag = _rand(4)
        self.remote_tag = ""
        self.remote_target = ""
        self.cseq = 1
        self.from_uri = ""
        self.to_uri = ""

    # -- plumbing --------------------------------------------------------------------------------

    async def connect(self) -> None:
        self._session = aiohttp.ClientSession()
        self.ws = await self._session.ws_connect(self.url, protocols=("sip",),
                                                 timeout=aiohttp.ClientWSTimeout(ws_close=5))
        self._reader = asyncio.ensure_future(self._read())

    async def close(self) -> None:
        """Close the tab: the peer connection and the WebSocket."""
        await self.browser.close()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            parsed = parse_message(msg.data.encode())
            if isinstance(parsed, Response):
                q = self._waiting.get((parsed.call_id, parsed.headers.get("CSeq") or ""))
                if q is not None:
                    q.put_nowait(parsed)
                continue
            assert isinstance(parsed, Request)
            self.requests.append(parsed)
            if parsed.method == "INVITE" and parsed.to_tag is None:
                self.invites.put_nowait(parsed)
            elif parsed.method == "CANCEL":
                await self._respond(parsed, 200)
                ringing = self._ringing.pop(parsed.call_id, None)
                if ringing is not None:
                    await self._respond(ringing[0], 487, "Request Terminated", to_tag=ringing[1])
            elif parsed.method in ("BYE", "INFO", "OPTIONS", "INVITE", "UPDATE"):
                await self._respond(parsed, 200)
                if parsed.method == "BYE":
                    self.ended.set()

    async def _send(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(text)

    async def _respond(self, request: Request, status: int, reason: str = "OK", *,
                       body: str = "", to_tag: str | None = None) -> None:
        lines = [f"SIP/2.0 {status} {reason}"]
        for name in ("Via", "From", "Call-ID", "CSeq"):
            lines += [f"{name}: {v}" for v in request.headers.get_all(name)]
        to = request.headers.get("To") or ""
        if to_tag is not None and ";tag=" not in to:
            to += f";tag={to_tag}"
        lines.append(f"To: {to}")
        if request.method == "INVITE" and 100 < status < 300:
            lines.append(f"Contact: {self.contact}")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        await self._send("\r\n".join(lines) + "\r\n\r\n" + body)

    def _request(self, method: str, uri: str, cseq: int, *, body: str = "",
                 extra: tuple[str, ...] = ()) -> Request:
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/WS {self.host};branch=z9hG4bK{_rand()}",
                 f"From: {self.from_uri};tag={self.local_tag}",
                 f"To: {self.to_uri}" + (f";tag={self.remote_tag}" if self.remote_tag else ""),
                 f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}", "Max-Forwards: 70",
                 f"Contact: {self.contact}", *extra]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        msg = parse_message(("\r\n".join(lines) + "\r\n\r\n" + body).encode())
        assert isinstance(msg, Request)
        return msg

    async def _transact(self, request: Request, timeout: float = 15.0) -> Response:
        """Send ``request``; the final response (401/407 answered with credentials once)."""
        for _attempt in range(2):
            key = (request.call_id, request.headers.get("CSeq") or "")
            q: asyncio.Queue[Response] = asyncio.Queue()
            self._waiting[key] = q
            await self._send(request.serialize().decode())
            try:
                while True:
                    resp = await asyncio.wait_for(q.get(), timeout)
                    if resp.status >= 200:
                        break
            finally:
                del self._waiting[key]
            if resp.status in (401, 407) and _attempt == 0:
                if request.method == "INVITE":
                    await self._ack_error(request, resp)
                self.cseq += 1
                again = request.copy()
                again.headers.set("CSeq", f"{self.cseq} {request.method}")
                again.headers.set("Via", f"SIP/2.0/WS {self.host};branch=z9hG4bK{_rand()}")
                request = DigestClient().authorize(again, resp, self.ext, self.password,
                                                   realm=REALM)
                continue
            return resp
        return resp

    async def _ack_error(self, invite: Request, resp: Response) -> None:
        """The ACK of a non-2xx final response (same branch, RFC 3261 §17.1.1.3)."""
        lines = [f"ACK {invite.uri} SIP/2.0", f"Via: {invite.headers.get('Via')}",
                 f"From: {invite.headers.get('From')}", f"To: {resp.headers.get('To')}",
                 f"Call-ID: {invite.call_id}", f"CSeq: {invite.cseq.seq} ACK",
                 "Max-Forwards: 70", "Content-Length: 0"]
        await self._send("\r\n".join(lines) + "\r\n\r\n")

    # -- what a phone does -----------------------------------------------------------------------

    async def register(self, expires: int = 300) -> int:
        self.call_id, self.remote_tag = _rand(8), ""
        self.from_uri = self.to_uri = f"<sip:{self.ext}@{self.domain}>"
        self.cseq += 1
        req = self._request("REGISTER", f"sip:{self.domain}", self.cseq,
                            extra=(f"Expires: {expires}",))
        resp = await self._transact(req)
        return resp.status

    async def call(self, dst: str) -> Response:
        """INVITE ``dst`` with our WebRTC offer; on a 2xx: the answer is applied and ACKed."""
        self.call_id, self.remote_tag, self.local_tag = _rand(8), "", _rand(4)
        self.from_uri = f"<sip:{self.ext}@{self.domain}>"
        self.to_uri = f"<sip:{dst}@{self.domain}>"
        self.cseq += 1
        offer = await self.browser.offer()
        resp = await self._transact(self._request("INVITE", f"sip:{dst}@{self.domain}",
                                                  self.cseq, body=offer), timeout=30)
        if 200 <= resp.status < 300:
            self.remote_tag = resp.to_tag or ""
            contact = resp.headers.get("Contact") or ""
            self.remote_target = contact.strip().lstrip("<").split(">")[0]
            ack = self._request("ACK", self.remote_target, resp.cseq.seq)
            await self._send(ack.serialize().decode())
            await self.browser.accept(resp.body.decode())
        return resp

    async def ring(self, invite: Request) -> str:
        """180 Ringing to ``invite``; returns our To tag."""
        tag = _rand(4)
        self._ringing[invite.call_id] = (invite, tag)
        await self._respond(invite, 180, "Ringing", to_tag=tag)
        return tag

    async def answer(self, timeout: float = 20.0) -> Request:
        """Wait for an INVITE, ring, answer it with our peer connection's answer."""
        invite = await asyncio.wait_for(self.invites.get(), timeout)
        tag = await self.ring(invite)
        del self._ringing[invite.call_id]
        answer = await self.browser.answer(invite.body.decode())
        await self._respond(invite, 200, body=answer, to_tag=tag)
        self.call_id, self.local_tag = invite.call_id, tag
        self.remote_tag = invite.from_tag or ""
        self.from_uri = invite.headers.get("To") or ""
        self.to_uri = (invite.headers.get("From") or "").split(";tag=")[0]
        contact = invite.headers.get("Contact") or ""
        self.remote_target = contact.strip().lstrip("<").split(">")[0]
        self.cseq = 1
        return invite

    async def reinvite(self, direction: str) -> Response:
        """Re-INVITE with our SDP in ``direction`` (hold: sendonly; resume: sendrecv)."""
        sdp = str(self.browser.pc.localDescription.sdp)
        for d in ("sendrecv", "sendonly", "recvonly", "inactive"):
            sdp = sdp.replace(f"a={d}\r\n", f"a={direction}\r\n")
        self.cseq += 1
        resp = await self._transact(self._request("INVITE", self.remote_target, self.cseq,
                                                  body=sdp))
        if 200 <= resp.status < 300:
            ack = self._request("ACK", self.remote_target, resp.cseq.seq)
            await self._send(ack.serialize().decode())
        return resp

    async def info_dtmf(self, digit: str) -> int:
        """A digit as SIP INFO (``application/dtmf-relay``), the way JsSIP sends it."""
        self.cseq += 1
        req = self._request("INFO", self.remote_target, self.cseq)
        body = f"Signal={digit}\r\nDuration=160\r\n"
        req.body = body.encode()
        req.headers.set("Content-Type", "application/dtmf-relay")
        req.headers.set("Content-Length", str(len(req.body)))
        return (await self._transact(req)).status

    async def bye(self) -> int:
        self.cseq += 1
        resp = await self._transact(self._request("BYE", self.remote_target, self.cseq))
        return resp.status

    def heard(self, skip_s: float = 1.0) -> np.ndarray[Any, Any]:
        """What the peer connection played (48 kHz mono), the first ``skip_s`` left out."""
        pcm = np.concatenate(self.browser.heard) if self.browser.heard else np.zeros(0, np.int16)
        return pcm[int(skip_s * 48000):]
