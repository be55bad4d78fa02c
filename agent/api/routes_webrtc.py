"""`POST /api/v1/webrtc/{camera_id}`: WHEP-style live view (offer in, answer out).

The body is the viewer's SDP offer, either raw (`Content-Type: application/sdp`, answered 201 with
the SDP answer, as WHEP does) or JSON `{"type": "offer", "sdp": "..."}` (answered 200 with
`{"type": "answer", "sdp": "..."}`). The camera's H.264 goes to the viewer without transcoding
(a camera with H.265 streams only is transcoded to H.264, or its H.265 passed through to a viewer
whose offer lists H.265: docs/webrtc.md, "H.265 cameras").
An offer that is not printable ASCII lines is a 422; one the live view cannot use (no H.264,
too many lines or candidates) a 400; a paused camera is a 409.

A page served elsewhere may call this route when its origin is listed in `[api] cors_origins`:
`cors_middleware` answers the CORS preflight (OPTIONS) for it and marks the POST's answer. The
bearer token is still required; no other route answers cross-origin calls.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from agent.api.context import DIRECTORY, CameraMissing, read_json
from agent.api.errors import CAMERA_PAUSED, INVALID_ARGUMENT, error_response
from agent.api.routes_core import shed_response
from agent.api.validation import MAX_OFFER_BYTES, camera_id, offer_body, offer_text
from agent.errors import LimitExceeded, NotFound, Unavailable

#: Largest raw SDP offer accepted, bytes.
MAX_OFFER = MAX_OFFER_BYTES


class LiveView(Protocol):
    """What the route needs of agent.media.webrtc.WebRtcSessions."""

    async def answer(self, offer_sdp: str, rtsp_url: str, *, transcode: bool = False) -> str: ...


WEBRTC = web.AppKey("webrtc", object)


def _talk(live: object, cid: str, record: dict[str, Any]) -> dict[str, Any]:
    """`{"talk": TalkTarget}` (agent.media.backchannel) for a camera whose record says it has
    an audio backchannel, when the live view has two-way audio wired; else {}."""
    if record.get("backchannel") is not True:
        return {}
    target = getattr(live, "talk_target", None)
    talk = target(cid) if callable(target) else None
    return {"talk": talk} if talk is not None else {}


async def _offer(request: web.Request) -> tuple[str, bool]:
    """(offer SDP, answered as raw SDP)."""
    if request.content_type == "application/sdp":
        if request.content_length is not None and request.content_length > MAX_OFFER:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_OFFER, actual_size=request.content_length
            )
        raw = await request.content.read(MAX_OFFER + 1)
        if len(raw) > MAX_OFFER:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_OFFER, actual_size=len(raw))
        return offer_text(raw), True
    return offer_body(await read_json(request)), False


async def post_offer(request: web.Request) -> web.Response:
    cid = camera_id(request.match_info["camera_id"])
    shed = shed_response(request, "webrtc")
    if shed is not None:
        return shed
    offer, raw = await _offer(request)
    directory = request.app[DIRECTORY]
    try:
        record = directory.get(cid)
        # the inventory picks (URL, transcode): a camera with H.265 streams only is transcoded,
        # unless the viewer takes H.265: then an H.265 main stream is passed through
        choose = getattr(directory, "live_stream", None)
        offers_h265 = getattr(request.app.get(WEBRTC), "offers_h265", None)
        h265 = callable(offers_h265) and bool(offers_h265(offer))
        url: str
        transcode: bool
        if choose is None:
            url, transcode = directory.stream_url(cid), False
        else:
            url, transcode = choose(cid, h265=True) if h265 else choose(cid)
    except NotFound as exc:
        raise CameraMissing(cid) from exc
    if record.to_json().get("run_state") == "paused":  # the user's choice: not a server fault
        return error_response(
            409, CAMERA_PAUSED, "The camera is paused: resume it (PUT .../run_state) to watch it"
        )
    live: LiveView | None = request.app.get(WEBRTC)  # type: ignore[assignment]
    if live is None:
        raise Unavailable("live view is not running")
    extra = _talk(live, cid, record.to_json())
    try:
        if transcode:
            answer = await live.answer(offer, url, transcode=True, **extra)
        else:
            answer = await live.answer(offer, url, **extra)
    except LimitExceeded as exc:  # too many lines, candidates, media sections: unusable
        return error_response(400, INVALID_ARGUMENT, str(exc))
    if raw:
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": request.path},
        )
    return web.json_response({"type": "answer", "sdp": answer})


#: The path CORS applies to.
_CORS_PATH = re.compile(r"^/api/v1/webrtc/[^/]+$")
#: Seconds a browser may keep a preflight's answer.
CORS_MAX_AGE = 600
#: Request headers a cross-origin POST may carry (lower case).
CORS_ALLOW_HEADERS = ("authorization", "content-type")


def cors_middleware(origins: Sequence[str]) -> Middleware:
    """CORS for `POST /api/v1/webrtc/{camera_id}` from the listed origins ("scheme://host[:port]").

    A preflight (OPTIONS with Origin and Access-Control-Request-Method) from a listed origin
    asking for POST with at most the Authorization and Content-Type headers is answered 204 with
    that origin (never `*`); any other preflight is a 403 without CORS headers. The POST's answer
    (errors too) carries the origin when it is listed. Runs before the token guard: a preflight
    never carries the token, the POST still needs it."""
    allowed = frozenset(o.lower().rstrip("/") for o in origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or not _CORS_PATH.match(request.path):
            return await handler(request)
        known = origin.lower() in allowed
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return _preflight(request, origin if known else None)
        if not known:
            return await handler(request)
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": "Location",
            "Vary": "Origin",
        }
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(headers)
            raise
        response.headers.update(headers)
        return response

    return middleware


def _preflight(request: web.Request, origin: str | None) -> web.Response:
    method = request.headers.get("Access-Control-Request-Method", "")
    asked = request.headers.get("Access-Control-Request-Headers", "")
    names = {h.strip().lower() for h in asked.split(",") if h.strip()}
    if origin is None or method != "POST" or not names <= set(CORS_ALLOW_HEADERS):
        return web.Response(status=403)
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Expose-Headers": "Location",
        "Access-Control-Max-Age": str(CORS_MAX_AGE),
        "Vary": "Origin",
    }
    if request.headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
        headers["Access-Control-Allow-Private-Network"] = "true"
    return web.Response(status=204, headers=headers)


def webrtc_routes() -> list[web.RouteDef]:
    return [web.post("/api/v1/webrtc/{camera_id}", post_offer)]
