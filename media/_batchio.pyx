# cython: language_level=3
"""The packet hub in C: ``epoll_wait`` + ``recvmmsg``, header checks, anti-bleed, relay.

Same API and behaviour as the pure-Python reference ``media/batchio.py`` (read its docstring for
the theory of operation); ``tests/media/test_aio_batchio.py`` runs both on the same traces. On the
relay path a packet never becomes a Python object: it is received into a preallocated buffer,
checked, rewritten in place and sent from the target's socket.
"""

from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memset, memcpy, memcmp
from libc.errno cimport errno
from cpython.bytes cimport PyBytes_FromStringAndSize

cdef extern from "<sys/types.h>":
    pass

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int recvmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout)
    ssize_t sendto(int sockfd, const void *buf, size_t len, int flags,
                   const sockaddr *dest_addr, socklen_t addrlen)
    int AF_INET
    int AF_INET6
    int MSG_DONTWAIT

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        unsigned int s_addr
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short htons(unsigned short)
    unsigned short ntohs(unsigned short)

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    int inet_pton(int af, const char *src, void *dst)

cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t "epoll_data":
        void *ptr
        int fd
        unsigned int u32
        unsigned long long u64
    struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int EPOLLIN
    int EPOLL_CTL_ADD
    int EPOLL_CTL_DEL
    int EPOLL_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    int close(int fd)

DEF BATCH = 32
DEF BUFSZ = 2048
DEF MAX_EVENTS = 512
DEF MAX_PER_SOCKET = 32
DEF N_COUNTERS = 8

ALIVE = 2.0
PROBATION = 4
LATCH_WINDOW = 2.0
COUNTERS = (
    "rx_packets", "rx_octets", "tx_packets", "tx_octets", "relayed", "malformed", "source",
    "tx_errors",
)

cdef double C_ALIVE = 2.0
cdef int C_PROBATION = 4
cdef double C_LATCH_WINDOW = 2.0

ctypedef struct slot_t:
    int fd
    int used
    int raw
    int rtcp_mux
    sockaddr_storage sig
    int has_sig
    sockaddr_storage cur
    int has_cur
    double sig_seen
    double cur_seen
    sockaddr_storage cand
    int has_cand
    unsigned int cand_seq
    int cand_n
    double latch_until
    sockaddr_storage prev
    int has_prev
    int relay
    unsigned int out_ssrc
    unsigned char pt_map[128]
    int has_map
    int tap_pt
    unsigned int ts_step
    long long in_ssrc
    unsigned int seq_off
    unsigned int ts_off
    unsigned int last_seq
    unsigned int last_ts
    unsigned long long counters[N_COUNTERS]


cdef inline socklen_t addr_len(const sockaddr_storage *a) noexcept nogil:
    return sizeof(sockaddr_in6) if a.ss_family == AF_INET6 else sizeof(sockaddr_in)


cdef inline bint addr_eq(const sockaddr_storage *a, const sockaddr_storage *b) noexcept nogil:
    cdef const sockaddr_in *a4
    cdef const sockaddr_in *b4
    cdef const sockaddr_in6 *a6
    cdef const sockaddr_in6 *b6
    if a.ss_family != b.ss_family:
        return False
    if a.ss_family == AF_INET:
        a4 = <const sockaddr_in *>a
        b4 = <const sockaddr_in *>b
        return a4.sin_port == b4.sin_port and a4.sin_addr.s_addr == b4.sin_addr.s_addr
    a6 = <const sockaddr_in6 *>a
    b6 = <const sockaddr_in6 *>b
    return a6.sin6_port == b6.sin6_port and memcmp(a6.sin6_addr.s6_addr, b6.sin6_addr.s6_addr,
                                                   16) == 0


cdef inline bint host_eq(const sockaddr_storage *a, const sockaddr_storage *b) noexcept nogil:
    # the address without the port
    if a.ss_family != b.ss_family:
        return False
    if a.ss_family == AF_INET:
        return (<const sockaddr_in *>a).sin_addr.s_addr == (<const sockaddr_in *>b).sin_addr.s_addr
    return memcmp((<const sockaddr_in6 *>a).sin6_addr.s6_addr,
                  (<const sockaddr_in6 *>b).sin6_addr.s6_addr, 16) == 0


