"""structlog loggers for the asyncio adapters (DESIGN.md principle 9: adapters log).

Fields are keyword arguments (``log.warning("sip.x", src=host)``), never a stdlib ``extra=``
that the renderer drops. A logger made at import time still follows the configuration the
application makes later (``pbx.logsetup.configure_logging``): it assembles the bound logger
at each call — adapters log rarely (events, not packets), so that costs nothing that matters.
"""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["get_logger"]


class _Logger:
    """Looks up structlog's configuration on every call; every line carries ``logger=name``."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        return getattr(structlog.get_logger().bind(logger=self._name), method)


def get_logger(name: str) -> Any:
    """A structlog logger carrying ``logger=name`` (like ``pbx.logsetup.get_logger``)."""
    return _Logger(name)
