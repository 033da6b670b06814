"""The IVR's building blocks: a port that plays several ports one after the other, and
:func:`play_collect` — play something to a leg while collecting its digits (type-ahead: the
first digit stops the playback; digits typed earlier are kept for the next question).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from media.port import Frame, MediaPort
from pbx.callcontrol import Call, Leg
from pbx.callcontrol.events import DtmfReceived, LegEnded, LegFailed
from pbx.callcontrol.media import InbandDtmf, MediaLink

__all__ = ["Gone", "Keypad", "SequencePort"]

#: How often the collector looks whether the playback ran out (seconds).
_POLL = 0.05


class SequencePort:
    """Plays ``ports`` one after the other; runs dry after the last."""

    def __init__(self, ports: Sequence[MediaPort], sample_rate: int) -> None:
        self.ports = deque(ports)
        self.sample_rate = sample_rate

    def get_frame(self) -> Frame | None:
        """The current port's next frame (the next port once one runs dry)."""
        while self.ports:
            frame = self.ports[0].get_frame()
            if frame is not None:
                return frame
            self.ports.popleft()
        return None

    def put_frame(self, frame: Frame) -> None:
        """A source only."""

    def stop(self) -> None:
        """Close the ports that can be closed."""
        for port in self.ports:
            stop = getattr(port, "stop", None) or getattr(port, "close", None)
            if callable(stop):
                stop()
        self.ports.clear()


class Gone(Exception):
    """The caller hung up."""


@dataclass
class Keypad:
    """Digits of ``leg`` in ``call``, read by the menu (type-ahead kept in ``pending``). A leg
    that negotiated no telephone-event has its audio listened to for in-band DTMF (RFC 4733
    events and SIP INFO arrive as digits anyway); :meth:`close` ends that."""

    call: Call
    leg: Leg
    pending: deque[str] = field(default_factory=deque)
    _tap: MediaLink | None = None

    def __post_init__(self) -> None:
        media = self.leg.media
        if media is not None and getattr(media, "telephone_event_pt", 0) is None:
            self._tap = self.call.graph.link(media, InbandDtmf(self.leg, media.sample_rate))

    def close(self) -> None:
        """Stop listening for in-band digits (idempotent)."""
        if self._tap is not None:
            self._tap.close()
            self._tap = None

    async def _next(self, timeout: float) -> str | None:
        """The next digit (typed ahead, or within ``timeout``; None: none came)."""
        if self.pending:
            return self.pending.popleft()
        return await self._read(timeout)

    async def _read(self, timeout: float) -> str | None:
        """The next digit from the call within ``timeout`` (None: none came);
        :class:`Gone` on hang-up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            event = await self.call.next_event(min(left, _POLL))
            if event is None:
                continue
            if event.leg is self.leg and isinstance(event, LegEnded | LegFailed):
                raise Gone
            if isinstance(event, DtmfReceived) and event.leg is self.leg:
                return event.digit
        return None

    async def play(self, port: MediaPort | None, *, max_digits: int = 1,
                   terminators: str = "#", timeout: float = 6.0,
                   inter_digit: float = 5.0, interrupt: bool = True) -> str:
        """Play ``port`` (to its end, or until the first digit when ``interrupt``), then collect
        up to ``max_digits`` digits (ending at a terminator, which is not returned): ``timeout``
        seconds for the first after the playback, ``inter_digit`` between digits. '' when
        nothing was typed; :class:`Gone` when the caller hung up."""
        digits = ""
        playback = self.call.play(self.leg, port) if port is not None else None
        try:
            while playback is not None and not playback.done.done():
                if self.pending and interrupt:
                    break
                digit = await self._read(_POLL)
                if digit is not None:
                    self.pending.append(digit)
                    if interrupt:
                        break
        finally:
            if playback is not None:
                playback.stop()
        wait = timeout
        while len(digits) < max_digits:
            digit = await self._next(wait)
            if digit is None:
                break
            if digit in terminators:
                break
            digits += digit
            wait = inter_digit
        return digits

    async def wait(self, port: MediaPort | None) -> None:
        """Play ``port`` to its end (digits typed meanwhile are kept)."""
        await self.play(port, max_digits=0, interrupt=False)
