"""A SIP leg: one dialog plus one RTP session (the base of the inbound, outbound and trunk legs)."""
from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from media.aio import RtpSession, payload_format
from media.codecs import UnsupportedCodec
from media.srtp import (
    CryptoAttribute,
    SrtpSession,
)
from pbx.callcontrol import (
    Call,
    DtmfReceived,
    Leg,
    LegHeld,
    LegInput,
    LegMediaChanged,
    LegResumed,
    LegState,
    Target,
)
from pbx.legs.sdp import (
    ALL_CODECS,
    choose_sdes,
    is_sdp,
    leg_answer,
    offered_crypto,
)
from pbx.legs.timer import negotiate_session_timer, option_tags, parse_session_expires
from sipcore.dialog import Dialog, DialogState
from sipcore.endpoint import (
    Event,
    RequestReceived,
    ResponseReceived,
)
from sipcore.errors import ParseError
from sipcore.message import Request
from sipcore.sdp import (
    SessionDescription,
    create_offer,
    negotiated_codecs,
    parse_sdp,
)
from sipcore.transport import Peer

if TYPE_CHECKING:
    from pbx.b2bua import B2bua

#: Methods handled inside a dialog.
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"


def dtmf_from_info(body: bytes) -> str | None:
    """The digit of an ``application/dtmf-relay`` body (``Signal=5``)."""
    for line in body.decode("latin-1").splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "signal":
            digit = value.strip().upper()
            if len(digit) == 1 and digit in "0123456789*#ABCD":
                return digit
            if digit == "10":
                return "*"
            if digit == "11":
                return "#"
    return None


