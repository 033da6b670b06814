"""``/phone``: a minimal browser phone served by the PBX (until the portal exists).

The page (``web/phone.html`` + ``web/phone.js``) is JsSIP (SIP over WebSocket, RFC 7118) and
the browser's WebRTC; JsSIP comes from the installed folder (``web/``: ``npm ci && npm run
build`` — ``scripts/install-test-peers.sh`` does it), never from a CDN. ``/phone/config.json``
tells the page our SIP domain and WebSocket listeners. Without the build, ``/phone/jssip.min.js``
answers 404 with what to run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["WEB_DIR", "PhonePage"]

#: The folder of the page and of the installed JsSIP (the repository's ``web/``).
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_FILES = {
    "/phone": ("phone.html", "text/html"),
    "/phone/phone.js": ("phone.js", "text/javascript"),
    "/phone/jssip.min.js": ("dist/jssip.min.js", "text/javascript"),
}


class PhonePage:
    """The routes of the page; ``settings()`` gives ``/phone/config.json``."""

    def __init__(self, settings: Callable[[], Mapping[str, object]],
                 root: Path = WEB_DIR) -> None:
        self.settings = settings
        self.root = root

    def add_routes(self, app: web.Application) -> None:
        """Add ``/phone``, its script, JsSIP and ``/phone/config.json`` to ``app``."""
        for path in _FILES:
            app.router.add_get(path, self._file)
        app.router.add_get("/phone/config.json", self._config)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        name, content_type = _FILES[request.path]
        path = self.root / name
        if not path.is_file():
            return web.Response(status=404, text=f"{name} is missing: run scripts/"
                                "install-test-peers.sh (npm ci && npm run build in web/)")
        return web.Response(body=path.read_bytes(), content_type=content_type,
                            headers={"Cache-Control": "no-cache"})

    async def _config(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(text=json.dumps(dict(self.settings())),
                            content_type="application/json")
