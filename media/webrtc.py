"""The WebRTC leg: an aiortc ``RTCPeerConnection`` as a media port (asyncio adapter).

Theory of operation
-------------------
aiortc does ICE (aioice), DTLS-SRTP and Opus. A :class:`WebRtcLeg` adds one outgoing audio track
fed by ``put_frame`` (the media clock's tick paces it: the track's ``recv()`` awaits the next
frame) and reads the remote audio track into a short queue of 20 ms frames, resampled to the
port's ``sample_rate``, that ``get_frame`` pops once per tick.

ICE host addresses. aioice gathers host candidates from every interface except loopback
(``aioice.ice.get_host_addresses``). A server must offer exactly the addresses it is configured
with (its public address, or 127.0.0.1 in tests), so this module wraps that one function once,
at import: inside :func:`ice_host_addresses` (a context variable, so it covers exactly the
gathering started from that context — ``asyncio`` tasks inherit it) the wrapper returns the
configured addresses; everywhere else it calls the original.

ICE port range. aioice binds its host sockets to port 0. Inside :func:`ice_port_range` (a
context variable like the addresses) a wrapper of ``Connection.get_component_candidates`` binds
each host socket to a free port of the range instead, gathers the server-reflexive candidates of
those sockets (STUN) itself and leaves the rest (TURN) to the original, called with no host
addresses. Outside that context the original runs unchanged.

Source filter (SECURITY.md: "WebRTC accepts DTLS/RTP only from the ICE-nominated address"). aioice
hands every non-STUN datagram to DTLS, whatever its source, so a DTLS hello from a third address
could tear the call down. After gathering, each of the leg's ICE sockets gets a filter: STUN
still goes to aioice (it authenticates checks with the ICE password), anything else is dropped
(and counted) unless it comes from the remote address of the nominated candidate pair.

ICE restart (RFC 8445 §9). aiortc cannot restart ICE. A re-offer with new ``ice-ufrag``/
``ice-pwd`` is taken by :meth:`WebRtcLeg.restart_ice` on the running aioice connection: new
local credentials, the offer's remote credentials and candidates. Checks from then on use them
(our consent checks read the credentials each time); the browser's checks to its new candidates
are answered and answered back (triggered checks), and its nomination of a new pair moves the
media there (aioice's nominated pair, which the source filter follows). The DTLS association
stays (same fingerprints), so the call and its SRTP keys are kept.

Audio level. aiortc's sender computes every frame's RFC 6465 level (the ``ssrc-audio-level``
header extension) in a pure-Python loop over the samples, about a tenth of a browser leg's CPU;
at import that function is replaced by the same formula in numpy (:func:`audio_level_dbov`).

DTMF (RFC 4733). aiortc knows no telephone-event, so at import ``telephone-event/48000`` (what
a browser sends beside Opus) and ``/8000`` join aiortc's audio codec list: our offers and
answers carry them and the browser's ``RTCDTMFSender`` (JsSIP ``sendDTMF`` with
``transportType: "RFC2833"``) can send events. Those packets never reach aiortc's decoder:
each leg's audio receiver is wrapped so that a telephone-event packet goes to a
:class:`media.dtmf.DtmfReceiver` (one report per key press) and ``on_dtmf`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fractions
import ipaddress
import math
import random
import socket
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aiortc.codecs
import aiortc.rtp
import numpy as np
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.utils import random_string
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from media.dtmf import DtmfReceiver
from media.errors import MediaParseError
from media.port import Frame, samples_per_frame
from media.resample import Resampler

__all__ = ["IceSettings", "WebRtcLeg", "ice_host_addresses", "ice_port_range"]


#: RFC 4733 events offered and accepted beside the audio codecs (payload types as Chromium's).
TELEPHONE_EVENTS = (
    RTCRtpCodecParameters(mimeType="audio/telephone-event", clockRate=48000, channels=1,
                          payloadType=110, parameters={"0-15": None}),
    RTCRtpCodecParameters(mimeType="audio/telephone-event", clockRate=8000, channels=1,
                          payloadType=126, parameters={"0-15": None}),
)


def _add_telephone_events() -> None:
    """Append :data:`TELEPHONE_EVENTS` to aiortc's audio codecs (once)."""
    audio = aiortc.codecs.CODECS["audio"]
    for codec in TELEPHONE_EVENTS:
        if not any(c.mimeType.lower() == codec.mimeType and c.clockRate == codec.clockRate
                   for c in audio):
            audio.append(codec)


_add_telephone_events()


