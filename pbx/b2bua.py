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

Session timers (RFC 4028): the caller's Session-Expires is honoured (422 below our Min-SE) with
the caller as refresher unless it asks otherwise; a leg whose session is not refreshed in time is
ended with BYE. A callee that asks for timers in its 2xx gets them too. Dead calls are also
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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from features.base import (
    CallContext,
    Continue,
    Decision,
    Handled,
    Redirect,
    Reject,
    Ring,
)
from features.registry import FeatureRegistry, default_registry
from media.aio import MediaEngine, RtpSession, payload_format
from media.codecs import UnsupportedCodec
from media.port import Frame, MediaPort, samples_per_frame
from media.srtp import (
    SUITES,
    CryptoAttribute,
    SrtpSession,
    answer_crypto,
    generate_crypto,
    parse_crypto,
)
from media.tones import Segment, Tone, ToneGenerator, ToneName, tone_plan
from pbx.callcontrol import (
    Call,
    CallRecord,
    DtmfReceived,
    Leg,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegHeld,
    LegInput,
    LegMediaChanged,
    LegProgressed,
    LegResumed,
    LegState,
    RingOutcome,
    Target,
    supervise,
)
from pbx.directory import Destination, Router
from pbx.trunks import TrunkConfig, TrunkManager, build_outbound_request
from sipcore.dialog import Dialog, DialogSet, DialogState, DialogTable
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
from sipcore.headers import Headers
from sipcore.message import Request, Response, make_response, new_call_id, new_tag
from sipcore.registrar import Binding, Registrar
from sipcore.sdp import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    MediaDescription,
    SessionDescription,
    answer,
    create_offer,
    negotiated_codecs,
    parse_sdp,
)
from sipcore.transport import Peer
from sipcore.uri import SipURI, parse_uri

__all__ = ["B2bua", "CallSettings", "InboundLeg", "OutboundLeg", "SipLeg"]

#: Voice codecs in our order of preference; telephone-event at 8 kHz and at Opus's 48 kHz.
VOICE_CODECS: tuple[Codec, ...] = (PCMU, PCMA, G722, OPUS)
TELEPHONE_EVENT_48K = Codec("telephone-event", 48000, payload_type=102, fmtp="0-16")
ALL_CODECS: tuple[Codec, ...] = (*VOICE_CODECS, TELEPHONE_EVENT, TELEPHONE_EVENT_48K)
#: Methods handled inside a dialog.
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
#: How often a call's legs are checked for RTP inactivity, at most (s).
RTP_CHECK_INTERVAL = 5.0
#: Loop protection for Redirect decisions (FEATURES.md: never more than 5 forwards).
MAX_REDIRECTS = 5

#: Music on hold when no file is configured: a slow arpeggio (A major), clearly "music" and easy
#: to detect in tests (440/554/659 Hz).
MOH_TONE = Tone((Segment(400, (440.0,)), Segment(400, (554.37,)), Segment(400, (659.26,)),
                 Segment(400, (554.37,))), repeat=True, level_dbm0=-16.0)


@dataclass(frozen=True, slots=True)
class CallSettings:
    """Call-handling parameters (from the ``[calls]`` and ``[media]`` config tables)."""

    ring_timeout: float = 20.0
    #: RFC 4028: the interval we grant (upper bound) and the smallest we accept (422 below).
    session_expires: int = 1800
    min_se: int = 90
    #: A leg that received no RTP for this long (not on hold) ends the call; 0 disables.
    rtp_timeout: float = 60.0
    #: Seconds of busy tone a caller we give early media to hears before the 486; 0: none.
    busy_tone: float = 0.0
    #: Music on hold file (any format PyAV reads); empty: a generated melody.
    moh_file: str = ""
    #: Tone plan (ringback, busy) country.
    tones: str = "DE"
    #: The address written into our SDP (c=); defaults to the media engine's host.
    sdp_address: str = ""


def _is_sdp(message: Request | Response) -> bool:
    return bool(message.body) and (message.content_type or "") == "application/sdp"


def _parse_se(value: str | None) -> tuple[int, str | None] | None:
    """``Session-Expires: 1800;refresher=uac`` → (1800, "uac")."""
    if not value:
        return None
    head, *params = value.split(";")
    try:
        seconds = int(head.strip())
    except ValueError:
        return None
    refresher = None
    for p in params:
        k, _, v = p.partition("=")
        if k.strip().lower() == "refresher":
            refresher = v.strip().lower()
    return seconds, refresher


def _option_tags(message: Request | Response, name: str) -> set[str]:
    return {t.strip().lower() for v in message.headers.get_all(name) for t in v.split(",")}


#: Secure RTP profiles (RFC 3711/4585); SDES keys (RFC 4568) ride in their ``a=crypto`` lines.
SAVP_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
PLAIN_PROTOS = ("RTP/AVP", "RTP/AVPF")


#: Final responses to an INVITE that reject its offer's media: Unsupported Media Type, Not
#: Acceptable Here, Not Acceptable (RFC 3261 §21.4.13, §21.4.26, §21.6.4).
MEDIA_REJECTED = (415, 488, 606)
#: How many devices :meth:`B2bua.learn_srtp` remembers as wanting SRTP (oldest forgotten first).
SRTP_DEVICES_MAX = 10_000


def offer_keys() -> list[CryptoAttribute]:
    """Fresh SDES keys for an RTP/SAVP offer: one ``a=crypto`` line per suite we support,
    tags 1, 2, … in our order of preference (RFC 4568 §6.1)."""
    return [generate_crypto(tag, suite) for tag, suite in enumerate(SUITES, start=1)]


def first_audio(sdp: SessionDescription) -> MediaDescription | None:
    """The first active (port != 0) audio stream of ``sdp``."""
    return next((m for m in sdp.media if m.media == "audio" and m.port != 0), None)


def offered_crypto(sdp: SessionDescription) -> list[CryptoAttribute] | None:
    """The parseable ``a=crypto`` lines of the first audio stream when it is RTP/SAVP(F);
    None when the stream is plain RTP (or there is none)."""
    m = first_audio(sdp)
    if m is None or m.proto not in SAVP_PROTOS:
        return None
    found: list[CryptoAttribute] = []
    for value in m.get_attributes("crypto"):
        with contextlib.suppress(ParseError):
            found.append(parse_crypto(value))
    return found


