"""Browser legs: a SIP dialog over WS/WSS whose media is an aiortc peer connection.

Theory of operation
-------------------
A browser offers ``UDP/TLS/RTP/SAVPF`` with ICE credentials, a DTLS fingerprint, Opus and
rtcp-mux (RFC 8829/8834); no RTP session of ours can answer that. A WebRTC leg is the SIP leg of
:mod:`pbx.legs` (same dialog, usage, session timers, INFO DTMF) whose media port is a
:class:`media.webrtc.WebRtcLeg` — ICE, DTLS-SRTP and Opus are aiortc's — bridged into the media
graph like any port (the transcoding bridge resamples 48 kHz ↔ 8 kHz for G.711 peers).

* :class:`WebRtcInboundLeg` answers a browser's INVITE: the offer goes to the peer connection,
  whose answer (full ICE candidates, no trickle) is our SDP in the 18x/2xx. Applying the offer
  gathers candidates, which is asynchronous: :meth:`B2bua._new_call` awaits
  :meth:`prepare_rtc` before the call starts.
* :class:`WebRtcOutboundLeg` rings a browser (a binding registered over WS/WSS): the INVITE
  carries the peer connection's offer; the browser's answer (in a 18x or the 2xx) is applied to
  it.

A re-INVITE/UPDATE from the browser that keeps its ICE credentials (hold, resume, a codec
re-offer) is answered with our SDP, its direction mirroring the offer's; hold is read from the
direction (the other party hears music on hold). One that restarts ICE (new ``ice-ufrag``/
``ice-pwd``) restarts it on the running connection (:meth:`media.webrtc.WebRtcLeg.restart_ice`):
our answer is the same SDP with our new credentials, DTLS and the call go on. DTMF from the browser arrives as SIP INFO
or as RFC 4733 events (telephone-event is in our SDP; :class:`media.webrtc.WebRtcLeg` reports
them); DTMF goes to the browser as SIP INFO (aiortc does not send RFC 4733 events).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from media.webrtc import WebRtcLeg
from pbx.callcontrol import Call, LegInput, Target
from pbx.legs.inbound import InboundLeg
from pbx.legs.outbound import OutboundLeg
from pbx.legs.sdp import first_audio, is_sdp
from pbx.legs.sip import SipLeg
from sipcore.aio.tasks import Child
from sipcore.endpoint import Event, ResponseReceived
from sipcore.errors import ParseError
from sipcore.message import Request
from sipcore.sdp import SessionDescription, parse_sdp
from sipcore.transport import Peer

if TYPE_CHECKING:
    from pbx.b2bua import B2bua

__all__ = ["WEBRTC_PROTOS", "WebRtcInboundLeg", "WebRtcOutboundLeg", "is_webrtc_offer"]

#: RTP profiles of a WebRTC offer (DTLS-SRTP over ICE, RFC 5764/8834).
WEBRTC_PROTOS = ("UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP")
#: SIP transports whose contacts are browsers (RFC 7118): they are rung with a WebRTC offer.
WEBRTC_TRANSPORTS = ("ws", "wss")


def is_webrtc_sdp(sdp: SessionDescription) -> bool:
    """The first active audio stream is DTLS-SRTP (a browser's offer or answer)."""
    m = first_audio(sdp)
    return m is not None and m.proto.upper() in WEBRTC_PROTOS


def is_webrtc_offer(request: Request) -> bool:
    """``request`` (an INVITE) carries a WebRTC offer."""
    if not is_sdp(request):
        return False
    # Both WEBRTC_PROTOS contain "/TLS/": an offer without it cannot be one, and every other
    # call is spared a second full SDP parse here.
    if b"/TLS/" not in request.body.upper():
        return False
    try:
        return is_webrtc_sdp(parse_sdp(request.body))
    except ParseError:
        return False


def _ice_ufrag(sdp: SessionDescription) -> str | None:
    m = first_audio(sdp)
    value = m.get_attribute("ice-ufrag") if m is not None else None
    return value if value is not None else sdp.get_attribute("ice-ufrag")


#: Our direction answering an offer's (RFC 3264 §6.1).
_MIRROR = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
_DIRECTIONS = ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")


def _with_direction(sdp: str, direction: str) -> str:
    """``sdp`` (one audio section, as aiortc writes it) with its direction set to
    ``direction`` and, when that changed anything, the ``o=`` version one higher."""
    lines = sdp.split("\r\n")
    out = [f"a={direction}" if line in _DIRECTIONS else line for line in lines]
    if out == lines:
        return sdp
    for i, line in enumerate(out):
        if line.startswith("o="):
            fields = line.split(" ")
            if len(fields) >= 3 and fields[2].isdigit():
                fields[2] = str(int(fields[2]) + 1)
                out[i] = " ".join(fields)
            break
    return "\r\n".join(out)


class _WebRtcMedia(SipLeg):
    """What both browser legs do with their peer connection instead of an RTP session."""

    rtc: WebRtcLeg | None = None
    _rtc_sdp: tuple[SessionDescription, bytes] | None = None
    _closing_rtc: Child | None = None

    def signal_hold(self, held: bool) -> bool:
        """Not signalled to a browser (its peer connection is not renegotiated for hold; the
        music on hold reaches it all the same)."""
        return False

    def _new_rtc(self) -> WebRtcLeg:
        ice = self.b2bua.ice
        if ice is None:
            raise ParseError("WebRTC is not configured", 488)
        rtc = WebRtcLeg(ice=ice)
        rtc.on_dtmf = self._on_rtp_dtmf  # the browser's RFC 4733 events
        self.rtc = rtc
        self.media = rtc
        rtc.pc.on("connectionstatechange", self._on_rtc_state)
        return rtc

    def _on_rtc_state(self) -> None:
        """ICE consent lost or DTLS failed (the browser went away without a BYE): end the
        answered call as a dead one."""
        rtc = self.rtc
        if rtc is not None and rtc.connection_state == "failed" and self.answered \
                and not self.ended:
            self.b2bua.log.info("call.webrtc_failed", leg=self.id, call_id=self._call_id())
            if self.call is not None and not self.call.record.cause:
                self.call.record.cause = "webrtc failed"
            self.hangup("media-failed")

    def flow_closed(self) -> None:
        """The browser's WebSocket closed (tab closed, network gone): nothing reaches it any
        more, so its call ends now (a ringing leg fails, an answered one hangs up)."""
        if self.ended:
            return
        if self.call is not None and not self.call.record.cause:
            self.call.record.cause = "websocket closed"
        self.hangup("flow-closed")

    def _set_local_rtc(self, sdp: str) -> SessionDescription:
        """Our SDP from the peer connection: sent as aiortc wrote it (version bumped on
        re-answers only)."""
        parsed = parse_sdp(sdp.encode())
        self.local_sdp = parsed
        self._rtc_sdp = (parsed, sdp.encode())
        return parsed

    def _local_sdp_body(self, sdp: SessionDescription) -> bytes:
        wire = self._rtc_sdp
        if wire is not None and wire[0] is sdp:
            return wire[1]
        return super()._local_sdp_body(sdp)

    def _apply_remote(self, sdp: SessionDescription, *, local: SessionDescription | None = None
                      ) -> tuple[bool, bool]:
        """Hold from the browser's direction; the offer/answer itself is the peer
        connection's (applied in :meth:`prepare_rtc` / :meth:`_take_answer`)."""
        if not is_webrtc_sdp(sdp):
            raise ParseError("A browser leg needs DTLS-SRTP", 488)
        index = next(i for i, m in enumerate(sdp.media) if m.media == "audio" and m.port != 0)
        direction = sdp.media_direction(index)
        holding = direction in ("sendonly", "inactive")
        if local is None and self.rtc is not None and self.rtc.pc.remoteDescription is None:
            self._take_answer(sdp)
        self.remote_sdp = sdp
        return False, holding

    def _take_answer(self, sdp: SessionDescription) -> None:
        """Apply the browser's answer to our offer (ICE and DTLS start)."""

    def _answer_offer(self, offer: SessionDescription) -> SessionDescription:
        """A re-offer that keeps the browser's ICE credentials: our SDP again, its direction
        mirroring the offer's (RFC 3264 §8.4: ``recvonly`` to a hold's ``sendonly``), with a
        new version when that changed it."""
        wire = self._rtc_sdp
        if wire is None or self.remote_sdp is None:
            raise ParseError("No session to re-negotiate", 488)
        if not is_webrtc_sdp(offer):
            raise ParseError("A browser leg needs DTLS-SRTP", 488)
        index = next(i for i, m in enumerate(offer.media) if m.media == "audio" and m.port != 0)
        wanted = _MIRROR.get(offer.media_direction(index), "sendrecv")
        text = wire[1].decode("utf-8", "replace")
        if _ice_ufrag(offer) != _ice_ufrag(self.remote_sdp):
            text = self._restart_ice(offer, text)
        changed = _with_direction(text, wanted)
        if changed == wire[1].decode("utf-8", "replace"):
            return wire[0]
        return self._set_local_rtc(changed)

    def _restart_ice(self, offer: SessionDescription, ours: str) -> str:
        """The browser's re-offer restarts ICE: restart it on our connection and return our
        SDP ``ours`` with the new local credentials (the version is bumped by the caller's
        direction change or here). ParseError(488) when it cannot be done (the old session
        stays)."""
        m = first_audio(offer)
        ufrag = _ice_ufrag(offer)
        pwd = (m.get_attribute("ice-pwd") if m is not None else None) or \
            offer.get_attribute("ice-pwd")
        if self.rtc is None or m is None or not ufrag or not pwd:
            raise ParseError("ICE restart without credentials", 488)
        try:
            local_ufrag, local_pwd = self.rtc.restart_ice(ufrag, pwd,
                                                          m.get_attributes("candidate"))
        except ValueError as exc:
            raise ParseError(f"ICE restart refused: {exc}", 488) from None
        self.b2bua.log.info("call.webrtc_ice_restart", leg=self.id, call_id=self._call_id())
        lines = []
        for line in ours.split("\r\n"):
            if line.startswith("a=ice-ufrag:"):
                line = f"a=ice-ufrag:{local_ufrag}"
            elif line.startswith("a=ice-pwd:"):
                line = f"a=ice-pwd:{local_pwd}"
            elif line.startswith("o="):
                fields = line.split(" ")
                if len(fields) >= 3 and fields[2].isdigit():
                    fields[2] = str(int(fields[2]) + 1)
                    line = " ".join(fields)
            lines.append(line)
        return "\r\n".join(lines)

    def send_dtmf(self, digits: str) -> None:
        """SIP INFO (application/dtmf-relay): aiortc sends no RFC 4733 events."""
        for digit in digits:
            self.send_in_dialog("INFO", body=f"Signal={digit}\r\nDuration=160\r\n".encode(),
                                content_type="application/dtmf-relay",
                                on_response=lambda ev: None)

    def close_media(self) -> None:
        """Close the peer connection (in a task: aiortc's close is a coroutine), then what
        every SIP leg releases."""
        rtc = self.rtc
        if rtc is not None and self._closing_rtc is None:
            # the call id now: the task runs after the call has let go of its legs
            self._closing_rtc = self.b2bua.tasks.spawn(self._close_rtc(rtc, self._call_id()),
                                                       f"webrtc-close-{self.id}")
        super().close_media()

    async def _close_rtc(self, rtc: WebRtcLeg, call_id: str) -> None:
        """Log the leg's quality when it carried a call, then close the peer connection."""
        try:
            if rtc.counters["frames_in"]:
                quality = await rtc.quality()
                self.b2bua.log.info("call.webrtc_quality", leg=self.id, call_id=call_id,
                                    **quality)
        except Exception:
            self.b2bua.log.warning("webrtc.stats_failed", leg=self.id, exc_info=True)
        finally:
            await rtc.close()


class WebRtcInboundLeg(_WebRtcMedia, InboundLeg):
    """A browser calling: we answer its WebRTC offer with our peer connection's answer."""

    def prepare_media(self) -> None:
        """Not synchronous for a browser: :meth:`prepare_rtc` is awaited instead."""
        raise ParseError("A WebRTC offer is answered by prepare_rtc", 488)

    async def prepare_rtc(self) -> None:
        """Apply the browser's offer and make our answer (ICE candidates gathered first).
        ParseError(488) when the offer cannot be taken."""
        offer = parse_sdp(self.invite.body)
        rtc = self._new_rtc()
        try:
            answer = await rtc.accept_offer(self.invite.body.decode("utf-8", "replace"))
        except ParseError:
            raise
        except Exception as exc:  # aiortc refuses an offer with ValueError and friends
            raise ParseError(f"WebRTC offer refused: {exc}", 488) from None
        local = self._set_local_rtc(answer)
        self._apply_remote(offer, local=local)


class WebRtcOutboundLeg(_WebRtcMedia, OutboundLeg):
    """Ringing a browser: the INVITE carries our peer connection's offer."""

    def __init__(self, b2bua: B2bua, call: Call, target: Target, *, request_uri: str,
                 peer: Peer, route: tuple[str, ...] = (), caller_display: str = "",
                 caller_user: str = "", callee_user: str = "") -> None:
        super().__init__(b2bua, call, target, request_uri=request_uri, peer=peer, route=route,
                         caller_display=caller_display, caller_user=caller_user,
                         callee_user=callee_user)
        self._offering: Child | None = None
        #: The body of the last response with SDP (the browser's answer, as it wrote it).
        self._answer_body: bytes | None = None

    def _on_invite_event(self, event: Event) -> None:
        if isinstance(event, ResponseReceived) and is_sdp(event.response):
            self._answer_body = event.response.body
        super()._on_invite_event(event)

    def start(self) -> None:
        """Make the offer (ICE gathering is asynchronous), then send the INVITE."""
        self.transition(LegInput.START)
        self._offering = self.b2bua.tasks.spawn(self._offer_and_invite(), f"webrtc-{self.id}")

    async def _offer_and_invite(self) -> None:
        try:
            rtc = self._new_rtc()
            offer = self._set_local_rtc(await rtc.create_offer())
        except Exception:
            self.b2bua.log.exception("webrtc.offer_failed", leg=self.id)
            if self.unanswered and not self.cancelled:
                self.final_status = 500
                self.transition(LegInput.FAIL, status=500, reason="webrtc offer failed")
            self.close_media()
            return
        if self.cancelled or not self.unanswered:
            self.close_media()
            return
        self._send_initial_invite(self._local_sdp_body(offer))

    def _take_answer(self, sdp: SessionDescription) -> None:
        rtc = self.rtc
        if rtc is None:
            return
        raw = self._answer_body if self._answer_body is not None else sdp.serialize()
        body = raw.decode("utf-8", "replace")
        self.b2bua.tasks.spawn(self._set_answer(rtc, body), f"webrtc-answer-{self.id}")

    async def _set_answer(self, rtc: WebRtcLeg, body: str) -> None:
        try:
            await rtc.set_answer(body)
        except Exception:
            self.b2bua.log.warning("webrtc.answer_refused", leg=self.id, exc_info=True)
            with contextlib.suppress(Exception):
                self.hangup("error")

    def flow_closed(self) -> None:
        """A ringing browser whose WebSocket closed has failed (480): no CANCEL can reach it."""
        if self.unanswered and not self.cancelled:
            self.cancelled = True
            self.final_status = 480
            self.transition(LegInput.FAIL, status=480, reason="websocket closed")
            self.close_media()
            return
        super().flow_closed()

    def cancel(self, reason: str | None = None) -> None:
        """CANCEL the INVITE; before it went, just stop (the offer task sees ``cancelled``)."""
        if self.invite is None:
            if self.unanswered and not self.cancelled:
                self.cancelled = True
                self.final_status = 487
                self.transition(LegInput.ABANDON)
            return
        super().cancel(reason)
