"""The portal (issue 17): user and administrator views in German and English, with the
browser softphone, served by the PBX itself at ``/`` and ``/portal/``.

Pages are rendered on the server (Jinja2, the catalogue of :mod:`pbx.i18n`) and are plain
forms and links; every read and change goes through the REST API's own operations, run in
process with the session's principal (:mod:`pbx.portal.core`), so the portal has no second
code path and can do nothing the API would refuse that user. ``static/portal.js`` adds live
updates over ``/api/v1/events``. Assets come from this package and from ``web/dist`` (JsSIP,
installed from npm at set-up): never from a CDN.

One module per area in :mod:`pbx.portal.views`, each with ``register(portal)`` and ``ORDER``
(its place in the navigation); they are found, not listed, so adding an area touches no other
file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pbx.portal.core import HERE, Portal, static_routes

if TYPE_CHECKING:
    from aiohttp import web

    from pbx.api.context import ApiContext
    from pbx.api.routes import ApiRouter

__all__ = ["Portal", "install", "view_modules"]

WEB_DIST = HERE.parent.parent / "web" / "dist"


def install(app: web.Application, ctx: ApiContext, router: ApiRouter, *,
            phone: Callable[[], Mapping[str, object]] | None = None,
            vendor: Path = WEB_DIST) -> Portal:
    """Add the portal's pages and assets to ``app`` (before it starts)."""
    portal = Portal(ctx, router, phone=phone)
    portal.app = app
    for module in view_modules():
        module.register(portal)
    static_routes(app, {"/portal/static": HERE / "static", "/portal/vendor": vendor})
    return portal


def view_modules() -> list[Any]:
    """The view modules (``pbx.portal.views`` and its sub-packages), by ``ORDER``."""
    import pbx.portal.views as package

    found = []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        if hasattr(module, "register"):
            found.append(module)
    return sorted(found, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