cdef inline int header_length(const unsigned char *d, Py_ssize_t n) noexcept nogil:
    cdef int length
    cdef int pad
    if n < 12:
        return -1
    if d[0] >> 6 != 2:
        return -1
    length = 12 + 4 * (d[0] & 0x0F)
    if d[0] & 0x10:
        if length + 4 > n:
            return -1
        length += 4 + 4 * ((d[length + 2] << 8) | d[length + 3])
    if length > n:
        return -1
    if d[0] & 0x20:
        pad = d[n - 1]
        if pad == 0 or length + pad > n:
            return -1
    return length


cdef inline bint is_rtcp_c(const unsigned char *d, Py_ssize_t n) noexcept nogil:
    return n >= 2 and 192 <= d[1] <= 223


def rtp_header_length(const unsigned char[::1] data not None) -> int:
    """Length of the RTP header or -1 when malformed (see media.batchio)."""
    return header_length(&data[0] if data.shape[0] else NULL, data.shape[0])


def is_rtcp(const unsigned char[::1] data not None) -> bool:
    return data.shape[0] >= 2 and 192 <= data[1] <= 223


cdef object addr_tuple(const sockaddr_storage *a):
    cdef char buf[64]
    if a.ss_family == AF_INET6:
        inet_ntop(AF_INET6, &(<const sockaddr_in6 *>a).sin6_addr, buf, 64)
        return (buf.decode("ascii"), ntohs((<const sockaddr_in6 *>a).sin6_port))
    inet_ntop(AF_INET, &(<const sockaddr_in *>a).sin_addr, buf, 64)
    return (buf.decode("ascii"), ntohs((<const sockaddr_in *>a).sin_port))


cdef int tuple_addr(object addr, sockaddr_storage *out) except -1:
    host = addr[0].encode("ascii")
    port = int(addr[1])
    memset(out, 0, sizeof(sockaddr_storage))
    cdef sockaddr_in *a4 = <sockaddr_in *>out
    cdef sockaddr_in6 *a6 = <sockaddr_in6 *>out
    if b":" in host:
        a6.sin6_family = AF_INET6
        a6.sin6_port = htons(port)
        if inet_pton(AF_INET6, host, &a6.sin6_addr) != 1:
            raise ValueError(f"not a numeric IPv6 address: {addr[0]!r}")
    else:
        a4.sin_family = AF_INET
        a4.sin_port = htons(port)
        if inet_pton(AF_INET, host, &a4.sin_addr) != 1:
            raise ValueError(f"not a numeric IPv4 address: {addr[0]!r}")
    return 0


cdef inline bint source_ok(slot_t *s, const sockaddr_storage *addr, unsigned int seq,
                           double now) noexcept nogil:
    if s.has_sig and addr_eq(addr, &s.sig):
        s.sig_seen = now
        memcpy(&s.cur, addr, sizeof(sockaddr_storage))
        s.has_cur = 1
        s.cur_seen = now
        s.has_cand = 0
        s.latch_until = -1e18
        return True
    if s.has_cur and addr_eq(addr, &s.cur):
        s.cur_seen = now
        return True
    if now < s.latch_until:
        # after a re-offer: only the signalled host latches (see media.batchio)
        if not s.has_sig or (s.has_prev and addr_eq(addr, &s.prev)) or not host_eq(addr, &s.sig):
            return False
        memcpy(&s.cur, addr, sizeof(sockaddr_storage))
        s.has_cur = 1
        s.cur_seen = now
        s.latch_until = -1e18
        return True
    if now - s.sig_seen < C_ALIVE or now - s.cur_seen < C_ALIVE:
        s.has_cand = 0
        return False
    if s.has_cand and addr_eq(addr, &s.cand) and seq == ((s.cand_seq + 1) & 0xFFFF):
        s.cand_n += 1
    else:
        memcpy(&s.cand, addr, sizeof(sockaddr_storage))
        s.has_cand = 1
        s.cand_n = 1
    s.cand_seq = seq
    if s.cand_n < C_PROBATION:
        return False
    memcpy(&s.cur, addr, sizeof(sockaddr_storage))
    s.has_cur = 1
    s.cur_seen = now
    s.has_cand = 0
    return True


