"""The compatibility matrix of `tests/compat.py`, cell by cell: for each persona one simulated
camera, every capability exercised through the agent's own code (control layer, discovery,
cloud PTZ command handler) and checked against the camera's own state; the outcome must be
the expected one. "Not supported" must be a clear 4xx of the local API's error mapping, never a
503 or a 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from agent.api.errors import camera_error_response
from agent.camera import media
from agent.camera import ptz as ptz_module
from agent.camera.control import OnvifControl
from agent.camera.models import ContinuousMove, EncoderRequest, PtzMove, StreamProfile
from agent.cloud import camera_ops
from agent.discovery.scan import discover
from agent.media.rtsp_client import RtspClient
from agent.net.urls import with_credentials
from agent.sim.camera import onvif_device
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from agent.sim.camera.model import Faults, User, UserLevel
from tests.compat import CAPABILITY_KEYS, EXPECTED, NOT_SUPPORTED, WORKED_AROUND, Cell
from tests.world import onvif_control

USER, PASSWORD = "admin", "pw-Compat-3"
WORKS = "works"
REFUSED = "4xx"

Check = Callable[[SimCamera, OnvifControl, int], Awaitable[None]]


async def _wait_for(pred: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _moving(cam: SimCamera) -> bool:
    st = cam.model.ptz.status(cam.model.monotonic())
    return st.pan_tilt_moving or st.zoom_moving


def _pan(cam: SimCamera) -> float:
    return cam.model.ptz.status(cam.model.monotonic()).pan


async def _video_encoding(url: str) -> str:
    client = RtspClient(url, timeout=5.0, idle_timeout=5.0)
    try:
        tracks = await client.start()
        async for _index, _packet in client.packets():
            return next(t.info.encoding for t in tracks if t.info.kind == "video")
    finally:
        await client.close()
    raise AssertionError("no RTP")


# One check per capability: raises when the agent fails (a 4xx-mapped error = refused).


async def _discovery(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    found = await discover(
        timeout=0.5,
        subnets=["127.0.0.1/32"],
        discovery_port=port,
        multicast=False,
        username=USER,
        password=PASSWORD,
    )
    assert len(found) == 1
    assert found[0].state == "online", found[0].reason
    assert found[0].serial_number == cam.model.identity.serial_number
    assert {p["token"] for p in found[0].profiles} == set(cam.model.profiles)


async def _identity(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    info, ident = await ctl.device_info(), cam.model.identity
    assert (info.manufacturer, info.model, info.firmware_version, info.serial_number) == (
        ident.manufacturer,
        ident.model,
        ident.firmware_version,
        ident.serial_number,
    )


async def _profiles(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    found = await media.profiles(ctl.session)
    assert {p.token for p in found} == set(cam.model.profiles)
    for p in found:
        enc = cam.model.profile(p.token).encoder
        assert (p.encoding, p.width, p.height) == (enc.encoding, enc.width, enc.height)
    streams = await ctl.streams()
    main = cam.model.profile(found[0].token)
    assert streams[0].link.endswith(main.rtsp_path)
    assert f"127.0.0.1:{cam.rtsp_port}" in streams[0].link


async def _h265(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    found = await media.profiles(ctl.session)
    h265 = [p for p in found if p.encoding == "H265"]
    if h265:
        uri = await media.stream_uri(ctl.session, h265[0])
        assert cam.model.profile(h265[0].token).encoder.encoding == "H265"
        assert await _video_encoding(with_credentials(uri, USER, PASSWORD)) == "H265"
        return
    main = (await ctl.streams())[0]
    await ctl.set_encoder(
        EncoderRequest(
            StreamProfile(main.name),
            "H265",
            main.current_resolution,
            main.current_framerate,
            main.current_bitrate,
        )
    )


async def _snapshot(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    shot = await ctl.snapshot()
    assert shot.jpeg[:2] == b"\xff\xd8" and len(shot.jpeg) > 1000


async def _ptz_continuous(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    before = _pan(cam)
    await ctl.ptz_continuous(ContinuousMove(right=50))
    assert _moving(cam)
    await ctl.ptz_stop()
    assert not _moving(cam) and _pan(cam) > before
    # Left alone, the move ends by itself (the camera's Timeout or the agent's safety Stop).
    await ctl.ptz_continuous(ContinuousMove(left=50))
    assert _moving(cam)
    assert await _wait_for(lambda: not _moving(cam), ptz_module.SAFETY_STOP_AFTER + 2.0)


async def _ptz_relative(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    before = _pan(cam)
    await ctl.ptz_step(PtzMove.RIGHT, None, 2)
    assert not _moving(cam) and _pan(cam) > before


async def _ptz_absolute(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    info = await ctl.ptz()  # the camera's ranges, in its own space (Unsupported without PTZ)
    # A quarter and three quarters of the way along pan and tilt, in whatever space the camera
    # lists (generic or degrees); the camera's own model holds them on its generic -1..1 scale.
    x = info.pan_range.min_val + 0.25 * (info.pan_range.max_val - info.pan_range.min_val)
    y = info.tilt_range.min_val + 0.75 * (info.tilt_range.max_val - info.tilt_range.min_val)
    await camera_ops.ptz(ctl, {"command": "move_absolute", "x": x, "y": y})
    assert await _wait_for(lambda: not _moving(cam))
    state = cam.model.ptz.status(cam.model.monotonic())
    assert (state.pan, state.tilt) == pytest.approx((-0.5, 0.5), abs=0.02), (x, y, state)


async def _presets(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    if cam.model.faults.preset_refused_while_moving:
        await ctl.ptz_continuous(ContinuousMove(up=30))  # the quirk's case: still moving
    await ctl.ptz_preset_create("compat")
    assert not _moving(cam)
    stored = next(p for p in cam.model.ptz.presets if p.name == "compat")
    assert "compat" in await ctl.ptz_presets()
    await ctl.ptz_step(PtzMove.LEFT, None, 3)
    assert _pan(cam) != pytest.approx(stored.pan)
    await ctl.ptz_preset_apply("compat")
    assert await _wait_for(lambda: not _moving(cam))
    assert _pan(cam) == pytest.approx(stored.pan, abs=1e-3)
    await ctl.ptz_preset_delete("compat")
    assert all(p.name != "compat" for p in cam.model.ptz.presets)


async def _home(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    await ctl.ptz_step(PtzMove.RIGHT_UP, None, 1)
    home = _pan(cam)
    await ctl.ptz_home_save()
    await ctl.ptz_step(PtzMove.LEFT, None, 4)
    assert _pan(cam) != pytest.approx(home)
    await ctl.ptz_home_apply()
    assert await _wait_for(lambda: not _moving(cam))
    assert _pan(cam) == pytest.approx(home, abs=1e-3)


async def _imaging(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    info = await ctl.image()
    assert info.brightness is not None
    lo, hi = info.brightness.supported_range.min_val, info.brightness.supported_range.max_val
    scale = cam.model.faults.imaging_scale or (0.0, 100.0)
    assert (lo, hi) == scale
    await ctl.set_image_value("brightness", lo + 0.75 * (hi - lo))
    assert cam.model.imaging.settings.brightness == pytest.approx(75)


async def _encoder(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    streams = await ctl.streams()
    target = streams[-1]
    found = await media.profiles(ctl.session)
    token = found[len(streams) - 1].token
    fps = target.current_framerate - 1
    await ctl.set_encoder(
        EncoderRequest(
            StreamProfile(target.name),
            target.current_encoder,
            target.current_resolution,
            fps,
            target.current_bitrate,
        )
    )
    assert cam.model.profile(token).encoder.fps_limit == fps


async def _users(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    cam.model.create_users([User("viewer1", "Old-pass-1", UserLevel.USER)])
    assert {u.user_name for u in await ctl.list_users()} >= {USER, "viewer1"}
    await ctl.set_user_password("viewer1", "New-pass-2")
    user = cam.model.user("viewer1")
    assert user is not None and user.password == "New-pass-2"


async def _network(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    net = await ctl.get_network()
    assert (net.http.port, net.rtsp.port) == (cam.port, cam.rtsp_port)
    assert net.http.enabled and net.rtsp.enabled and not net.https.enabled


async def _events(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    await ctl.session.service("events")


async def _reboot(cam: SimCamera, ctl: OnvifControl, port: int) -> None:
    boot = cam.model.boot_time
    await ctl.reboot()
    assert await _wait_for(lambda: cam.model.boot_time != boot and cam.online, 5.0)


CHECKS: dict[str, Check] = {
    "discovery": _discovery,
    "identity": _identity,
    "profiles": _profiles,
    "h265": _h265,
    "snapshot": _snapshot,
    "network": _network,
    "users": _users,
    "imaging": _imaging,
    "encoder": _encoder,
    "ptz_relative": _ptz_relative,
    "ptz_continuous": _ptz_continuous,
    "presets": _presets,
    "home": _home,
    "ptz_absolute": _ptz_absolute,
    "events": _events,
    "reboot": _reboot,  # last: the camera restarts
}


async def _outcome(check: Check, cam: SimCamera, ctl: OnvifControl, port: int) -> str:
    try:
        await check(cam, ctl, port)
    except AssertionError as exc:
        return f"wrong result: {exc}"
    except Exception as exc:
        resp = camera_error_response(exc)
        if 400 <= resp.status < 500:
            return REFUSED
        return f"HTTP {resp.status} ({type(exc).__name__}: {exc})"
    return WORKS


def test_every_capability_has_a_check() -> None:
    assert sorted(CHECKS) == sorted(CAPABILITY_KEYS)


@pytest.mark.parametrize("persona", sorted(EXPECTED))
async def test_persona_matches_the_compatibility_matrix(
    persona: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ptz_module, "SAFETY_STOP_AFTER", 0.3)
    monkeypatch.setattr(onvif_device, "REBOOT_DOWNTIME", 0.05)
    expected: dict[str, Cell] = EXPECTED[persona]
    config = SimCameraConfig(username=USER, password=PASSWORD, persona=persona)
    async with SimCameraFleet([config], discovery_port=0, multicast=False) as fleet:
        cam, port = fleet.cameras[0], fleet.discovery_port
        assert port
        defaults = Faults().to_json()
        for key, cell in expected.items():
            if cell.outcome == WORKED_AROUND:  # the quirk it works around is really on
                assert (
                    cell.quirk and cam.model.faults.to_json()[cell.quirk] != defaults[cell.quirk]
                ), (persona, key)
        got: dict[str, str] = {}
        async with onvif_control(cam, USER, PASSWORD) as ctl:
            for key, check in CHECKS.items():
                got[key] = await _outcome(check, cam, ctl, port)
    want = {k: REFUSED if c.outcome == NOT_SUPPORTED else WORKS for k, c in expected.items()}
    assert got == want