def choose_sdes(offered: list[CryptoAttribute],
                current: tuple[CryptoAttribute, CryptoAttribute] | None = None
                ) -> tuple[CryptoAttribute, CryptoAttribute]:
    """``(remote, local)`` keys for an SDES offer: the current pair again when the offer still
    carries the peer's current key (a re-INVITE that changes nothing else), else the first
    acceptable line with a fresh key of ours. ParseError(488) when nothing is acceptable."""
    if current is not None:
        for attr in offered:
            if attr.key == current[0].key and attr.suite == current[0].suite and \
                    attr.mki is None and not attr.session_params:
                return attr, replace(current[1], tag=attr.tag)
    chosen = answer_crypto(offered)
    if chosen is None:
        raise ParseError("No acceptable SRTP crypto suite", 488)
    return chosen


def leg_answer(offer: SessionDescription, *, current: str,
               sdes: tuple[CryptoAttribute, CryptoAttribute] | None, address: str, port: int,
               session_id: int, session_version: int) -> SessionDescription:
    """One leg's SDP answer (RFC 3264): our codecs with ``current`` (the leg's codec) first so a
    re-offer keeps it; RTP/SAVP(F) with our ``a=crypto`` when ``sdes`` is set, plain RTP/AVP(F)
    otherwise. ParseError(488) when nothing is acceptable."""
    codecs = sorted(ALL_CODECS, key=lambda c: c.name.upper() != current.upper())
    ans = answer(offer, codecs, address=address, port=port, session_id=session_id,
                 session_version=session_version, rtcp_mux=False, username="asyncpbx",
                 protos=SAVP_PROTOS if sdes is not None else PLAIN_PROTOS)
    if sdes is not None:
        for m in ans.media:
            if m.port != 0:  # before the direction attribute, which answer() puts last
                m.attributes.insert(len(m.attributes) - 1, ("crypto", sdes[1].to_sdp()))
    return ans


def negotiate_session_timer(se: tuple[int, str | None], supported: bool, *, min_se: int,
                            session_expires: int) -> tuple[int, str]:
    """RFC 4028 §9 for a request we answer: the interval (the requested one, capped by ours
    and at least Min-SE) and who refreshes (``"uac"``/``"uas"``). A UAC without ``timer``
    support cannot be the refresher."""
    seconds = max(min_se, min(se[0], session_expires))
    refresher = se[1] or ("uac" if supported else "uas")
    if refresher == "uac" and not supported:
        refresher = "uas"
    return seconds, refresher


def looped_tone_cycle(tone: Tone, rate: int) -> npt.NDArray[np.int16] | None:
    """One cycle of a repeating ``tone`` at ``rate`` plus one frame of wrap-around (so a frame
    never straddles the loop point), or None when looping it would not be exact: a tone that
    does not repeat, a cycle that is not whole samples, or a frequency that does not complete
    whole periods per cycle (the loop point would click)."""
    total_ms = sum(seg.duration_ms for seg in tone.segments)
    if not tone.repeat or (total_ms * rate) % 1000:
        return None
    samples = total_ms * rate // 1000
    for f in tone.frequencies:
        periods = f * samples / rate
        if abs(periods - round(periods)) > 1e-9:
            return None
    frame = samples_per_frame(rate)
    cycle = ToneGenerator(tone, rate).read(samples)
    padded: npt.NDArray[np.int16] = np.concatenate([cycle, cycle[:frame]]) if samples >= frame \
        else np.resize(cycle, samples + frame)
    padded.setflags(write=False)
    return padded


