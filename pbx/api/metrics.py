"""``/metrics`` in the Prometheus text format (prometheus-client), from a registry of this
server's own (not the library's global one: tests run several servers in one process).

Figures are read when Prometheus scrapes (a collector over the server's live counters: active
calls, registrations, the SIP endpoint's and transports' counters — responses by class,
requests, transactions, retransmissions, parse errors …), so the hot paths count nothing extra.
HTTP requests are counted by :func:`metrics_middleware` by method, route template and status.
SIP requests by method are not counted by the endpoint yet; they appear here when they are.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

#: SIP figures that are levels, not totals (and every ``*_current``).
_GAUGES = frozenset({"sip_transactions", "sip_timers"})
_CLASS = re.compile(r"^(sip_responses_(?:sent|received))_([1-6]xx)$")
_BAD = re.compile(r"[^a-zA-Z0-9_]")
#: Methods counted by name (anything else is OTHER: labels must not grow with the input).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

Figures = Callable[[], Mapping[str, object]]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _ServerCollector(Collector):
    def __init__(self, figures: Figures, sip: Figures, extra: Figures) -> None:
        self.figures = figures
        self.sip = sip
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        figures = self.figures()
        for name, text in (("active_calls", "calls in progress"),
                           ("registrations", "current registrations (bindings)")):
            value = _number(figures.get(name, 0))
            yield GaugeMetricFamily(f"asyncpbx_{name}", text, value=value or 0.0)
        for name, raw in sorted(self.extra().items()):
            value = _number(raw)
            if value is not None:
                yield GaugeMetricFamily(f"asyncpbx_{_BAD.sub('_', name)}", name, value=value)
        by_class: dict[str, CounterMetricFamily] = {}
        for key, raw in sorted(self.sip().items()):
            value = _number(raw)
            if value is None:
                continue
            m = _CLASS.match(key)
            if m:
                family = by_class.get(m.group(1))
                if family is None:
                    family = by_class[m.group(1)] = CounterMetricFamily(
                        f"asyncpbx_{m.group(1)}", f"SIP {m.group(1)[4:].replace('_', ' ')} "
                        "by class", labels=["class"])
                family.add_metric([m.group(2)], value)
                continue
            name = "asyncpbx_" + _BAD.sub("_", key if key.startswith("sip_") else f"sip_{key}")
            if key in _GAUGES or key.endswith("_current"):
                yield GaugeMetricFamily(name, f"SIP {key}", value=value)
            else:
                yield CounterMetricFamily(name, f"SIP {key}", value=value)
        yield from by_class.values()


class Metrics:
    """The server's registry, its collector, and the HTTP counters."""

    def __init__(self, figures: Figures, sip: Figures, extra: Figures | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ServerCollector(figures, sip, extra or dict))
        self.http_requests = Counter("asyncpbx_http_requests", "HTTP requests answered",
                                     ["method", "route", "status"], registry=self.registry)
        self.http_seconds = Histogram("asyncpbx_http_request_duration_seconds",
                                      "time to answer an HTTP request", ["method"],
                                      registry=self.registry,
                                      buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, 1.0))

    async def handler(self, request: web.Request) -> web.Response:
        """``GET /metrics``."""
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                                "Cache-Control": "no-store"})

    def middleware(self) -> Any:
        """Counts every request of the application it is on (route template as label: the
        label set stays small whatever paths are asked for)."""

        @web.middleware
        async def count(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                route = request.match_info.route.resource
                template = route.canonical if route is not None else "unmatched"
                method = request.method if request.method in _METHODS else "OTHER"
                self.http_requests.labels(method, template, str(status)).inc()
                self.http_seconds.labels(method).observe(time.perf_counter() - started)

        return count
