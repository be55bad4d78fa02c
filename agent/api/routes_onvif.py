"""The ONVIF routes of the local API (`/api/v1/onvif/{camera_id}/...`).

Each handler validates the path and body, runs one CameraControl command through
`camera_call` and answers with the model's `to_json()` or `{"status": "ok"}`. Errors are
raised and turned into responses by the server's error middleware.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from aiohttp import web
from aiohttp.typedefs import Handler

from agent.api import validation as v
from agent.api.context import DIRECTORY, OK, camera_call, path_camera_id, read_json
from agent.camera.models import CameraControl

PREFIX = "/api/v1/onvif/{camera_id}"


@runtime_checkable
class FollowsMoves(Protocol):
    """A camera directory that follows a camera to the new HTTP port it was given."""

    async def follow_http_port(self, camera_id: str, port: int) -> Any: ...


async def get_device(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    info = await camera_call(request, cid, lambda c: c.device_info())
    return web.json_response(info.to_json())


async def get_network(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    ports = await camera_call(request, cid, lambda c: c.get_network())
    return web.json_response(ports.to_json())


async def put_network(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    update = v.network_body(await read_json(request))
    await camera_call(
        request,
        cid,
        lambda c: c.set_network(http=update.http, https=update.https, rtsp=update.rtsp),
    )
    directory = request.app[DIRECTORY]
    if update.http is not None and isinstance(directory, FollowsMoves):
        # The camera now serves ONVIF on the new port only: the same camera, found there.
        await directory.follow_http_port(cid, update.http)
    return web.json_response(OK)


async def get_users(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    users = await camera_call(request, cid, lambda c: c.list_users())
    return web.json_response({"users": [u.to_json() for u in users]})


async def put_user_password(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    user = v.username(request.match_info["username"])
    password = v.password_body(await read_json(request))
    await camera_call(request, cid, lambda c: c.set_user_password(user, password))
    return web.json_response(OK)


async def get_streams(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    streams = await camera_call(request, cid, lambda c: c.streams())
    return web.json_response({"streams": [s.to_json() for s in streams]})


async def put_encoder(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    encoder = v.encoder_body(await read_json(request))
    await camera_call(request, cid, lambda c: c.set_encoder(encoder))
    return web.json_response(OK)


async def get_image(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    image = await camera_call(request, cid, lambda c: c.image())
    return web.json_response(image.to_json())


def _numeric_setting(setting: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        cid = path_camera_id(request)
        value = v.value_body(await read_json(request))
        await camera_call(request, cid, lambda c: c.set_image_value(setting, value))
        return web.json_response(OK)

    handler.__name__ = f"put_image_{setting}"
    return handler


async def put_backlight(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    mode = v.mode_body(await read_json(request), v.ON_OFF)
    await camera_call(request, cid, lambda c: c.set_backlight(mode))
    return web.json_response(OK)


async def put_ir_cut_filter(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    mode = v.mode_body(await read_json(request), v.IR_MODES)
    await camera_call(request, cid, lambda c: c.set_ir_cut_filter(mode))
    return web.json_response(OK)


async def put_exposure(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    value = v.value_body(await read_json(request))
    await camera_call(request, cid, lambda c: c.set_exposure(value))
    return web.json_response(OK)


async def put_wide_dynamic_range(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    mode, value = v.wide_dynamic_range_body(await read_json(request))
    await camera_call(request, cid, lambda c: c.set_wide_dynamic_range(mode, value))
    return web.json_response(OK)


async def put_white_balance(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    mode, cr_gain, cb_gain = v.white_balance_body(await read_json(request))
    await camera_call(request, cid, lambda c: c.set_white_balance(mode, cr_gain, cb_gain))
    return web.json_response(OK)


async def get_ptz(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    ptz = await camera_call(request, cid, lambda c: c.ptz())
    return web.json_response(ptz.to_json())


async def put_ptz(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    move, zoom, step = v.ptz_body(await read_json(request))
    await camera_call(request, cid, lambda c: c.ptz_step(move, zoom, step))
    return web.json_response(OK)


async def put_ptz_continuous(request: web.Request) -> web.Response:
    """Move at the given speeds until stopped (all zero stops); the camera stops by itself
    5 s after the last call, so a client holding a button repeats it (the console: every 2 s)."""
    cid = path_camera_id(request)
    move = v.continuous_body(await read_json(request))
    await camera_call(request, cid, lambda c: c.ptz_continuous(move))
    return web.json_response(OK)


async def put_ptz_stop(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    await camera_call(request, cid, lambda c: c.ptz_stop())
    return web.json_response(OK)


async def put_ptz_position(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    x, y, zoom = v.position_body(await read_json(request))
    await camera_call(request, cid, lambda c: c.ptz_absolute(x, y, zoom))
    return web.json_response(OK)


async def put_ptz_home(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    await camera_call(request, cid, lambda c: c.ptz_home_save())
    return web.json_response(OK)


async def put_ptz_home_apply(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    await camera_call(request, cid, lambda c: c.ptz_home_apply())
    return web.json_response(OK)


async def get_ptz_presets(request: web.Request) -> web.Response:
    cid = path_camera_id(request)
    presets = await camera_call(request, cid, lambda c: c.ptz_presets())
    return web.json_response({"presets": list(presets)})


async def _preset_command(request: web.Request, action: str) -> web.Response:
    cid = path_camera_id(request)
    name = v.preset_body(await read_json(request))

    async def call(c: CameraControl) -> None:
        if action == "create":
            await c.ptz_preset_create(name)
        elif action == "delete":
            await c.ptz_preset_delete(name)
        else:
            await c.ptz_preset_apply(name)

    await camera_call(request, cid, call)
    return web.json_response(OK)


async def post_ptz_preset(request: web.Request) -> web.Response:
    return await _preset_command(request, "create")


async def delete_ptz_preset(request: web.Request) -> web.Response:
    return await _preset_command(request, "delete")


async def post_ptz_preset_apply(request: web.Request) -> web.Response:
    return await _preset_command(request, "apply")


def onvif_routes() -> list[web.RouteDef]:
    """Routes 8.1-8.25 in the order the API documents them, with the absolute PTZ move
    (`PUT .../ptz/position`, no number in the reference) next to the step move."""
    p = PREFIX
    return [
        web.get(p, get_device, allow_head=False),
        web.get(f"{p}/network", get_network, allow_head=False),
        web.put(f"{p}/network", put_network),
        web.get(f"{p}/users", get_users, allow_head=False),
        web.put(f"{p}/users/{{username}}", put_user_password),
        web.get(f"{p}/streams", get_streams, allow_head=False),
        web.put(f"{p}/stream/encoder", put_encoder),
        web.get(f"{p}/image", get_image, allow_head=False),
        web.put(f"{p}/image/brightness", _numeric_setting("brightness")),
        web.put(f"{p}/image/contrast", _numeric_setting("contrast")),
        web.put(f"{p}/image/saturation", _numeric_setting("saturation")),
        web.put(f"{p}/image/sharpness", _numeric_setting("sharpness")),
        web.put(f"{p}/image/backlight", put_backlight),
        web.put(f"{p}/image/ir", put_ir_cut_filter),
        web.put(f"{p}/image/exposure", put_exposure),
        web.put(f"{p}/image/dr", put_wide_dynamic_range),
        web.put(f"{p}/image/wb", put_white_balance),
        web.get(f"{p}/ptz", get_ptz, allow_head=False),
        web.put(f"{p}/ptz", put_ptz),
        web.put(f"{p}/ptz/position", put_ptz_position),
        web.put(f"{p}/ptz/continuous", put_ptz_continuous),
        web.put(f"{p}/ptz/stop", put_ptz_stop),
        web.put(f"{p}/ptz/home", put_ptz_home),
        web.put(f"{p}/ptz/home/apply", put_ptz_home_apply),
        web.get(f"{p}/ptz/presets", get_ptz_presets, allow_head=False),
        web.post(f"{p}/ptz/preset", post_ptz_preset),
        web.delete(f"{p}/ptz/preset", delete_ptz_preset),
        web.post(f"{p}/ptz/preset/apply", post_ptz_preset_apply),
    ]