class LoopedTone:
    """A media port playing a shared precomputed tone cycle (see :func:`looped_tone_cycle`);
    its frames equal :class:`media.tones.ToneGenerator`'s for the same tone."""

    def __init__(self, cycle: npt.NDArray[np.int16], sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._cycle = cycle
        self._frame = samples_per_frame(sample_rate)
        self._length = len(cycle) - self._frame
        self._position = 0

    def get_frame(self) -> Frame | None:
        """The next 20 ms (a read-only view of the shared cycle)."""
        pos = self._position
        self._position = (pos + self._frame) % self._length
        return self._cycle[pos:pos + self._frame]

    def put_frame(self, frame: Frame) -> None:
        """A tone is a source only; frames put into it are ignored."""


def _dtmf_from_info(body: bytes) -> str | None:
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
        if self.apply(LegInput.END):
            self.post(LegEnded(self, cause, remote))
        self._cancel_se_timer()

    def hangup(self, cause: str = "normal") -> None:
        """BYE when answered, otherwise what the subclass does for an unanswered leg."""
        if self.state is LegState.ANSWERED:
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
        se = _parse_se(request.headers.get("Session-Expires"))
        supported = "timer" in _option_tags(request, "Supported") | _option_tags(request, "Require")
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
            if self.state is LegState.ANSWERED:
                self._ended("bye", remote=True)
            elif not self.ended:
                # BYE on an early dialog (the caller gave up after our 18x)
                self.apply(LegInput.FAIL)
                self.post(LegFailed(self, 487, "bye"))
            return
        if method in ("INVITE", "UPDATE"):
            self._on_offer_request(request, tx)
            return
        if method == "INFO":
            digit = None
            if (request.content_type or "") == "application/dtmf-relay":
                digit = _dtmf_from_info(request.body)
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
        se = _parse_se(request.headers.get("Session-Expires"))
        if se is not None and se[0] < b2b.settings.min_se:
            b2b.respond(request, 422, tx=tx, extra=[("Min-SE", str(b2b.settings.min_se))])
            return
        body = b""
        events: list[Any] = []
        if _is_sdp(request):
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
        if _is_sdp(request) and self.session is not None:
            with contextlib.suppress(ParseError):
                changed, _ = self._apply_remote(parse_sdp(request.body))
                if changed:
                    self.post(LegMediaChanged(self))

    def _call_id(self) -> str:
        return self.call.record.call_id if self.call is not None else ""


class InboundLeg(SipLeg):
    """The caller's leg: we are the UAS of its INVITE."""

    direction = "inbound"

    def __init__(self, b2bua: B2bua, request: Request, peer: Peer, transaction_id: str) -> None:
        from_uri = request.from_.uri
        super().__init__(b2bua, None, peer,
                         party=(from_uri.user or "") if isinstance(from_uri, SipURI) else "")
        self.invite = request
        self.transaction_id = transaction_id
        self.to_tag = new_tag()
        self._answered_sent = False
        self.delayed_offer = False
        self.apply(LegInput.START)

    def prepare_media(self) -> None:
        """Allocate the RTP session and answer the caller's offer (or make ours when the INVITE
        had none). Raises ParseError(488) when nothing acceptable is offered."""
        if _is_sdp(self.invite):
            offer = parse_sdp(self.invite.body)
            crypto = offered_crypto(offer)
            self._new_session(sdes=choose_sdes(crypto) if crypto is not None else None)
            ans = self._answer_offer(offer)
            self._apply_remote(offer, local=ans)
        else:
            self._new_session()
            self.delayed_offer = True
            self._offer()

    def _response(self, status: int, reason: str | None = None, *, sdp: bool = False,
                  extra: list[tuple[str, str]] | None = None) -> Response:
        resp = make_response(self.invite, status, reason, to_tag=self.to_tag)
        for rr in self.invite.headers.get_all("Record-Route"):
            resp.headers.add("Record-Route", rr)
        if 100 < status < 300:
            resp.headers.add("Contact", self.contact)
            resp.headers.add("Allow", ALLOW)
        for name, value in extra or ():
            resp.headers.add(name, value)
        if sdp and self.local_sdp is not None:
            resp.body = self._local_sdp_body(self.local_sdp)
            resp.headers.set("Content-Type", "application/sdp")
            resp.headers.set("Content-Length", str(len(resp.body)))
        return resp

    def _send(self, resp: Response) -> None:
        if 100 < resp.status < 300:
            if self.dialog is None:
                self._bind_dialog(Dialog.from_uas(self.invite, resp, local_contact=self.contact))
            else:
                self.dialog.send_response(resp)
        elif self.dialog is not None:
            self.dialog.send_response(resp)
            self.b2bua.dialogs.remove(self.dialog)
        self.b2bua.sip_send_response(resp, self.transaction_id)

    def progress(self, *, early_media: bool) -> None:
        """180 Ringing, or 183 Session Progress with our SDP (we play ringback or relay)."""
        if self.state not in (LegState.CALLING, LegState.EARLY):
            return
        self._send(self._response(183 if early_media else 180, sdp=early_media))
        self.apply(LegInput.PROGRESS)

    def answer(self) -> None:
        """200 OK with our SDP; the ACK makes the leg ANSWERED."""
        if self._answered_sent or self.ended:
            return
        self._answered_sent = True
        extra = self._session_timer_headers(self.invite, uas=True)
        extra.append(("Supported", "timer"))
        resp = self._response(200, sdp=True, extra=extra)
        self.b2bua.uas_2xx[self.transaction_id] = self
        self._send(resp)

    def on_ack(self, request: Request) -> None:
        """The ACK for our 2xx: the leg is up (a delayed offer's answer comes in it)."""
        if not self._answered_sent or self.answered or self.ended:
            super().on_ack(request)
            return
        if self.delayed_offer and _is_sdp(request) and self.session is not None:
            self.delayed_offer = False
            with contextlib.suppress(ParseError):
                self._apply_remote(parse_sdp(request.body))
                # codec and telephone-event are known only now: bridges must follow
                self.post(LegMediaChanged(self))
        if self.apply(LegInput.ANSWER):
            self.b2bua.uas_2xx.pop(self.transaction_id, None)
            self._arm_se_timer()
            self.post(LegAnswered(self))

    def on_ack_timeout(self) -> None:
        """No ACK for our 2xx (§13.3.1.4): send BYE and end."""
        if self.ended:
            return
        self.state = LegState.ANSWERED
        self._send_bye()
        self._ended("ack-timeout", remote=False)

    def on_cancelled(self) -> None:
        """The caller's CANCEL (the endpoint has answered 200 + 487)."""
        if self.apply(LegInput.FAIL):
            self.final_status = 487
            if self.dialog is not None:
                self.b2bua.dialogs.remove(self.dialog)
            self.post(LegFailed(self, 487, "cancelled"))

    def reject(self, status: int, reason: str | None = None, *,
               retry_after: int | None = None) -> None:
        """A final error response to the caller (with ``Retry-After`` seconds when given)."""
        if self.state not in (LegState.CALLING, LegState.EARLY) or self._answered_sent:
            return
        self.final_status = status
        extra = [("Retry-After", str(retry_after))] if retry_after is not None else None
        self._send(self._response(status, reason, extra=extra))
        self.apply(LegInput.FAIL)

    def cancel(self, reason: str | None = None) -> None:
        """Not applicable to an inbound leg: reject with 487."""
        self.reject(487)

    def hangup(self, cause: str = "normal") -> None:
        """BYE when up (or when our 2xx is awaiting its ACK), else a final error response."""
        if self.state is LegState.ANSWERED or (self._answered_sent and not self.ended):
            self.state = LegState.ANSWERED
            super().hangup(cause)
        elif not self.ended:
            self.reject(500 if cause == "error" else 480)


class OutboundLeg(SipLeg):
    """A leg we call: one INVITE to one device (it may fork further downstream)."""

    direction = "outbound"

    def __init__(self, b2bua: B2bua, call: Call, target: Target, *, request_uri: str,
                 peer: Peer, route: tuple[str, ...] = (), caller_display: str = "",
                 caller_user: str = "", callee_user: str = "") -> None:
        super().__init__(b2bua, call, peer, party=target.user or target.label, target=target)
        self.request_uri = request_uri
        self.route = route
        self.caller_display = caller_display
        self.caller_user = caller_user
        self.callee_user = callee_user
        self.invite: Request | None = None
        self.invite_tx: str | None = None
        self.dialog_set: DialogSet | None = None
        self.cancelled = False
        #: Our SDES keys while the offer is RTP/SAVP (one per suite, tags 1, 2…); None: plain.
        self.offer_crypto: list[CryptoAttribute] | None = None
        self._first_codec: str | None = None
        self._profile_retried = False

    def _initial_offer(self, first: str | None) -> SessionDescription:
        """Make the leg's session and the INVITE's offer: RTP/SAVP with fresh SDES keys when
        the device is known to want SRTP (:meth:`B2bua.wants_srtp`), plain RTP/AVP otherwise."""
        self._first_codec = first
        self._new_session()
        if self.target is not None and self.b2bua.wants_srtp(self.target):
            self.offer_crypto = offer_keys()
        return self._offer(first, self.offer_crypto)

    def _retry_other_profile(self, status: int) -> bool:
        """A final 415/488/606 to our INVITE rejected its media (RFC 3261 §21.4.13/§21.4.26,
        §21.6.4): once per leg, send a new INVITE (same dialog identifiers, CSeq + 1, new
        transaction) offering the other RTP profile — SAVP with fresh keys after a plain offer,
        plain after a SAVP one. Returns True when the retry went out."""
        if (status not in MEDIA_REJECTED or self._profile_retried or self.cancelled
                or self.invite is None or self.session is None
                or self.state not in (LegState.CALLING, LegState.EARLY)):
            return False
        self._profile_retried = True
        srtp = self.offer_crypto is None
        if self.target is not None:
            self.b2bua.learn_srtp(self.target, False)  # what we assumed was wrong
        self.offer_crypto = offer_keys() if srtp else None
        self.session.set_srtp(None)
        self.sdes = None
        self.session_version += 1
        body = self._offer(self._first_codec, self.offer_crypto).serialize()
        again = self.invite.copy()
        again.headers.remove("Via")  # the endpoint adds one with a fresh branch
        again.headers.set("CSeq", f"{self.invite.cseq.seq + 1} INVITE")
        again.body = body
        again.headers.set("Content-Length", str(len(body)))
        self.b2bua.log.info("call.offer_retry", call_id=self._call_id(), leg=self.id,
                            status=status, profile="RTP/SAVP" if srtp else "RTP/AVP")
        self.b2bua.forget_tx(self.invite_tx)
        self.invite = again
        self.dialog_set = DialogSet(again, None, local_contact=self.contact)
        self.invite_tx = self.b2bua.send_request(again, self.peer, self._on_invite_event,
                                                 keep=True)
        return True

    def _use_answer_keys(self, sdp: SessionDescription) -> None:
        """Key this leg's SRTP from the answer to our SAVP offer: the answer's ``a=crypto``
        names one of our tags (RFC 4568 §7.1.2); ParseError(488) when it names none. A plain
        answer to a SAVP offer leaves the leg on plain RTP."""
        session = self.session
        if self.offer_crypto is None or session is None:
            return
        answered = offered_crypto(sdp)
        if answered is None:
            session.set_srtp(None)
            self.sdes = None
            return
        ours = {(c.tag, c.suite): c for c in self.offer_crypto}
        for remote in answered:
            local = ours.get((remote.tag, remote.suite))
            if local is not None and remote.mki is None and not remote.session_params:
                if self.sdes is None or self.sdes[0].key != remote.key:
                    session.set_srtp(SrtpSession(local, remote))
                    self.sdes = (remote, local)
                return
        raise ParseError("No acceptable SRTP crypto in the answer", 488)

    def _caller_codec_offer(self) -> SessionDescription:
        """Our first offer on this leg, the caller's codec first (a relay is then likely)."""
        caller_media = self.call.caller.media if self.call is not None else None
        first = caller_media.format.name if isinstance(caller_media, RtpSession) else None
        return self._initial_offer(first)

    def start(self) -> None:
        """Send the INVITE with our offer (the caller's codec first: a relay is then likely)."""
        b2b = self.b2bua
        offer = self._caller_codec_offer()
        display = self.caller_display.replace('"', "")
        # AORs, not user@our-domain: a user of another tenant is ext@tenant-domain
        caller_aor = b2b.aor(self.caller_user)
        body = self._local_sdp_body(offer)
        h = Headers([
            *(("Route", r) for r in self.route),
            ("From", f'"{display}" <{caller_aor}>;tag={new_tag()}'
             if display else f"<{caller_aor}>;tag={new_tag()}"),
            ("To", f"<{b2b.aor(self.callee_user)}>"),
            ("Call-ID", new_call_id()),
            ("CSeq", "1 INVITE"),
            ("Contact", self.contact),
            ("Allow", ALLOW),
            ("Supported", "timer"),
            ("Content-Type", "application/sdp"),
            ("Content-Length", str(len(body))),
        ])
        request = Request("INVITE", parse_uri(self.request_uri), h, body)
        self.invite = request
        self.dialog_set = DialogSet(request, None, local_contact=self.contact)
        self.apply(LegInput.START)
        self.invite_tx = b2b.send_request(request, self.peer, self._on_invite_event,
                                          keep=True)

    def _on_invite_event(self, event: Event) -> None:
        if isinstance(event, TransactionTimedOut | TransportErrored):
            if self.state in (LegState.CALLING, LegState.EARLY):
                self.final_status = 408 if isinstance(event, TransactionTimedOut) else 503
                self.apply(LegInput.FAIL)
                self.post(LegFailed(self, self.final_status, "timeout"))
                self.close_media()
            return
        if not isinstance(event, ResponseReceived):
            return
        response = event.response
        status = response.status
        assert self.dialog_set is not None
        try:
            dialog = self.dialog_set.receive_response(response)
        except RemoteProtocolError:
            return
        if status < 200:
            if status == 100 or self.state not in (LegState.CALLING, LegState.EARLY):
                return
            early = False
            if _is_sdp(response):
                with contextlib.suppress(ParseError):
                    early_sdp = parse_sdp(response.body)
                    self._use_answer_keys(early_sdp)
                    self._apply_remote(early_sdp)
                    early = True
            self.apply(LegInput.PROGRESS)
            self.post(LegProgressed(self, status, early))
            return
        if status < 300:
            self._on_2xx(response, dialog)
            return
        if self._retry_other_profile(status):
            return
        if self.state in (LegState.CALLING, LegState.EARLY):
            self.final_status = status
            self.apply(LegInput.FAIL)
            self.post(LegFailed(self, status, response.reason or ""))
        self.b2bua.forget_tx(self.invite_tx)
        self.close_media()

    def _on_2xx(self, response: Response, dialog: Dialog | None) -> None:
        if dialog is None:
            return
        seq = response.cseq.seq
        ack = self._acks.get(id(dialog))
        if ack is not None:  # a retransmitted 2xx: ACK again (§13.2.2.4)
            self.b2bua.send_request(ack.copy(), self.peer, None)
            return
        ack = dialog.create_ack(seq)
        self._acks[id(dialog)] = ack
        self.b2bua.send_request(ack.copy(), self.peer, None)
        if self.dialog is not None or self.ended or self.cancelled:
            # a second branch answered, or the answer crossed our CANCEL: hang that one up
            self.b2bua.send_request(dialog.create_request("BYE"), self.peer, None)
            return
        self._bind_dialog(dialog)
        if _is_sdp(response):
            try:
                answer_sdp = parse_sdp(response.body)
                self._use_answer_keys(answer_sdp)
                self._apply_remote(answer_sdp)
            except ParseError:
                self.b2bua.send_request(dialog.create_request("BYE"), self.peer, None)
                self.final_status = 488
                self.apply(LegInput.FAIL)
                self.post(LegFailed(self, 488, "bad answer SDP"))
                return
        if self.target is not None and self._profile_retried:
            self.b2bua.learn_srtp(self.target, self.session is not None
                                  and self.session.srtp is not None)
        se = _parse_se(response.headers.get("Session-Expires"))
        if se is not None:
            self.se_interval = max(se[0], self.b2bua.settings.min_se)
            self.se_we_refresh = se[1] != "uas"
        self.apply(LegInput.ANSWER)
        self._arm_se_timer()
        self.post(LegAnswered(self))

    def cancel(self, reason: str | None = None) -> None:
        """CANCEL the INVITE (a 2xx that crosses it is ACKed and BYEd)."""
        if self.state not in (LegState.CALLING, LegState.EARLY) or self.cancelled:
            return
        self.cancelled = True
        if self.invite_tx is not None:
            self.b2bua.sip_cancel(self.invite_tx, reason)
        self.final_status = 487
        self.apply(LegInput.FAIL)
        if self.session is not None:
            self.session.close()

    def reject(self, status: int, reason: str | None = None) -> None:
        """Not applicable to an outbound leg: CANCEL."""
        self.cancel()

    def hangup(self, cause: str = "normal") -> None:
        """BYE when answered, CANCEL while ringing."""
        if self.state is LegState.ANSWERED:
            super().hangup(cause)
        else:
            self.cancel()



#: How long a call through a trunk may ring (the carrier applies its own no-answer timeout).
TRUNK_RING_TIMEOUT = 180.0


@dataclass(frozen=True, slots=True)
class CallOrigin:
    """Who is calling (found before the call starts): ``caller`` as the other users see it
    (the extension internally, the caller's number from a trunk), the direction for the
    history, the callee already resolved from a trunk's DID, the caller's user and the trunk
    the call came in on."""

    caller: str
    direction: str = "internal"
    callee: str = ""
    user: Any = None  # pbx.store.User
    trunk: TrunkConfig | None = None


class TrunkLeg(OutboundLeg):
    """A leg toward a carrier trunk: the INVITE comes from :func:`pbx.trunks.build_outbound_request`
    (Request-URI ``+E164@trunk``, From = the caller's DID, P-Asserted-Identity only to trusted
    trunks). A 401/407 is answered once with the trunk's credentials — only on this INVITE
    transaction, which went to that trunk, and only in the trunk's realm (no digest leak)."""

    def __init__(self, b2bua: B2bua, call: Call, target: Target, *, trunk: TrunkConfig,
                 caller_did: str | None, caller_name: str = "") -> None:
        super().__init__(b2bua, call, target, request_uri="", peer=trunk.peer,
                         caller_user=caller_did or "", callee_user=target.user)
        assert b2bua.trunks is not None
        self.trunk = trunk
        self.caller_did = caller_did
        self.caller_name = caller_name
        self._contact_uri = b2bua.trunks.contact_for(trunk, user=caller_did or None)
        self.contact = f"<{self._contact_uri}>"
        self._challenged = False

    def start(self) -> None:
        """Send the INVITE with our offer to the trunk."""
        b2b = self.b2bua
        offer = self._caller_codec_offer()
        request = build_outbound_request(
            self.trunk, number=self.callee_user, caller_did=self.caller_did,
            contact=self._contact_uri, caller_name=self.caller_name or None,
            body=offer.serialize(), content_type="application/sdp")
        request.headers.add("Allow", ALLOW)
        request.headers.add("Supported", "timer")
        self.invite = request
        self.dialog_set = DialogSet(request, None, local_contact=self.contact)
        self.apply(LegInput.START)
        self.invite_tx = b2b.send_request(request, self.peer, self._on_invite_event, keep=True)

    def _on_invite_event(self, event: Event) -> None:
        if (isinstance(event, ResponseReceived) and event.response.status in (401, 407)
                and not self._challenged and not self.cancelled and self.invite is not None
                and self.state in (LegState.CALLING, LegState.EARLY)
                and self.b2bua.trunks is not None):
            self._challenged = True  # once: a second challenge means wrong credentials
            source = getattr(event, "peer", None)
            again = self.b2bua.trunks.answer_challenge(
                self.trunk.key, self.invite, event.response, sent_to=self.peer,
                source=source if isinstance(source, Peer) else None)
            if again is not None:
                self.b2bua.forget_tx(self.invite_tx)
                self.invite = again
                self.dialog_set = DialogSet(again, None, local_contact=self.contact)
                self.invite_tx = self.b2bua.send_request(again, self.peer, self._on_invite_event,
                                                         keep=True)
                return
        super()._on_invite_event(event)


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
        features: FeatureRegistry | None = None,
        on_record: Callable[[CallRecord], None] | None = None,
        log: Any = None,
        seclog: Any = None,
    ) -> None:
        from pbx.logsetup import get_logger

        self.sip = sip
        self.engine = engine
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
        if features is None:
            features = default_registry()
            ringing = features.get("ringing")
            if ringing is not None:
                ringing.default_timeout = self.settings.ring_timeout  # type: ignore[attr-defined]
        self.features = features
        self.on_record = on_record
        self.log = log or get_logger("pbx.calls")
        self.seclog = seclog or get_logger("security")
        self.dialogs = DialogTable()
        self.dialog_legs: dict[tuple[str, str, str], SipLeg] = {}
        self.uas_invites: dict[str, InboundLeg] = {}
        self.uas_2xx: dict[str, InboundLeg] = {}
        self._client: dict[str, Callable[[Event], None]] = {}
        self._keep: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls: dict[str, Call] = {}
        #: answered calls watched for dead media: call -> (legs, per-leg (rx packets, since))
        self._rtp_watched: dict[Call, tuple[tuple[Leg, ...], dict[str, tuple[float, float]]]] = {}
        self._rtp_sweeper: asyncio.Task[None] | None = None
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
        self._caller_dids: dict[str, str | None] = {}
        #: Devices (contact URIs) that took an RTP/SAVP offer after refusing plain RTP: they
        #: get SAVP first next time (insertion-ordered, bounded by SRTP_DEVICES_MAX).
        self.srtp_devices: dict[str, None] = {}

    # -- plumbing --------------------------------------------------------------------------------

    def contact_for(self, peer: Peer) -> str:
        """Our Contact for dialogs with ``peer`` (its transport's sent-by)."""
        endpoint = cast(Endpoint, self.sip.endpoint)
        host, port = endpoint.config.sent_by.get(peer.transport) or next(
            iter(endpoint.config.sent_by.values()))
        tp = "" if peer.transport == "udp" else f";transport={peer.transport}"
        return f"<sip:asyncpbx@{host}:{port}{tp}>"

    def send_request(self, request: Request, peer: Peer,
                     on_event: Callable[[Event], None] | None, *, keep: bool = False) -> str:
        """Send a request; its responses and transaction events go to ``on_event``."""
        tx: str = self.sip.send_request(request, peer)
        if on_event is not None and request.method != "ACK":
            self._client[tx] = on_event
            if keep:
                self._keep.add(tx)
        return tx

    def forget_tx(self, tx: str | None) -> None:
        """Stop routing events of a client transaction."""
        if tx is not None:
            self._client.pop(tx, None)
            self._keep.discard(tx)

    def sip_cancel(self, tx: str, reason: str | None) -> None:
        """CANCEL a pending INVITE client transaction."""
        self.sip.cancel(tx, reason)

    def sip_send_response(self, response: Response, tx: str) -> None:
        """Send a response on a server transaction."""
        self.sip.send_response(response, transaction_id=tx)

    def respond(self, request: Request, status: int, *, tx: str | None = None, body: bytes = b"",
                extra: list[tuple[str, str]] | None = None) -> None:
        """Answer a request on its server transaction ``tx`` (found from the Via without)."""
        resp = make_response(request, status, to_tag=None if request.to_tag else new_tag())
        for name, value in extra or ():
            resp.headers.add(name, value)
        if body:
            resp.body = body
            resp.headers.set("Content-Type", "application/sdp")
            resp.headers.set("Content-Length", str(len(body)))
        self.sip.send_response(resp, transaction_id=tx)

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

    def forget(self, leg: SipLeg) -> None:
        """Drop a leg's table entries (its media is closed)."""
        if leg.dialog is not None:
            self.dialogs.remove(leg.dialog)
            if self.dialog_legs.get(leg.dialog.id) is leg:
                del self.dialog_legs[leg.dialog.id]
        if isinstance(leg, InboundLeg):
            self.uas_invites.pop(leg.transaction_id, None)
            self.uas_2xx.pop(leg.transaction_id, None)
        elif isinstance(leg, OutboundLeg) and (leg.dialog is not None or not leg.cancelled):
            # A cancelled INVITE keeps its callback until its final response (the 487 forgets
            # it): a 2xx crossing the CANCEL must still be ACKed and hung up.
            self.forget_tx(leg.invite_tx)

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
            tx = event.transaction_id
            callback = self._client.get(tx)
            if callback is None:
                return
            if not isinstance(event, ResponseReceived):
                # a timeout or transport error ends the client transaction: nothing more will
                # come for it, kept (late 2xx) or not — drop its route, or it stays forever
                self.forget_tx(tx)
            elif event.response.status >= 200 and tx not in self._keep:
                del self._client[tx]
            callback(event)
        elif isinstance(event, RequestCancelled):
            leg = self.uas_invites.get(event.transaction_id)
            if leg is not None:
                leg.on_cancelled()
        elif isinstance(event, AckReceived):
            self._on_ack(event.request)
        elif isinstance(event, AckTimedOut):
            inbound = self.uas_2xx.pop(event.transaction_id, None)
            if inbound is not None:
                inbound.on_ack_timeout()

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
        leg.on_request(event)

    # -- new calls -------------------------------------------------------------------------------

    def _new_call(self, event: RequestReceived) -> None:
        request, peer, tx = event.request, event.peer, event.transaction_id
        now = time.time()
        origin = self._origin(event, now)
        if origin is None:
            return  # challenged (407) or refused
        caller = origin.caller
        se = _parse_se(request.headers.get("Session-Expires"))
        if se is not None and se[0] < self.settings.min_se:
            self.respond(request, tx=tx, status=422, extra=[("Min-SE", str(self.settings.min_se))])
            return
        ruri = request.uri
        dialled = ruri.user if isinstance(ruri, SipURI) and ruri.user else ""
        leg = InboundLeg(self, request, peer, event.transaction_id)
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
        self.uas_invites[event.transaction_id] = leg
        tenant_id = (origin.user.tenant_id if origin.user is not None
                     else origin.trunk.tenant_id if origin.trunk is not None else None)
        record = CallRecord(call_id=request.call_id, direction=origin.direction,
                            caller=caller, callee=origin.callee or dialled, started=now,
                            tenant_id=tenant_id)
        call = Call(leg, graph=self.engine, leg_factory=self._make_leg, record=record,
                    hold_source=self._moh_source, ringback_source=self._ringback_source,
                    busy_source=self._busy_source, on_record=self.on_record)
        self.calls[call.id] = call
        self.origins[call.id] = origin
        self.stats["calls"] += 1
        self.log.info("call.started", call_id=request.call_id, caller=caller, callee=dialled,
                      src=f"{peer.host}:{peer.port}")
        task = asyncio.get_running_loop().create_task(
            supervise(call, self._script, self._on_call_error), name=f"call-{call.id}")
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._call_done, call=call))

    def _call_done(self, task: asyncio.Task[None], *, call: Call) -> None:
        self._tasks.discard(task)
        self.calls.pop(call.id, None)
        self.origins.pop(call.id, None)
        self._caller_dids.pop(call.id, None)
        r = call.record
        duration = round(r.ended - r.answered, 3) if r.ended and r.answered else 0.0
        self.log.info("call.ended", call_id=r.call_id, caller=r.caller, callee=r.callee,
                      status=r.status, cause=r.cause, answered=r.answered is not None,
                      duration=duration)

    def _on_call_error(self, call: Call, exc: BaseException) -> None:
        self.log.error("call.failed", call_id=call.record.call_id, error=repr(exc),
                       exc_info=exc)

    # -- media sources ---------------------------------------------------------------------------

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

    def route(self, caller: str, dialled: str) -> str | None:
        """The user a dialled string reaches (an extension today; the dial plan replaces this:
        numbers → trunks). None: 404."""
        return dialled if dialled and self.user_exists(dialled) else None

    def _origin(self, event: RequestReceived, now: float) -> CallOrigin | None:
        """Who sends this new INVITE: a trunk (identified by source; untrusted identity and
        routing headers stripped; no digest; the called DID must have an owner, else 404) or an
        authenticated device (407 challenge in the realm of the request's tenant; From must be
        the device or its user). None when the request was answered here."""
        request, peer, tx = event.request, event.peer, event.transaction_id
        trunk = self.trunks.inbound(request, peer) if self.trunks is not None else None
        if trunk is not None:
            from_uri, ruri, to_uri = request.from_.uri, request.uri, request.to.uri
            number = from_uri.user if isinstance(from_uri, SipURI) and from_uri.user else ""
            called = ruri.user if isinstance(ruri, SipURI) and ruri.user else ""
            if not called and isinstance(to_uri, SipURI) and to_uri.user:
                called = to_uri.user
            dest = (self.router.incoming(trunk.tenant_id, called)
                    if self.router is not None and trunk.tenant_id is not None else None)
            if dest is None or dest.kind != "user":
                self.log.info("call.inbound.unknown_number", trunk=trunk.key, called=called,
                              call_id=request.call_id)
                self.respond(request, 404, tx=tx)
                return None
            return CallOrigin(caller=number or "anonymous", direction="inbound",
                              callee=dest.number, trunk=trunk)
        digest, lookup = (self.auth_for(request) if self.auth_for is not None
                          else (self.digest, self.lookup))
        result = digest.verify(request, peer.host, lookup, now)
        if not result.ok:
            if result.failed and result.reason is not None and result.is_guess:
                self.stats["rejected_auth"] += 1
                self.seclog.warning("security.auth.failed", src=peer.host, user=result.username,
                                    reason=result.reason.value, method="INVITE",
                                    call_id=request.call_id)
            self.sip.send_response(digest.challenge(request, peer.host, now, stale=result.stale),
                                   transaction_id=tx)
            return None
        username = result.username or ""
        user = (self.router.directory.user_of_device(digest.realm, username)
                if self.router is not None else None)
        caller = user.extension if user is not None else username
        from_uri = request.from_.uri
        if not isinstance(from_uri, SipURI) or from_uri.user not in (username, caller):
            self.respond(request, tx=tx, status=403, extra=[])
            return None
        return CallOrigin(caller=caller, user=user)

    def route_call(self, call: Call, dialled: str) -> str | Reject | Ring:
        """Where ``dialled`` goes in this call: a user (the key :meth:`aor` takes), a
        :class:`Ring` of a number through the caller's tenant's trunk, or a :class:`Reject`
        (refused by the dial plan: nothing is sent to any trunk)."""
        origin = self.origins.get(call.id)
        router = self.router
        if router is None or origin is None:
            user = self.route(call.record.caller, dialled)
            return user if user is not None else Reject(404)
        if origin.trunk is not None:
            tenant_id = origin.trunk.tenant_id
            dest = (router.incoming(tenant_id, dialled) if tenant_id is not None
                    else Destination("refused", status=404))
            if dest.kind != "user" and tenant_id is not None:
                found = router.directory.user_in_tenant(tenant_id, dialled)
                if found is not None:
                    dest = Destination("user", user=found)
        elif origin.user is not None:
            dest = router.outgoing(origin.user, dialled)
        else:
            user = self.route(call.record.caller, dialled)
            return user if user is not None else Reject(404)
        if dest.kind == "user" and dest.user is not None:
            return self.user_key(dest.user)
        if dest.kind == "trunk" and dest.trunk is not None and self.trunks is not None:
            key = f"{dest.trunk.tenant_id}/{dest.trunk.name}"
            if key not in self.trunks.trunks:
                return Reject(503, "Trunk Unavailable")
            call.record.direction = "outbound"
            trunk = self.trunks.trunks[key]
            if trunk.named and not trunk.addresses:
                # Its DNS name has not resolved (yet): nothing to send an INVITE to. Refuse now
                # rather than after Timer B; Retry-After is the manager's DNS retry delay.
                self.log.warning("call.trunk_unresolved", call_id=call.record.call_id, trunk=key,
                                 host=trunk.host)
                if isinstance(call.caller, InboundLeg):
                    call.caller.reject(503, "Trunk Unresolved",
                                       retry_after=max(1, round(self.trunks.resolve_retry)))
                return Reject(503, "Trunk Unresolved")
            self.log.info("call.outbound", call_id=call.record.call_id, trunk=key,
                          number=dest.number, caller_did=dest.caller_did)
            target = Target("number", user=dest.number, contact=key,
                            label=f"{key}:{dest.number}")
            self._caller_dids[call.id] = dest.caller_did
            return Ring((target,), TRUNK_RING_TIMEOUT)
        self.log.info("call.refused", call_id=call.record.call_id, caller=call.record.caller,
                      dialled=dialled, status=dest.status, reason=dest.reason)
        return Reject(dest.status or 404, dest.reason or None)

    def user_key(self, user: Any) -> str:
        """The key :meth:`aor` turns into ``user``'s AOR: the extension in the default tenant
        (whose domain is ours), ``ext@domain`` in others."""
        if self.router is None:
            return str(user.extension)
        tenant = self.router.directory.tenant(user.tenant_id)
        default = self.router.directory.default_tenant
        if tenant is None or default is None or tenant.id == default.id:
            return str(user.extension)
        return f"{user.extension}@{tenant.domain}"

    def _make_trunk_leg(self, call: Call, target: Target) -> Leg:
        trunk = self.trunks.trunks.get(target.contact) if self.trunks is not None else None
        if trunk is None:
            raise ValueError(f"no trunk {target.contact}")
        return TrunkLeg(self, call, target, trunk=trunk,
                        caller_did=self._caller_dids.get(call.id),
                        caller_name=self.display_name(call.record.caller))

    def aor(self, user: str) -> str:
        """The address-of-record of a user (``ext``, or ``ext@domain`` in another tenant)."""
        return f"sip:{user}" if "@" in user else f"sip:{user}@{self.domain}"

    def devices_of(self, user: str) -> list[Target]:
        """One target per registered binding of ``user``."""
        return [Target("device", user=user, contact=b.uri, label=f"{user}:{b.uri}")
                for b in self.registrar.bindings(self.aor(user), time.time())]

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
        caller = self.user_key(user) if user is not None else call.record.caller
        # the user's own name: display_name() looks the extension up in the default tenant
        display = (str(user.name) if user is not None
                   else self.display_name(call.record.caller))
        return OutboundLeg(self, call, target, request_uri=target.contact, peer=peer,
                           route=binding.path if binding is not None else (),
                           caller_display=display, caller_user=caller, callee_user=target.user)

    # -- the call script -------------------------------------------------------------------------

    async def _script(self, call: Call) -> None:
        record = call.record
        ctx = CallContext(caller=record.caller, callee=record.callee, call=call)
        decision: Decision = await self.features.run_chain("on_originate", ctx)
        if await self._final(call, decision):
            return
        target = record.callee
        for _ in range(MAX_REDIRECTS + 1):
            routed = self.route_call(call, target)
            if isinstance(routed, Reject):
                await self._fail(call, routed.status, routed.reason)
                return
            if isinstance(routed, Ring):
                decision = routed  # a number through a trunk: no terminating features
            else:
                user = routed
                if user in ctx.history:
                    call.reject(482, "Loop Detected")
                    return
                ctx.history.append(user)
                ctx.callee = user
                ctx.devices = self.devices_of(user)
                decision = await self.features.run_chain("on_terminate", ctx)
            if isinstance(decision, Continue):
                call.reject(480)  # nobody to ring: not registered
                return
            if isinstance(decision, Ring):
                result = await call.ring(decision.targets, decision.timeout)
                if result.outcome is RingOutcome.ANSWERED and result.leg is not None:
                    await self._connect(call, result.leg)
                    return
                if result.outcome is RingOutcome.CALLER_GONE:
                    return
                ctx.status = result.status
                hook = "on_busy" if result.outcome is RingOutcome.BUSY else "on_no_answer"
                decision = await self.features.run_chain(hook, ctx)
                if isinstance(decision, Continue):
                    await self._fail(call, result.status)
                    return
            if isinstance(decision, Redirect):
                target = decision.target
                continue
            if await self._final(call, decision):
                return
        call.reject(482, "Too Many Redirects")

    async def _final(self, call: Call, decision: Decision) -> bool:
        if isinstance(decision, Reject):
            await self._fail(call, decision.status, decision.reason)
            return True
        return isinstance(decision, Handled)

    async def _fail(self, call: Call, status: int, reason: str | None = None) -> None:
        """Reject the caller; with ``busy_tone`` > 0 a busy caller first gets a 183 with our SDP
        (early media) and hears the busy tone for that long (or until it gives up)."""
        caller = call.caller
        if (status == 486 and self.settings.busy_tone > 0
                and caller.state in (LegState.CALLING, LegState.EARLY)
                and caller.media is not None
                # an offerless INVITE's offer may not go in an unreliable 18x
                and not (isinstance(caller, InboundLeg) and caller.delayed_offer)):
            caller.progress(early_media=True)
            playback = call.play(caller, self._busy_source(caller.media.sample_rate))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._caller_gone(call), self.settings.busy_tone)
            playback.stop()
        call.reject(status, reason)

    @staticmethod
    async def _caller_gone(call: Call) -> None:
        while True:
            event = await call.next_event()
            if event is not None and event.leg is call.caller and isinstance(
                    event, LegFailed | LegEnded):
                return

    async def _connect(self, call: Call, callee: Leg) -> None:
        caller = call.caller
        bridge = call.bridge(caller, callee)
        if not await call.answer(caller):
            return
        call.mark_answered(callee)
        self.stats["answered"] += 1
        self.log.info("call.answered", call_id=call.record.call_id, caller=call.record.caller,
                      callee=call.record.callee, by=callee.party,
                      codecs=[getattr(leg.media, "format", None) and
                              leg.media.format.name for leg in (caller, callee)],  # type: ignore[union-attr]
                      srtp=[isinstance(leg.media, RtpSession) and leg.media.srtp is not None
                            for leg in (caller, callee)])
        if self.settings.rtp_timeout > 0:
            self._watch_rtp(call, (caller, callee))
        try:
            ended = await call.wait_hangup(bridge)
            if ended is not None and not call.record.cause:
                call.record.cause = "caller hung up" if ended is caller else "callee hung up"
        finally:
            self._rtp_watched.pop(call, None)

    def _watch_rtp(self, call: Call, legs: tuple[Leg, ...]) -> None:
        """Watch an answered call for dead media (see :meth:`_sweep_rtp`) until it ends."""
        self._rtp_watched[call] = (legs, {})
        if self._rtp_sweeper is None or self._rtp_sweeper.done():
            self._rtp_sweeper = asyncio.get_running_loop().create_task(
                self._sweep_rtp(), name="rtp-sweeper")

    async def _sweep_rtp(self) -> None:
        """End a watched call when an answered, not-held leg receives no RTP for
        ``rtp_timeout``. One task sweeps every watched call (it ends when there is none left)
        instead of a task and a timer per call on the call set-up path."""
        timeout = self.settings.rtp_timeout
        loop = asyncio.get_running_loop()
        interval = min(RTP_CHECK_INTERVAL, max(0.2, timeout / 4))
        while self._rtp_watched:
            await asyncio.sleep(interval)
            now = loop.time()
            for call, (legs, last) in list(self._rtp_watched.items()):
                try:
                    dead = self._rtp_dead(legs, last, now, timeout)
                except Exception:  # one call's fault must not stop the watch over the others
                    self.log.exception("call.rtp_watch_failed", call_id=call.record.call_id)
                    dead = None
                if dead is None:
                    continue
                del self._rtp_watched[call]
                self.log.info("call.rtp_timeout", call_id=call.record.call_id, leg=dead.id,
                              party=dead.party, seconds=timeout)
                call.record.cause = "rtp timeout"
                dead.hangup("rtp-timeout")

    @staticmethod
    def _rtp_dead(legs: tuple[Leg, ...], last: dict[str, tuple[float, float]], now: float,
                  timeout: float) -> Leg | None:
        """The first leg that has received no RTP for ``timeout`` (answered, not held), if any.
        ``last`` keeps per leg (packets received, since when) between sweeps."""
        for leg in legs:
            session = leg.media
            if not isinstance(session, RtpSession) or session.closed or not leg.answered:
                continue
            rx = float(session.statistics().get("rx_packets", 0))
            seen, since = last.get(leg.id, (-1.0, now))
            if rx != seen or leg.held:
                last[leg.id] = (rx, now)
                continue
            if now - since >= timeout:
                return leg
        return None

    # -- shutdown --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Release every call (BYE/CANCEL/5xx) and wait for their tasks."""
        if self._rtp_sweeper is not None:
            self._rtp_sweeper.cancel()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def statistics(self) -> dict[str, int]:
        """Counters plus the number of active calls."""
        return {**self.stats, "active_calls": len(self.calls)}
