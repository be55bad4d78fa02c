"""The control layer (OnvifSession + OnvifControl) against a simulated camera on loopback:
every command, checked on the simulator's own state and, for encoders, by a real RTSP client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import av
import pytest

from agent.camera.models import (
    ContinuousMove,
    EncoderRequest,
    PtzMove,
    PtzZoom,
    Resolution,
    StreamProfile,
)
from agent.camera.onvif import OnvifControl, OnvifSession
from agent.errors import AuthError, InvalidArgument, NotConfigured, Unavailable, Unsupported
from agent.secret import Credentials
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from agent.sim.camera.model import Faults, User, UserLevel
from tests.ports import free_port as _free_port
from tests.world import onvif_control

USER, PASSWORD = "admin", "s3cret"


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    config = SimCameraConfig(username=USER, password=PASSWORD, name="Porch", serial="CTL0001")
    async with SimCameraFleet([config], discovery_port=None) as fleet:
        yield fleet.cameras[0]


@pytest.fixture
async def control(cam: SimCamera) -> AsyncIterator[OnvifControl]:
    async with onvif_control(cam, USER, PASSWORD) as ctl:
        yield ctl


def _decode_size(url: str, frames: int = 3) -> tuple[int, int]:
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(10, 10)) as c:
        for n, frame in enumerate(c.decode(c.streams.video[0])):
            if n + 1 >= frames:
                return frame.width, frame.height
    raise AssertionError("no frames")


def _pan(cam: SimCamera) -> tuple[float, float, float, bool]:
    s = cam.model.ptz.status(cam.model.monotonic())
    return s.pan, s.tilt, s.zoom, s.pan_tilt_moving or s.zoom_moving


async def test_first_working_credentials_win_and_are_reported(cam: SimCamera) -> None:
    good = Credentials(USER, PASSWORD)
    session = OnvifSession("127.0.0.1", cam.port, credentials=[Credentials(USER, "wrong"), good])
    async with session:
        assert session.credentials_used == good
        info = await OnvifControl(session).device_info()
    assert info.serial_number == "CTL0001"
    assert info.manufacturer == cam.model.identity.manufacturer


async def test_no_credentials_and_wrong_credentials(cam: SimCamera) -> None:
    with pytest.raises(NotConfigured):
        await OnvifSession("127.0.0.1", cam.port).connect()
    session = OnvifSession(
        "127.0.0.1", cam.port, credentials=[Credentials(USER, "a"), Credentials("x", "b")]
    )
    with pytest.raises(AuthError) as err:
        await session.connect()
    assert "a" not in str(err.value).split() and "b" not in str(err.value).split()
    assert session.credentials_used is None


async def test_camera_clock_90_days_off(cam: SimCamera) -> None:
    cam.model.faults = Faults(clock_skew=90 * 86400.0)
    async with OnvifSession("127.0.0.1", cam.port, USER, PASSWORD) as session:
        assert (await session.device_info()).model == cam.model.identity.model
        details = await session.details()  # Media2 signs with the same clock offset
        assert details.profiles[-1].token == "h265"


async def test_details_include_the_media2_only_h265_profile(control: OnvifControl) -> None:
    details = await control.session.details()
    assert [p.token for p in details.profiles] == ["main", "sub", "h265"]
    h265 = details.profiles[2]
    assert (h265.encoding, h265.width, h265.height) == ("H265", 640, 360)
    assert h265.rtsp_uri.endswith("/live/h265")
    assert details.ptz and details.imaging and details.snapshot_uri


async def test_network_ports(cam: SimCamera, control: OnvifControl) -> None:
    ports = await control.get_network()
    assert ports.http.port == cam.port and ports.http.enabled
    assert ports.rtsp.port == cam.rtsp_port and not ports.https.enabled
    new = _free_port()
    await control.set_network(rtsp=new)
    assert cam.model.rtsp_port == new
    with pytest.raises(InvalidArgument):
        await control.set_network(https=8443)  # the camera cannot do HTTPS
    with pytest.raises(InvalidArgument):
        await control.set_network(rtsp=70000)


async def test_users_and_password(cam: SimCamera, control: OnvifControl) -> None:
    cam.model.create_users([User("viewer", "old", UserLevel.USER)])
    users = {u.user_name: u.user_level for u in await control.list_users()}
    assert users == {USER: "Administrator", "viewer": "User"}
    await control.set_user_password("viewer", "n3w-pass")
    viewer = cam.model.user("viewer")
    assert viewer is not None and viewer.password == "n3w-pass" and viewer.level == UserLevel.USER
    with pytest.raises(InvalidArgument):
        await control.set_user_password("viewer", "x" * 17)
    with pytest.raises(InvalidArgument):
        await control.set_user_password("nobody", "pw")


async def test_streams_and_encoder_change_reach_the_live_stream(
    cam: SimCamera, control: OnvifControl
) -> None:
    streams = await control.streams()
    assert [s.name for s in streams] == ["MAIN_STREAM", "SUB_STREAM_1", "SUB_STREAM_2"]
    sub = streams[1]
    assert sub.current_resolution == Resolution(640, 360) and sub.current_bitrate == 512
    h264 = sub.supported_encoders[0]
    assert h264.name == "H264" and Resolution(320, 180) in h264.supported_resolutions
    assert (h264.bitrate_range.min_val, h264.bitrate_range.max_val) == (32, 8192)
    assert streams[2].current_encoder == "H265"

    request = EncoderRequest(StreamProfile.SUB_STREAM_1, "H264", Resolution(320, 180), 12, 400, 24)
    await control.set_encoder(request)
    enc = cam.model.profile("sub").encoder
    assert (enc.width, enc.height, enc.fps_limit, enc.bitrate_kbps, enc.gov_length) == (
        320,
        180,
        12,
        400,
        24,
    )
    url = cam.rtsp_url("sub").replace("rtsp://", f"rtsp://{USER}:{PASSWORD}@")
    assert await asyncio.to_thread(_decode_size, url) == (320, 180)

    await control.set_encoder(
        EncoderRequest(StreamProfile.SUB_STREAM_2, "H265", Resolution(320, 180), 8, 200, 16)
    )
    assert cam.model.profile("h265").encoder.width == 320

    for bad in (
        EncoderRequest(StreamProfile.SUB_STREAM_1, "H264", Resolution(1920, 1080), 12, 400),
        EncoderRequest(StreamProfile.SUB_STREAM_1, "H264", Resolution(320, 180), 99, 400),
        EncoderRequest(StreamProfile.SUB_STREAM_1, "H264", Resolution(320, 180), 12, 9000),
        EncoderRequest(StreamProfile.SUB_STREAM_1, "H265", Resolution(320, 180), 12, 400),
        EncoderRequest(StreamProfile.SUB_STREAM_1, "H264", Resolution(320, 180), 12, 400, 0),
    ):
        with pytest.raises(InvalidArgument):
            await control.set_encoder(bad)
    assert cam.model.profile("sub").encoder.fps_limit == 12


async def test_image_settings(cam: SimCamera, control: OnvifControl) -> None:
    info = await control.image()
    assert info.brightness is not None and info.brightness.current_value == 50
    assert info.ir_cut_filter is not None and "AUTO" in info.ir_cut_filter.supported_modes
    await control.set_image_value("brightness", 70)
    await control.set_image_value("saturation", 20)
    await control.set_backlight("ON")
    await control.set_ir_cut_filter("OFF")
    await control.set_exposure(1000)
    await control.set_wide_dynamic_range("ON", 80)
    await control.set_white_balance("MANUAL", 100, 90)
    s = cam.model.imaging.settings
    assert (s.brightness, s.color_saturation, s.backlight_mode, s.ir_cut_filter) == (
        70,
        20,
        "ON",
        "OFF",
    )
    assert (s.exposure_mode, s.exposure_time) == ("MANUAL", 1000)
    assert (s.wdr_mode, s.wdr_level, s.wb_mode, s.cr_gain, s.cb_gain) == (
        "ON",
        80,
        "MANUAL",
        100,
        90,
    )
    info = await control.image()
    assert info.exposure is not None and info.exposure.current_range.min_val == 1000
    for call in (
        control.set_image_value("brightness", 101),
        control.set_image_value("hue", 1),
        control.set_backlight("MAYBE"),
        control.set_exposure(5),
        control.set_white_balance(None, 300, None),
    ):
        with pytest.raises(InvalidArgument):
            await call
    assert cam.model.imaging.settings.brightness == 70


async def test_ptz_steps_continuous_and_stop(cam: SimCamera, control: OnvifControl) -> None:
    info = await control.ptz()
    assert info.pan_range.min_val == -1 and info.max_num_of_presets == 32 and info.home_supported
    await control.ptz_step(PtzMove.RIGHT_UP, PtzZoom.ZOOM_IN, 5)
    pan, tilt, zoom, moving = _pan(cam)
    assert pan == pytest.approx(0.2) and tilt == pytest.approx(0.2)
    assert zoom == pytest.approx(0.1) and not moving
    await control.ptz_step(PtzMove.LEFT, None, 10)
    assert _pan(cam)[0] == pytest.approx(-0.2)
    with pytest.raises(InvalidArgument):
        await control.ptz_step(PtzMove.LEFT, None, 11)

    await control.ptz_continuous(ContinuousMove(left=100, zoom_out=50))
    armed = control.ptz_safety_armed
    assert _pan(cam)[3] and armed
    vel = cam.model.ptz.pan.velocity, cam.model.ptz.zoom.velocity
    assert vel[0] < 0 and vel[1] == pytest.approx(vel[0] / 2)
    await control.ptz_continuous(ContinuousMove())  # all zero = stop
    armed = control.ptz_safety_armed
    assert not _pan(cam)[3] and not armed
    await control.ptz_continuous(ContinuousMove(up=30))
    await control.ptz_stop()
    assert not _pan(cam)[3]
    with pytest.raises(InvalidArgument):
        await control.ptz_continuous(ContinuousMove(up=101))


async def test_ptz_home_and_presets(cam: SimCamera, control: OnvifControl) -> None:
    await control.ptz_step(PtzMove.RIGHT, None, 5)
    await control.ptz_home_save()
    assert cam.model.ptz.home.pan == pytest.approx(0.2)
    await control.ptz_preset_create("gate")
    await control.ptz_step(PtzMove.LEFT, None, 10)
    await control.ptz_preset_create("door")
    assert await control.ptz_presets() == ["gate", "door"]
    with pytest.raises(InvalidArgument):
        await control.ptz_preset_create("gate")
    await control.ptz_preset_apply("gate")
    for _ in range(50):
        if not _pan(cam)[3]:
            break
        await asyncio.sleep(0.1)
    assert _pan(cam)[0] == pytest.approx(0.2)
    await control.ptz_home_apply()
    await control.ptz_preset_delete("door")
    assert [p.name for p in cam.model.ptz.presets] == ["gate"]
    with pytest.raises(InvalidArgument):
        await control.ptz_preset_apply("door")


async def test_snapshot_and_reboot(cam: SimCamera, control: OnvifControl) -> None:
    snap = await control.snapshot()
    assert snap.jpeg.startswith(b"\xff\xd8") and abs(snap.timestamp - time.time()) < 5
    booted = cam.model.boot_time
    await control.reboot()
    for _ in range(60):
        if cam.model.boot_time != booted:
            break
        await asyncio.sleep(0.1)
    assert cam.model.boot_time > booted


async def test_camera_faults_map_to_agent_errors(cam: SimCamera, control: OnvifControl) -> None:
    cam.model.faults = Faults(
        soap_faults={
            "GetImagingSettings": "ter:ActionNotSupported",
            "GetUsers": "ter:NotAuthorized",
            "SetImagingSettings": "ter:InvalidArgVal",
        }
    )
    with pytest.raises(Unsupported):
        await control.image()
    with pytest.raises(AuthError):
        await control.list_users()
    cam.model.faults = Faults(soap_faults={"SetImagingSettings": "ter:InvalidArgVal"})
    with pytest.raises(InvalidArgument, match="InvalidArgVal"):
        await control.set_image_value("brightness", 10)


async def test_a_silent_camera_times_out(cam: SimCamera) -> None:
    async with OnvifSession("127.0.0.1", cam.port, USER, PASSWORD, timeout=0.3) as session:
        cam.model.faults = Faults(soap_latency=1.0)
        with pytest.raises(Unavailable, match="timed out"):
            await OnvifControl(session).device_info()