def audio_level_dbov(frame: AudioFrame) -> int:
    """RFC 6465 Appendix A: the frame's level in -dBov, 0 (loudest) to -127 (s16 samples),
    as ``aiortc.rtp.compute_audio_level_dbov`` computes it, vectorised."""
    samples = np.frombuffer(bytes(frame.planes[0]), dtype=np.int16).astype(np.float64)
    n = frame.samples
    if n <= 0:
        return -127
    rms = math.sqrt(float(np.dot(samples, samples)) / (n * 32767.0 * 32767.0))
    if rms <= 0:
        return -127
    return round(min(max(20 * math.log10(rms), -127), 0))


#: aiortc's own (kept: the tests compare the two).
aiortc_audio_level_dbov = aiortc.rtp.compute_audio_level_dbov
aiortc.rtp.compute_audio_level_dbov = audio_level_dbov


@dataclass(frozen=True, slots=True)
class IceSettings:
    """What the PBX's side of ICE uses: its host candidates, STUN/TURN servers, a port range.

    ``stun_servers``/``turn_servers`` are URLs (``stun:host:port``, ``turn:host:port``);
    aiortc uses the first of each. ``port_range`` is inclusive; None: ports the OS picks.
    """

    host_addresses: tuple[str, ...]
    stun_servers: tuple[str, ...] = ()
    turn_servers: tuple[str, ...] = ()
    turn_username: str = ""
    turn_password: str = ""
    port_range: tuple[int, int] | None = None

    def configuration(self) -> RTCConfiguration:
        """The peer connection's ``RTCConfiguration`` (its ICE servers; none: host only)."""
        servers = [RTCIceServer(urls=url) for url in self.stun_servers]
        servers += [RTCIceServer(urls=url, username=self.turn_username,
                                 credential=self.turn_password) for url in self.turn_servers]
        return RTCConfiguration(iceServers=servers)

_HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "asyncpbx_ice_host_addresses", default=None
)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    configured = _HOST_ADDRESSES.get()
    if configured is None:
        return list(_original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6))
    return [a for a in configured if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


if getattr(aioice.ice.get_host_addresses, "__name__", "") != "_get_host_addresses":
    aioice.ice.get_host_addresses = _get_host_addresses


@contextlib.contextmanager
def ice_host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """Within this block, ICE gathering offers (and binds) only ``addresses`` as host candidates."""
    token = _HOST_ADDRESSES.set(tuple(addresses))
    try:
        yield
    finally:
        _HOST_ADDRESSES.reset(token)


_PORT_RANGE: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "asyncpbx_ice_port_range", default=None
)
_original_get_component_candidates = aioice.ice.Connection.get_component_candidates


@contextlib.contextmanager
def ice_port_range(ports: tuple[int, int] | None) -> Iterator[None]:
    """Within this block, ICE host sockets bind to a free port of ``ports`` (inclusive)."""
    token = _PORT_RANGE.set(ports)
    try:
        yield
    finally:
        _PORT_RANGE.reset(token)


async def _bind_in_range(conn: Any, address: str, ports: tuple[int, int]) -> Any | None:
    """A StunProtocol bound to ``address`` on a free port of ``ports`` (random start)."""
    loop = asyncio.get_running_loop()
    low, high = ports
    count = high - low + 1
    start = random.randrange(count)
    for i in range(count):
        port = low + (start + i) % count
        try:
            _transport, protocol = await loop.create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(conn), local_addr=(address, port))
        except OSError:
            continue
        return protocol
    return None


async def _get_component_candidates(self: Any, component: int, addresses: list[str],
                                    timeout: int = 5) -> list[Candidate]:
    ports = _PORT_RANGE.get()
    if ports is None:
        return list(await _original_get_component_candidates(self, component, addresses, timeout))
    candidates: list[Candidate] = []
    bound = []
    for address in addresses:
        protocol = await _bind_in_range(self, address, ports)
        if protocol is None:
            continue
        sock = protocol.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        host, port = protocol.transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host), component=component,
            transport="udp", priority=candidate_priority(component, "host"), host=host,
            port=port, type="host")
        candidates.append(protocol.local_candidate)
        bound.append(protocol)
    self._protocols += bound
    if self.stun_server:
        tasks = [asyncio.ensure_future(aioice.ice.server_reflexive_candidate(p, self.stun_server))
                 for p in bound if ipaddress.ip_address(p.local_candidate.host).version == 4]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            candidates += [t.result()[0] for t in done if t.exception() is None]
    # TURN (and nothing else): the original with no host addresses
    stun, self.stun_server = self.stun_server, None
    try:
        candidates += await _original_get_component_candidates(self, component, [], timeout)
    finally:
        self.stun_server = stun
    return candidates


if getattr(aioice.ice.Connection.get_component_candidates, "__name__", "") != (
        "_get_component_candidates"):
    aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]


def _is_stun(data: bytes) -> bool:
    # RFC 5389 §6: top two bits zero and the magic cookie (RFC 7983 demultiplexing).
    return len(data) >= 20 and data[0] < 4 and data[4:8] == b"\x21\x12\xa4\x42"