cdef class PacketHub:
    """All media sockets of one engine behind one epoll fd (Cython kernel)."""

    cdef int epfd
    cdef slot_t *slots
    cdef int n_slots
    cdef int cap
    cdef list socks
    cdef list free_slots
    cdef mmsghdr msgs[BATCH]
    cdef iovec iovs[BATCH]
    cdef sockaddr_storage addrs[BATCH]
    cdef unsigned char *bufs
    cdef epoll_event events[MAX_EVENTS]

    def __cinit__(self):
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")
        self.cap = 64
        self.slots = <slot_t *>malloc(self.cap * sizeof(slot_t))
        self.bufs = <unsigned char *>malloc(BATCH * BUFSZ)
        if self.slots == NULL or self.bufs == NULL:
            raise MemoryError()
        self.n_slots = 0
        self.socks = []
        self.free_slots = []
        cdef int i
        for i in range(BATCH):
            self.iovs[i].iov_base = self.bufs + i * BUFSZ
            self.iovs[i].iov_len = BUFSZ

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1
        free(self.slots)
        free(self.bufs)

    def fileno(self):
        """The epoll fd: readable whenever any media socket is."""
        return self.epfd

    def close(self):
        """Close the epoll fd (the sockets belong to their owners)."""
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1

    cdef slot_t *_get(self, int slot) except NULL:
        if slot < 0 or slot >= self.n_slots or not self.slots[slot].used:
            raise KeyError(slot)
        return &self.slots[slot]

    def add(self, sock, *, bint raw=False, bint rtcp_mux=False):
        """Watch a non-blocking UDP socket; return its slot number."""
        cdef int slot
        cdef epoll_event ev
        sock.setblocking(False)
        if self.free_slots:
            slot = self.free_slots.pop()
        else:
            if self.n_slots == self.cap:
                new = <slot_t *>realloc(self.slots, 2 * self.cap * sizeof(slot_t))
                if new == NULL:
                    raise MemoryError()
                self.slots = new
                self.cap *= 2
            slot = self.n_slots
            self.n_slots += 1
            self.socks.append(None)
        cdef slot_t *s = &self.slots[slot]
        memset(s, 0, sizeof(slot_t))
        s.fd = sock.fileno()
        s.used = 1
        s.raw = raw
        s.rtcp_mux = rtcp_mux
        s.sig_seen = -1e18
        s.cur_seen = -1e18
        s.latch_until = -1e18
        s.relay = -1
        s.tap_pt = -1
        s.ts_step = 160
        s.in_ssrc = -1
        self.socks[slot] = sock
        ev.events = EPOLLIN
        ev.data.u64 = 0
        ev.data.u32 = slot
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, s.fd, &ev) < 0:
            s.used = 0
            self.free_slots.append(slot)
            raise OSError(errno, "epoll_ctl ADD failed")
        return slot

    def remove(self, int slot):
        """Stop watching a slot; relays pointing at it stop."""
        cdef slot_t *s = self._get(slot)
        cdef epoll_event ev
        cdef int i
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, s.fd, &ev)
        s.used = 0
        self.socks[slot] = None
        for i in range(self.n_slots):
            if self.slots[i].used and self.slots[i].relay == slot:
                self.slots[i].relay = -1
        self.free_slots.append(slot)

    def set_remote(self, int slot, addr, now=None):
        """Set the signalled remote address (from SDP); with ``now``, a re-offer opens the
        latch window (see media.batchio)."""
        cdef slot_t *s = self._get(slot)
        cdef sockaddr_storage prev
        cdef int had = s.has_cur or s.has_sig
        if s.has_cur:
            memcpy(&prev, &s.cur, sizeof(sockaddr_storage))
        elif s.has_sig:
            memcpy(&prev, &s.sig, sizeof(sockaddr_storage))
        if addr is None:
            s.has_sig = 0
            s.has_cur = 0
        else:
            tuple_addr(addr, &s.sig)
            memcpy(&s.cur, &s.sig, sizeof(sockaddr_storage))
            s.has_sig = 1
            s.has_cur = 1
        s.sig_seen = -1e18
        s.cur_seen = -1e18
        s.has_cand = 0
        s.cand_n = 0
        s.has_prev = 0
        s.latch_until = -1e18
        if now is not None and addr is not None and not (had and addr_eq(&prev, &s.sig)):
            if had:
                memcpy(&s.prev, &prev, sizeof(sockaddr_storage))
                s.has_prev = 1
            s.latch_until = <double>now + C_LATCH_WINDOW

    def remote(self, int slot):
        """Where this slot sends: the latched source, else the signalled address."""
        cdef slot_t *s = self._get(slot)
        if not s.has_cur:
            return None
        return addr_tuple(&s.cur)

    def set_raw(self, int slot, bint raw):
        self._get(slot).raw = raw

    def set_relay(self, int slot, int target, pt_map=None, int tap_pt=-1,
                  unsigned int ts_step=160):
        """Relay validated RTP arriving on ``slot`` out of ``target`` (-1 stops relaying);
        packets of payload type ``tap_pt`` are also handed up by poll()."""
        cdef slot_t *s = self._get(slot)
        cdef const unsigned char[::1] m
        s.relay = target
        s.tap_pt = tap_pt
        s.ts_step = ts_step
        s.in_ssrc = -1
        if pt_map is None:
            s.has_map = 0
        else:
            m = pt_map
            if m.shape[0] != 128:
                raise ValueError("pt_map must be 128 bytes")
            memcpy(s.pt_map, &m[0], 128)
            s.has_map = 1

    def set_ssrc(self, int slot, unsigned int ssrc, long long seq, long long ts):
        cdef slot_t *s = self._get(slot)
        s.out_ssrc = ssrc
        s.last_seq = seq & 0xFFFF
        s.last_ts = ts & 0xFFFFFFFF

    def last_sent(self, int slot):
        cdef slot_t *s = self._get(slot)
        return s.last_seq, s.last_ts

    def counters(self, int slot):
        cdef slot_t *s = self._get(slot)
        return {name: s.counters[i] for i, name in enumerate(COUNTERS)}

    def accept(self, int slot, const unsigned char[::1] data not None, addr, double now):
        """Run header and source checks on an RTP packet a raw slot handed up (after SRTP)."""
        cdef slot_t *s = self._get(slot)
        cdef sockaddr_storage a
        cdef Py_ssize_t n = data.shape[0]
        if n < 12 or header_length(&data[0], n) < 0:
            s.counters[5] += 1
            return False
        tuple_addr(addr, &a)
        if not source_ok(s, &a, (data[2] << 8) | data[3], now):
            s.counters[6] += 1
            return False
        return True

    cdef bint _send(self, slot_t *s, const unsigned char *data, Py_ssize_t n) noexcept:
        if not s.has_cur:
            return False
        if sendto(s.fd, data, n, MSG_DONTWAIT, <sockaddr *>&s.cur, addr_len(&s.cur)) < 0:
            s.counters[7] += 1
            return False
        s.counters[2] += 1
        s.counters[3] += n
        return True

    def send(self, int slot, const unsigned char[::1] data not None):
        """Send one datagram from ``slot`` to its current remote; False when it has none."""
        cdef slot_t *s = self._get(slot)
        if data.shape[0] == 0:
            return self._send(s, <const unsigned char *>"", 0)
        return self._send(s, &data[0], data.shape[0])

    def send_rtp(self, int slot, const unsigned char[::1] data not None):
        """:meth:`send` for an RTP packet: also remembers its sequence number and timestamp."""
        cdef slot_t *s = self._get(slot)
        if data.shape[0] < 12:
            raise ValueError("not an RTP packet")
        s.last_seq = (data[2] << 8) | data[3]
        s.last_ts = ((<unsigned int>data[4] << 24) | (data[5] << 16) | (data[6] << 8) | data[7])
        return self._send(s, &data[0], data.shape[0])

    cdef void _relay(self, slot_t *s, unsigned char *d, Py_ssize_t n) noexcept:
        cdef slot_t *t
        cdef unsigned int seq, ts, ssrc, out_seq, out_ts, pt
        if s.relay < 0 or s.relay >= self.n_slots:
            return
        t = &self.slots[s.relay]
        if not t.used or not t.has_cur:
            return
        if s.has_map:
            pt = s.pt_map[d[1] & 0x7F]
            if pt == 255:
                return
            d[1] = (d[1] & 0x80) | pt
        seq = (d[2] << 8) | d[3]
        ts = (<unsigned int>d[4] << 24) | (d[5] << 16) | (d[6] << 8) | d[7]
        ssrc = (<unsigned int>d[8] << 24) | (d[9] << 16) | (d[10] << 8) | d[11]
        if <long long>ssrc != s.in_ssrc:
            s.in_ssrc = ssrc
            s.seq_off = (t.last_seq + 1 - seq) & 0xFFFF
            s.ts_off = (t.last_ts + s.ts_step - ts) & 0xFFFFFFFF
        out_seq = (seq + s.seq_off) & 0xFFFF
        out_ts = (ts + s.ts_off) & 0xFFFFFFFF
        d[2] = out_seq >> 8
        d[3] = out_seq & 0xFF
        d[4] = out_ts >> 24
        d[5] = (out_ts >> 16) & 0xFF
        d[6] = (out_ts >> 8) & 0xFF
        d[7] = out_ts & 0xFF
        d[8] = t.out_ssrc >> 24
        d[9] = (t.out_ssrc >> 16) & 0xFF
        d[10] = (t.out_ssrc >> 8) & 0xFF
        d[11] = t.out_ssrc & 0xFF
        t.last_seq = out_seq
        t.last_ts = out_ts
        if sendto(t.fd, d, n, MSG_DONTWAIT, <sockaddr *>&t.cur, addr_len(&t.cur)) < 0:
            t.counters[7] += 1
            return
        s.counters[4] += 1
        t.counters[2] += 1
        t.counters[3] += n

    def send_rtp_rows(self, const int[::1] slots not None,
                      const unsigned char[:, ::1] payloads not None,
                      const long long[::1] rows not None, const unsigned char[::1] pts not None,
                      unsigned int step):
        """Send ``payloads[rows[i]]`` as the next RTP packet of ``slots[i]`` (payload type
        ``pts[i]``): sequence number + 1, timestamp + ``step``, the slot's SSRC. The conference
        mixer's fused G.711 output path: no Python object per packet. Returns packets sent."""
        cdef Py_ssize_t i, n = slots.shape[0]
        cdef Py_ssize_t plen = payloads.shape[1]
        cdef unsigned char *d = self.bufs
        cdef slot_t *s
        cdef int slot, sent = 0
        cdef unsigned int seq, ts
        if rows.shape[0] != n or pts.shape[0] != n:
            raise ValueError("slots, rows and pts differ in length")
        if plen + 12 > BUFSZ:
            raise ValueError("payload too long")
        for i in range(n):
            slot = slots[i]
            if slot < 0 or slot >= self.n_slots or rows[i] < 0 or rows[i] >= payloads.shape[0]:
                continue
            s = &self.slots[slot]
            if not s.used or not s.has_cur:
                continue
            seq = (s.last_seq + 1) & 0xFFFF
            ts = (s.last_ts + step) & 0xFFFFFFFF
            d[0] = 0x80
            d[1] = pts[i] & 0x7F
            d[2] = seq >> 8
            d[3] = seq & 0xFF
            d[4] = ts >> 24
            d[5] = (ts >> 16) & 0xFF
            d[6] = (ts >> 8) & 0xFF
            d[7] = ts & 0xFF
            d[8] = s.out_ssrc >> 24
            d[9] = (s.out_ssrc >> 16) & 0xFF
            d[10] = (s.out_ssrc >> 8) & 0xFF
            d[11] = s.out_ssrc & 0xFF
            memcpy(d + 12, &payloads[rows[i], 0], plen)
            s.last_seq = seq
            s.last_ts = ts
            if sendto(s.fd, d, plen + 12, MSG_DONTWAIT, <sockaddr *>&s.cur, addr_len(&s.cur)) < 0:
                s.counters[7] += 1
                continue
            s.counters[2] += 1
            s.counters[3] += plen + 12
            sent += 1
        return sent

    def poll(self, double now):
        """Drain every ready socket; relay what is relayed and return the rest for Python."""
        cdef list out = []
        cdef int nev, i, j, k, slot, total
        cdef slot_t *s
        cdef unsigned char *d
        cdef Py_ssize_t n
        nev = epoll_wait(self.epfd, self.events, MAX_EVENTS, 0)
        for i in range(nev):
            slot = self.events[i].data.u32
            if slot < 0 or slot >= self.n_slots or not self.slots[slot].used:
                continue
            total = 0
            while total < MAX_PER_SOCKET:
                for j in range(BATCH):
                    memset(&self.msgs[j], 0, sizeof(mmsghdr))
                    self.msgs[j].msg_hdr.msg_name = &self.addrs[j]
                    self.msgs[j].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
                    self.msgs[j].msg_hdr.msg_iov = &self.iovs[j]
                    self.msgs[j].msg_hdr.msg_iovlen = 1
                k = recvmmsg(self.slots[slot].fd, self.msgs, BATCH, MSG_DONTWAIT, NULL)
                if k <= 0:
                    break
                total += k
                for j in range(k):
                    # re-fetch: a Python call below may have grown (moved) the slot array
                    s = &self.slots[slot]
                    d = self.bufs + j * BUFSZ
                    n = self.msgs[j].msg_len
                    s.counters[0] += 1
                    s.counters[1] += n
                    if s.raw or (s.rtcp_mux and is_rtcp_c(d, n)):
                        out.append((slot, PyBytes_FromStringAndSize(<char *>d, n),
                                    addr_tuple(&self.addrs[j])))
                        continue
                    if header_length(d, n) < 0:
                        s.counters[5] += 1
                        continue
                    if not source_ok(s, &self.addrs[j], (d[2] << 8) | d[3], now):
                        s.counters[6] += 1
                        continue
                    if s.relay >= 0:
                        if (d[1] & 0x7F) == s.tap_pt:
                            out.append((slot, PyBytes_FromStringAndSize(<char *>d, n), None))
                            s = &self.slots[slot]
                        self._relay(s, d, n)
                    else:
                        out.append((slot, PyBytes_FromStringAndSize(<char *>d, n), None))
                if k < BATCH:
                    break
        return out


