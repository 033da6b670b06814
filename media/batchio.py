"""The packet hub: every RTP/RTCP socket of one engine behind one readiness fd.

Theory of operation
-------------------
A media server has one UDP socket per RTP port, each carrying only ~50 packets/s, so the cost that
dominates is not the bytes but the per-packet and per-socket Python work: one event-loop callback,
one ``recvfrom`` tuple, one ``sendto`` per packet. The hub puts all media sockets into one epoll set
whose fd is the only thing the asyncio loop watches; one readiness callback drains every ready
socket in one ``poll()``.

Per socket (a *slot*) the hub owns what must run for every packet, before any Python object is
made for it:

* header validation (RFC 3550 §5.1/§A.1): version 2, at least 12 bytes, CSRC list, extension and
  padding inside the packet; a failure counts ``malformed`` and drops the packet;
* the anti-bleed source rule (SECURITY.md "Media"): the signalled address (from SDP) is always
  accepted; a different source is accepted only after 4 in-sequence packets, and never while the
  signalled or the current source was heard within :data:`ALIVE` seconds. Accepted packets make
  their source the send target (symmetric RTP, RFC 4961). Refused packets count ``source``;
* the latch window after a re-offer: when SDP moves a running stream (``set_remote`` with
  ``now``), the old source is refused outright and for :data:`LATCH_WINDOW` seconds only the new
  signalled address, or the first packet from the signalled host on another port (a NAT that
  rewrote the port, RFC 4961 style), may latch; no stranger starts probation in that window;
* the relay fast path: a slot with a relay target rewrites SSRC, sequence number, timestamp (and
  payload type through a map) for the outgoing leg and sends the packet from the target's socket
  to the target's current remote address, so a relayed call never reaches Python.

Everything else comes up from :meth:`PacketHub.poll` as ``(slot, data, addr)``: validated RTP for
a slot without relay (``addr is None``), and with its source address whatever still needs Python's
judgement — packets of *raw* slots (SRTP: the auth tag is checked before anything else, then the
decrypted packet is run through :meth:`PacketHub.accept`) and RTCP (its own socket, or multiplexed
per RFC 5761 on the RTP socket).

This module is the pure-Python reference; ``media/_batchio.pyx`` is the same API in Cython with
``epoll_wait``/``recvmmsg`` and no per-packet Python objects on the relay path. ``media.engine`` picks
one with :func:`media._accel.load`.
"""

from __future__ import annotations

import select
import socket
import struct

import numpy as np
import numpy.typing as npt

#: Seconds after its last packet during which a source still counts as alive.
ALIVE = 2.0
#: In-sequence packets a new source must send before it is accepted.
PROBATION = 4
#: Seconds after a re-offer during which the stream re-latches on the new signalled host only.
LATCH_WINDOW = 2.0
#: Upper bound on packets drained per socket in one poll (keeps one busy socket from starving).
MAX_PER_SOCKET = 32

Addr = tuple[str, int]

#: Counter names, in the order :meth:`PacketHub.counters` reports them.
COUNTERS = (
    "rx_packets",
    "rx_octets",
    "tx_packets",
    "tx_octets",
    "relayed",
    "malformed",
    "source",
    "tx_errors",
)

_HDR = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")


