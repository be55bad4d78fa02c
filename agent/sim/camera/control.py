"""The simulated camera's fault-injection endpoint under `/sim/` on its ONVIF HTTP port.

| method and path          | body                       | effect                                   |
|--------------------------|----------------------------|------------------------------------------|
| GET /sim/state           |                            | identity, ports, faults, PTZ, viewers    |
| PUT /sim/faults          | {"soap_latency": 0.5, ...} | switch faults on/off (omitted keys kept) |
| DELETE /sim/faults       |                            | every fault off                          |
| POST /sim/reboot         | {"seconds": N}             | all services gone N s, then back         |
| POST /sim/rtsp/drop      |                            | close every RTSP connection now          |
| PUT /sim/qr              | {"text": "..."}            | the video shows `text` as a QR code      |
| DELETE /sim/qr           |                            | QR code off                              |
| PUT /sim/sessions        | {"max": N}                 | RTSP session cap now (0 or null: none)   |
| DELETE /sim/sessions     |                            | session peak and refusal counters reset  |
| GET /sim/backchannel     |                            | what the speaker received (figures)      |
| GET /sim/backchannel.wav |                            | the received audio (last 10 minutes)     |
| DELETE /sim/backchannel  |                            | forget what the speaker received         |

Errors are JSON `{"error": "..."}` with 400 (bad JSON or value) or 413 (too large).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.errors import InvalidArgument
from agent.sim.camera.model import Faults

if TYPE_CHECKING:
    from agent.sim.camera.camera import SimCamera

#: Largest JSON body accepted by the control endpoint, bytes.
MAX_JSON = 64 * 1024
#: Longest text the QR code may carry (a version-25 QR at level M holds about 1,000 bytes).
MAX_QR_TEXT = 1000
#: Longest reboot accepted, seconds.
MAX_REBOOT = 3600.0
#: Largest RTSP session cap accepted.
MAX_SESSIONS = 1000

CAMERA: web.AppKey[SimCamera] = web.AppKey("sim_camera")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_JSON:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_JSON, actual_size=request.content_length)
    raw = await request.content.read(MAX_JSON + 1)
    if len(raw) > MAX_JSON:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_JSON, actual_size=len(raw))
    try:
        return json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"body is not JSON: {exc}") from None


def _camera(request: web.Request) -> SimCamera:
    return request.app[CAMERA]


def state(cam: SimCamera) -> dict[str, Any]:
    model = cam.model
    ptz = model.ptz.status(model.monotonic())
    rtsp = cam.rtsp
    return {
        **cam.describe(),
        "firmware_version": model.identity.firmware_version,
        "boot_time": model.boot_time,
        "camera_time": model.now(),
        "faults": model.faults.to_json(),
        "qr_text": cam.qr_text,
        "ptz": {
            "pan": ptz.pan,
            "tilt": ptz.tilt,
            "zoom": ptz.zoom,
            "moving": ptz.pan_tilt_moving or ptz.zoom_moving,
        },
        "rtsp_sessions": rtsp.session_count if rtsp else 0,
        **_sessions(cam),
        "backchannel": cam.speaker is not None,
        "video_active": cam.video_active,
    }


def _sessions(cam: SimCamera) -> dict[str, Any]:
    rtsp = cam.rtsp
    return {
        "rtsp_sessions_peak": rtsp.sessions_peak if rtsp else 0,
        "rtsp_sessions_refused": rtsp.sessions_refused if rtsp else 0,
        "max_sessions": cam.max_sessions,
    }


async def _get_state(request: web.Request) -> web.Response:
    return web.json_response(state(_camera(request)))


async def _put_faults(request: web.Request) -> web.Response:
    cam = _camera(request)
    try:
        cam.model.faults = Faults.from_json(await _json_body(request), base=cam.model.faults)
    except InvalidArgument as exc:
        return _error(400, str(exc))
    cam.faults_changed()
    return web.json_response(cam.model.faults.to_json())


async def _delete_faults(request: web.Request) -> web.Response:
    cam = _camera(request)
    cam.model.faults = Faults()
    cam.faults_changed()
    return web.json_response(cam.model.faults.to_json())


async def _reboot(request: web.Request) -> web.Response:
    cam = _camera(request)
    try:
        body = await _json_body(request)
        seconds = body.get("seconds", 5) if isinstance(body, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidArgument("seconds must be a number")
        if not 0 <= seconds <= MAX_REBOOT:
            raise InvalidArgument(f"seconds must be within 0..{MAX_REBOOT:.0f}")
    except InvalidArgument as exc:
        return _error(400, str(exc))
    cam.schedule_reboot(float(seconds))
    return web.json_response({"rebooting": True, "seconds": seconds}, status=202)


async def _drop(request: web.Request) -> web.Response:
    cam = _camera(request)
    count = cam.rtsp.session_count if cam.rtsp else 0
    cam.drop_rtsp_sessions()
    return web.json_response({"dropped": count})


async def _put_qr(request: web.Request) -> web.Response:
    cam = _camera(request)
    try:
        body = await _json_body(request)
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            raise InvalidArgument("text must be a non-empty string")
        if len(text) > MAX_QR_TEXT:
            raise InvalidArgument(f"text is longer than {MAX_QR_TEXT} characters")
    except InvalidArgument as exc:
        return _error(400, str(exc))
    cam.qr_text = text
    cam.refresh_overlay()
    return web.json_response({"qr_text": text})


async def _delete_qr(request: web.Request) -> web.Response:
    cam = _camera(request)
    cam.qr_text = None
    cam.refresh_overlay()
    return web.json_response({"qr_text": None})


async def _put_sessions(request: web.Request) -> web.Response:
    cam = _camera(request)
    try:
        body = await _json_body(request)
        if not isinstance(body, dict) or "max" not in body:
            raise InvalidArgument('body must be {"max": N}')
        value = body["max"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidArgument("max must be an integer or null")
        if value is not None and not 0 <= value <= MAX_SESSIONS:
            raise InvalidArgument(f"max must be within 0..{MAX_SESSIONS}")
    except InvalidArgument as exc:
        return _error(400, str(exc))
    cam.set_max_sessions(value)
    return web.json_response(_sessions(cam))


async def _delete_sessions(request: web.Request) -> web.Response:
    cam = _camera(request)
    if cam.rtsp is not None:
        cam.rtsp.reset_counters()
    return web.json_response(_sessions(cam))


async def _get_backchannel(request: web.Request) -> web.Response:
    speaker = _camera(request).speaker
    if speaker is None:
        return _error(404, "the camera has no speaker")
    return web.json_response(speaker.state())


async def _get_backchannel_wav(request: web.Request) -> web.Response:
    speaker = _camera(request).speaker
    if speaker is None:
        return _error(404, "the camera has no speaker")
    return web.Response(body=speaker.wav(), content_type="audio/wav")


async def _delete_backchannel(request: web.Request) -> web.Response:
    speaker = _camera(request).speaker
    if speaker is None:
        return _error(404, "the camera has no speaker")
    speaker.reset()
    return web.json_response(speaker.state())


def add_routes(app: web.Application, cam: SimCamera) -> None:
    app[CAMERA] = cam
    app.router.add_get("/sim/state", _get_state)
    app.router.add_put("/sim/faults", _put_faults)
    app.router.add_delete("/sim/faults", _delete_faults)
    app.router.add_post("/sim/reboot", _reboot)
    app.router.add_post("/sim/rtsp/drop", _drop)
    app.router.add_put("/sim/qr", _put_qr)
    app.router.add_delete("/sim/qr", _delete_qr)
    app.router.add_put("/sim/sessions", _put_sessions)
    app.router.add_delete("/sim/sessions", _delete_sessions)
    app.router.add_get("/sim/backchannel", _get_backchannel)
    app.router.add_get("/sim/backchannel.wav", _get_backchannel_wav)
    app.router.add_delete("/sim/backchannel", _delete_backchannel)