cdef extern from "<sys/socket.h>" nogil:
    int sendmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags)


def send_batch(sock, list packets not None, list addrs not None):
    """Send ``packets[i]`` to ``addrs[i]`` from one socket with ``sendmmsg``; returns the count."""
    cdef int fd = sock.fileno()
    cdef Py_ssize_t n = len(packets)
    cdef Py_ssize_t i, j, chunk, done = 0
    cdef mmsghdr msgs[64]
    cdef iovec iovs[64]
    cdef sockaddr_storage sas[64]
    cdef int r
    cdef bytes data
    if len(addrs) != n:
        raise ValueError("packets and addrs differ in length")
    i = 0
    while i < n:
        chunk = min(64, n - i)
        for j in range(chunk):
            data = packets[i + j]
            tuple_addr(addrs[i + j], &sas[j])
            iovs[j].iov_base = <char *>data
            iovs[j].iov_len = len(data)
            memset(&msgs[j], 0, sizeof(mmsghdr))
            msgs[j].msg_hdr.msg_name = &sas[j]
            msgs[j].msg_hdr.msg_namelen = addr_len(&sas[j])
            msgs[j].msg_hdr.msg_iov = &iovs[j]
            msgs[j].msg_hdr.msg_iovlen = 1
        r = sendmmsg(fd, msgs, chunk, MSG_DONTWAIT)
        if r <= 0:
            break
        done += r
        if r < chunk:
            break
        i += chunk
    return done


