"""`POST /api/v1/webrtc/{camera_id}`: WHEP-style live view (offer in, answer out).

The body is the viewer's SDP offer, either raw (`Content-Type: application/sdp`, answered 201 with
the SDP answer, as WHEP does) or JSON `{"type": "offer", "sdp": "..."}` (answered 200 with
`{"type": "answer", "sdp": "..."}`). The camera's H.264 goes to the viewer without transcoding.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from agent.api.context import DIRECTORY, CameraMissing, read_json
from agent.api.errors import PAYLOAD_TOO_LARGE, error_response
from agent.api.routes_core import shed_response
from agent.api.validation import ErrorItem, RequestInvalid, camera_id
from agent.errors import LimitExceeded, NotFound, Unavailable

#: Largest SDP offer accepted, bytes.
MAX_OFFER = 64 * 1024


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
        try:
            return raw.decode("utf-8"), True
        except UnicodeDecodeError:
            raise RequestInvalid(
                [ErrorItem(("body",), "SDP must be UTF-8 text", "string_unicode")]
            ) from None
    body = await read_json(request)
    sdp = body.get("sdp") if isinstance(body, dict) else None
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(sdp, str):
        raise RequestInvalid(
            [ErrorItem(("body", "sdp"), 'expected {"type": "offer", "sdp": str}', "value_error")]
        )
    return sdp, False


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
    if record.to_json().get("run_state") == "paused":
        raise Unavailable("the camera is paused")
    live: LiveView | None = request.app.get(WEBRTC)  # type: ignore[assignment]
    if live is None:
        raise Unavailable("live view is not running")
    try:
        answer = await live.answer(offer, url)
    except LimitExceeded as exc:
        return error_response(413, PAYLOAD_TOO_LARGE, str(exc))
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
