"""Writes are read back: a camera that answers a Set* call with an empty success and
changes nothing (the simulated camera's `ignored_ops` switch) gets `NotApplied` naming what
it holds, through the control layer, the local API (409 `onvif_not_applied`) and the cloud's
camera_config; a camera that keeps values on its own grid (0..255) is not refused for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent.api.errors import camera_error_response
from agent.camera.models import EncoderRequest, PtzMove, StreamProfile
from agent.camera.onvif import OnvifControl
from agent.cloud.camera_config import camera_config_set
from agent.cloud.commands import error_code
from agent.errors import NotApplied
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.model import Faults
from tests.ports import free_port as _free_port
from tests.world import onvif_control, sim_camera

USER, PASSWORD = "admin", "verify-Writes-1"


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    async with sim_camera(
        SimCameraConfig(username=USER, password=PASSWORD, serial="VRF0001")
    ) as sim:
        yield sim


@pytest.fixture
async def control(cam: SimCamera) -> AsyncIterator[OnvifControl]:
    async with onvif_control(cam, USER, PASSWORD) as ctl:
        yield ctl


def _ignore(cam: SimCamera, *operations: str) -> None:
    cam.model.faults = Faults.from_json({"ignored_ops": list(operations)}, base=cam.model.faults)


async def test_ignored_network_write_is_not_applied(cam: SimCamera, control: OnvifControl) -> None:
    before = cam.rtsp_port
    _ignore(cam, "SetNetworkProtocols")
    with pytest.raises(NotApplied) as caught:
        await control.set_network(rtsp=_free_port())
    assert caught.value.held == {"rtsp": before}
    response = camera_error_response(caught.value)
    assert response.status == 409 and "onvif_not_applied" in (response.text or "")
    assert str(before) in (response.text or "")
    _ignore(cam)
    new = _free_port()
    await control.set_network(rtsp=new)  # an applied change is a success
    assert cam.model.rtsp_port == new


async def test_ignored_encoder_write_is_not_applied(cam: SimCamera, control: OnvifControl) -> None:
    main = (await control.streams())[0]
    _ignore(cam, "SetVideoEncoderConfiguration")
    request = EncoderRequest(
        StreamProfile.MAIN_STREAM,
        main.current_encoder,
        main.current_resolution,
        main.current_framerate,
        main.current_bitrate // 2,
    )
    with pytest.raises(NotApplied) as caught:
        await control.set_encoder(request)
    assert caught.value.held == {"bitrate": main.current_bitrate}


async def test_ignored_imaging_write_is_not_applied(cam: SimCamera, control: OnvifControl) -> None:
    held = cam.model.imaging.settings.brightness
    _ignore(cam, "SetImagingSettings")
    with pytest.raises(NotApplied) as caught:
        await control.set_image_value("brightness", 90 if held < 50 else 10)
    assert caught.value.held == {"Brightness": pytest.approx(held)}
    now = cam.model.imaging.settings.ir_cut_filter.upper()
    with pytest.raises(NotApplied):
        await control.set_ir_cut_filter("OFF" if now != "OFF" else "ON")


async def test_ignored_home_position_is_not_applied(cam: SimCamera, control: OnvifControl) -> None:
    await control.ptz_home_save()  # applied: no error
    home = cam.model.ptz.status(cam.model.monotonic())
    _ignore(cam, "SetHomePosition")
    await control.ptz_step(PtzMove.RIGHT, None, 5)
    moved = cam.model.ptz.status(cam.model.monotonic())
    with pytest.raises(NotApplied) as caught:
        await control.ptz_home_save()
    assert caught.value.held["pan"] == pytest.approx(home.pan, abs=0.02)
    back = cam.model.ptz.status(cam.model.monotonic())
    assert back.pan == pytest.approx(moved.pan, abs=0.02)  # moved back where it was


async def test_rounding_camera_is_not_refused(cam: SimCamera, control: OnvifControl) -> None:
    cam.model.faults = Faults.from_json({"imaging_scale": [0, 255]}, base=cam.model.faults)
    await control.set_image_value("brightness", 128)  # held as 50.2 % of 0..255 at most
    image = await control.image()
    assert image.brightness is not None
    assert abs(image.brightness.current_value - 128) <= 255 * 0.01


async def test_cloud_camera_config_reports_not_applied(
    cam: SimCamera, control: OnvifControl
) -> None:
    _ignore(cam, "SetImagingSettings")
    held = cam.model.imaging.settings.contrast
    with pytest.raises(NotApplied) as caught:
        await camera_config_set(
            control, {"sensor": {"contrast_correction": 5 if held > 50 else 95}}
        )
    assert cam.model.imaging.settings.contrast == held
    assert error_code(caught.value) == "onvif_not_applied"  # the cloud reply's error code


async def test_cloud_camera_config_reads_orientation_back(
    cam: SimCamera, control: OnvifControl
) -> None:
    held = await control.image_orientation()
    _ignore(cam, "SetVideoSourceConfiguration")
    wanted = "upside_down" if held == "normal" else "normal"
    with pytest.raises(NotApplied) as caught:
        await camera_config_set(control, {"sensor": {"image_orientation": wanted}})
    assert caught.value.held == {"image_orientation": held}
    _ignore(cam)
    reply = await camera_config_set(control, {"sensor": {"image_orientation": wanted}})
    assert reply["sensor"]["image_orientation"] == wanted
