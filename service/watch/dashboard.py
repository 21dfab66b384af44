"""The dashboard page at ``/`` and its assets, served by the service itself.

The page, its script and its style sheet are package data (``service/watch/web/``):
hand-written, no build step, nothing from a CDN, so the dashboard works
offline and from the read-only container. They are read once, at start, and
served from memory under a fixed list of names (no path ever reaches the file
system). The script polls :mod:`service.watch.api`'s ``/api/live`` and ``/api/warehouse``.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

ASSETS = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
#: Everything the page needs comes from the service itself; nothing inline.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _read(name: str) -> bytes:
    return (resources.files("service.watch") / "web" / name).read_bytes()


def add_routes(app: web.Application) -> None:
    page = _read("index.html")
    assets = {name: (_read(name), kind) for name, kind in ASSETS.items()}
    headers = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"}

    async def index(_: web.Request) -> web.Response:
        return web.Response(
            body=page, content_type="text/html", charset="utf-8", headers={**headers}
        )

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        return web.Response(
            body=body, content_type=kind, headers={**headers, "Cache-Control": "max-age=300"}
        )

    async def favicon(_: web.Request) -> web.Response:
        body, kind = assets["favicon.svg"]
        return web.Response(body=body, content_type=kind, headers=headers)

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", asset)
    app.router.add_get("/favicon.ico", favicon)
