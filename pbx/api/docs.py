"""``/api/v1/docs``: interactive documentation of the OpenAPI document, served offline.

Swagger UI 5 (it renders OpenAPI 3.1) comes as static files inside the ``swagger-ui-py`` wheel;
we serve its ``static`` directory and our own small page (no template engine, no CDN, a
Content-Security-Policy that allows only this server). The package is located without being
imported (its ``__init__`` pulls in framework glue we do not use).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web

__all__ = ["add_docs", "assets_dir"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>asyncpbx API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{prefix}/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{prefix}/docs/assets/swagger-ui-bundle.js"></script>
<script src="{prefix}/docs/init.js"></script></body></html>
"""
_INIT = """window.ui = SwaggerUIBundle({{url: "{prefix}/openapi.json", dom_id: "#swagger-ui",
  deepLinking: true, persistAuthorization: false}});
"""
_CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'")


def assets_dir() -> Path | None:
    """Swagger UI's static files (None when the package is missing)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "static"
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def add_docs(app: web.Application, prefix: str) -> bool:
    """Add the docs page, its script and Swagger UI's assets; False when the assets are
    missing (then the page says how to install them)."""
    assets = assets_dir()
    page = _PAGE.format(prefix=prefix) if assets is not None else (
        "<!doctype html><title>asyncpbx API</title><p>Swagger UI is not installed "
        "(pip install swagger-ui-py); the document is at "
        f'<a href="{prefix}/openapi.json">{prefix}/openapi.json</a>.')
    headers = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"}

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", headers=headers)

    async def init(request: web.Request) -> web.Response:
        return web.Response(text=_INIT.format(prefix=prefix),
                            content_type="application/javascript", headers=headers)

    app.router.add_get(prefix + "/docs", docs)
    app.router.add_get(prefix + "/docs/init.js", init)
    if assets is not None:
        app.router.add_static(prefix + "/docs/assets", assets, append_version=False)
    return assets is not None
