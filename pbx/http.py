"""The HTTP side of the server: ``/health`` here; the REST API under ``/api/v1`` and
``/metrics`` join the same application (:func:`pbx.api.install`, wired by :mod:`pbx.app`).

aiohttp serves it on the server's event loop (``[http] listen``, port 0 allowed). ``/health``
answers ``{"status": "ok", "registrations": N, "active_calls": N, "uptime": seconds,
"trunks": [...]}`` for load balancers and monitoring; when the server cannot produce its figures
it answers 503 with ``"status": "error"`` so a balancer takes the node out.

Each trunk entry (:meth:`pbx.trunks.TrunkManager.health_list`) has ``name``, ``tenant``,
``kind`` ("ip"/"register"), ``state`` ("registered", "registering", "failed" — then
``last_status``/``last_error`` say why —, "ip" for IP trunks) and, for a registration trunk,
``next_refresh``: seconds until its next REGISTER (refresh or retry). A trunk whose host is a
DNS name also has ``addresses`` (what the name resolved to; empty until it does),
``next_resolve`` (seconds until the next query) and, while the last query failed, ``dns_error``.
Never a password: only :data:`TRUNK_FIELDS` leave the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sipcore.address import parse_host_port

if TYPE_CHECKING:  # aiohttp is imported when the service is built: config parsing stays light
    from aiohttp import web

#: What the server reports: {"registrations": int, "active_calls": int, "trunks": [dict, ...]}.
HealthFigures = Callable[[], Mapping[str, object]]

#: Trunk entry fields /health passes on (anything else a figure source adds stays inside).
TRUNK_FIELDS = ("name", "tenant", "kind", "state", "next_refresh", "expires_in", "last_status",
                "last_error", "failures", "refused_challenges", "foreign_challenges",
                "addresses", "dns_error", "next_resolve")


class HttpService:
    """An aiohttp application on one listening socket; ``app`` takes further routes."""

    def __init__(self, health: HealthFigures, *, started: float | None = None) -> None:
        from aiohttp import web

        self.health = health
        #: Monotonic start time (uptime is measured from it).
        self.started = time.monotonic() if started is None else started
        self.app = web.Application()
        self.app.router.add_get("/health", self._health)
        self._runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0

    async def _health(self, request: web.Request) -> web.Response:
        uptime = round(time.monotonic() - self.started, 1)
        try:
            figures = dict(self.health())
        except Exception as exc:  # the node is not healthy; say so instead of a 500 page
            return web_json({"status": "error", "error": type(exc).__name__, "uptime": uptime},
                            503)
        try:
            body = {"status": "ok", "registrations": _int(figures.get("registrations", 0)),
                    "active_calls": _int(figures.get("active_calls", 0)), "uptime": uptime,
                    "trunks": _trunks(figures.get("trunks", []))}
        except (TypeError, ValueError) as exc:
            return web_json({"status": "error", "error": type(exc).__name__, "uptime": uptime},
                            503)
        return web_json(body, 200)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (0: any free port); returns the bound (host, port).
        Raises OSError when the address cannot be bound."""
        from aiohttp import web

        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               logger=_QuietBadRequests(logging.getLogger("aiohttp.server")))
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        bound = addresses[0] if addresses else (host, port)
        self.host, self.port = str(bound[0]), int(bound[1])
        return self.host, self.port

    async def close(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class _QuietBadRequests(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, but a request that does not parse as HTTP (a NUL in a header,
    a broken request line: the client's fault, answered 400) is one line, not a traceback."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(exc_info, HttpProcessingError):
            text = str(msg) % args if args else str(msg)
            detail = " ".join(str(exc_info).split())[:200]
            self.warning("%s: %s %s", text, type(exc_info).__name__, detail)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


def _int(value: object) -> int:
    if not isinstance(value, int | float | str):
        raise TypeError(f"not a number: {value!r}")
    return int(value)


def _trunks(value: object) -> list[dict[str, object]]:
    """The trunk entries, each reduced to :data:`TRUNK_FIELDS` (JSON-safe)."""
    if not isinstance(value, list | tuple):
        raise TypeError(f"trunks: not a list: {value!r}")
    out = []
    for entry in value:
        if not isinstance(entry, Mapping):
            raise TypeError(f"trunk entry: not a mapping: {entry!r}")
        out.append({k: entry[k] for k in TRUNK_FIELDS if k in entry})
    return out


def web_json(body: Mapping[str, object], status: int) -> web.Response:
    """A JSON response that no cache keeps (health must be live)."""
    from aiohttp import web

    return web.json_response(dict(body), status=status, headers={"Cache-Control": "no-store"})


def parse_http_listen(text: str) -> tuple[str, int] | None:
    """``"127.0.0.1:8080"`` / ``"[::1]:0"`` → (host, port); ``""`` → None (no HTTP).
    Raises ValueError with a message for anything else."""
    text = text.strip()
    if not text:
        return None
    return parse_host_port(text)


async def start_http(listen: str, health: HealthFigures, *,
                     started: float | None = None,
                     routes: Callable[[web.Application], None] | None = None,
                     ) -> HttpService | None:
    """Start the HTTP service on ``listen`` (``[http] listen``); None when it is empty.
    ``routes`` adds further routes before it starts (``/phone``: :mod:`pbx.phone`)."""
    address = parse_http_listen(listen)
    if address is None:
        return None
    service = HttpService(health, started=started)
    if routes is not None:
        routes(service.app)
    await service.start(*address)
    return service