def recv_batch(sock, int max_packets=256):
    """Drain up to ``max_packets`` datagrams with ``recvmmsg``: ``[(data, (host, port)), …]``."""
    cdef int fd = sock.fileno()
    cdef mmsghdr msgs[BATCH]
    cdef iovec iovs[BATCH]
    cdef sockaddr_storage sas[BATCH]
    cdef unsigned char *bufs = <unsigned char *>malloc(BATCH * BUFSZ)
    cdef int j, k, total = 0
    cdef list out = []
    if bufs == NULL:
        raise MemoryError()
    try:
        while total < max_packets:
            for j in range(BATCH):
                iovs[j].iov_base = bufs + j * BUFSZ
                iovs[j].iov_len = BUFSZ
                memset(&msgs[j], 0, sizeof(mmsghdr))
                msgs[j].msg_hdr.msg_name = &sas[j]
                msgs[j].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
                msgs[j].msg_hdr.msg_iov = &iovs[j]
                msgs[j].msg_hdr.msg_iovlen = 1
            k = recvmmsg(fd, msgs, min(BATCH, max_packets - total), MSG_DONTWAIT, NULL)
            if k <= 0:
                break
            for j in range(k):
                out.append((PyBytes_FromStringAndSize(<char *>(bufs + j * BUFSZ), msgs[j].msg_len),
                            addr_tuple(&sas[j])))
            total += k
            if k < BATCH:
                break
    finally:
        free(bufs)
    return out
