"""The agent's own routes: hello, the camera inventory, snapshots and the OpenAPI document."""

from __future__ import annotations

import email.utils
from collections.abc import Callable

from aiohttp import web

from agent.api import validation
from agent.api.context import (
    DIRECTORY,
    OPENAPI,
    VERSION,
    camera_call,
    path_camera_id,
    read_json,
)
from agent.api.errors import UNAVAILABLE, error_response
from agent.errors import NotFound

MESSAGE = "camera-agent local API"

#: Load shedding: feature ("snapshot", "webrtc") -> None when allowed, else the reason.
SHED: web.AppKey[Callable[[str], str | None]] = web.AppKey("shed")
#: Seconds a client is told to wait before asking again for shed work.
SHED_RETRY_AFTER = 60


def shed_response(request: web.Request, feature: str) -> web.Response | None:
    """The 503 answer while `feature` is shed under load, None when it is allowed."""
    shed = request.app.get(SHED)
    reason = shed(feature) if shed is not None else None
    if reason is None:
        return None
    return error_response(503, UNAVAILABLE, reason, headers={"Retry-After": str(SHED_RETRY_AFTER)})


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"message": MESSAGE, "version": request.app[VERSION]})


async def list_cameras(request: web.Request) -> web.Response:
    """The inventory in id order, `limit` records per page; `pagination.cursor` names the
    next page and is absent on the last one."""
    limit = validation.query_limit(request.query.get("limit"))
    cursor = validation.query_cursor(request.query.get("cursor"))
    records = sorted(request.app[DIRECTORY].cameras(), key=lambda r: r.id)
    if cursor is not None:
        records = [r for r in records if r.id > cursor]
    page = records[:limit]
    pagination: dict[str, str] = {}
    if len(records) > limit:
        pagination["cursor"] = page[-1].id
    return web.json_response({"pagination": pagination, "cameras": [r.to_json() for r in page]})


async def get_snapshot(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    shed = shed_response(request, "snapshot")
    if shed is not None:
        return shed
    snap = await camera_call(request, cid, lambda c: c.snapshot())
    return web.Response(
        body=snap.jpeg,  # checked to be a JPEG by the control layer
        content_type="image/jpeg",  # the only type the document lists
        headers={
            "X-Snapshot-Timestamp": f"{snap.timestamp:.3f}",
            "Last-Modified": email.utils.formatdate(snap.timestamp, usegmt=True),
            "Cache-Control": "no-store",
        },
    )


RUN_STATES = ("running", "paused")


async def set_run_state(request: web.Request) -> web.Response:
    """Pause or resume a camera (`{"run_state": "paused"}`); answers the updated record."""
    cid = path_camera_id(request)
    body = await read_json(request)
    value = body.get("run_state") if isinstance(body, dict) else None
    if value not in RUN_STATES:
        raise validation.RequestInvalid(
            [
                validation.ErrorItem(
                    ("body", "run_state"), "Input should be 'running' or 'paused'", "enum"
                )
            ]
        )
    try:
        record = request.app[DIRECTORY].set_paused(cid, value == "paused")
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    return web.json_response(record.to_json())


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


def core_routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/hello", hello, allow_head=False),
        web.get("/api/v1/cameras", list_cameras, allow_head=False),
        web.get("/api/v1/camerasnapshots/{camera_id}", get_snapshot, allow_head=False),
        web.put("/api/v1/cameras/{camera_id}/run_state", set_run_state),
        web.get("/api/v1/openapi.json", openapi_json, allow_head=False),
    ]
