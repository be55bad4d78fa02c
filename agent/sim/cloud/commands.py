"""Camera commands of the Watcher API (reference A.9-A.13) sent to agents as requests.

Each route finds the stream's agent and camera, sends the request of docs/commands.md with a
`deadline_ms` and maps the agent's answer to HTTP the way the local API does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from agent.errors import Unavailable
from agent.proto import cloud as pc
from agent.sim.cloud.api import ApiError, Auth, read_json
from agent.sim.cloud.endpoint import Hub, Session
from agent.sim.cloud.firmware import DOWNLOAD_PATH, Firmware, Job, receive_image
from agent.sim.cloud.state import CloudState, Stream, now_ms
from agent.sim.cloud.watcher import BASE

log = logging.getLogger(__name__)

#: Seconds each command may take (docs/commands.md); `deadline_ms` is now plus this.
LIMITS_S: dict[str, float] = {
    "camera_ptz": 5.0,
    "camera_reboot": 15.0,
    "camera_config_get": 20.0,
    "camera_config_set": 20.0,
    "camera_auth_get": 20.0,
    "camera_auth_set": 20.0,
    "camera_firmware": 600.0,
    "logs": 10.0,
    "agent_update": 10.0,  # answered at once; the update goes on in the background
}
#: How much longer than the deadline the cloud waits for the answer.
GRACE_S = 1.0
FIRMWARE_PROGRESS = "camera_firmware_progress"
_AUTH_FIELDS = ("login", "password", "port")


def http_status(code: str) -> int:
    """The HTTP status of an agent error code, as the local API maps it."""
    if code == "onvif_not_applied":
        return 409
    if code == "invalid_request" or code.startswith("onvif_"):
        return 400
    if code == "not_found":
        return 404
    if code == "temporarily_unavailable":
        return 503
    return 500


async def send(
    hub: Hub, agent_id: str, command: str, payload: dict[str, Any]
) -> asyncio.Future[pc.Response | None]:
    """Send `command` with its `deadline_ms`; 503 `agent_offline` when the agent is not online."""
    if not hub.online(agent_id):
        raise ApiError(503, "agent is offline", "agent_offline")
    body = {**payload, "deadline_ms": now_ms() + int(LIMITS_S[command] * 1000)}
    try:
        return await hub.command(agent_id, command, body)
    except Unavailable as exc:
        code = "agent_offline" if not hub.online(agent_id) else "agent_busy"
        raise ApiError(503, str(exc), code) from None


async def call(
    hub: Hub, state: CloudState, agent_id: str, command: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """Send a command and wait for its result; ApiError for every failure."""
    fut = await send(hub, agent_id, command, payload)
    agent = state.agents.get(agent_id)
    target = payload.get("camera_id", "agent")
    try:
        response = await asyncio.wait_for(fut, LIMITS_S[command] + GRACE_S)
    except TimeoutError:
        outcome, error = "timeout", ApiError(504, "agent did not answer in time", "agent_timeout")
    else:
        if response is None:
            outcome = "agent disconnected"
            error = ApiError(503, "agent disconnected before answering", "agent_offline")
        elif not response.ok:
            err = response.error or pc.Error("internal_error", "")
            outcome = f"failed {err.code[:64]}"
            error = ApiError(http_status(err.code), err.message[:300] or err.code, err.code)
        else:
            if agent is not None:
                agent.log(f"command {command} for {target}: ok")
            return response.result
    if agent is not None:
        agent.log(f"command {command} for {target}: {outcome}")
    raise error


class CommandHub(Hub):
    """The endpoint hub, with the camera command events routed to the firmware jobs."""

    firmware: Firmware | None = None

    async def _on_event(self, session: Session, event: pc.Event) -> None:
        if event.command == FIRMWARE_PROGRESS:
            if self.firmware is not None:
                self.firmware.progress(session.agent_id, event.payload)
            return
        await super()._on_event(session, event)


def _target(state: CloudState, name: str) -> tuple[Stream, str, str]:
    """The stream, its agent and its camera id; 404 unknown, 409 without an agent camera."""
    stream = state.streams.get(name)
    if stream is None:
        raise ApiError(404, "stream not found", "not_found")
    camera_id = (stream.camera or {}).get("id")
    if stream.agent_id is None or not isinstance(camera_id, str) or not camera_id:
        raise ApiError(409, "stream has no camera behind an agent", "no_agent_camera")
    return stream, stream.agent_id, camera_id


def routes(state: CloudState, hub: Hub, auth: Auth, firmware: Firmware) -> web.RouteTableDef:
    """The Watcher stream command routes and the firmware download route."""
    table = web.RouteTableDef()

    async def _run(
        request: web.Request, command: str, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        auth.check(request)
        _, agent_id, camera_id = _target(state, request.match_info["name"])
        payload = {**(extra or {}), "camera_id": camera_id}
        return await call(hub, state, agent_id, command, payload)

    async def _body(request: web.Request) -> dict[str, Any]:
        auth.check(request)
        _target(state, request.match_info["name"])
        return await read_json(request)

    @table.post(f"{BASE}/streams/{{name}}/ptz")
    async def _ptz(request: web.Request) -> web.Response:
        await _run(request, "camera_ptz", await _body(request))
        return web.Response(status=204)

    @table.post(f"{BASE}/streams/{{name}}/reboot")
    async def _reboot(request: web.Request) -> web.Response:
        await _run(request, "camera_reboot")
        return web.Response(status=204)

    @table.get(f"{BASE}/streams/{{name}}/camera_config")
    async def _config_get(request: web.Request) -> web.Response:
        return web.json_response(await _run(request, "camera_config_get"))

    @table.put(f"{BASE}/streams/{{name}}/camera_config")
    async def _config_set(request: web.Request) -> web.Response:
        body = await _body(request)
        return web.json_response(await _run(request, "camera_config_set", {"config": body}))

    @table.get(f"{BASE}/streams/{{name}}/auth")
    async def _auth_get(request: web.Request) -> web.Response:
        return web.json_response(await _run(request, "camera_auth_get"))

    @table.put(f"{BASE}/streams/{{name}}/auth")
    async def _auth_set(request: web.Request) -> web.Response:
        body = await _body(request)
        fields = {k: body[k] for k in _AUTH_FIELDS if k in body}
        result = await _run(request, "camera_auth_set", fields)
        login, password = result.get("login"), result.get("password")
        stream = state.streams.get(request.match_info["name"])
        if stream is not None and isinstance(login, str) and isinstance(password, str):
            # What the streamer now logs in with (kept apart from the public input URL).
            stream.camera = {**(stream.camera or {}), "login": [login, password]}
            await state.save_stream(stream)
        return web.json_response(result)

    @table.put(f"{BASE}/streams/{{name}}/firmware_update")
    async def _firmware(request: web.Request) -> web.Response:
        auth.check(request)
        stream, agent_id, camera_id = _target(state, request.match_info["name"])
        if not hub.online(agent_id):
            raise ApiError(503, "agent is offline", "agent_offline")
        firmware.reserve(stream.name)
        try:
            image, proto = await receive_image(request, firmware.new_path())
        except BaseException:
            firmware.release(stream.name)
            raise
        offer_id, url = firmware.offer(image)
        payload = {
            "camera_id": camera_id,
            "proto": proto,
            "url": url,
            "size": image.size,
            "sha256": image.sha256,
        }
        try:
            fut = await send(hub, agent_id, "camera_firmware", payload)
        except BaseException:
            firmware.release(stream.name)
            await firmware.withdraw(offer_id)
            raise
        job = Job(stream.name, agent_id, camera_id, proto, image.size, image.sha256)
        firmware.begin(job, fut, offer_id, LIMITS_S["camera_firmware"] + GRACE_S)
        agent = state.agents.get(agent_id)
        if agent is not None:
            agent.log(f"firmware update of {camera_id} started ({proto}, {image.size} bytes)")
        return web.json_response({"status": "started"}, status=202)

    @table.get(DOWNLOAD_PATH + "{id}")
    async def _download(request: web.Request) -> web.StreamResponse:
        return await firmware.download(request)

    return table
