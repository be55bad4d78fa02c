"""Cloud camera commands against a simulated camera on loopback: each request changes the
camera's own state as expected, and a refused request changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.camera import firmware as firmware_mod
from agent.camera.onvif import OnvifControl, OnvifSession
from agent.cloud import camera_ops
from agent.errors import AuthError, InvalidArgument, Unsupported
from agent.secret import Credentials
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.firmware import build_image
from agent.sim.camera.fleet import SimCameraFleet
from tests.ports import free_port as _free_port

USER, PASSWORD = "admin", "s3cret"


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    config = SimCameraConfig(username=USER, password=PASSWORD, name="Yard", serial="OPS0001")
    async with SimCameraFleet([config], discovery_port=None) as fleet:
        yield fleet.cameras[0]


async def _control(port: int, password: str = PASSWORD) -> OnvifControl:
    session = OnvifSession("127.0.0.1", port, credentials=[Credentials(USER, password)])
    await session.connect()
    return OnvifControl(session)


@pytest.fixture
async def control(cam: SimCamera) -> AsyncIterator[OnvifControl]:
    ctl = await _control(cam.port)
    try:
        yield ctl
    finally:
        await ctl.close()


def _ptz_state(cam: SimCamera) -> tuple[float, float, float, bool]:
    s = cam.model.ptz.status(cam.model.monotonic())
    return s.pan, s.tilt, s.zoom, s.pan_tilt_moving or s.zoom_moving


def _snapshot(cam: SimCamera) -> tuple[Any, ...]:
    s = cam.model.imaging.settings
    enc = cam.model.profile("main").encoder
    return (
        s.brightness,
        s.contrast,
        s.color_saturation,
        s.sharpness,
        s.ir_cut_filter,
        s.backlight_mode,
        s.wdr_mode,
        s.wdr_level,
        cam.model.video_source.rotate,
        (enc.width, enc.height, enc.fps_limit, enc.bitrate_kbps),
    )


async def _settle(cam: SimCamera) -> None:
    for _ in range(60):
        if not _ptz_state(cam)[3]:
            return
        await asyncio.sleep(0.1)


async def test_ptz_moves_stops_presets_and_home(cam: SimCamera, control: OnvifControl) -> None:
    await camera_ops.ptz(control, {"camera_id": "c1", "command": "move_continuous", "right": 80})
    await asyncio.sleep(0.3)
    pan, _tilt, _zoom, moving = _ptz_state(cam)
    assert moving and pan > 0 and control.ptz_safety_armed
    await camera_ops.ptz(control, {"command": "stop"})
    assert not _ptz_state(cam)[3]

    await camera_ops.ptz(control, {"command": "set_preset", "preset": "gate"})
    spot = _ptz_state(cam)[0]
    await camera_ops.ptz(control, {"command": "set_home"})
    await camera_ops.ptz(control, {"command": "move_continuous", "left": 100, "down": 50})
    await asyncio.sleep(0.3)
    await camera_ops.ptz(control, {"command": "move_continuous"})  # all zero = stop
    assert not _ptz_state(cam)[3] and _ptz_state(cam)[0] < spot
    await camera_ops.ptz(control, {"command": "goto_preset", "preset": "gate"})
    await _settle(cam)
    assert _ptz_state(cam)[0] == pytest.approx(spot, abs=1e-3)
    await camera_ops.ptz(control, {"command": "set_preset", "preset": "gate"})  # replaces
    assert [p.name for p in cam.model.ptz.presets] == ["gate"]
    await camera_ops.ptz(control, {"command": "goto_home"})
    await camera_ops.ptz(control, {"command": "remove_preset", "preset": "gate"})
    assert [p.name for p in cam.model.ptz.presets] == []


async def test_safety_stop_ends_a_forgotten_move(
    cam: SimCamera, control: OnvifControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.camera import ptz as ptz_module

    monkeypatch.setattr(ptz_module, "SAFETY_STOP_AFTER", 0.5)
    await camera_ops.ptz(control, {"command": "move_continuous", "up": 50})
    assert _ptz_state(cam)[3]
    for _ in range(20):
        if not _ptz_state(cam)[3]:
            break
        await asyncio.sleep(0.1)
    assert not _ptz_state(cam)[3]


@pytest.mark.parametrize(
    "payload",
    [
        {"command": "move_continuous", "up": 101},
        {"command": "move_continuous", "up": True},
        {"command": "move_continuous", "up": 10, "down": 10},
        {"command": "move_continuous", "left": 5.5},
        {"command": "fly"},
        {"command": "set_preset", "preset": ""},
        {"command": "set_preset", "preset": "x" * 65},
        {"command": "stop", "zoom": 1},
    ],
)
async def test_bad_ptz_requests_change_nothing(
    cam: SimCamera, control: OnvifControl, payload: dict[str, Any]
) -> None:
    before = _ptz_state(cam), list(cam.model.ptz.presets)
    with pytest.raises(InvalidArgument):
        await camera_ops.ptz(control, payload)
    assert (_ptz_state(cam), list(cam.model.ptz.presets)) == before


async def test_config_round_trip(cam: SimCamera, control: OnvifControl) -> None:
    got = await camera_ops.camera_config_get(control)
    assert got["camera_info"]["serial_number"] == "OPS0001"
    assert got["camera_info"]["firmware"] == cam.model.identity.firmware_version
    assert got["sensor"]["image_orientation"] == "normal"
    assert got["media_quality"] == "high"
    change: dict[str, Any] = {
        "sensor": {
            "brightness_correction": 73,
            "contrast_correction": 12,
            "saturation": 99,
            "sharpness": 0,
            "wide_dynamic_range": 40,
            "image_orientation": "upside_down",
            "infrared_cutoff_filter": {"mode": "off"},
            "blacklight_compensation": {"mode": "on"},
        },
        "media_quality": "low",
    }
    after = await camera_ops.camera_config_set(control, change)
    for key, want in change["sensor"].items():
        if isinstance(want, int):
            assert abs(after["sensor"][key] - want) <= 1, key
        else:
            assert after["sensor"][key] == want, key
    assert after["media_quality"] == "low"
    s = cam.model.imaging.settings
    assert (s.ir_cut_filter, s.backlight_mode, s.wdr_mode) == ("OFF", "ON", "ON")
    assert cam.model.video_source.rotate == "ON"
    streams = await control.streams()
    main = streams[0]
    assert (main.current_resolution.width, main.current_resolution.height) == (640, 360)
    assert main.current_framerate <= 10
    assert main.current_bitrate == main.supported_encoders[0].bitrate_range.min_val

    after = await camera_ops.camera_config_set(
        control,
        {
            "sensor": {"wide_dynamic_range": 0, "image_orientation": "normal"},
            "media_quality": "high",
        },
    )
    assert (
        after["sensor"]["wide_dynamic_range"] == 0 and cam.model.imaging.settings.wdr_mode == "OFF"
    )
    assert cam.model.video_source.rotate == "OFF"
    main = (await control.streams())[0]
    assert str(main.current_resolution) == "1280x720" and after["media_quality"] == "high"
    assert after["sensor"]["brightness_correction"] == pytest.approx(73, abs=1)  # partial write
    after = await camera_ops.camera_config_set(control, {"media_quality": "medium"})
    assert str((await control.streams())[0].current_resolution) == "960x540"
    assert after["media_quality"] == "medium"


@pytest.mark.parametrize(
    "config",
    [
        {"sensor": {"brightness_correction": 101, "saturation": 10}},
        {"sensor": {"saturation": 10, "sharpness": True}},
        {"sensor": {"saturation": 10, "hue": 3}},
        {"sensor": {"saturation": 10}, "colour": 1},
        {"sensor": {"saturation": 10, "image_orientation": "sideways"}},
        {"sensor": {"saturation": 10, "infrared_cutoff_filter": {"mode": "maybe"}}},
        {"sensor": {"saturation": 10}, "media_quality": "ultra"},
        {"sensor": {"saturation": 10, "wide_dynamic_range": -1}},
    ],
)
async def test_bad_config_changes_nothing(
    cam: SimCamera, control: OnvifControl, config: dict[str, Any]
) -> None:
    before = _snapshot(cam)
    with pytest.raises(InvalidArgument):
        await camera_ops.camera_config_set(control, config)
    assert _snapshot(cam) == before


async def test_missing_setting_is_unsupported_and_changes_nothing(
    cam: SimCamera, control: OnvifControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_rotation() -> str:
        raise Unsupported("no rotation")

    monkeypatch.setattr(control, "image_orientation", no_rotation)
    got = await camera_ops.camera_config_get(control)
    assert "image_orientation" not in got["sensor"]
    before = _snapshot(cam)
    with pytest.raises(Unsupported):
        await camera_ops.camera_config_set(
            control, {"sensor": {"saturation": 3, "image_orientation": "upside_down"}}
        )
    assert _snapshot(cam) == before


async def test_auth_password_and_port(cam: SimCamera, control: OnvifControl) -> None:
    assert await camera_ops.camera_auth_get(control, USER, PASSWORD) == {
        "login": USER,
        "password": PASSWORD,
        "port": cam.port,
    }
    with pytest.raises(InvalidArgument):
        await camera_ops.camera_auth_set(control, USER, {"login": "ghost", "password": "x1"})
    with pytest.raises(InvalidArgument):
        await camera_ops.camera_auth_set(control, USER, {"port": 0})
    assert cam.model.user(USER) is not None and cam.model.user(USER).password == PASSWORD  # type: ignore[union-attr]

    new_port = _free_port()
    auth, new_password, moved = await camera_ops.camera_auth_set(
        control, USER, {"password": "n3w-pass", "port": new_port}, current_password=PASSWORD
    )
    assert (new_password, moved) == ("n3w-pass", new_port)
    assert auth == {"login": USER, "password": "n3w-pass", "port": new_port}
    for _ in range(50):
        if cam.port == new_port:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    fresh = await _control(new_port, "n3w-pass")
    try:
        assert (await fresh.get_network()).http.port == new_port
    finally:
        await fresh.close()
    with pytest.raises(AuthError):
        await _control(new_port, PASSWORD)


async def test_firmware_upgrade_and_truncated_image(
    cam: SimCamera, control: OnvifControl, tmp_path: Path
) -> None:
    events: list[tuple[str, int]] = []

    async def progress(stage: str, pct: int, message: str) -> None:
        events.append((stage, pct))

    image = build_image("2.0.0", b"\x01" * 200_000, model=cam.model.identity.model)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(image[:-1000])
    with pytest.raises(InvalidArgument, match="truncated"):
        await camera_ops.firmware(control, bad, len(image) - 1000, progress)
    assert cam.model.identity.firmware_version == "1.0.0"

    good = tmp_path / "fw.bin"
    good.write_bytes(image)
    events.clear()
    result = await camera_ops.firmware(control, good, len(image), progress)
    assert (result["firmware_before"], result["firmware_after"]) == ("1.0.0", "2.0.0")
    assert [e[0] for e in events] == ["upload", "upload", "rebooting", "rebooting"]
    assert (await control.device_info()).firmware_version == "2.0.0"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _digest_ok(header: str, method: str, password: str) -> bool:
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header.removeprefix("Digest ")))
    ha1 = _md5(f"{fields.get('username')}:cam:{password}")
    ha2 = _md5(f"{method}:{fields.get('uri')}")
    parts = [ha1, fields.get("nonce", ""), fields.get("nc", ""), fields.get("cnonce", "")]
    want = _md5(":".join([*parts, fields.get("qop", ""), ha2]))
    return fields.get("response") == want


@pytest.mark.parametrize("scheme", ["basic", "digest", "none"])
async def test_upload_uses_the_auth_the_camera_asks_for(tmp_path: Path, scheme: str) -> None:
    received: list[bytes] = []

    async def upload(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if scheme == "basic" and header != aiohttp.encode_basic_auth(USER, PASSWORD):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="cam"'})
        if scheme == "digest" and not _digest_ok(header, request.method, PASSWORD):
            challenge = 'Digest realm="cam", nonce="n0nce", qop="auth", algorithm=MD5'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        received.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/fw", upload)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    image = tmp_path / "fw.bin"
    image.write_bytes(b"\x07" * 100_000)
    try:
        uri = f"http://127.0.0.1:{port}/fw"
        await firmware_mod.post_image(uri, image, 100_000, USER, PASSWORD)
        assert received == [image.read_bytes()]
        if scheme != "none":
            with pytest.raises(AuthError):
                await firmware_mod.post_image(uri, image, 100_000, USER, "wrong")
    finally:
        await runner.cleanup()


async def test_orientation_through_media2(
    cam: SimCamera, control: OnvifControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = control.session
    real = session.has_service
    monkeypatch.setattr(session, "has_service", lambda name: name != "media" and real(name))
    assert await control.image_orientation() == "normal"
    await control.set_image_orientation("upside_down")
    assert cam.model.video_source.rotate == "ON"
    assert await control.image_orientation() == "upside_down"
    with pytest.raises(InvalidArgument):
        await control.set_image_orientation("left")
    assert cam.model.video_source.rotate == "ON"
