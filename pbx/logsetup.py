"""structlog set-up: console output in a terminal, JSON lines with ``--log-json``.

Call context (call-id, user, peer) is bound with ``structlog.contextvars`` by the code that knows
it; every log line carries it. Security lines (``security.auth.failed`` …) carry the source address
in a fixed ``src=`` field so fail2ban can match them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(level: str = "info", *, json: bool = False, stream: Any = None) -> None:
    """Configure structlog (idempotent)."""
    out = stream if stream is not None else sys.stderr
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if json:
        processors.append(structlog.processors.JSONRenderer())
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level.lower()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger carrying ``logger=name``."""
    return structlog.get_logger(name).bind(logger=name)
