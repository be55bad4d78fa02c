"""Watcher Client API subset under `/watcher/client-api/v3` (reference A.1-A.8)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from agent.errors import InvalidArgument, NotFound
from agent.sim.cloud.api import ApiError, Auth, read_json
from agent.sim.cloud.endpoint import Hub
from agent.sim.cloud.firmware import Firmware
from agent.sim.cloud.state import CloudState, Stream, now_ms

BASE = "/watcher/client-api/v3"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_TOKEN_FIELDS: dict[str, tuple[type, ...]] = {
    "title": (str,),
    "organization_id": (int,),
    "preset_id": (int,),
    "folder_id": (int,),
    "enabled": (bool,),
    "static": (bool,),
    "dvr_depth": (int,),
    "dvr_space": (int,),
    "comment": (str,),
    "coordinates": (dict,),
    "postal_address": (str,),
}
_STREAM_FIELDS = [
    "title",
    "comment",
    "static",
    "disabled",
    "inputs",
    "dvr",
    "vision",
    "organization_id",
    "is_favourite",
    "notifications_enabled",
    "coordinates",
    "postal_address",
    "map_coordinates",
    "onvif",
    "preset_id",
    "folder_id",
    "audio",
]


def token_request(body: dict[str, Any]) -> dict[str, Any]:
    """Validate an `AgentActivationTokenRequest`; InvalidArgument on a wrong field."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        types = _TOKEN_FIELDS.get(key)
        if types is None or value is None:
            continue
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise InvalidArgument(f"{key}: wrong type")
        if isinstance(value, str) and len(value) > 1024:
            raise InvalidArgument(f"{key}: too long")
        if isinstance(value, int) and value < 0 and key in ("dvr_depth", "dvr_space"):
            raise InvalidArgument(f"{key}: must be >= 0")
        if isinstance(value, dict):
            lat, lon = value.get("latitude"), value.get("longitude")
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lon)):
                raise InvalidArgument("coordinates: latitude and longitude are numbers")
            value = {"latitude": lat, "longitude": lon}
        out[key] = value
    return out


def stream_view(stream: Stream, hub: Hub, firmware: Firmware | None = None) -> dict[str, Any]:
    """`StreamConfig` with runtime `stats`, and the camera's firmware update if there was one."""
    view = dict(stream.config)
    view["name"] = stream.name
    if firmware is not None:
        status = firmware.status(stream.name)
        if status is not None:
            view["firmware_update"] = status
        duration = firmware.duration_ms(stream.name)
        if duration is not None:
            view["firmware_update_duration"] = duration
    stats: dict[str, Any] = {"alive": False, "status": "waiting"}
    if stream.agent_id is not None:
        online = hub.online(stream.agent_id)
        stats["current_agent_id"] = stream.agent_id
        stats["agent_status"] = "online" if online else "offline"
        stats["alive"] = online and bool(stream.config.get("inputs"))
        stats["status"] = "running" if stats["alive"] else "waiting"
        url = hub.relay.url(stream) if hub.relay is not None else None
        if url is not None:
            view["sim_rtsp_url"] = url
        camera_id = (stream.camera or {}).get("id")
        cam = hub.camera_stats(stream.agent_id, str(camera_id)) if camera_id else None
        if cam is not None:
            stats["agent_camera"] = cam
            stats["alive"] = bool(stats["alive"] and cam["isOnline"])
            stats["status"] = "running" if stats["alive"] else "waiting"
            if isinstance(cam.get("networkTransmitRate"), int | float):
                stats["bitrate"] = int(cam["networkTransmitRate"] / 1000)  # kbit/s
    view["stats"] = stats
    return view


def routes(
    state: CloudState, hub: Hub, auth: Auth, firmware: Firmware | None = None
) -> web.RouteTableDef:
    table = web.RouteTableDef()

    @table.post(f"{BASE}/login")
    async def _login(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if not auth.basic_ok(header):
            raise ApiError(401, "authentication required", "unauthorized")
        return web.json_response(auth.issue())

    @table.post(f"{BASE}/agent_activation_token")
    async def _create_token(request: web.Request) -> web.Response:
        auth.check(request)
        try:
            settings = token_request(await read_json(request))
            tok = await state.create_token(settings)
        except InvalidArgument as exc:
            raise ApiError(400, str(exc), "invalid_argument") from None
        return web.json_response(tok.created_view())

    @table.get(f"{BASE}/agent_activation_token/{{token}}")
    async def _get_token(request: web.Request) -> web.Response:
        auth.check(request)
        try:
            tok = state.token(request.match_info["token"])
        except NotFound:
            raise ApiError(404, "token not found", "not_found") from None
        return web.json_response(tok.view())

    @table.get(f"{BASE}/streams")
    async def _streams(request: web.Request) -> web.Response:
        auth.check(request)
        streams = [
            stream_view(s, hub, firmware)
            for s in sorted(state.streams.values(), key=lambda s: s.name)
        ]
        return web.json_response({"streams": streams, "estimated_count": len(streams)})

    def _stream(request: web.Request) -> Stream:
        try:
            return state.stream(request.match_info["name"])
        except NotFound:
            raise ApiError(404, "stream not found", "not_found") from None

    @table.get(f"{BASE}/streams/{{name}}")
    async def _get_stream(request: web.Request) -> web.Response:
        auth.check(request)
        return web.json_response(stream_view(_stream(request), hub, firmware))

    @table.put(f"{BASE}/streams/{{name}}")
    async def _put_stream(request: web.Request) -> web.Response:
        auth.check(request)
        name = request.match_info["name"]
        if not _NAME.fullmatch(name):
            raise ApiError(400, "invalid stream name", "invalid_argument")
        body = await read_json(request)
        stream = state.streams.get(name)
        if stream is None:
            stream = Stream(name=name, config={"name": name, "created_at": now_ms()})
        config = {} if body.get("$reset") is True else dict(stream.config)
        for key in _STREAM_FIELDS:
            if key in body:
                config[key] = body[key]
        if not isinstance(config.get("inputs", []), list):
            raise ApiError(400, "inputs: expected an array", "invalid_argument")
        config["name"] = name
        config.setdefault("created_at", now_ms())
        stream.config = config
        try:
            await state.save_stream(stream)
        except InvalidArgument as exc:
            raise ApiError(400, str(exc), "invalid_argument") from None
        return web.json_response(stream_view(stream, hub, firmware))

    @table.delete(f"{BASE}/streams/{{name}}")
    async def _delete_stream(request: web.Request) -> web.Response:
        auth.check(request)
        try:
            await state.delete_stream(request.match_info["name"])
        except NotFound:
            raise ApiError(404, "stream not found", "not_found") from None
        return web.Response(status=204)

    return table
