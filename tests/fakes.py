"""In-memory fakes shared by tests: a camera directory and a CameraControl over a small state.

`FakeControl` keeps a camera's settings in `FakeCameraState`, checks values against the
camera's own ranges like a real camera (raising InvalidArgument), and raises any agent error
on demand: `control.fail("ptz", Unsupported("no PTZ"))` makes the next `ptz()` call fail
(`once=False` for every call); `control.delay` slows every call down.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from agent.camera.models import (
    NUMERIC_IMAGE_SETTINGS,
    ContinuousMove,
    DeviceInfo,
    EncoderRequest,
    ExposureInfo,
    ImageInfo,
    ModeSetting,
    NetworkPorts,
    PortSetting,
    PtzInfo,
    PtzMove,
    PtzZoom,
    Range,
    RangedValue,
    Resolution,
    Snapshot,
    StreamInfo,
    StreamProfile,
    SupportedEncoder,
    UserInfo,
    WhiteBalanceInfo,
    WideDynamicRangeInfo,
)
from agent.errors import InvalidArgument, NotFound, Unsupported


def tiny_jpeg(width: int = 16, height: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, format="JPEG")
    return out.getvalue()


JPEG = tiny_jpeg()

_RES = (Resolution(1920, 1080), Resolution(1280, 720), Resolution(640, 480), Resolution(800, 600))
_ENCODERS = (
    SupportedEncoder("H264", _RES, Range(1, 30), Range(64, 16384), Range(1, 150)),
    SupportedEncoder("H265", _RES[:2], Range(1, 30), Range(64, 16384), Range(1, 150)),
    SupportedEncoder("JPEG", _RES[2:], Range(1, 15), Range(64, 4096)),
)
_MOVES = {
    PtzMove.UP: (0, 1),
    PtzMove.DOWN: (0, -1),
    PtzMove.LEFT: (-1, 0),
    PtzMove.RIGHT: (1, 0),
    PtzMove.LEFT_UP: (-1, 1),
    PtzMove.LEFT_DOWN: (-1, -1),
    PtzMove.RIGHT_UP: (1, 1),
    PtzMove.RIGHT_DOWN: (1, -1),
}


@dataclass
class FakeStream:
    encoder: str
    resolution: Resolution
    framerate: int
    bitrate: int
    gov_length: int | None


@dataclass
class FakeCameraState:
    """Everything a FakeControl can read or change."""

    ports: dict[str, PortSetting] = field(
        default_factory=lambda: {
            "http": PortSetting(80, True),
            "https": PortSetting(443, False),
            "rtsp": PortSetting(554, True),
        }
    )
    users: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {"admin": ("Administrator", "admin"), "op": ("Operator", "op")}
    )
    streams: dict[StreamProfile, FakeStream] = field(
        default_factory=lambda: {
            StreamProfile.MAIN_STREAM: FakeStream("H264", Resolution(1920, 1080), 25, 4096, 50),
            StreamProfile.SUB_STREAM_1: FakeStream("H264", Resolution(640, 480), 15, 512, 30),
        }
    )
    image: dict[str, float] = field(
        default_factory=lambda: {
            "brightness": 50.0,
            "contrast": 50.0,
            "saturation": 50.0,
            "sharpness": 50.0,
        }
    )
    backlight: str = "OFF"
    ir_cut_filter: str = "AUTO"
    exposure: float = 10000.0
    wdr_mode: str = "OFF"
    wdr_value: float = 50.0
    wb_mode: str = "AUTO"
    cr_gain: float = 128.0
    cb_gain: float = 128.0
    ptz_supported: bool = True
    pan_tilt: tuple[float, float] = (0.0, 0.0)
    zoom: float = 0.0
    home: tuple[float, float, float] | None = None
    presets: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    max_presets: int = 8
    reboots: int = 0
    moving: ContinuousMove | None = None
    orientation: str = "normal"
    firmware: str = "1.2.3"
    firmware_images: list[bytes] = field(default_factory=list)


IMAGE_RANGE = Range(0, 100)
EXPOSURE_RANGE = Range(10, 40000)
GAIN_RANGE = Range(0, 255)


class FakeControl:
    """A CameraControl over FakeCameraState."""

    def __init__(self, state: FakeCameraState | None = None) -> None:
        self.state = state or FakeCameraState()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.delay = 0.0
        self._failures: dict[str, tuple[BaseException, bool]] = {}

    def fail(self, method: str, exc: BaseException, *, once: bool = True) -> None:
        if not hasattr(self, method):
            raise AttributeError(method)
        self._failures[method] = (exc, once)

    async def _enter(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        if self.delay:
            await asyncio.sleep(self.delay)
        failure = self._failures.get(method)
        if failure is not None:
            exc, once = failure
            if once:
                del self._failures[method]
            raise exc

    def _need_ptz(self) -> None:
        if not self.state.ptz_supported:
            raise Unsupported("the camera has no PTZ")

    async def device_info(self) -> DeviceInfo:
        await self._enter("device_info")
        return DeviceInfo("Fake Optics", "FK-1", self.state.firmware, "FK1-0001", "HW-7")

    async def get_network(self) -> NetworkPorts:
        await self._enter("get_network")
        p = self.state.ports
        return NetworkPorts(p["http"], p["https"], p["rtsp"])

    async def set_network(
        self, *, http: int | None = None, https: int | None = None, rtsp: int | None = None
    ) -> None:
        await self._enter("set_network", http, https, rtsp)
        wanted = {"http": http, "https": https, "rtsp": rtsp}
        given = [p for p in wanted.values() if p is not None]
        if len(set(given)) != len(given):
            raise InvalidArgument("two services cannot share a port")
        for name, port in wanted.items():
            if port is not None:
                self.state.ports[name] = PortSetting(port, True)

    async def list_users(self) -> list[UserInfo]:
        await self._enter("list_users")
        return [UserInfo(name, level) for name, (level, _) in self.state.users.items()]

    async def set_user_password(self, username: str, password: str) -> None:
        await self._enter("set_user_password", username, "***")
        if username not in self.state.users:
            raise NotFound(f"no user {username!r}")
        if not password:
            raise InvalidArgument("the password must not be empty")
        level, _ = self.state.users[username]
        self.state.users[username] = (level, password)

    async def streams(self) -> list[StreamInfo]:
        await self._enter("streams")
        return [
            StreamInfo(
                name=profile.value,
                link=f"rtsp://127.0.0.1:554/{profile.value.lower()}",
                current_encoder=s.encoder,
                current_resolution=s.resolution,
                current_framerate=s.framerate,
                current_bitrate=s.bitrate,
                current_gov_length=s.gov_length,
                supported_encoders=_ENCODERS,
                profile_token=f"profile_{i}",
            )
            for i, (profile, s) in enumerate(self.state.streams.items())
        ]

    async def set_encoder(self, request: EncoderRequest) -> None:
        await self._enter("set_encoder", request)
        stream = self.state.streams.get(request.stream_profile)
        if stream is None:
            raise InvalidArgument(f"the camera has no {request.stream_profile}")
        enc = next((e for e in _ENCODERS if e.name == request.encoder), None)
        if enc is None:
            raise InvalidArgument(f"encoder {request.encoder} is not supported")
        if request.resolution not in enc.supported_resolutions:
            raise InvalidArgument(f"resolution {request.resolution} is not supported")
        if not enc.framerate_range.contains(request.framerate):
            raise InvalidArgument("framerate out of range")
        if not enc.bitrate_range.contains(request.bitrate):
            raise InvalidArgument("bitrate out of range")
        gov = request.gov_length
        if gov is not None and (
            enc.gov_length_range is None or not enc.gov_length_range.contains(gov)
        ):
            raise InvalidArgument("gov_length out of range")
        self.state.streams[request.stream_profile] = FakeStream(
            request.encoder, request.resolution, request.framerate, request.bitrate, gov
        )

    async def image(self) -> ImageInfo:
        await self._enter("image")
        s = self.state
        return ImageInfo(
            brightness=RangedValue(s.image["brightness"], IMAGE_RANGE),
            color_saturation=RangedValue(s.image["saturation"], IMAGE_RANGE),
            contrast=RangedValue(s.image["contrast"], IMAGE_RANGE),
            sharpness=RangedValue(s.image["sharpness"], IMAGE_RANGE),
            backlight_compensation=ModeSetting(s.backlight, ("ON", "OFF")),
            ir_cut_filter=ModeSetting(s.ir_cut_filter, ("ON", "OFF", "AUTO")),
            exposure=ExposureInfo(Range(EXPOSURE_RANGE.min_val, s.exposure), EXPOSURE_RANGE),
            white_balance=WhiteBalanceInfo(
                s.wb_mode, s.cr_gain, s.cb_gain, ("AUTO", "MANUAL"), GAIN_RANGE, GAIN_RANGE
            ),
            wide_dynamic_range=WideDynamicRangeInfo(
                s.wdr_mode, s.wdr_value, ("ON", "OFF"), IMAGE_RANGE
            ),
        )

    async def set_image_value(self, setting: str, value: float) -> None:
        await self._enter("set_image_value", setting, value)
        if setting not in NUMERIC_IMAGE_SETTINGS:
            raise InvalidArgument(f"unknown image setting {setting!r}")
        if not IMAGE_RANGE.contains(value):
            raise InvalidArgument(f"{setting} must be within 0..100")
        self.state.image[setting] = value

    async def set_backlight(self, mode: str) -> None:
        await self._enter("set_backlight", mode)
        self.state.backlight = mode

    async def set_ir_cut_filter(self, mode: str) -> None:
        await self._enter("set_ir_cut_filter", mode)
        self.state.ir_cut_filter = mode

    async def set_exposure(self, value: float) -> None:
        await self._enter("set_exposure", value)
        if not EXPOSURE_RANGE.contains(value):
            raise InvalidArgument("exposure time out of range")
        self.state.exposure = value

    async def set_wide_dynamic_range(self, mode: str | None, value: float | None) -> None:
        await self._enter("set_wide_dynamic_range", mode, value)
        if value is not None and not IMAGE_RANGE.contains(value):
            raise InvalidArgument("wide dynamic range level out of range")
        if mode is not None:
            self.state.wdr_mode = mode
        if value is not None:
            self.state.wdr_value = value

    async def set_white_balance(
        self, mode: str | None, cr_gain: float | None, cb_gain: float | None
    ) -> None:
        await self._enter("set_white_balance", mode, cr_gain, cb_gain)
        for gain in (cr_gain, cb_gain):
            if gain is not None and not GAIN_RANGE.contains(gain):
                raise InvalidArgument("gain out of range")
        if mode is not None:
            self.state.wb_mode = mode
        if cr_gain is not None:
            self.state.cr_gain = cr_gain
        if cb_gain is not None:
            self.state.cb_gain = cb_gain

    async def ptz(self) -> PtzInfo:
        await self._enter("ptz")
        self._need_ptz()
        return PtzInfo(
            position=self.state.pan_tilt,
            zoom_position=self.state.zoom,
            pan_range=Range(-1, 1),
            tilt_range=Range(-1, 1),
            zoom_range=Range(0, 1),
            default_speed=(0.5, 0.5),
            default_zoom_speed=0.5,
            max_num_of_presets=self.state.max_presets,
            home_supported=True,
        )

    async def ptz_step(self, move: PtzMove | None, zoom: PtzZoom | None, step: int) -> None:
        await self._enter("ptz_step", move, zoom, step)
        self._need_ptz()
        pan, tilt = self.state.pan_tilt
        if move is not None:
            dx, dy = _MOVES[move]
            pan = max(-1.0, min(1.0, pan + dx * step / 10))
            tilt = max(-1.0, min(1.0, tilt + dy * step / 10))
        z = self.state.zoom
        if zoom is not None:
            sign = 1 if zoom is PtzZoom.ZOOM_IN else -1
            z = max(0.0, min(1.0, z + sign * step / 10))
        self.state.pan_tilt = (round(pan, 6), round(tilt, 6))
        self.state.zoom = round(z, 6)

    async def ptz_absolute(self, x: float | None, y: float | None, zoom: float | None) -> None:
        await self._enter("ptz_absolute", x, y, zoom)
        self._need_ptz()
        for name, value, lo in (("x", x, -1.0), ("y", y, -1.0), ("zoom", zoom, 0.0)):
            if value is not None and not lo <= value <= 1.0:
                raise InvalidArgument(f"{name} {value:g} is outside the camera's range {lo:g}..1")
        pan, tilt = self.state.pan_tilt
        self.state.pan_tilt = (pan if x is None else x, tilt if y is None else y)
        self.state.zoom = self.state.zoom if zoom is None else zoom

    async def ptz_continuous(self, move: ContinuousMove) -> None:
        await self._enter("ptz_continuous", move)
        self._need_ptz()
        self.state.moving = None if move.is_stop else move

    async def ptz_stop(self) -> None:
        await self._enter("ptz_stop")
        self._need_ptz()
        self.state.moving = None

    def _position(self) -> tuple[float, float, float]:
        return (*self.state.pan_tilt, self.state.zoom)

    def _go(self, where: tuple[float, float, float]) -> None:
        self.state.pan_tilt = (where[0], where[1])
        self.state.zoom = where[2]

    async def ptz_home_save(self) -> None:
        await self._enter("ptz_home_save")
        self._need_ptz()
        self.state.home = self._position()

    async def ptz_home_apply(self) -> None:
        await self._enter("ptz_home_apply")
        self._need_ptz()
        if self.state.home is None:
            raise InvalidArgument("no home position saved")
        self._go(self.state.home)

    async def ptz_presets(self) -> list[str]:
        await self._enter("ptz_presets")
        self._need_ptz()
        return list(self.state.presets)

    async def ptz_preset_create(self, name: str) -> None:
        await self._enter("ptz_preset_create", name)
        self._need_ptz()
        if not name:
            raise InvalidArgument("a preset needs a name")
        if name not in self.state.presets and len(self.state.presets) >= self.state.max_presets:
            raise InvalidArgument("no free preset slot")
        self.state.presets[name] = self._position()

    async def ptz_preset_delete(self, name: str) -> None:
        await self._enter("ptz_preset_delete", name)
        self._need_ptz()
        if self.state.presets.pop(name, None) is None:
            raise NotFound(f"no preset {name!r}")

    async def ptz_preset_apply(self, name: str) -> None:
        await self._enter("ptz_preset_apply", name)
        self._need_ptz()
        if name not in self.state.presets:
            raise NotFound(f"no preset {name!r}")
        self._go(self.state.presets[name])

    async def reboot(self) -> None:
        await self._enter("reboot")
        self.state.reboots += 1

    async def snapshot(self) -> Snapshot:
        await self._enter("snapshot")
        return Snapshot(jpeg=JPEG, timestamp=time.time())

    async def image_orientation(self) -> str:
        await self._enter("image_orientation")
        return self.state.orientation

    async def set_image_orientation(self, orientation: str) -> None:
        await self._enter("set_image_orientation", orientation)
        if orientation not in ("normal", "upside_down"):
            raise InvalidArgument(f"unknown orientation {orientation!r}")
        self.state.orientation = orientation

    async def firmware_upgrade(self, path: Path, size: int) -> None:
        """Keeps the image; an image starting with b"FW:<version>\n" sets the firmware."""
        await self._enter("firmware_upgrade", path, size)
        data = await asyncio.to_thread(path.read_bytes)
        if len(data) != size:
            raise InvalidArgument(f"image is {len(data)} bytes, expected {size}")
        head, sep, _ = data.partition(b"\n")
        if not sep or not head.startswith(b"FW:"):
            raise InvalidArgument("not a firmware image")
        self.state.firmware_images.append(data)
        self.state.firmware = head[3:].decode("ascii", "replace")
        self.state.reboots += 1


@dataclass
class FakeRecord:
    """A camera as the inventory lists it (public fields only)."""

    id: str
    address: str = "127.0.0.1"
    manufacturer: str = "Fake Optics"
    model: str = "FK-1"
    state: str = "online"
    paused: bool = False
    backchannel: bool = False

    def to_json(self) -> dict[str, Any]:
        return {  # every field of agent.discovery.records.CameraRecord.to_json()
            "run_state": "paused" if self.paused else "running",
            "id": self.id,
            "address": self.address,
            "xaddr": f"http://{self.address}/onvif/device_service",
            "manufacturer": self.manufacturer,
            "model": self.model,
            "firmware_version": "1.0",
            "serial_number": "FK1-0001",
            "hardware_id": "HW-1",
            "state": self.state,
            "reason": "",
            "profiles": [],
            "snapshot_uri": None,
            "ptz": True,
            "imaging": True,
            "backchannel": self.backchannel,
            "endpoint_reference": f"urn:uuid:{self.id}",
            "last_seen": None,
            "sources": ["config"],
            "kind": "onvif",
            "name": "",
        }


class FakeDirectory:
    """Cameras by id, each with its FakeControl; `control_errors[id]` makes `control()` fail."""

    def __init__(self, records: Sequence[FakeRecord] = ()) -> None:
        self.records: dict[str, FakeRecord] = {r.id: r for r in records}
        self.controls: dict[str, FakeControl] = {r.id: FakeControl() for r in records}
        self.control_errors: dict[str, BaseException] = {}
        self.cameras_error: BaseException | None = None

    def add(self, record: FakeRecord, control: FakeControl | None = None) -> FakeControl:
        self.records[record.id] = record
        self.controls[record.id] = control or FakeControl()
        return self.controls[record.id]

    def cameras(self) -> list[FakeRecord]:
        if self.cameras_error is not None:
            raise self.cameras_error
        return list(self.records.values())

    def get(self, camera_id: str) -> FakeRecord:
        try:
            return self.records[camera_id]
        except KeyError:
            raise NotFound(f"no camera {camera_id}") from None

    def stream_url(self, camera_id: str) -> str:
        self.get(camera_id)
        exc = self.control_errors.get(camera_id)
        if exc is not None:
            raise exc
        return f"rtsp://user:pw@127.0.0.1:554/{camera_id}"

    def set_paused(self, camera_id: str, paused: bool) -> FakeRecord:
        if self.cameras_error is not None:
            raise self.cameras_error
        record = self.get(camera_id)
        record.paused = paused
        return record

    async def add_rtsp(self, entry: Any, *, source: str = "api") -> FakeRecord:
        """A camera added by RTSP URL (`cameras_error` makes it fail)."""
        return self._added(str(entry.rtsp_url))

    async def add_onvif(self, xaddr: str, credentials: Any = None) -> FakeRecord:
        return self._added(xaddr)

    def _added(self, url: str) -> FakeRecord:
        if self.cameras_error is not None:
            raise self.cameras_error
        record = FakeRecord(str(uuid.uuid5(uuid.NAMESPACE_URL, url)))
        self.add(record)
        return record

    def forget(self, camera_id: str) -> FakeRecord:
        if self.cameras_error is not None:
            raise self.cameras_error
        record = self.get(camera_id)
        del self.records[camera_id], self.controls[camera_id]
        return record

    async def control(self, camera_id: str) -> FakeControl:
        self.get(camera_id)
        exc = self.control_errors.get(camera_id)
        if exc is not None:
            raise exc
        return self.controls[camera_id]


class SpecChecker:
    """Checks requests and responses against an OpenAPI 3.1 document (uses jsonschema).

    Records every (method, path template, status) it checked in `seen`.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry
        from referencing.jsonschema import DRAFT202012

        self.spec = spec
        self._validator_cls = Draft202012Validator
        self._registry: Any = Registry().with_resource("urn:api", DRAFT202012.create_resource(spec))
        self.seen: set[tuple[str, str, int]] = set()
        self._templates = sorted(spec["paths"], key=lambda t: (t.count("{"), t))

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        import re

        path = path.split("?", 1)[0]
        for template in self._templates:
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path):
                ops = self.spec["paths"][template]
                if method.lower() in ops:
                    return template, ops[method.lower()]
        raise AssertionError(f"{method} {path} is not in the OpenAPI document")

    def _validate(self, schema: dict[str, Any], instance: Any) -> None:
        if "$ref" in schema and schema["$ref"].startswith("#"):
            schema = {"$ref": "urn:api" + schema["$ref"]}
        self._validator_cls(schema, registry=self._registry).validate(instance)

    def check_request(self, method: str, path: str, body: Any) -> None:
        _, op = self.operation(method, path)
        assert "requestBody" in op, f"{method} {path} takes no body"
        self._validate(op["requestBody"]["content"]["application/json"]["schema"], body)

    def check_response(
        self, method: str, path: str, status: int, content_type: str, body: bytes
    ) -> None:
        import json

        template, op = self.operation(method, path)
        response = op["responses"].get(str(status))
        assert response is not None, f"{method} {template}: status {status} is not documented"
        content = response.get("content", {})
        assert content_type in content, f"{method} {template} {status}: {content_type} undocumented"
        if content_type == "application/json":
            self._validate(content[content_type]["schema"], json.loads(body))
        self.seen.add((method.upper(), template, status))

    def operations(self) -> set[tuple[str, str]]:
        return {(m.upper(), t) for t, ops in self.spec["paths"].items() for m in ops}


