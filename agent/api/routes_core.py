"""The agent's own routes: hello, the camera inventory (cameras added by URL and forgotten),
snapshots and the OpenAPI document."""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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
from agent.api.errors import INVALID_REQUEST, UNAVAILABLE, error_response
from agent.config import CAMERA_KEYS, CameraConfig, camera_entry
from agent.errors import InvalidArgument, LimitExceeded, NotFound
from agent.secret import Credentials

if TYPE_CHECKING:
    from agent.api.server import CameraRecordLike

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


@runtime_checkable
class CameraRegistry(Protocol):
    """A camera directory that cameras can be added to and removed from (the inventory)."""

    async def add_rtsp(self, entry: CameraConfig, *, source: str = ...) -> CameraRecordLike: ...

    async def add_onvif(
        self, xaddr: str, credentials: Credentials | None = None
    ) -> CameraRecordLike: ...

    def forget(self, camera_id: str) -> CameraRecordLike: ...


def _registry(request: web.Request) -> CameraRegistry:
    directory = request.app[DIRECTORY]
    if not isinstance(directory, CameraRegistry):
        raise web.HTTPMethodNotAllowed(request.method, ["GET"])
    return directory


def _onvif_entry(body: dict[str, Any]) -> tuple[str, Credentials | None]:
    from agent.camera import rtsp_only

    xaddr, cred = rtsp_only.split_url(body.get("onvif_url"), "onvif_url", ("http", "https"))
    username, password = body.get("username"), body.get("password")
    for name, value in (("username", username), ("password", password)):
        if value is not None and not isinstance(value, str):
            raise InvalidArgument(f"{name} must be a string")
    if password is not None and not username:
        raise InvalidArgument("password needs a username")
    if isinstance(username, str) and username:
        cred = rtsp_only.login(username, password if isinstance(password, str) else "")
    return xaddr, cred


async def add_camera(request: web.Request) -> web.Response:
    """Add a camera by URL: `{"rtsp_url": ...}` (a camera that speaks RTSP only) or
    `{"onvif_url": ...}` (an ONVIF device service address, inspected as `--probe` ones are).
    Answers the camera's record once it has been checked once."""
    body = await read_json(request)
    if not isinstance(body, dict):
        item = validation.ErrorItem(("body",), "Input should be a valid dictionary", "dict_type")
        raise validation.RequestInvalid([item])
    given = [k for k in ("rtsp_url", "onvif_url") if body.get(k) is not None]
    if len(given) != 1:
        msg = "give exactly one of rtsp_url and onvif_url"
        raise validation.RequestInvalid([validation.ErrorItem(("body",), msg, "value_error")])
    registry = _registry(request)
    try:
        if given == ["rtsp_url"]:
            entry = camera_entry({k: body.get(k) for k in CAMERA_KEYS})
            record = await registry.add_rtsp(entry, source="api")
        else:
            xaddr, cred = _onvif_entry(body)
            record = await registry.add_onvif(xaddr, cred)
    except (InvalidArgument, LimitExceeded) as exc:  # messages never hold a secret
        return error_response(400, INVALID_REQUEST, str(exc))
    return web.json_response(record.to_json())


async def delete_camera(request: web.Request) -> web.Response:
    """Forget a camera: its record, credentials and stored state."""
    cid = path_camera_id(request)
    registry = _registry(request)
    try:
        registry.forget(cid)
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    return web.json_response({"status": "ok"})


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
        web.post("/api/v1/cameras", add_camera),
        web.delete("/api/v1/cameras/{camera_id}", delete_camera),
        web.get("/api/v1/camerasnapshots/{camera_id}", get_snapshot, allow_head=False),
        web.put("/api/v1/cameras/{camera_id}/run_state", set_run_state),
        web.get("/api/v1/openapi.json", openapi_json, allow_head=False),
    ]
