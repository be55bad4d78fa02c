"""The activation server: `POST /agent/v1/activate` (docs/protocol.md section 3)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.errors import AuthError, InvalidArgument, ProtocolError
from agent.proto import cloud as pc
from agent.sim.cloud.state import Agent, CloudState, Stream, Token, now_ms

log = logging.getLogger(__name__)


class ActivationRefused(Exception):
    """An activation answered with an error status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = pc.ACTIVATION_ERRORS[code]


def stream_config(name: str, tok: Token, agent: Agent, req: pc.ActivationRequest) -> Stream:
    """A Watcher stream made from the token request's settings and the camera's RTSP URL."""
    settings = tok.request
    config: dict[str, Any] = {
        "name": name,
        "title": settings.get("title") or (req.camera.model if req.camera else "") or name,
        "static": bool(settings.get("static", True)),
        "disabled": not bool(settings.get("enabled", True)),
        "inputs": [],
        "created_at": now_ms(),
    }
    for key in ("comment", "coordinates", "postal_address", "organization_id", "folder_id"):
        if settings.get(key) is not None:
            config[key] = settings[key]
    if settings.get("preset_id") is not None:
        config["preset_id"] = settings["preset_id"]
    dvr: dict[str, Any] = {}
    if settings.get("dvr_depth") is not None:
        dvr["expiration"] = int(settings["dvr_depth"]) * 86400
    if settings.get("dvr_space") is not None:
        dvr["storage_limit"] = int(settings["dvr_space"]) * 1_000_000_000
    if dvr:
        config["dvr"] = dvr
    stream = Stream(name=name, config=config, agent_id=agent.id)
    if req.camera is not None:
        attach_camera(stream, agent, req.camera)
    return stream


def attach_camera(stream: Stream, agent: Agent, cam: pc.CameraInfo) -> None:
    """The camera behind the agent becomes the stream's input."""
    stream.camera = {
        "id": cam.id,
        "serial_number": cam.serial_number,
        "manufacturer": cam.manufacturer,
        "model": cam.model,
        "rtsp_url": cam.rtsp_url,
        "onvif_url": cam.onvif_url,
    }
    if cam.rtsp_url:
        stream.config["inputs"] = [{"url": cam.rtsp_url, "via": f"agent://{agent.id}"}]
    if cam.onvif_url:
        stream.config["onvif"] = {"ptz": False}


async def activate(
    state: CloudState,
    body: bytes,
    answer_for: Callable[[Agent, str], dict[str, Any]],
    ingest: str,
) -> dict[str, Any]:
    """Run one activation; the 200 answer, or ActivationRefused."""
    try:
        req = pc.parse_activation(body)
    except ProtocolError as exc:
        raise ActivationRefused(pc.ERR_INVALID_REQUEST, str(exc)) from None
    try:
        req.verify()
    except AuthError:
        raise ActivationRefused(pc.ERR_BAD_SIGNATURE, "signature does not verify") from None
    async with state.activation_lock:
        return await _bind(state, req, answer_for, ingest)


async def _bind(
    state: CloudState,
    req: pc.ActivationRequest,
    answer_for: Callable[[Agent, str], dict[str, Any]],
    ingest: str,
) -> dict[str, Any]:
    tok = state.tokens.get(req.token)
    if tok is None:
        raise ActivationRefused(pc.ERR_TOKEN_UNKNOWN, "no such activation token here")
    if tok.public_key is not None:
        same = tok.public_key == req.public_key and tok.agent_id in state.agents
        if same and tok.answer is not None:
            await _late_camera(state, tok, req)
            return tok.answer
        raise ActivationRefused(pc.ERR_TOKEN_USED, "token already used")
    if tok.expired(now_ms()):
        raise ActivationRefused(pc.ERR_TOKEN_EXPIRED, "token expired")
    name = tok.stream_name or state.new_stream_name()
    if name in state.streams:
        raise ActivationRefused(pc.ERR_INVALID_REQUEST, "the token's stream name is in use")
    agent = state.agent_by_key(req.public_key)
    try:
        if agent is None:
            agent = await state.new_agent(req.public_key, ingest)
        agent.agent_type = req.agent_type
        agent.version = req.version
        agent.serial = req.serial
        agent.model = req.model
        stream = stream_config(name, tok, agent, req)
        answer = answer_for(agent, name)
        await state.bind(tok, agent, stream, answer)
    except InvalidArgument as exc:
        raise ActivationRefused(pc.ERR_INVALID_REQUEST, str(exc)) from None
    agent.log(f"activated with a token for stream {name}")
    log.info("agent %s activated, stream %s", agent.id, name)
    return answer


async def _late_camera(state: CloudState, tok: Token, req: pc.ActivationRequest) -> None:
    """A repeat by the key that used the token, naming a camera, when the token's stream has
    none (the token was typed): that camera becomes the stream's input. A stream keeps the
    camera it has."""
    stream = state.streams.get(tok.stream_name or "")
    agent = state.agents.get(tok.agent_id or "")
    if req.camera is None or stream is None or agent is None or stream.camera is not None:
        return
    if stream.agent_id != agent.id:
        return
    attach_camera(stream, agent, req.camera)
    await state.save_stream(stream)
    agent.log(f"camera {req.camera.id} bound to stream {stream.name}")
    log.info("agent %s: camera %s bound to stream %s", agent.id, req.camera.id, stream.name)


def routes(
    state: CloudState, answer_for: Callable[[Agent, str], dict[str, Any]], ingest: str
) -> web.RouteTableDef:
    """The `/agent/v1/activate` route."""
    table = web.RouteTableDef()

    @table.post("/agent/v1/activate")
    async def _activate(request: web.Request) -> web.Response:
        body = await request.content.read(pc.MAX_MESSAGE + 1)
        if len(body) > pc.MAX_MESSAGE:
            return web.json_response(
                pc.error_body(pc.ERR_INVALID_REQUEST, "body too large"), status=400
            )
        try:
            return web.json_response(await activate(state, body, answer_for, ingest))
        except ActivationRefused as exc:
            log.info("activation refused: %s", exc.code)
            return web.json_response(pc.error_body(exc.code, str(exc)), status=exc.status)

    return table