class _OutgoingTrack(MediaStreamTrack):  # type: ignore[misc]
    """Audio to the browser: one frame per ``push`` (the media clock paces it)."""

    kind = "audio"

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self._queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=10)
        self._pts = 0
        self._n = samples_per_frame(sample_rate)

    def push(self, frame: Frame) -> None:
        if self._queue.full():  # the browser side is not draining: drop the oldest
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        data = await self._queue.get()
        frame = AudioFrame(format="s16", layout="mono", samples=len(data))
        frame.planes[0].update(np.ascontiguousarray(data, dtype=np.int16).tobytes())
        frame.pts = self._pts
        frame.sample_rate = self.sample_rate
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        self._pts += len(data)
        return frame


class WebRtcLeg:
    """A browser call leg: an ``RTCPeerConnection`` with one audio track each way; a media port.

    ``host_addresses`` (or ``ice.host_addresses``) are the only ICE host candidates offered and
    used; ``ice`` adds STUN/TURN servers and a port range. Offer/answer:
    :meth:`create_offer` + :meth:`set_answer` when we call, :meth:`accept_offer` when the browser
    calls. ``get_frame``/``put_frame`` work at ``sample_rate`` (Opus runs at 48 kHz inside).
    """

    def __init__(self, *, host_addresses: Sequence[str] | None = None, sample_rate: int = 48000,
                 ice: IceSettings | None = None) -> None:
        self.sample_rate = sample_rate
        if ice is None:
            if host_addresses is None:
                raise TypeError("WebRtcLeg needs host_addresses or ice")
            ice = IceSettings(tuple(host_addresses))
        self.ice = ice
        self.host_addresses = ice.host_addresses
        self.pc = RTCPeerConnection(ice.configuration())
        self._out = _OutgoingTrack(sample_rate)
        self.pc.addTrack(self._out)
        self._incoming: deque[Frame] = deque(maxlen=10)
        self._pending = np.zeros(0, dtype=np.int16)
        self._resampler: Resampler | None = None
        self._reader: asyncio.Task[None] | None = None
        self.counters = {"dropped_source": 0, "dtmf_rx": 0, "dtmf_malformed": 0,
                         "frames_in": 0, "frames_out": 0, "ice_restarts": 0, "overflow": 0}
        #: Called with each digit the browser sends as an RFC 4733 event.
        self.on_dtmf: Callable[[str], None] | None = None
        self._dtmf_rx = DtmfReceiver()
        self.pc.on("track", self._on_track)

    # -- signalling ------------------------------------------------------------------------------

    async def create_offer(self) -> str:
        """Our SDP offer (ICE candidates included: gathering completes first)."""
        with ice_host_addresses(self.host_addresses), ice_port_range(self.ice.port_range):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        self._install_source_filter()
        return str(self.pc.localDescription.sdp)

    async def set_answer(self, sdp: str) -> None:
        """Apply the browser's answer to our offer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        self._install_dtmf_tap()

    async def accept_offer(self, sdp: str) -> str:
        """Apply the browser's offer; returns our answer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        with ice_host_addresses(self.host_addresses), ice_port_range(self.ice.port_range):
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._install_source_filter()
        self._install_dtmf_tap()
        return str(self.pc.localDescription.sdp)

    def _connections(self) -> list[Any]:
        conns = []
        for t in self.pc.getTransceivers():
            dtls = t.sender.transport
            if dtls is not None:
                conns.append(dtls.transport.iceGatherer._connection)
        return conns

    def _install_source_filter(self) -> None:
        for conn in self._connections():
            for proto in conn._protocols:
                if getattr(proto, "_asyncpbx_filtered", False):
                    continue
                proto._asyncpbx_filtered = True
                proto.datagram_received = self._filter(conn, proto, proto.datagram_received)

    def _filter(self, conn: Any, proto: Any, inner: Any) -> Any:
        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            if not _is_stun(data):
                pair = conn._nominated.get(proto.local_candidate.component)
                if pair is None or pair.protocol is not proto or (
                    (addr[0], addr[1]) != tuple(pair.remote_addr)
                ):
                    self.counters["dropped_source"] += 1
                    return
            inner(data, addr)

        return datagram_received

    def restart_ice(self, ufrag: str, pwd: str, candidates: Sequence[str]) -> tuple[str, str]:
        """The browser restarted ICE (a re-offer with new credentials ``ufrag``/``pwd`` and
        ``candidates``, ``a=candidate`` values): our ICE connection takes them and new local
        credentials, returned as (ufrag, pwd) for our answer. DTLS and the media go on."""
        conns = self._connections()
        if not conns:
            raise ValueError("no ICE connection to restart")
        local = (random_string(4), random_string(22))
        parsed = [Candidate.from_sdp(c) for c in candidates]
        for conn in conns:
            conn._local_username, conn._local_password = local
            conn.remote_username, conn.remote_password = ufrag, pwd
            for candidate in parsed:
                if candidate.component in conn._components:
                    conn._add_remote_candidate(candidate, candidate.host)
        self._install_source_filter()
        self.counters["ice_restarts"] += 1
        return local

    def _install_dtmf_tap(self) -> None:
        """Wrap each audio receiver (once): telephone-event packets go to :meth:`_on_event`
        instead of aiortc's jitter buffer and decoder."""
        for t in self.pc.getTransceivers():
            receiver: Any = t.receiver
            if t.kind != "audio" or getattr(receiver, "_asyncpbx_dtmf", False):
                continue
            receiver._asyncpbx_dtmf = True
            receiver._handle_rtp_packet = self._dtmf_tap(t, receiver._handle_rtp_packet)

    def _dtmf_tap(self, transceiver: Any, inner: Any) -> Any:
        async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
            if any(c.payloadType == packet.payload_type
                   and c.mimeType.lower() == "audio/telephone-event"
                   for c in transceiver._codecs):
                self._on_event(bytes(packet.payload), packet.timestamp, bool(packet.marker))
                return
            await inner(packet, arrival_time_ms)

        return handle_rtp_packet

    def _on_event(self, payload: bytes, timestamp: int, marker: bool) -> None:
        """One RFC 4733 packet from the browser: a new key press is reported once."""
        try:
            digits = self._dtmf_rx.receive(payload, timestamp, marker)
        except MediaParseError:
            self.counters["dtmf_malformed"] += 1
            return
        for d in digits:
            self.counters["dtmf_rx"] += 1
            if self.on_dtmf is not None:
                self.on_dtmf(d.digit)

    # -- media -----------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        n = samples_per_frame(self.sample_rate)
        while True:
            try:
                frame: Any = await track.recv()
            except MediaStreamError:
                return
            data = frame.to_ndarray()
            channels = len(frame.layout.channels)
            if data.dtype != np.int16:
                data = (np.clip(data.astype(np.float32), -1, 1) * 32767).astype(np.int16)
            mono = data.reshape(-1, channels).mean(axis=1).astype(np.int16) if channels > 1 else (
                data.reshape(-1)
            )
            if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
                self._resampler = Resampler(frame.sample_rate, self.sample_rate)
            pcm = self._resampler.process(mono) if frame.sample_rate != self.sample_rate else mono
            self._pending = np.concatenate((self._pending, pcm))
            while len(self._pending) >= n:
                if len(self._incoming) == self._incoming.maxlen:
                    self.counters["overflow"] += 1
                self._incoming.append(self._pending[:n].copy())
                self._pending = self._pending[n:]
                self.counters["frames_in"] += 1

    def get_frame(self) -> Frame | None:
        """The next 20 ms of the browser's audio (None when nothing arrived)."""
        return self._incoming.popleft() if self._incoming else None

    def put_frame(self, frame: Frame) -> None:
        """Send 20 ms to the browser (Opus-encoded by aiortc)."""
        self.counters["frames_out"] += 1
        self._out.push(frame)

    async def quality(self) -> dict[str, float]:
        """The browser leg's call quality from aiortc's stats (RFC 3550 figures as the RTP
        legs have them): packets received and lost, interarrival jitter and round-trip time
        (seconds, RTT from the browser's RTCP receiver reports; 0 when none came) and the
        per-call MOS estimate of :func:`media.stats.mos` (Opus, one-way delay RTT/2)."""
        from media.stats import mos

        report = await self.pc.getStats()
        rx = lost = 0
        jitter = rtt = 0.0
        for stat in report.values():
            if stat.type == "inbound-rtp" and stat.kind == "audio":
                rx, lost = int(stat.packetsReceived), max(0, int(stat.packetsLost))
                jitter = float(stat.jitter) / 48000  # timestamp units of Opus' clock
            elif stat.type == "remote-inbound-rtp" and stat.kind == "audio":
                rtt = float(stat.roundTripTime or 0.0)
        loss = lost / (rx + lost) if rx + lost else 0.0
        return {"rx_packets": float(rx), "lost": float(lost), "interarrival_jitter": jitter,
                "rtt": rtt, "mos": round(mos(rtt / 2, loss, "OPUS", jitter), 2)}

    @property
    def connection_state(self) -> str:
        """``RTCPeerConnection.connectionState`` (new, connecting, connected, failed, closed)."""
        return str(self.pc.connectionState)

    async def close(self) -> None:
        """Close the peer connection and stop reading."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._out.stop()
        await self.pc.close()