@dataclass
class Reply:
    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class ApiClient:
    """Calls a running local API on loopback; checks every answer against its OpenAPI document."""

    def __init__(self, base: str, checker: SpecChecker, token: str | None = None) -> None:
        import aiohttp

        self.base = base
        self.checker = checker
        self.token = token
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        check: bool = True,
    ) -> Reply:
        import json

        hdrs = dict(headers or {})
        if self.token is not None and "Authorization" not in hdrs:
            hdrs["Authorization"] = f"Bearer {self.token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.base + path, data=data, headers=hdrs) as resp:
            reply = Reply(resp.status, resp.content_type, dict(resp.headers), await resp.read())
        if check:
            self.checker.check_response(method, path, reply.status, reply.content_type, reply.body)
        return reply


@contextlib.asynccontextmanager
async def running_api(
    directory: FakeDirectory,
    *,
    version: str = "1.2.3",
    token: str | None = None,
    client_token: str | None = None,
    call_timeout: float = 5.0,
    cloud: FakeCloud | None = None,
    webrtc: FakeLiveView | None = None,
) -> AsyncIterator[ApiClient]:
    """The local API over `directory` on a free loopback port, and a checking client for it."""
    from agent.api import ApiServer, build_app
    from agent.api.openapi import openapi_document
    from agent.secret import Secret

    app = build_app(
        directory,
        version=version,
        token=Secret(token) if token is not None else None,
        call_timeout=call_timeout,
        cloud=cloud,
        webrtc=webrtc,
    )
    server = ApiServer(app, "127.0.0.1", 0)
    await server.start()
    client = ApiClient(
        f"http://127.0.0.1:{server.port}",
        SpecChecker(openapi_document(version)),
        token=client_token if client_token is not None else token,
    )
    try:
        yield client
    finally:
        await client.close()
        await server.stop()


