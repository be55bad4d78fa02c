"""The agent's console, `GET /`: an HTML shell plus its script and style sheet under `/console/`.

The page holds no data and is served without a token, as are its two static files (a browser
loads them without an Authorization header). The script (agent/api/static/console.js) reads
`/api/v1/status` and `/api/v1/cameras` every 5 s and shows one card per camera: a WebRTC live
view (WHEP against `POST /api/v1/webrtc/{id}`), a PTZ pad, image settings, snapshot, run/pause
and relay state, plus an events panel. It asks once for the API token when a call answers 401
(kept in sessionStorage). No inline script or style: the Content-Security-Policy allows only the
agent's own files.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler

#: Path of the page.
PAGE_PATH = "/"
#: Where the page's script and style sheet are served.
STATIC_PREFIX = "/console/"
#: The static files: name -> content type.
STATIC_FILES = {
    "console.js": "text/javascript",
    "console.css": "text/css",
}
#: Every path of the console (page and static files): GET is served without a token.
PAGE_PATHS = frozenset({PAGE_PATH, *(STATIC_PREFIX + name for name in STATIC_FILES)})

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>camera-agent</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/console.css">
<script src="/console/console.js" defer></script>
</head>
<body>
<header class="top">
<h1>camera-agent <span id="version" class="muted"></span></h1>
<div class="muted">uptime <span id="uptime">-</span> &middot;
updated <span id="updated">-</span></div>
<div id="err" role="alert"></div>
</header>
<main>
<section class="overview">
<div><h2>Activation</h2><div class="box"><dl id="activation"></dl></div></div>
<div><h2>Links</h2><div class="box"><dl id="links"></dl></div></div>
</section>
<h2>Cameras</h2>
<div id="cameras" class="cards"><p class="muted" id="no-cameras">no cameras yet</p></div>
<h2>Events</h2>
<div class="box"><ol id="events" class="events" reversed></ol></div>
</main>
</body>
</html>
"""


def _static(body: bytes, content_type: str) -> Handler:
    """A handler answering one static file."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    return handler


async def console_page(request: web.Request) -> web.Response:
    """The console's HTML shell with strict security headers."""
    return web.Response(
        text=_HTML,
        content_type="text/html",
        charset="utf-8",
        headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


#: The static files' bytes, read once from the package when the module is imported.
_BODIES = {
    name: resources.files("agent.api").joinpath("static", name).read_bytes()
    for name in STATIC_FILES
}


def page_routes() -> list[web.RouteDef]:
    """The page and its static files."""
    routes = [web.get(PAGE_PATH, console_page, allow_head=False)]
    for name, content_type in STATIC_FILES.items():
        handler = _static(_BODIES[name], content_type)
        routes.append(web.get(STATIC_PREFIX + name, handler, allow_head=False))
    return routes
