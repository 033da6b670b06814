"""The B2BUA: SIP call legs over the AsyncEndpoint, with every call's media anchored in our core.

Theory of operation
-------------------
Each call is two (or more) independent SIP dialogs: the caller's INVITE is answered by an
:class:`InboundLeg` (UAS, RFC 3261 §13.3), and for every registered device of the callee an
:class:`OutboundLeg` sends its own INVITE (UAC, §13.2) — parallel ringing is one INVITE per
binding, sent to the address the REGISTER came from (``Binding.received``) so phones behind NAT
are reached. Every leg negotiates its own SDP (RFC 3264) against its own
:class:`media.aio.RtpSession`; :class:`pbx.callcontrol.Bridge` joins the sessions (relay when the
codecs match, transcoding otherwise). So re-INVITEs and UPDATEs (RFC 3311) are answered locally
by the leg that received them; hold (``sendonly``/``inactive``, RFC 3264 §8.4) rewires the media
graph so the held party hears music on hold; nothing is renegotiated on the other leg.

Events from the endpoint reach :meth:`B2bua.handle_event` synchronously: new INVITEs (after
digest authentication with 407, RFC 3261 §22.3), in-dialog requests (found through the
:class:`~sipcore.dialog.DialogTable`; 481 for unknown dialogs), responses and transaction events
for our client transactions (routed by transaction id), CANCEL (the endpoint answered it;
:class:`~sipcore.endpoint.RequestCancelled` tells the leg), ACKs and ACK timeouts. Legs turn them
into call-control events; each call's script (feature chains → routing → ring → connect → wait
for hang-up) runs under :func:`pbx.callcontrol.supervise`.

Each leg's INVITE usage is a :class:`sipcore.invite_session.InviteSession` (offer/answer state,
the 2xx/ACK rules, when a BYE may go, 491/500 for overlapping requests); the legs carry out
what it asks. Session timers (RFC 4028): the caller's Session-Expires is honoured (422 below our
Min-SE) with the caller as refresher unless it asks otherwise; a leg whose session is not
refreshed in time is ended with BYE. A callee that asks for timers in its 2xx gets them too. Dead calls are also
reaped when a leg receives no RTP for ``rtp_timeout`` seconds while it is not on hold.

DTMF: RFC 4733 events are relayed by the media core when both legs negotiated telephone-event
and share a codec; otherwise the leg that receives digits (RFC 4733 or SIP INFO
``application/dtmf-relay``) posts them and the other leg sends them the way it can (RFC 4733,
else SIP INFO). A leg without telephone-event bridged to one with it gets an in-band detector
(:class:`pbx.callcontrol.InbandDtmf`); its digits go out as RFC 4733 events.

SRTP (SDES, RFC 4568) is terminated per leg: an offer with RTP/SAVP and ``a=crypto`` is answered
with RTP/SAVP and a key of ours, and that leg's RtpSession protects/unprotects with a
:class:`media.srtp.SrtpSession`; the other legs keep whatever they negotiated. We offer a callee
plain RTP — or RTP/SAVP with fresh keys (one ``a=crypto`` per suite) to a device known to want
SRTP; a 415/488/606 to that INVITE gets one new INVITE (CSeq + 1, new transaction) offering the
other profile, and a device that took SAVP that way is remembered
(:meth:`B2bua.learn_srtp`). A leg cannot switch between RTP and SRTP by re-INVITE (488); it may
re-key.

Browsers (:mod:`pbx.legs.webrtc`): an INVITE whose offer is ``UDP/TLS/RTP/SAVPF`` gets a
:class:`WebRtcInboundLeg` whose media is an aiortc peer connection (ICE on ``B2bua.ice``, the
``[webrtc]`` settings); applying the offer gathers candidates, so the call starts once that is
done (:meth:`_new_webrtc_call`). A binding registered over WS/WSS is rung by a
:class:`WebRtcOutboundLeg` (the INVITE carries the peer connection's offer) beside the plain
legs of the user's SIP phones. When a WebSocket closes, the browser legs reached over it end
(:meth:`flow_closed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import ipaddress
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from media.aio import MediaEngine, RtpSession
from media.port import MediaPort
from media.tones import ToneGenerator, ToneName, tone_plan
from media.webrtc import IceSettings
from pbx.bans import BanTable
from pbx.callcontrol import (
    RECALL,
    Call,
    CallRecord,
    CallScript,
    FeatureRegistry,
    Leg,
    LegEnded,
    LegFailed,
    Prompt,
    Reject,
    Ring,
    Routed,
    Target,
    UserView,
    supervise,
)
from pbx.callsettings import CallSettings
from pbx.legs.inbound import InboundLeg
from pbx.legs.outbound import OutboundLeg
from pbx.legs.refer import on_replacing_invite
from pbx.legs.sdp import (
    SRTP_DEVICES_MAX,
)
from pbx.legs.sip import ALLOW, SipLeg, refusal_headers
from pbx.legs.trunk import TrunkLeg
from pbx.legs.webrtc import (
    WEBRTC_TRANSPORTS,
    WebRtcInboundLeg,
    WebRtcOutboundLeg,
    is_webrtc_offer,
)
from pbx.mediagraph import EngineGraph
from pbx.origin import CallOrigin, find_origin
from pbx.prompts import PromptStore
from pbx.routing.calls import CallRouter
from pbx.routing.router import Router
from pbx.rtpwatch import RtpWatch
from pbx.services.calls import CallServices
from pbx.tonesources import MOH_TONE, LoopedTone, looped_tone_cycle
from pbx.trunks import TrunkManager
from sipcore.aio.tasks import TaskScope
from sipcore.dialog import DialogTable
from sipcore.digest import Credentials, DigestServer
from sipcore.endpoint import (
    AckReceived,
    AckTimedOut,
    Endpoint,
    Event,
    RequestCancelled,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportErrored,
)
from sipcore.errors import ParseError, RemoteProtocolError
from sipcore.message import Request, Response, make_response, new_call_id, new_tag
from sipcore.registrar import Binding, Registrar, gruu_instance
from sipcore.transport import Peer
from sipcore.uri import SipURI, parse_uri

if TYPE_CHECKING:
    from pbx.chat import ChatService
    from pbx.moh import MusicOnHold

__all__ = ["B2bua", "CallSettings", "InboundLeg", "OutboundLeg", "SipLeg"]

#: The longest an announcement plays before the call goes on without it (seconds).
PROMPT_LIMIT = 60.0


def _default_ice(host: str) -> IceSettings | None:
    """ICE on the media address when it is one address (not a wildcard, not a name)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if ip.is_unspecified else IceSettings((str(ip),))