@dataclass
class FakeActivation:
    agent_id: str
    streams: list[dict[str, str | None]]


class FakeCloud:
    """The cloud service as the local API sees it; `error` makes every call raise it."""

    def __init__(self) -> None:
        self.activation: FakeActivation | None = None
        self.error: BaseException | None = None
        self.calls: list[tuple[str, str | None, str | None]] = []
        self.scan_seconds: float | None = None

    def scan_for_more(self, seconds: float) -> None:
        if self.error is not None:
            raise self.error
        self.scan_seconds = seconds

    def status(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        act = self.activation
        return {
            "activated": act is not None,
            "state": "activated" if act else "waiting_for_activation",
            "agent_id": act.agent_id if act else None,
            "streams": list(act.streams) if act else [],
            "activation_url": "http://127.0.0.1:9",
            "endpoint": {"state": "ready"} if act else None,
            "streampoint": None,
            "qr_scan": None,
            "last_error": "",
        }

    async def activate(
        self, token: str, activation_url: str | None = None, camera_id: str | None = None
    ) -> FakeActivation:
        self.calls.append((token, activation_url, camera_id))
        if self.error is not None:
            raise self.error
        act = self.activation or FakeActivation("1001", [])
        act.streams.append(
            {"token": token, "stream_name": f"cam-{len(act.streams) + 1}", "camera_id": camera_id}
        )
        self.activation = act
        return act


class FakeLiveView:
    """WebRtcSessions as the API sees it; `error` makes `answer` raise it."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.offers: list[tuple[str, str]] = []

    async def answer(self, offer_sdp: str, rtsp_url: str) -> str:
        if self.error is not None:
            raise self.error
        self.offers.append((offer_sdp, rtsp_url))
        return "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=answer\r\nt=0 0\r\n"
