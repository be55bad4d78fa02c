"""`POST /api/v1/webrtc/{camera_id}`: WHEP-style live view (offer in, answer out).

The body is the viewer's SDP offer, either raw (`Content-Type: application/sdp`, answered 201 with
the SDP answer, as WHEP does) or JSON `{"type": "offer", "sdp": "..."}` (answered 200 with
`{"type": "answer", "sdp": "..."}`). The camera's H.264 goes to the viewer without transcoding.
An offer that is not printable ASCII lines is a 422; one the live view cannot use (no H.264,
too many lines or candidates) a 400; a paused camera is a 409.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from agent.api.context import DIRECTORY, CameraMissing, read_json
from agent.api.errors import CAMERA_PAUSED, INVALID_ARGUMENT, error_response
from agent.api.routes_core import shed_response
from agent.api.validation import MAX_OFFER_BYTES, camera_id, offer_body, offer_text
from agent.errors import LimitExceeded, NotFound, Unavailable

#: Largest raw SDP offer accepted, bytes.
MAX_OFFER = MAX_OFFER_BYTES


class LiveView(Protocol):
    """What the route needs of agent.media.webrtc.WebRtcSessions."""

    async def answer(self, offer_sdp: str, rtsp_url: str) -> str: ...


WEBRTC = web.AppKey("webrtc", object)


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
        url = directory.stream_url(cid)
    except NotFound as exc:
        raise CameraMissing(cid) from exc
    if record.to_json().get("run_state") == "paused":  # the user's choice: not a server fault
        return error_response(
            409, CAMERA_PAUSED, "The camera is paused: resume it (PUT .../run_state) to watch it"
        )
    live: LiveView | None = request.app.get(WEBRTC)  # type: ignore[assignment]
    if live is None:
        raise Unavailable("live view is not running")
    try:
        answer = await live.answer(offer, url)
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


def webrtc_routes() -> list[web.RouteDef]:
    return [web.post("/api/v1/webrtc/{camera_id}", post_offer)]