def rtp_header_length(data: bytes | bytearray | memoryview) -> int:
    """Length of the RTP header (fixed part, CSRCs, extension) or -1 when malformed.

    Also checks the padding count against the payload (RFC 3550 §5.1), so a packet that passes has
    a well-defined, possibly empty, payload.
    """
    n = len(data)
    if n < 12:
        return -1
    b0 = data[0]
    if b0 >> 6 != 2:
        return -1
    length = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension: 4-byte header, then `length` 32-bit words
        if length + 4 > n:
            return -1
        length += 4 + 4 * ((data[length + 2] << 8) | data[length + 3])
    if length > n:
        return -1
    if b0 & 0x20:
        pad = data[n - 1]
        if pad == 0 or length + pad > n:
            return -1
    return length


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """RFC 5761 §4: on a multiplexed port, RTCP packet types 192–223 sit in RTP's M+PT byte."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class _Slot:
    __slots__ = (
        "cand",
        "cand_n",
        "cand_seq",
        "counters",
        "cur",
        "cur_seen",
        "fd",
        "in_ssrc",
        "last_seq",
        "last_ts",
        "latch_until",
        "out_ssrc",
        "prev",
        "pt_map",
        "raw",
        "relay",
        "rtcp_mux",
        "seq_off",
        "sig",
        "sig_seen",
        "sock",
        "tap_pt",
        "ts_off",
        "ts_step",
    )

    def __init__(self, sock: socket.socket, raw: bool, rtcp_mux: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.raw = raw
        self.rtcp_mux = rtcp_mux
        self.sig: Addr | None = None
        self.cur: Addr | None = None
        self.sig_seen = -1e18
        self.cur_seen = -1e18
        self.cand: Addr | None = None
        self.cand_seq = 0
        self.cand_n = 0
        self.latch_until = -1e18  # end of the latch window after a re-offer
        self.prev: Addr | None = None  # the source a re-offer moved away from
        self.relay = -1
        self.out_ssrc = 0
        self.pt_map: bytes | None = None
        self.tap_pt = -1
        self.ts_step = 160
        self.in_ssrc = -1
        self.seq_off = 0
        self.ts_off = 0
        self.last_seq = 0  # last sequence number / timestamp *sent* from this slot
        self.last_ts = 0
        self.counters = [0] * len(COUNTERS)


def _norm(addr: tuple[object, ...]) -> Addr:
    return (str(addr[0]), int(addr[1]))  # type: ignore[call-overload]


class PacketHub:
    """All media sockets of one engine behind one epoll fd (pure-Python reference)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._slots: dict[int, _Slot] = {}
        self._by_fd: dict[int, int] = {}
        self._next = 0
        self._free: list[int] = []

    def fileno(self) -> int:
        """The epoll fd: readable whenever any media socket is."""
        return self._epoll.fileno()

    def close(self) -> None:
        """Close the epoll fd (the sockets belong to their owners)."""
        self._epoll.close()

    # -- slots -----------------------------------------------------------------------------------

    def add(self, sock: socket.socket, *, raw: bool = False, rtcp_mux: bool = False) -> int:
        """Watch a non-blocking UDP socket; return its slot number.

        ``raw`` hands every packet up with its source, unchecked (SRTP and RTCP sockets).
        ``rtcp_mux`` hands RTCP seen on this RTP socket up with its source (RFC 5761).
        """
        sock.setblocking(False)
        slot = self._free.pop() if self._free else self._next
        if slot == self._next:
            self._next += 1
        self._slots[slot] = _Slot(sock, raw, rtcp_mux)
        self._by_fd[sock.fileno()] = slot
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        return slot

    def remove(self, slot: int) -> None:
        """Stop watching a slot; relays pointing at it stop."""
        s = self._slots.pop(slot)
        del self._by_fd[s.fd]
        try:
            self._epoll.unregister(s.fd)
        except (OSError, ValueError):
            pass
        for other in self._slots.values():
            if other.relay == slot:
                other.relay = -1
        self._free.append(slot)

    def set_remote(self, slot: int, addr: Addr | None, now: float | None = None) -> None:
        """Set the signalled remote address (from SDP); it becomes the send target.

        With ``now`` the address comes from a re-offer (re-INVITE/UPDATE) of a running stream:
        the source used until now is refused from here on, and until ``now +``
        :data:`LATCH_WINDOW` only the new signalled address — or the first packet from its host
        on another port — latches; other sources are dropped and counted, none starts
        probation. Without ``now`` (the first signalled address) no window opens.
        """
        s = self._slots[slot]
        prev = s.cur if s.cur is not None else s.sig
        s.sig = addr
        s.cur = addr
        s.sig_seen = s.cur_seen = -1e18
        s.cand = None
        s.cand_n = 0
        if now is not None and addr is not None and prev != addr:
            s.prev = prev
            s.latch_until = now + LATCH_WINDOW
        else:
            s.prev = None
            s.latch_until = -1e18

    def remote(self, slot: int) -> Addr | None:
        """Where this slot sends: the latched source, else the signalled address."""
        return self._slots[slot].cur

    def set_raw(self, slot: int, raw: bool) -> None:
        """Hand all packets up unchecked (True) or validate them here (False)."""
        self._slots[slot].raw = raw

    def set_relay(
        self, slot: int, target: int, pt_map: bytes | None = None, tap_pt: int = -1,
        ts_step: int = 160,
    ) -> None:
        """Relay validated RTP arriving on ``slot`` out of ``target`` (-1 stops relaying).

        ``pt_map`` (128 bytes) maps incoming payload types to outgoing ones; 255 drops the packet.
        Packets of payload type ``tap_pt`` (telephone-event: the PBX must see the digits) are
        relayed *and* handed up by :meth:`poll`. ``ts_step`` is one packet's timestamp increment
        (160 for 8 kHz clocks, 960 for Opus), used to continue the stream across an SSRC change.
        The outgoing SSRC is the target's (:meth:`set_ssrc`); sequence numbers and timestamps
        continue the target's stream, so a change of incoming SSRC is invisible downstream.
        """
        s = self._slots[slot]
        s.relay = target
        s.pt_map = pt_map
        s.tap_pt = tap_pt
        s.ts_step = ts_step
        s.in_ssrc = -1

    def set_ssrc(self, slot: int, ssrc: int, seq: int, ts: int) -> None:
        """The SSRC, last sequence number and timestamp this slot's outgoing stream uses."""
        s = self._slots[slot]
        s.out_ssrc = ssrc
        s.last_seq = seq & 0xFFFF
        s.last_ts = ts & 0xFFFFFFFF

    def last_sent(self, slot: int) -> tuple[int, int]:
        """(sequence number, timestamp) of the last RTP packet sent from this slot."""
        s = self._slots[slot]
        return s.last_seq, s.last_ts

    def counters(self, slot: int) -> dict[str, int]:
        """Packet counters of one slot (see :data:`COUNTERS`)."""
        return dict(zip(COUNTERS, self._slots[slot].counters, strict=True))

    # -- packet path -----------------------------------------------------------------------------

    def _source_ok(self, s: _Slot, addr: Addr, seq: int, now: float) -> bool:
        if addr == s.sig:
            s.sig_seen = now
            s.cur = addr
            s.cur_seen = now
            s.cand = None
            s.latch_until = -1e18
            return True
        if addr == s.cur:
            s.cur_seen = now
            return True
        if now < s.latch_until:
            # After a re-offer: the signalled host's first packet latches (its NAT may have
            # picked another port); the old source and every other host are refused.
            if s.sig is None or addr == s.prev or addr[0] != s.sig[0]:
                return False
            s.cur = addr
            s.cur_seen = now
            s.latch_until = -1e18
            return True
        # A stranger: never while a known source is alive (RTP bleed / injection defence).
        if now - s.sig_seen < ALIVE or now - s.cur_seen < ALIVE:
            s.cand = None
            return False
        if addr == s.cand and seq == (s.cand_seq + 1) & 0xFFFF:
            s.cand_n += 1
        else:
            s.cand = addr
            s.cand_n = 1
        s.cand_seq = seq
        if s.cand_n < PROBATION:
            return False
        s.cur = addr
        s.cur_seen = now
        s.cand = None
        return True

    def accept(self, slot: int, data: bytes, addr: Addr, now: float) -> bool:
        """Run header and source checks on an RTP packet a raw slot handed up (after SRTP)."""
        s = self._slots[slot]
        if rtp_header_length(data) < 0:
            s.counters[5] += 1
            return False
        if not self._source_ok(s, addr, (data[2] << 8) | data[3], now):
            s.counters[6] += 1
            return False
        return True

    def send(self, slot: int, data: bytes | bytearray | memoryview) -> bool:
        """Send one datagram from ``slot`` to its current remote; False when it has none."""
        s = self._slots[slot]
        if s.cur is None:
            return False
        try:
            s.sock.sendto(data, s.cur)
        except OSError:
            s.counters[7] += 1
            return False
        s.counters[2] += 1
        s.counters[3] += len(data)
        return True

    def send_rtp(self, slot: int, data: bytes | bytearray | memoryview) -> bool:
        """:meth:`send` for an RTP packet: also remembers its sequence number and timestamp."""
        s = self._slots[slot]
        s.last_seq, s.last_ts, _ = _SEQ_TS_SSRC.unpack_from(data, 2)
        return self.send(slot, data)

    def send_rtp_rows(
        self,
        slots: npt.NDArray[np.int32],
        payloads: npt.NDArray[np.uint8],
        rows: npt.NDArray[np.int64],
        pts: npt.NDArray[np.uint8],
        step: int,
    ) -> int:
        """Send ``payloads[rows[i]]`` as the next RTP packet of ``slots[i]`` (type ``pts[i]``).

        Sequence number + 1, timestamp + ``step``, the slot's SSRC: the conference mixer's fused
        G.711 output path (the Cython kernel makes no Python object per packet).
        """
        if not len(slots) == len(rows) == len(pts):
            raise ValueError("slots, rows and pts differ in length")
        sent = 0
        for slot, row, pt in zip(slots.tolist(), rows.tolist(), pts.tolist(), strict=True):
            s = self._slots.get(slot)
            if s is None or s.cur is None or not 0 <= row < len(payloads):
                continue
            seq = (s.last_seq + 1) & 0xFFFF
            ts = (s.last_ts + step) & 0xFFFFFFFF
            pkt = _HDR.pack(0x80, pt & 0x7F, seq, ts, s.out_ssrc) + payloads[row].tobytes()
            s.last_seq, s.last_ts = seq, ts
            try:
                s.sock.sendto(pkt, s.cur)
            except OSError:
                s.counters[7] += 1
                continue
            s.counters[2] += 1
            s.counters[3] += len(pkt)
            sent += 1
        return sent

    def _relay(self, s: _Slot, data: bytes) -> None:
        t = self._slots.get(s.relay)
        if t is None or t.cur is None:
            return
        buf = bytearray(data)
        if s.pt_map is not None:
            pt = s.pt_map[buf[1] & 0x7F]
            if pt == 255:
                return
            buf[1] = (buf[1] & 0x80) | pt
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(buf, 2)
        if ssrc != s.in_ssrc:
            # A new incoming stream: continue the outgoing one where it left off.
            s.in_ssrc = ssrc
            s.seq_off = (t.last_seq + 1 - seq) & 0xFFFF
            s.ts_off = (t.last_ts + s.ts_step - ts) & 0xFFFFFFFF
        out_seq = (seq + s.seq_off) & 0xFFFF
        out_ts = (ts + s.ts_off) & 0xFFFFFFFF
        _SEQ_TS_SSRC.pack_into(buf, 2, out_seq, out_ts, t.out_ssrc)
        t.last_seq = out_seq
        t.last_ts = out_ts
        try:
            t.sock.sendto(buf, t.cur)
        except OSError:
            t.counters[7] += 1
            return
        s.counters[4] += 1
        t.counters[2] += 1
        t.counters[3] += len(buf)

    def poll(self, now: float) -> list[tuple[int, bytes, Addr | None]]:
        """Drain every ready socket; relay what is relayed and return the rest for Python.

        Items are ``(slot, data, None)`` for validated RTP of a non-relay slot, and
        ``(slot, data, source)`` for packets Python must check (raw slots, multiplexed RTCP).
        """
        out: list[tuple[int, bytes, Addr | None]] = []
        for fd, _ in self._epoll.poll(0):
            slot = self._by_fd.get(fd)
            if slot is None:
                continue
            s = self._slots[slot]
            c = s.counters
            for _ in range(MAX_PER_SOCKET):
                try:
                    data, raddr = s.sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # e.g. ICMP port unreachable reported on a later recv
                    continue
                c[0] += 1
                c[1] += len(data)
                addr = _norm(raddr)
                if s.raw or (s.rtcp_mux and is_rtcp(data)):
                    out.append((slot, data, addr))
                    continue
                if rtp_header_length(data) < 0:
                    c[5] += 1
                    continue
                if not self._source_ok(s, addr, (data[2] << 8) | data[3], now):
                    c[6] += 1
                    continue
                if s.relay >= 0:
                    if data[1] & 0x7F == s.tap_pt:
                        out.append((slot, data, None))
                    self._relay(s, data)
                else:
                    out.append((slot, data, None))
        return out


def send_batch(
    sock: socket.socket, packets: list[bytes], addrs: list[Addr]
) -> int:
    """Send ``packets[i]`` to ``addrs[i]`` from one socket; returns how many went out.

    The Cython kernel does this with ``sendmmsg`` (one system call per 64 datagrams).
    """
    sent = 0
    for data, addr in zip(packets, addrs, strict=True):
        try:
            sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            continue
        sent += 1
    return sent


def recv_batch(sock: socket.socket, max_packets: int = 256) -> list[tuple[bytes, Addr]]:
    """Drain up to ``max_packets`` datagrams from a non-blocking socket (``recvmmsg`` in C)."""
    out: list[tuple[bytes, Addr]] = []
    for _ in range(max_packets):
        try:
            data, addr = sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            continue
        out.append((data, _norm(addr)))
    return out
