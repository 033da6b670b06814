"""The media engine: RTP ports and sockets, the packet hub, the clock, and the graph's factory.

Theory of operation
-------------------
A :class:`MediaEngine` owns an even-port range on one local address. Each call leg gets an
:class:`~media.session.RtpSession` on an RTP socket on an even port and an RTCP socket on the next
odd port (or one socket with RFC 5761 rtcp-mux). All sockets sit behind one
:class:`~media.batchio.PacketHub` (Cython ``recvmmsg`` kernel, pure-Python reference) whose single
fd is what the event loop watches. The hub validates headers, applies the anti-bleed source rule
(SECURITY.md "Media") and relays same-codec calls without Python ever seeing the packets; what
reaches Python goes to its session through :meth:`MediaEngine.poll`.

The engine's :class:`~media.clock.MediaClock` drives the graph every 20 ms — jitter buffers →
bridges/mixers → encoders → RTP out, players and recorders — and the engine is the factory of
that graph: relays and transcoding bridges (:mod:`media.bridge`), links, and conferences
(:mod:`media.conference`, all mixed in one kernel call per tick). Sockets of ended sessions are
kept bound for reuse (``spare_max``), drained of stale datagrams before a new session gets them.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import random
import socket
import struct
import termios
import time
from collections import deque
from typing import Any

from media._accel import load
from media.bridge import Bridge, Link, RelayBridge
from media.clock import MediaClock, Phase
from media.codecs import PayloadFormat, payload_format
from media.conference import Conference, ConferenceMixers
from media.port import MediaPort
from media.session import RtpSession, SrtpKeys

__all__ = ["SPARE_SOCKETS_MAX", "MediaEngine"]

_hubmod: Any = load("media._batchio", "media.batchio")


class MediaEngine:
    """RTP port allocator, packet hub, media clock, and factory for sessions and bridges.

    Use as ``async with MediaEngine("127.0.0.1", (30000, 30999)) as engine:`` or call
    :meth:`start` / :meth:`close`. Everything runs on the event loop that called :meth:`start`;
    ``start(realtime=False)`` leaves the loop alone and the owner drives the engine with
    :meth:`poll` and ``engine.clock.tick(now)`` on a clock of its own (tests).
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port_range: tuple[int, int] = (30000, 32999),
        *,
        rtcp_mux: bool = False,
        rtcp_interval: float = 5.0,
        cname: bytes = b"asyncpbx",
    ) -> None:
        lo, hi = port_range
        if lo % 2:
            lo += 1
        if hi <= lo:
            raise ValueError("port range must hold at least one even/odd pair")
        self.host = host
        self.port_range = (lo, hi)
        self.rtcp_mux = rtcp_mux
        self.rtcp_interval = rtcp_interval
        self.cname = cname
        self.hub: Any = _hubmod.PacketHub()
        self._sessions: dict[int, RtpSession] = {}
        #: Each open session's sockets (RTP, RTCP or None with rtcp-mux): the engine owns them.
        self._sockets: dict[RtpSession, tuple[socket.socket, socket.socket | None]] = {}
        self._used: set[int] = set()
        self._closing = False
        #: Sockets of ended sessions kept bound for reuse, oldest first: (port, rtp, rtcp|None).
        #: A call would otherwise pay socket/bind/ioctl/getsockname/close for each of its (up to)
        #: four sockets — some 20 system calls per call on the signalling hot path.
        self._spare: deque[tuple[int, socket.socket, socket.socket | None]] = deque()
        # At most an eighth of the range waits as spares, so they never crowd out new calls.
        self.spare_max = min(SPARE_SOCKETS_MAX, ((hi - lo) // 2 + 1) // 8)
        # Start at a random pair so port numbers do not reveal the call count.
        self._next_port = lo + 2 * (int.from_bytes(os.urandom(2), "big") % ((hi - lo) // 2 + 1))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: MediaClock | None = None
        self._mixers = ConferenceMixers(self.hub)
        self._rtcp_due: dict[RtpSession, float] = {}
        self.counters = {"port_exhausted": 0, "reader_errors": 0, "tick_errors": 0}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, *, realtime: bool = True) -> None:
        """Watch the hub on the running loop and start the media clock.

        ``realtime=False``: neither happens; the caller feeds received packets with
        :meth:`poll` and runs the graph with ``clock.tick(now)``, both on its own time."""
        loop = asyncio.get_running_loop() if realtime else None
        self._loop = loop
        self._clock = MediaClock(loop)
        self._clock.on_error = self._on_tick_error
        self._clock.add(self._mixers.tick, Phase.MIX)
        self._clock.add(self._rtcp_tick, Phase.OUTPUT)
        if loop is not None:
            loop.add_reader(self.hub.fileno(), self._on_readable)
            self._clock.start()

    async def close(self) -> None:
        """Stop the clock, close every session and the hub."""
        if self._clock is not None:
            self._clock.stop()
        if self._loop is not None:
            self._loop.remove_reader(self.hub.fileno())
        self._closing = True
        for s in self.sessions:
            s.close()
        while self._spare:
            self._close_pair(*self._spare.popleft())
        self.hub.close()

    async def __aenter__(self) -> MediaEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def time(self) -> float:
        """The engine's time: the loop's in real time, else the time of the last tick."""
        if self._loop is not None:
            return self._loop.time()
        return self._clock.now if self._clock is not None else 0.0

    @property
    def clock(self) -> MediaClock:
        """The media clock (after :meth:`start`)."""
        if self._clock is None:
            raise RuntimeError("MediaEngine.start() first")
        return self._clock

    def _on_tick_error(self, exc: BaseException) -> None:
        # The clock disabled the failing job; the call supervisor sees the port go silent.
        self.counters["tick_errors"] += 1

    # -- ports and sessions ----------------------------------------------------------------------

    def _reuse_pair(self, mux: bool) -> tuple[int, socket.socket, socket.socket | None] | None:
        """The oldest spare socket pair of this shape, emptied of datagrams that arrived after
        its last session ended (they belong to nobody); None when there is none."""
        spare = self._spare
        for i, entry in enumerate(spare):
            if (entry[2] is None) == mux:
                del spare[i]
                for sock in entry[1:]:
                    # FIONREAD says whether anything waits (usually not): a recv on an empty
                    # socket would raise BlockingIOError (and select() stops at fd 1024)
                    if sock is not None and _pending(sock):
                        _drain(sock)
                return entry
        return None

    def _bind_pair(self, mux: bool) -> tuple[socket.socket, socket.socket | None]:
        lo, hi = self.port_range
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range((hi - lo) // 2 + 1):
            port = self._next_port
            self._next_port = port + 2 if port + 2 + (0 if mux else 1) <= hi else lo
            if port in self._used or (not mux and port + 1 > hi):
                continue
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtcp: socket.socket | None = None
            try:
                rtp.bind((self.host, port))
                if not mux:
                    rtcp = socket.socket(family, socket.SOCK_DGRAM)
                    rtcp.bind((self.host, port + 1))
            except OSError as exc:
                rtp.close()
                if rtcp is not None:
                    rtcp.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            for s in (rtp, rtcp):
                if s is not None:
                    s.setblocking(False)
            self._used.add(port)
            return rtp, rtcp
        self.counters["port_exhausted"] += 1
        raise OSError(errno.EADDRINUSE, "RTP port range exhausted")

    def create_session(
        self,
        *,
        payload_type: int = 0,
        codec: str | PayloadFormat = "PCMU",
        remote: tuple[str, int] | None = None,
        remote_rtcp_port: int | None = None,
        telephone_event_pt: int | None = 101,
        cn_payload_type: int | None = 13,
        srtp: SrtpKeys | None = None,
        rtcp_mux: bool | None = None,
    ) -> RtpSession:
        """Allocate an even RTP port (+ the odd RTCP port unless rtcp-mux) and make a session.

        ``payload_type`` + ``codec`` (an encoding name, or a :class:`media.codecs.PayloadFormat`
        whose own payload type then wins) and ``telephone_event_pt`` come from the negotiated
        SDP; ``remote`` is the signalled ``c=``/``m=`` address (or call
        :meth:`RtpSession.set_remote` later); ``srtp`` is a :class:`media.srtp.SrtpSession`.
        Raises ``OSError(EADDRINUSE)`` when the range is exhausted.
        """
        fmt = codec if isinstance(codec, PayloadFormat) else payload_format(codec, payload_type)
        mux = self.rtcp_mux if rtcp_mux is None else rtcp_mux
        reused = self._reuse_pair(mux)
        if reused is not None:
            port, rtp, rtcp = reused
            local: tuple[str, int] | None = (self.host, port)
        else:
            try:
                rtp, rtcp = self._bind_pair(mux)
            except OSError:
                if not self._spare:
                    raise
                while self._spare:  # spares of the other shape (rtcp-mux or not): give them up
                    self._close_pair(*self._spare.popleft())
                rtp, rtcp = self._bind_pair(mux)
            local = None
        hub = self.hub
        slot: int | None = None
        rtcp_slot: int | None = None
        try:
            if local is None:
                local = rtp.getsockname()[:2]
            slot = hub.add(rtp, raw=srtp is not None, rtcp_mux=rtcp is None)
            rtcp_slot = hub.add(rtcp, raw=True) if rtcp is not None else None
            assert slot is not None and local is not None
            sess = RtpSession(
                self, slot, rtcp_slot, local_addr=local,
                rtcp_port=local[1] if rtcp is None else local[1] + 1, fmt=fmt,
                telephone_event_pt=telephone_event_pt, srtp=srtp,
                cn_payload_type=cn_payload_type,
            )
        except BaseException:
            for s in (slot, rtcp_slot):
                if s is not None:
                    hub.remove(s)
            self._used.discard(rtp.getsockname()[1])
            rtp.close()
            if rtcp is not None:
                rtcp.close()
            raise
        self._sockets[sess] = (rtp, rtcp)
        self._sessions[sess.slot] = sess
        if sess.rtcp_slot is not None:
            self._sessions[sess.rtcp_slot] = sess
        if remote is not None:
            sess.set_remote(remote[0], remote[1], remote_rtcp_port)
        self._rtcp_due[sess] = self.time() + self.rtcp_interval * (0.5 + _rand01())
        return sess

    def _release(self, sess: RtpSession) -> None:
        """A session closed (its hub slots are gone): keep its sockets for reuse, or close them
        when the spare pool is full (the oldest spare pair goes first) or the engine stops."""
        self._sessions.pop(sess.slot, None)
        if sess.rtcp_slot is not None:
            self._sessions.pop(sess.rtcp_slot, None)
        self._rtcp_due.pop(sess, None)
        for conf in list(self._mixers.conferences):
            conf.remove(sess)
        rtp, rtcp = self._sockets.pop(sess)
        port = sess.local_port
        if self._closing or self.spare_max <= 0:
            self._close_pair(port, rtp, rtcp)
            return
        self._spare.append((port, rtp, rtcp))
        while len(self._spare) > self.spare_max:
            self._close_pair(*self._spare.popleft())

    def _close_pair(self, port: int, rtp: socket.socket, rtcp: socket.socket | None) -> None:
        self._used.discard(port)
        rtp.close()
        if rtcp is not None:
            rtcp.close()

    @property
    def sessions(self) -> list[RtpSession]:
        """Open sessions."""
        return list({id(s): s for s in self._sessions.values()}.values())

    # -- graph -----------------------------------------------------------------------------------

    def relay(self, a: RtpSession, b: RtpSession) -> RelayBridge:
        """Forward packets between two same-codec legs without decoding."""
        return RelayBridge(a, b)

    def bridge(self, a: MediaPort, b: MediaPort) -> RelayBridge | Bridge:
        """Connect two ports: a relay when both are RTP legs with one codec, else transcoding."""
        if (
            isinstance(a, RtpSession)
            and isinstance(b, RtpSession)
            and a.format.name == b.format.name
            and a.format.clock_rate == b.format.clock_rate
        ):
            return RelayBridge(a, b)
        return Bridge(self.clock, a, b)

    def link(self, source: MediaPort, sink: MediaPort, *, fill_silence: bool = False) -> Link:
        """One-way: every tick ``sink.put_frame(source.get_frame())`` (player→leg, leg→recorder)."""
        return Link(self.clock, source, sink, fill_silence=fill_silence)

    def conference(self, sample_rate: int = 8000) -> Conference:
        """A new conference, mixed with all others of its rate in one kernel call per tick."""
        conf = Conference(self, self._mixers.mixer(sample_rate))
        self._mixers.conferences.add(conf)
        self._mixers.changed = True
        return conf

    # -- I/O -------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        assert self._loop is not None
        self.poll(self._loop.time())

    def poll(self, now: float) -> None:
        """Read every datagram waiting in the hub and hand each to its session, received at
        ``now`` (the hub's reader calls this in real time; tests on a fake clock call it)."""
        sessions = self._sessions
        for slot, data, addr in self.hub.poll(now):
            sess = sessions.get(slot)
            if sess is not None:
                try:
                    sess._on_packet(slot, data, addr, now)
                except Exception:  # a bad packet must never take the reader down
                    self.counters["reader_errors"] += 1

    def _rtcp_tick(self, now: float) -> None:
        due = self._rtcp_due
        for sess, t in list(due.items()):
            if now >= t:
                due[sess] = now + self.rtcp_interval * (0.5 + _rand01())
                sess.send_rtcp_report(now, time.time())

    def statistics(self) -> dict[str, float]:
        """Engine-wide figures: sessions, clock ticks/overruns, summed packet counters."""
        totals: dict[str, float] = {}
        for s in self.sessions:
            for k, v in self.hub.counters(s.slot).items():
                totals[k] = totals.get(k, 0) + v
            for k, v in s.counters.items():
                totals[k] = totals.get(k, 0) + v
        clock = self._clock
        return {
            "sessions": len(self.sessions),
            "conferences": len(self._mixers.conferences),
            "ticks": clock.ticks if clock else 0,
            "overruns": clock.overruns if clock else 0,
            "skipped": clock.skipped if clock else 0,
            **totals,
            **self.counters,
        }


#: RTCP interval jitter (RFC 3550 §6.3.1): random, not secret, so a PRNG seeded from the OS.
_prng = random.Random(os.urandom(32))


#: Spare socket pairs a :class:`MediaEngine` keeps bound for reuse by default.
SPARE_SOCKETS_MAX = 256


def _pending(sock: socket.socket) -> int:
    """Bytes of the next datagram waiting in ``sock`` (0: none, or an empty datagram)."""
    return int(struct.unpack("=i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0])


def _drain(sock: socket.socket, limit: int = 64) -> None:
    """Read and drop what waits in a (non-blocking) socket."""
    for _ in range(limit):
        try:
            sock.recv(2048)
        except OSError:  # BlockingIOError when empty; anything else: nothing to drain either
            return


def _rand01() -> float:
    return _prng.random()