class SipLeg(Leg):
    """A SIP leg: one dialog plus one RTP session. Subclassed for the two directions."""

    def __init__(self, b2bua: B2bua, call: Call | None, peer: Peer, *, party: str = "",
                 target: Target | None = None) -> None:
        super().__init__(call, party=party, target=target)
        self.b2bua = b2bua
        self.peer = peer
        self.dialog: Dialog | None = None
        self.session: RtpSession | None = None
        self.local_sdp: SessionDescription | None = None
        #: (local_sdp, its wire form): the 183 and the 200 of a call carry the same answer.
        #: A new SDP is always a new object (local_sdp is assigned, never changed in place).
        self._local_sdp_wire: tuple[SessionDescription, bytes] | None = None
        self.remote_sdp: SessionDescription | None = None
        self.session_id = random.getrandbits(31)  # o= sess-id: unique, not secret (RFC 4566)
        self.session_version = 0
        self.contact = b2bua.contact_for(peer)
        #: RFC 4028 state: interval, and whether we refresh (else we expect refreshes).
        self.se_interval: int | None = None
        self.se_we_refresh = False
        self._se_timer: asyncio.TimerHandle | None = None
        self._reinvite_pending = False
        self._acks: dict[int, Request] = {}
        #: SDES keys ``(remote, local)`` while this leg runs SRTP (RFC 4568).
        self.sdes: tuple[CryptoAttribute, CryptoAttribute] | None = None

    # -- media -----------------------------------------------------------------------------------

    def _new_session(self, codec: str = "PCMU", pt: int = 0,
                     sdes: tuple[CryptoAttribute, CryptoAttribute] | None = None) -> RtpSession:
        srtp = SrtpSession(sdes[1], sdes[0]) if sdes is not None else None
        session = self.b2bua.engine.create_session(codec=codec, payload_type=pt,
                                                   telephone_event_pt=None, srtp=srtp)
        self.sdes = sdes
        session.on_dtmf = self._on_rtp_dtmf
        self.session = session
        self.media = session
        return session

    def _on_rtp_dtmf(self, digit: str) -> None:
        self.post(DtmfReceived(self, digit))

    def _apply_remote(self, sdp: SessionDescription, *, local: SessionDescription | None = None
                      ) -> tuple[bool, bool]:
        """Use the negotiated codec and address; returns (codec changed, far end holds).

        ``local`` is the answer we gave to ``sdp`` (an offer), whose codec order wins;
        without it ``sdp`` is the answer to our offer."""
        session = self.session
        assert session is not None
        index = next((i for i, m in enumerate(sdp.media) if m.media == "audio" and m.port != 0),
                     None)
        if index is None:
            raise ParseError("No acceptable media", 488)
        m = sdp.media[index]
        chosen = negotiated_codecs(local.media[index] if local is not None else m)
        voice = next((rm for rm in chosen if rm.encoding.lower() != "telephone-event"), None)
        if voice is None:
            raise ParseError("No acceptable media", 488)
        try:
            fmt = payload_format(voice.encoding, voice.payload_type)
        except UnsupportedCodec:
            raise ParseError("No acceptable media", 488) from None
        changed = (session.format.name, session.payload_type) != (fmt.name, fmt.payload_type)
        if changed:
            session.set_format(fmt)
        te = next((rm for rm in chosen if rm.encoding.lower() == "telephone-event"
                   and rm.clock_rate == fmt.clock_rate), None)
        session.telephone_event_pt = te.payload_type if te else None
        conn = sdp.media_connection(index)
        direction = sdp.media_direction(index)
        holding = direction in ("sendonly", "inactive") or (
            conn is not None and conn.address in ("0.0.0.0", "::"))
        if conn is not None and not holding:
            session.set_remote(conn.address, m.port)
        # Our own direction mirrors theirs (we never hold by SIP: our hold is in the media graph).
        session.set_direction({"sendonly": "recvonly", "recvonly": "sendonly",
                               "inactive": "inactive"}.get(direction, "sendrecv"))
        self.remote_sdp = sdp
        return changed, holding

    def _answer_offer(self, offer: SessionDescription) -> SessionDescription:
        """Our answer to ``offer`` on this leg's session (same port; new version)."""
        session = self.session
        assert session is not None
        # SRTP is fixed per leg when its session is made (the socket is then a raw slot): a
        # re-offer may change keys but not switch between RTP and SRTP (488).
        crypto = offered_crypto(offer)
        sdes = None
        if session.srtp is not None:
            if crypto is None:
                raise ParseError("This leg needs SRTP", 488)
            sdes = choose_sdes(crypto, self.sdes)
        self.session_version += 1
        ans = leg_answer(offer, current=session.format.name, sdes=sdes,
                         address=self.b2bua.sdp_address, port=session.local_port,
                         session_id=self.session_id, session_version=self.session_version)
        if sdes is not None and sdes != self.sdes:
            session.srtp = SrtpSession(sdes[1], sdes[0])
            self.sdes = sdes
        self.local_sdp = ans
        return ans

    def _offer(self, first: str | None = None,
               crypto: list[CryptoAttribute] | None = None) -> SessionDescription:
        """Our offer on this leg's session; RTP/SAVP with ``crypto`` as ``a=crypto`` lines
        (SDES, RFC 4568) when given, else plain RTP/AVP."""
        assert self.session is not None
        codecs = list(ALL_CODECS)
        if first:
            codecs.sort(key=lambda c: c.name.upper() != first.upper())
        offer = create_offer(codecs, address=self.b2bua.sdp_address, port=self.session.local_port,
                             session_id=self.session_id, session_version=self.session_version,
                             username="asyncpbx", proto="RTP/SAVP" if crypto else "RTP/AVP",
                             extra_attributes=[("crypto", c.to_sdp()) for c in crypto or ()])
        self.local_sdp = offer
        return offer

    def _local_sdp_body(self, sdp: SessionDescription) -> bytes:
        """``sdp.serialize()`` for our current SDP, serialized once per SDP object."""
        wire = self._local_sdp_wire
        if wire is None or wire[0] is not sdp:
            wire = self._local_sdp_wire = (sdp, sdp.serialize())
        return wire[1]

    def close_media(self) -> None:
        """Release the RTP ports and timers."""
        self._cancel_se_timer()
        if self.session is not None:
            self.session.on_dtmf = None
            self.session.close()
        self.b2bua.forget(self)

    # -- dialog plumbing -------------------------------------------------------------------------

    def _bind_dialog(self, dialog: Dialog) -> None:
        self.dialog = dialog
        self.b2bua.dialogs.add(dialog)
        self.b2bua.dialog_legs[dialog.id] = self

    def send_in_dialog(self, method: str, *, body: bytes = b"", content_type: str | None = None,
                       extra: list[tuple[str, str]] | None = None,
                       on_response: Callable[[Event], None] | None = None) -> str | None:
        """Send an in-dialog request; ``on_response`` gets its responses/timeout."""
        dialog = self.dialog
        if dialog is None or dialog.state is DialogState.TERMINATED:
            return None
        request = dialog.create_request(method, body=body, content_type=content_type,
                                        extra=extra)
        return self.b2bua.send_request(request, self.peer, on_response)

    def _send_bye(self, reason: str | None = None) -> None:
        extra = [("Reason", reason)] if reason else None
        self.send_in_dialog("BYE", extra=extra, on_response=lambda ev: None)
        if self.dialog is not None:
            self.b2bua.dialogs.remove(self.dialog)

    def _ended(self, cause: str, remote: bool) -> None:
        self.transition(LegInput.END, cause=cause, remote=remote)
        self._cancel_se_timer()

    def hangup(self, cause: str = "normal") -> None:
        """BYE when answered, otherwise what the subclass does for an unanswered leg."""
        if self.state is LegState.ANSWERED or self.state is LegState.ANSWERING:
            self._send_bye('SIP;cause=500;text="Server Internal Error"' if cause == "error"
                           else None)
            self._ended(cause, remote=False)

    def send_dtmf(self, digits: str) -> None:
        """RFC 4733 when negotiated, SIP INFO (application/dtmf-relay) otherwise."""
        session = self.session
        if session is not None and session.telephone_event_pt is not None:
            session.send_dtmf(digits)
            return
        for digit in digits:
            self.send_in_dialog("INFO", body=f"Signal={digit}\r\nDuration=160\r\n".encode(),
                                content_type="application/dtmf-relay",
                                on_response=lambda ev: None)

    # -- session timers (RFC 4028) ---------------------------------------------------------------

    def _cancel_se_timer(self) -> None:
        if self._se_timer is not None:
            self._se_timer.cancel()
            self._se_timer = None

    def _arm_se_timer(self) -> None:
        self._cancel_se_timer()
        if self.se_interval is None or self.ended:
            return
        loop = asyncio.get_running_loop()
        if self.se_we_refresh:
            self._se_timer = loop.call_later(self.se_interval / 2, self._refresh_session)
        else:
            # §10: without a refresh by then, send BYE (expiry minus a third, at most 32 s)
            grace = min(32.0, self.se_interval / 3)
            self._se_timer = loop.call_later(self.se_interval - grace, self._session_expired)

    def _session_expired(self) -> None:
        self._se_timer = None
        if self.state is LegState.ANSWERED:
            self.b2bua.log.info("call.session_expired", leg=self.id, call_id=self._call_id())
            self._send_bye('SIP;cause=408;text="Session timer expired"')
            self._ended("session-timer", remote=False)

    def _refresh_session(self) -> None:
        """We are the refresher: a re-INVITE with our current SDP (RFC 4028 §7.4/§8)."""
        self._se_timer = None
        if self.state is not LegState.ANSWERED or self.local_sdp is None:
            return
        if self._reinvite_pending:
            self._arm_se_timer()
            return
        self._reinvite_pending = True
        assert self.se_interval is not None
        extra = [("Session-Expires", f"{self.se_interval};refresher=uac"),
                 ("Supported", "timer"), ("Allow", ALLOW)]
        self.send_in_dialog("INVITE", body=self._local_sdp_body(self.local_sdp),
                            content_type="application/sdp", extra=extra,
                            on_response=self._on_refresh_response)
        self._arm_se_timer()

    def _on_refresh_response(self, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            response = event.response
            if response.status < 200:
                return
            self._reinvite_pending = False
            if response.status < 300 and self.dialog is not None:
                self.dialog.receive_response(response)
                ack = self.dialog.create_ack(response.cseq.seq)
                self.b2bua.send_request(ack, self.peer, None)
            elif response.status in (408, 481):
                self.hangup("session-refresh-failed")
        else:
            self._reinvite_pending = False

    def _session_timer_headers(self, request: Request, *, uas: bool) -> list[tuple[str, str]]:
        """Negotiate timers for a request we answer with 2xx; returns headers for the 2xx."""
        se = parse_session_expires(request.headers.get("Session-Expires"))
        supported = "timer" in option_tags(request, "Supported") | option_tags(request, "Require")
        if se is None:
            return []
        settings = self.b2bua.settings
        seconds, refresher = negotiate_session_timer(se, supported, min_se=settings.min_se,
                                                     session_expires=settings.session_expires)
        self.se_interval = seconds
        self.se_we_refresh = refresher == "uas"
        headers = [("Session-Expires", f"{seconds};refresher={refresher}")]
        if supported:
            headers.append(("Require", "timer"))
        return headers

    # -- in-dialog requests ----------------------------------------------------------------------

    def on_request(self, event: RequestReceived) -> None:
        """An in-dialog request for this leg (the dialog table has checked CSeq)."""
        request = event.request
        method = request.method
        b2b = self.b2bua
        tx = event.transaction_id
        if method == "BYE":
            b2b.respond(request, 200, tx=tx)
            if self.dialog is not None:
                b2b.dialogs.remove(self.dialog)
            if self.state is LegState.ANSWERED or self.state is LegState.ANSWERING:
                self._ended("bye", remote=True)
            else:
                # BYE on an early dialog (the caller gave up after our 18x)
                self.transition(LegInput.FAIL, status=487, reason="bye")
            return
        if method in ("INVITE", "UPDATE"):
            self._on_offer_request(request, tx)
            return
        if method == "INFO":
            digit = None
            if (request.content_type or "") == "application/dtmf-relay":
                digit = dtmf_from_info(request.body)
            b2b.respond(request, 200, tx=tx)
            if digit is not None:
                self.post(DtmfReceived(self, digit, "info"))
            return
        if method == "OPTIONS":
            b2b.respond(request, 200, tx=tx, extra=[("Allow", ALLOW)])
            return
        b2b.respond(request, 501, tx=tx)

    def _on_offer_request(self, request: Request, tx: str) -> None:
        """re-INVITE or UPDATE: answered locally on this leg (RFC 3261 §14.2, RFC 3311)."""
        b2b = self.b2bua
        if request.method == "INVITE" and self._reinvite_pending:
            b2b.respond(request, 491, tx=tx)  # RFC 3261 §14.2 glare
            return
        se = parse_session_expires(request.headers.get("Session-Expires"))
        if se is not None and se[0] < b2b.settings.min_se:
            b2b.respond(request, 422, tx=tx, extra=[("Min-SE", str(b2b.settings.min_se))])
            return
        body = b""
        events: list[Any] = []
        if is_sdp(request):
            try:
                offer = parse_sdp(request.body)
                ans = self._answer_offer(offer)
                changed, holding = self._apply_remote(offer, local=ans)
            except ParseError as exc:
                b2b.respond(request, exc.status_hint if exc.status_hint >= 400 else 488, tx=tx)
                return
            body = ans.serialize()
            if changed:
                events.append(LegMediaChanged(self))
            if holding != self.held:
                events.append(LegHeld(self) if holding else LegResumed(self))
        elif request.method == "INVITE" and self.local_sdp is not None:
            body = self._local_sdp_body(self.local_sdp)  # offerless re-INVITE: our offer in the 2xx
        extra = [("Contact", self.contact), ("Allow", ALLOW), ("Supported", "timer")]
        if se is not None:
            extra += self._session_timer_headers(request, uas=True)
        elif self.se_interval is not None:
            # refresher named from this transaction's point of view (RFC 4028 §9)
            who = "uas" if self.se_we_refresh else "uac"
            extra.append(("Session-Expires", f"{self.se_interval};refresher={who}"))
        b2b.respond(request, 200, tx=tx, body=body, extra=extra)
        self._arm_se_timer()
        for ev in events:
            self.post(ev)

    def on_ack(self, request: Request) -> None:
        """ACK in this dialog (for our 2xx to the INVITE or a re-INVITE)."""
        if is_sdp(request) and self.session is not None:
            with contextlib.suppress(ParseError):
                changed, _ = self._apply_remote(parse_sdp(request.body))
                if changed:
                    self.post(LegMediaChanged(self))

    def _call_id(self) -> str:
        return self.call.record.call_id if self.call is not None else ""