#: ``Call.per_call`` flag of a consultation call (:meth:`B2bua.moved_call`).
CONSULTATION_CALL = "transfer.consultation_call"
#: ``call.per_call`` key: (AOR, ``+sip.instance``) when the caller dialled a GRUU (RFC 5627).
GRUU_TARGET = "gruu.target"
#: Inside a call's task: the GRUU its Request-URI named; devices_of rings that instance only.
_GRUU: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "asyncpbx_gruu", default=None)


class B2bua:
    """Call handling of the PBX: owns the dialogs, the legs and the calls' tasks.

    ``sip`` is the running :class:`~sipcore.aio.endpoint.AsyncEndpoint`, ``engine`` a started
    :class:`~media.aio.MediaEngine`; ``digest`` a ``DigestServer(proxy=True)``; ``lookup`` the
    credentials lookup shared with REGISTER; ``user_exists(ext)`` decides routing (replace
    :meth:`route` for a dial plan); ``on_record`` is the call-history hook.
    """

    def __init__(
        self,
        sip: Any,
        engine: MediaEngine,
        *,
        digest: DigestServer,
        lookup: Callable[[str], Credentials | None],
        registrar: Registrar,
        domain: str,
        user_exists: Callable[[str], bool],
        display_name: Callable[[str], str] | None = None,
        settings: CallSettings | None = None,
        features: FeatureRegistry,
        on_record: Callable[[CallRecord], None] | None = None,
        log: Any = None,
        seclog: Any = None,
    ) -> None:
        from pbx.logsetup import get_logger

        self.sip = sip
        self.engine = engine
        self.graph = EngineGraph(engine)
        self.digest = digest
        self.lookup = lookup
        self.registrar = registrar
        self.domain = domain
        self.user_exists = user_exists
        self.display_name = display_name or (lambda ext: "")
        self.settings = settings or CallSettings()
        self.sdp_address = self.settings.sdp_address or engine.host
        if self.sdp_address in ("0.0.0.0", "::"):
            self.sdp_address = domain
        self.features = features
        #: the conference focus (RFC 4579), looked up once: every INVITE and REFER asks it
        self.focus: Any = features.get("conference_focus")
        self.on_record = on_record
        self.log = log or get_logger("pbx.calls")
        self.seclog = seclog or get_logger("security")
        #: The server's per-source ban table (pbx/bans.py), told of every INVITE's digest
        #: outcome (pbx/origin.py); None: no bans.
        self.bans: BanTable | None = None
        self.dialogs = DialogTable()
        self.dialog_legs: dict[tuple[str, str, str], SipLeg] = {}
        #: Every call's task (and the RTP sweeper) is a child of this scope (DESIGN.md
        #: principle 8): the server runs it in its TaskGroup (:meth:`run`); a B2BUA nobody
        #: runs starts it on the first call.
        self.tasks = TaskScope("calls")
        self._scope_owned = False
        self.calls: dict[str, Call] = {}
        self.rtp_watch = RtpWatch(self.tasks, self.settings.rtp_timeout, self.log)
        self._tones = tone_plan(self.settings.tones)
        self._tone_cycles: dict[tuple[ToneName, int], npt.NDArray[np.int16] | None] = {}
        self.stats = {"calls": 0, "answered": 0, "failed": 0, "rejected_auth": 0}
        #: Set by the server (pbx.app): the digest server and credentials lookup for a request's
        #: tenant (realm), dial-plan routing, the trunks. Without them: one realm, extensions.
        self.auth_for: Callable[[Request], tuple[DigestServer,
                                                 Callable[[str], Credentials | None]]] | None = None
        self.router: Router | None = None
        self.trunks: TrunkManager | None = None
        #: call id (Call.id) → who is calling, for routing (see :meth:`_origin`)
        self.origins: dict[str, CallOrigin] = {}
        self.routing = CallRouter(self)
        #: What features get besides the call (settings, routability); the server gives it the
        #: directory and the settings service.
        self.services = CallServices(features, self.routing)
        self.script = CallScript(self, features)
        #: Devices (contact URIs) that took an RTP/SAVP offer after refusing plain RTP: they
        #: get SAVP first next time (insertion-ordered, bounded by SRTP_DEVICES_MAX).
        self.srtp_devices: dict[str, None] = {}
        #: The announcements (the server loads them at start; None: tones only).
        self.prompts: PromptStore | None = None
        #: The tenants' music on hold (pbx.moh; None: the default for every call).
        self.moh: MusicOnHold | None = None
        #: ICE of browser legs (pbx.legs.webrtc): the server sets it from ``[webrtc]``; by
        #: default the media address when it is an IP address (None: browsers get 488).
        self.ice: IceSettings | None = _default_ice(engine.host)
        #: SIP MESSAGE between users (pbx.chat.ChatService; the server sets it; None: 405).
        self.chat: ChatService | None = None

    # -- plumbing --------------------------------------------------------------------------------

    def contact_for(self, peer: Peer) -> str:
        """Our Contact for dialogs with ``peer`` (its transport's sent-by)."""
        endpoint = cast(Endpoint, self.sip.endpoint)
        host, port = endpoint.config.sent_by.get(peer.transport) or next(
            iter(endpoint.config.sent_by.values()))
        tp = "" if peer.transport == "udp" else f";transport={peer.transport}"
        return f"<sip:asyncpbx@{host}:{port}{tp}>"

    def send_request(self, request: Request, peer: Peer,
                     on_event: Callable[[Event], None] | None) -> str:
        """Send a request; its responses and transaction events go to ``on_event`` (sipcore's
        transaction carries it: no table of ours maps transaction ids to handlers)."""
        tx: str = self.sip.send_request(request, peer, owner=on_event)
        return tx

    def sip_cancel(self, tx: str, reason: str | None) -> None:
        """CANCEL a pending INVITE client transaction."""
        self.sip.cancel(tx, reason)

    def sip_send_response(self, response: Response, tx: str) -> None:
        """Send a response on a server transaction."""
        self.sip.send_response(response, transaction_id=tx)

    def respond(self, request: Request, status: int, *, tx: str | None = None, body: bytes = b"",
                extra: list[tuple[str, str]] | None = None) -> None:
        """Answer a request on its server transaction ``tx`` (found from the Via without)."""
        self.sip.send_response(self.response_for(request, status, body=body, extra=extra),
                               transaction_id=tx)

    @staticmethod
    def response_for(request: Request, status: int, *, body: bytes = b"",
                     extra: list[tuple[str, str]] | None = None) -> Response:
        """The response :meth:`respond` sends (``body`` is SDP)."""
        resp = make_response(request, status, to_tag=None if request.to_tag else new_tag())
        for name, value in extra or ():
            resp.headers.add(name, value)
        if body:
            resp.body = body
            resp.headers.set("Content-Type", "application/sdp")
            resp.headers.set("Content-Length", str(len(body)))
        return resp

    def wants_srtp(self, target: Target) -> bool:
        """Is ``target`` known to want SRTP (our first offer to it is then RTP/SAVP)?"""
        return target.contact in self.srtp_devices

    def learn_srtp(self, target: Target, wants: bool) -> None:
        """Remember (or forget) that ``target`` wants SRTP: learnt when a SAVP retry after a
        refused plain offer is answered, forgotten when a SAVP offer is refused."""
        devices = self.srtp_devices
        devices.pop(target.contact, None)
        if wants and target.contact:
            devices[target.contact] = None
            if len(devices) > SRTP_DEVICES_MAX:
                del devices[next(iter(devices))]

    def flow_closed(self, peer: Peer) -> None:
        """A WebSocket closed: end the browser legs that were reached over it."""
        for leg in [leg for leg in self._webrtc_legs() if leg.peer.conn_id == peer.conn_id
                    and leg.peer.transport == peer.transport]:
            leg.flow_closed()

    def _webrtc_legs(self) -> list[WebRtcInboundLeg | WebRtcOutboundLeg]:
        return [leg for call in list(self.calls.values()) for leg in call.legs
                if isinstance(leg, WebRtcInboundLeg | WebRtcOutboundLeg)]

    def forget(self, leg: SipLeg) -> None:
        """Drop a leg's table entries (its media is closed)."""
        if leg.dialog is not None:
            self.dialogs.remove(leg.dialog)
            if self.dialog_legs.get(leg.dialog.id) is leg:
                del self.dialog_legs[leg.dialog.id]

    # -- endpoint events -------------------------------------------------------------------------

    def handle_event(self, event: Event) -> None:
        """Everything but REGISTER from the endpoint (called synchronously, in order)."""
        if isinstance(event, RequestReceived):
            request = event.request
            try:
                self._on_request(event)
            except Exception:
                self.log.exception("sip.request.failed", method=request.method,
                                   call_id=request.call_id)
                with contextlib.suppress(Exception):
                    self.respond(request, 500, tx=event.transaction_id)
            return
        if isinstance(event, ResponseReceived | TransactionTimedOut | TransportErrored):
            # the handler the request was sent with, carried by sipcore's own transaction
            if callable(event.owner):
                event.owner(event)
        elif isinstance(event, RequestCancelled | AckTimedOut):
            # the inbound leg that took the INVITE server transaction (InboundLeg.claim)
            leg = event.owner
            if isinstance(leg, InboundLeg):
                if isinstance(event, RequestCancelled):
                    leg.on_cancelled()
                else:
                    leg.on_ack_timeout()
        elif isinstance(event, AckReceived):
            self._on_ack(event.request)

    def _on_ack(self, request: Request) -> None:
        try:
            dialog = self.dialogs.match_request(request)
        except (RemoteProtocolError, ParseError):
            return
        if dialog is not None:
            leg = self.dialog_legs.get(dialog.id)
            if leg is not None:
                leg.on_ack(request)

    def _on_request(self, event: RequestReceived) -> None:
        request = event.request
        if request.method == "MESSAGE" and request.to_tag is None:
            self._on_message(event, None)  # chat (pbx.chat)
            return
        if request.to_tag is None:
            if request.method == "INVITE":
                self._new_call(event)
            else:
                self.respond(request, 481, tx=event.transaction_id)
            return
        try:
            dialog = self.dialogs.match_request(request)
            if dialog is None:
                raise RemoteProtocolError("Call/Transaction Does Not Exist", 481)
            dialog.receive_request(request)
        except RemoteProtocolError as exc:
            self.respond(request, exc.status_hint, tx=event.transaction_id)
            return
        leg = self.dialog_legs.get(dialog.id)
        if leg is None:
            self.respond(request, 481, tx=event.transaction_id)
            return
        if request.method == "MESSAGE":
            self._on_message(event, leg)  # chat during a call
            return
        leg.on_request(event)

    def _on_message(self, event: RequestReceived, leg: SipLeg | None) -> None:
        """SIP MESSAGE (RFC 3428) to the chat service, outside (``leg`` None) or inside a
        call's dialog; 405 without one."""
        chat = self.chat
        if chat is None:
            self.respond(event.request, 405, tx=event.transaction_id,
                         extra=[("Allow", ALLOW)])
        elif leg is None:
            chat.on_request(event)
        else:
            chat.on_dialog_request(event, leg)

    # -- new calls -------------------------------------------------------------------------------

    def _new_call(self, event: RequestReceived) -> None:
        request, peer, tx = event.request, event.peer, event.transaction_id
        now = time.time()
        origin = find_origin(self, event, now)
        if origin is None:
            return  # challenged (407) or refused
        ruri = request.uri
        dialled = ruri.user if isinstance(ruri, SipURI) and ruri.user else ""
        webrtc = is_webrtc_offer(request)
        leg = (WebRtcInboundLeg if webrtc else InboundLeg)(self, request, peer,
                                                           event.transaction_id)
        try:
            # RFC 4028: 422 below our Min-SE, 400 for a garbled Session-Expires/Min-SE
            leg.invite_session.receive_request(request, leg.clock())
        except RemoteProtocolError as exc:  # RequestRefused, or a malformed header (400)
            leg.close_media()
            self.respond(request, tx=tx, status=exc.status_hint, extra=refusal_headers(exc))
            return
        if isinstance(leg, WebRtcInboundLeg):  # the offer is applied asynchronously (ICE)
            self.sip.set_owner(event.transaction_id, leg)
            self.ensure_tasks()
            self.tasks.spawn(self._new_webrtc_call(leg, event, origin, now, dialled),
                             f"webrtc-offer-{leg.id}")
            return
        try:
            leg.prepare_media()
        except ParseError as exc:
            leg.close_media()
            status = exc.status_hint if exc.status_hint >= 400 else 488
            self.log.info("call.offer_refused", call_id=request.call_id, status=status,
                          reason=exc.reason)
            self.respond(request, tx=tx, status=status)
            return
        except OSError:
            leg.close_media()
            self.log.warning("media.ports_exhausted", call_id=request.call_id)
            self.respond(request, tx=tx, status=503, extra=[("Retry-After", "5")])
            return
        self.sip.set_owner(event.transaction_id, leg)
        replaces = request.headers.get("Replaces")
        if replaces is not None:  # RFC 3891: the new leg takes an existing one's place
            on_replacing_invite(self, leg, replaces, origin.user)
            return
        self._begin_call(leg, event, origin, now, dialled)

    async def _new_webrtc_call(self, leg: WebRtcInboundLeg, event: RequestReceived,
                               origin: CallOrigin, now: float, dialled: str) -> None:
        """A browser's INVITE: answer its offer with a peer connection, then start the call
        (unless the browser cancelled meanwhile)."""
        request = event.request
        try:
            await leg.prepare_rtc()
        except ParseError as exc:
            self.log.info("call.offer_refused", call_id=request.call_id, status=488,
                          reason=exc.reason)
            if leg.unanswered:
                leg.reject(488, "Not Acceptable Here")
            leg.close_media()
            return
        if not leg.unanswered:  # cancelled while the candidates were gathered
            leg.close_media()
            return
        self._begin_call(leg, event, origin, now, dialled)

    def ensure_tasks(self) -> None:
        """Start the calls' task scope when nobody runs it (a bare B2BUA in a test)."""
        if not self._scope_owned and not self.tasks.started:
            self.tasks.start()

    def _begin_call(self, leg: InboundLeg, event: RequestReceived, origin: CallOrigin,
                    now: float, dialled: str) -> None:
        """The caller's leg is ready: make the call and run its script."""
        request, peer = event.request, event.peer
        caller = origin.caller
        tenant_id = (origin.user.tenant_id if origin.user is not None
                     else origin.trunk.tenant_id if origin.trunk is not None else None)
        record = CallRecord(call_id=request.call_id, direction=origin.direction,
                            caller=caller, callee=origin.callee or dialled, started=now,
                            tenant_id=tenant_id)
        call = Call(leg, graph=self.graph, leg_factory=self._make_leg, record=record,
                    hold_source=self._hold_for(record.tenant_id), ringback_source=self._ringback_source,
                    busy_source=self._busy_source, on_record=self.on_record)
        call.presentation = origin.presentation
        ruri = request.uri
        if isinstance(ruri, SipURI) and ruri.user and "gr" in ruri.params:
            instance = gruu_instance(ruri.params)
            if instance is not None:  # RFC 5627 §3.4: the GRUU reaches that instance only
                call.per_call[GRUU_TARGET] = (self.aor(ruri.user), instance)
        self.log.info("call.started", call_id=request.call_id, caller=caller, callee=dialled,
                      src=f"{peer.host}:{peer.port}", withheld=origin.presentation.withheld)
        focus = self.focus
        if origin.user is not None and focus is not None and focus.is_factory(dialled):
            self._start_focus(call, leg, origin, focus)
            return
        self._start(call, origin, self.script.run)

    def _start_focus(self, call: Call, leg: InboundLeg, origin: CallOrigin, focus: Any) -> None:
        """A user's call to the conference factory URI (RFC 4579 §5.4,
        :mod:`features.conference_focus`): answered by the focus, whose Contact is the user's
        conference URI with ``isfocus``."""
        assert origin.user is not None
        owner = str(self.routing.user_key(origin.user))
        conf_user = focus.conference_user(origin.user.extension)
        leg.contact = leg.contact.replace("<sip:asyncpbx@", f"<sip:{conf_user}@", 1) \
            + ";isfocus"

        async def script(c: Call) -> None:
            await focus.run(c, owner, conf_user)

        self._start(call, origin, script)

    def _start(self, call: Call, origin: CallOrigin,
               script: Callable[[Call], Coroutine[Any, Any, None]]) -> None:
        """Run ``script`` for ``call`` under its supervisor."""
        self.calls[call.id] = call
        self.origins[call.id] = origin
        self.stats["calls"] += 1
        self.ensure_tasks()
        self.tasks.spawn(self._run_call(call, script), f"call-{call.id}")

    async def _run_call(self, call: Call,
                        script: Callable[[Call], Coroutine[Any, Any, None]]) -> None:
        gruu = call.per_call.get(GRUU_TARGET)
        if gruu is not None:
            _GRUU.set(gruu)  # this task's context only
        try:
            await supervise(call, script, self._on_call_error)
        finally:
            self._call_done(call)

    async def run(self) -> None:
        """Own the calls' task scope inside the caller's TaskGroup until :meth:`close`."""
        self._scope_owned = True
        await self.tasks.run()

    def call_back(self, user: Any, dialled: str, *, timeout: float | None = None,
                  phone: str | None = None) -> Call:
        """Call-back for the directory user ``user``: ring their chosen phone (``phone``:
        ``mobile``, ``remote_office`` or ``device``; default: their call-back setting, see
        :mod:`features.call_back`), and when it answers, call ``dialled`` on their behalf and
        connect both (a PBX-initiated call, no inbound leg). Returns the call (it runs in the
        background)."""
        view = self.routing.view(user)
        record = CallRecord(call_id=new_call_id(), direction="internal",
                            caller=user.extension, callee=dialled, started=time.time(),
                            tenant_id=user.tenant_id)
        call = Call(None, graph=self.graph, leg_factory=self._make_leg, record=record,
                    hold_source=self._hold_for(record.tenant_id), ringback_source=self._ringback_source,
                    busy_source=self._busy_source, on_record=self.on_record)
        ring = timeout if timeout is not None else self.settings.ring_timeout
        self.log.info("call.callback", call_id=record.call_id, user=view.key, dialled=dialled,
                      phone=phone)
        origin = CallOrigin(caller=user.extension, user=user)

        async def script(c: Call) -> None:
            chooser = self.features.get("call_back")
            choose = getattr(chooser, "targets", None)
            targets = (choose(self.script.context(c, view, view), phone)
                       if callable(choose) else ())
            await self.script.call_back(c, view, dialled, ring, targets)

        self._start(call, origin, script)
        return call

    def moved_call(self, first: Call, party: Leg, dialled: str,
                   script: Callable[[Call], Coroutine[Any, Any, None]], *,
                   user: UserView | None = None, consultation: bool = False) -> Call:
        """A new call for ``party``, an answered leg moved out of ``first`` (a transfer): it
        is the new call's caller (``dialled`` its callee), presented as in ``first`` (``user``:
        the party's own user, when it is one of ours); ``script`` runs the call under its own
        supervisor (:mod:`pbx.callcontrol.transfer`). A ``consultation`` is ``user``'s call to
        ``dialled`` instead, with ``party`` on hold in it (not its caller)."""
        if consultation:
            record = CallRecord(call_id=new_call_id(), direction="internal",
                                caller=user.extension if user is not None else "",
                                callee=dialled, started=time.time(),
                                tenant_id=first.record.tenant_id)
            call = Call(None, graph=self.graph, leg_factory=self._make_leg, record=record,
                        hold_source=self._hold_for(record.tenant_id), ringback_source=self._ringback_source,
                        busy_source=self._busy_source, on_record=self.on_record)
            call.adopt(party)
            call.per_call[CONSULTATION_CALL] = True
            self.log.info("call.consultation", call_id=record.call_id,
                          first=first.record.call_id, dialled=dialled)
            self._start(call, CallOrigin(caller=record.caller, user=self.routing.record_of(
                user) if user is not None else None), script)
            return call
        is_caller = party is first.caller
        shown = first.record.caller if is_caller else first.record.callee
        record = CallRecord(call_id=new_call_id(),
                            direction=first.record.direction if is_caller else "internal",
                            caller=shown, callee=dialled, started=time.time(),
                            tenant_id=first.record.tenant_id)
        call = Call(None, graph=self.graph, leg_factory=self._make_leg, record=record,
                    hold_source=self._hold_for(record.tenant_id), ringback_source=self._ringback_source,
                    busy_source=self._busy_source, on_record=self.on_record)
        call.adopt(party)
        call.caller = party
        before = self.origins.get(first.id)
        if is_caller and before is not None:
            origin = dataclasses.replace(before, callee=dialled)
            call.presentation = first.presentation
        else:
            origin = CallOrigin(caller=shown, user=self.routing.record_of(user)
                                if user is not None else None)
        self.log.info("call.moved", call_id=record.call_id, first=first.record.call_id,
                      party=party.id, dialled=dialled)
        self._start(call, origin, script)
        return call

    def _call_done(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        self.origins.pop(call.id, None)
        self.routing.forget(call)
        r = call.record
        duration = round(r.ended - r.answered, 3) if r.ended and r.answered else 0.0
        self.log.info("call.ended", call_id=r.call_id, caller=r.caller, callee=r.callee,
                      status=r.status, cause=r.cause, answered=r.answered is not None,
                      duration=duration)

    def _on_call_error(self, call: Call, exc: BaseException) -> None:
        self.log.error("call.failed", call_id=call.record.call_id, error=repr(exc),
                       exc_info=exc)

    # -- media sources ---------------------------------------------------------------------------

    def _hold_for(self, tenant_id: int | None) -> Callable[[int], MediaPort]:
        """The music-on-hold source of a call of ``tenant_id``: the tenant's own upload
        (pbx.moh, looked up when the party goes on hold) or the server's default."""

        def source(rate: int) -> MediaPort:
            own = self.moh.path(tenant_id) if self.moh is not None else None
            if own is not None:
                from media.player import Player

                return Player(own, rate, loop=True)
            return self._moh_source(rate)

        return source

    def _moh_source(self, rate: int) -> MediaPort:
        if self.settings.moh_file:
            from media.player import Player

            return Player(self.settings.moh_file, rate, loop=True)
        return ToneGenerator(MOH_TONE, rate)

    def _ringback_source(self, rate: int) -> MediaPort:
        return self._tone_source(ToneName.RINGBACK, rate)

    def _busy_source(self, rate: int) -> MediaPort:
        return self._tone_source(ToneName.BUSY, rate)

    def _tone_source(self, name: ToneName, rate: int) -> MediaPort:
        # Every ringing call hears the same cadence: one cycle is synthesised once per
        # (tone, rate) and each call plays a cursor over it (no per-frame sine, no per-call
        # generator set-up). Tones whose cycle is not whole periods keep the exact generator.
        tone = self._tones[name]
        key = (name, rate)
        if key not in self._tone_cycles:
            self._tone_cycles[key] = looped_tone_cycle(tone, rate)
        cycle = self._tone_cycles[key]
        if cycle is None:
            return ToneGenerator(tone, rate)
        return LoopedTone(cycle, rate)

    # -- routing and legs ------------------------------------------------------------------------

    def _make_trunk_leg(self, call: Call, target: Target) -> Leg:
        trunk = self.trunks.trunks.get(target.contact) if self.trunks is not None else None
        if trunk is None:
            raise ValueError(f"no trunk {target.contact}")
        return TrunkLeg(self, call, target, trunk=trunk,
                        caller_did=self.routing.caller_dids.get(call.id),
                        caller_name=self.display_name(call.record.caller))

    def aor(self, user: str) -> str:
        """The address-of-record of a user (``ext``, or ``ext@domain`` in another tenant)."""
        return f"sip:{user}" if "@" in user else f"sip:{user}@{self.domain}"

    def devices_of(self, user: str) -> list[Target]:
        """One target per registered binding of ``user`` (inside a call to one of its GRUUs:
        the binding of that instance only)."""
        aor = self.aor(user)
        bindings = self.registrar.bindings(aor, time.time())
        gruu = _GRUU.get()
        if gruu is not None and gruu[0] == aor:
            bindings = [b for b in bindings if b.instance == gruu[1]]
        return [Target("device", user=user, contact=b.uri, label=f"{user}:{b.uri}")
                for b in bindings]

    def _binding(self, target: Target) -> Binding | None:
        for b in self.registrar.bindings(self.aor(target.user), time.time()):
            if b.uri == target.contact:
                return b
        return None

    def _make_leg(self, call: Call, target: Target) -> Leg:
        if target.kind == "number":
            return self._make_trunk_leg(call, target)
        binding = self._binding(target)
        uri = parse_uri(target.contact)
        if binding is not None and binding.received is not None:
            peer = binding.received
        elif isinstance(uri, SipURI):
            transport = (uri.transport or "udp").lower()
            peer = Peer(transport, uri.host.strip("[]"), uri.port or 5060)  # type: ignore[arg-type]
        else:
            raise ValueError(f"cannot reach {target.contact}")
        origin = self.origins.get(call.id)
        # a user caller is named by its key (ext@tenant-domain outside the default tenant)
        user = origin.user if origin is not None else None
        caller = self.routing.user_key(user) if user is not None else call.record.caller
        # the user's own name: display_name() looks the extension up in the default tenant
        display = (str(user.name) if user is not None
                   else self.display_name(call.record.caller))
        if call.caller is None and not call.per_call.get(CONSULTATION_CALL):
            # a call-back rings the user first: show whom it will call
            caller, display = call.record.callee, f"Call-back {call.record.callee}"
        request_uri = target.contact
        if isinstance(uri, SipURI) and uri.headers:
            # Headers escaped into a registered Contact (RFC 4475 §3.3.14) are never applied
            # nor passed on: a Request-URI carries none (RFC 3261 §19.1.1, Table 1).
            bare = uri.copy()
            bare.headers = {}
            request_uri = str(bare)
        kind = WebRtcOutboundLeg if peer.transport in WEBRTC_TRANSPORTS else OutboundLeg
        return kind(self, call, target, request_uri=request_uri, peer=peer,
                           route=binding.path if binding is not None else (),
                           caller_display=display, caller_user=caller, callee_user=target.user)

    # -- the call script's host (pbx.callcontrol.ScriptHost) ------------------------------------

    def originator(self, call: Call) -> UserView | None:
        """The user who placed ``call``."""
        return self.routing.originator(call)

    def digits_only(self, call: Call) -> UserView | None:
        """Whose digits-only feature codes ``call`` may dial (:class:`CallRouter`)."""
        return self.routing.digits_only(call)

    def route(self, call: Call, dialled: str, on_behalf_of: UserView | None) -> (
            Routed | Ring | Reject):
        """Where ``dialled`` goes, sent by ``on_behalf_of`` (:class:`CallRouter`)."""
        return self.routing.route(call, dialled, on_behalf_of)

    def devices(self, user: UserView) -> list[Target]:
        """The user's registered devices."""
        return self.devices_of(user.key)

    def tone(self, name: ToneName, rate: int) -> MediaPort:
        """One of our tones, looped."""
        return self._tone_source(name, rate)

    def prompt(self, prompt: Prompt, language: str, rate: int,
               tenant_id: int | None = None) -> MediaPort:
        """An announcement from the prompt set (:class:`pbx.prompts.PromptStore`), played
        once; LookupError when the set has no such prompt (or none is loaded)."""
        if self.prompts is None:
            raise LookupError(f"prompt {prompt.name!r}: no prompt set loaded")
        if not language and tenant_id is not None and self.router is not None:
            tenant = self.router.directory.tenant(tenant_id)  # someone who is not a user
            language = tenant.language if tenant is not None else ""
        return self.prompts.port(prompt, language, rate, tenant_id)

    def _announcement(self, prompt: Prompt, user: UserView | None, rate: int,
                      tenant_id: int | None = None) -> MediaPort | None:
        """``prompt`` in ``user``'s language (their tenant's recording first) — without a user,
        in the language of ``tenant_id`` (the call's tenant); None when it cannot be had
        (logged)."""
        try:
            return self.prompt(prompt, user.language if user is not None else "", rate,
                               user.tenant_id if user is not None else tenant_id)
        except LookupError as exc:
            self.log.warning("call.prompt_missing", prompt=prompt.name, error=str(exc))
            return None

    async def _play_until_done(self, call: Call, caller: Leg, port: MediaPort) -> None:
        """Play ``port`` to ``caller`` until it ran out or the caller left (at most
        :data:`PROMPT_LIMIT` seconds)."""
        playback = call.play(caller, port)
        gone = asyncio.ensure_future(self._caller_gone(call))
        try:
            await asyncio.wait((playback.done, gone), timeout=PROMPT_LIMIT,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            playback.stop()

    async def fail(self, call: Call, status: int, reason: str | None = None, *,
                   retry_after: int | None = None, prompt: Prompt | None = None,
                   user: UserView | None = None) -> None:
        """Tell the unanswered caller ``status`` (see :meth:`_fail`)."""
        await self._fail(call, status, reason, retry_after=retry_after, prompt=prompt,
                         user=user)

    async def _fail(self, call: Call, status: int, reason: str | None = None, *,
                    retry_after: int | None = None, prompt: Prompt | None = None,
                    user: UserView | None = None) -> None:
        """Reject the caller; with ``busy_tone`` > 0 a busy caller first gets a 183 with our SDP
        (early media) and hears the busy tone for that long (or until it gives up). A
        ``prompt`` (in ``user``'s language) is announced the same way instead, to its end."""
        caller = call.caller
        if caller is None:
            return
        if caller.answered and call.per_call.get(RECALL):
            call.record.status = status  # a failed blind transfer: the transferor is recalled
            return
        announcement = (self._announcement(prompt, user, caller.media.sample_rate,
                                           call.record.tenant_id)
                        if prompt is not None and caller.media is not None else None)
        if announcement is not None and (caller.answered or (
                caller.unanswered
                and not (isinstance(caller, InboundLeg) and caller.delayed_offer))):
            if not caller.answered:
                caller.progress(early_media=True)
            else:
                call.record.status = status
            await self._play_until_done(call, caller, announcement)
            if caller.answered:
                return
        elif caller.answered and caller.media is not None:
            # a call-back's user is already talking to us: tell them in band
            call.record.status = status
            playback = call.play(caller, self._busy_source(caller.media.sample_rate)
                                 if status == 486 else
                                 self._tone_source(ToneName.ERROR, caller.media.sample_rate))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._caller_gone(call), max(self.settings.busy_tone, 3.0))
            playback.stop()
            return
        elif (status == 486 and self.settings.busy_tone > 0
                and caller.unanswered
                and caller.media is not None
                # an offerless INVITE's offer may not go in an unreliable 18x
                and not (isinstance(caller, InboundLeg) and caller.delayed_offer)):
            caller.progress(early_media=True)
            playback = call.play(caller, self._busy_source(caller.media.sample_rate))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._caller_gone(call), self.settings.busy_tone)
            playback.stop()
        if retry_after is not None and isinstance(caller, InboundLeg) and caller.unanswered:
            call.record.status = status
            caller.reject(status, reason, retry_after=retry_after)
        call.reject(status, reason)

    @staticmethod
    async def _caller_gone(call: Call) -> None:
        while True:
            event = await call.next_event()
            if event is not None and event.leg is call.caller and isinstance(
                    event, LegFailed | LegEnded):
                return

    async def connect(self, call: Call, callee: Leg) -> Leg | None:
        """Bridge the caller to ``callee``, answer the caller, run the call until a leg ends
        (returned; None when the caller went away first)."""
        caller = call.caller
        if caller is None:
            return None
        bridge = call.bridge(caller, callee)
        if not await call.answer(caller):
            return None
        call.mark_answered(callee)
        self.stats["answered"] += 1
        self.log.info("call.answered", call_id=call.record.call_id, caller=call.record.caller,
                      callee=call.record.callee, by=callee.party,
                      codecs=[getattr(leg.media, "format", None) and
                              leg.media.format.name for leg in (caller, callee)],  # type: ignore[union-attr]
                      srtp=[isinstance(leg.media, RtpSession) and leg.media.srtp is not None
                            for leg in (caller, callee)])
        if self.settings.rtp_timeout > 0:
            self.rtp_watch.watch(call, (caller, callee))
        try:
            ended = await call.wait_hangup(bridge)
            if ended is not None and not call.record.cause:
                call.record.cause = "caller hung up" if ended is caller else "callee hung up"
        finally:
            self.rtp_watch.forget(call)
        return ended

    # -- shutdown --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Release every call (BYE/CANCEL/5xx): the scope cancels their tasks, each call's
        supervisor releases it, and the scope waits for them all."""
        await self.tasks.close(timeout=10.0)

    def statistics(self) -> dict[str, int]:
        """Counters plus the number of active calls."""
        return {**self.stats, "active_calls": len(self.calls)}
