"""The control layer against a simulated camera misbehaving the way real cameras do:
every quirk switch on, the answer still right (or a clear error)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from agent.camera import ptz as ptz_module
from agent.camera.models import ContinuousMove, PtzMove
from agent.camera.onvif import OnvifControl
from agent.errors import InvalidArgument, ProtocolError
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from agent.sim.camera.model import Faults
from tests.world import onvif_control

USER, PASSWORD = "admin", "s3cret"


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    config = SimCameraConfig(username=USER, password=PASSWORD, name="Quirky", serial="QRK0001")
    async with SimCameraFleet([config], discovery_port=None) as fleet:
        yield fleet.cameras[0]


@pytest.fixture
async def control(cam: SimCamera) -> AsyncIterator[OnvifControl]:
    async with onvif_control(cam, USER, PASSWORD) as ctl:
        yield ctl


def _state(cam: SimCamera) -> tuple[float, float, bool]:
    s = cam.model.ptz.status(cam.model.monotonic())
    return s.pan, s.tilt, s.pan_tilt_moving or s.zoom_moving


async def test_nonconforming_xml_falls_back_to_the_raw_answer(
    cam: SimCamera, control: OnvifControl
) -> None:
    cam.model.faults = Faults(nonconforming_xml=True)
    info = await control.device_info()
    ident = cam.model.identity
    assert (info.manufacturer, info.model, info.firmware_version, info.serial_number) == (
        ident.manufacturer,
        ident.model,
        ident.firmware_version,
        "QRK0001",
    )
    details = await control.session.details()
    assert [p.name for p in details.profiles] == ["MainStream", "SubStream", "H265Stream"]
    assert [(p.width, p.height) for p in details.profiles][:2] == [(1280, 720), (640, 360)]
    streams = await control.streams()
    assert streams[0].current_resolution.width == 1280


@pytest.mark.parametrize("scale", [(-50.0, 50.0), (0.0, 255.0)])
async def test_imaging_on_other_scales(
    cam: SimCamera, control: OnvifControl, scale: tuple[float, float]
) -> None:
    cam.model.faults = Faults(imaging_scale=scale)
    lo, hi = scale
    info = await control.image()
    assert info.brightness is not None
    assert (
        info.brightness.supported_range.min_val,
        info.brightness.supported_range.max_val,
    ) == scale
    assert info.brightness.current_value == pytest.approx((lo + hi) / 2)  # the model's 50 %
    await control.set_image_value("brightness", lo + 0.75 * (hi - lo))
    assert cam.model.imaging.settings.brightness == pytest.approx(75)
    with pytest.raises(InvalidArgument):
        await control.set_image_value("contrast", hi + 1)
    with pytest.raises(InvalidArgument):
        await control.set_image_value("contrast", lo - 1)
    assert cam.model.imaging.settings.contrast == 50


async def test_ptz_in_degrees(cam: SimCamera, control: OnvifControl) -> None:
    cam.model.faults = Faults(ptz_degrees=True)
    info = await control.ptz()
    assert (info.pan_range.min_val, info.pan_range.max_val) == (-180, 180)
    assert (info.tilt_range.min_val, info.tilt_range.max_val) == (-90, 90)
    await control.ptz_step(PtzMove.RIGHT_DOWN, None, 5)  # 10 % of each range
    pan, tilt, moving = _state(cam)
    assert pan == pytest.approx(0.2) and tilt == pytest.approx(-0.2) and not moving
    info = await control.ptz()
    assert info.position == pytest.approx((36.0, -18.0))
    await control.ptz_preset_create("deg")
    assert cam.model.ptz.presets[0].pan == pytest.approx(0.2)


async def test_empty_http_200_is_a_clear_protocol_error(
    cam: SimCamera, control: OnvifControl
) -> None:
    cam.model.faults = Faults(empty_ok_ops=("GetPresets", "GetNetworkProtocols"))
    with pytest.raises(ProtocolError, match="empty"):
        await control.ptz_presets()
    with pytest.raises(ProtocolError, match="empty"):
        await control.get_network()
    assert (await control.device_info()).serial_number == "QRK0001"


async def test_moves_that_never_time_out_are_stopped(
    cam: SimCamera, control: OnvifControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ptz_module, "SAFETY_STOP_AFTER", 0.3)
    cam.model.faults = Faults(ptz_ignore_timeout=True)
    await control.ptz_continuous(ContinuousMove(right=10))
    assert _state(cam)[2]
    assert cam.model.ptz.pan.velocity == pytest.approx(0.5)  # speed ignored: full speed
    await asyncio.sleep(0.6)
    assert not _state(cam)[2] and not control.ptz_safety_armed
    # A new command re-arms the timer instead of stopping early.
    await control.ptz_continuous(ContinuousMove(left=10))
    await asyncio.sleep(0.2)
    await control.ptz_continuous(ContinuousMove(left=20))
    await asyncio.sleep(0.2)
    assert _state(cam)[2]
    await asyncio.sleep(0.3)
    assert not _state(cam)[2]


async def test_step_without_relative_move_ends_with_stop(
    cam: SimCamera, control: OnvifControl
) -> None:
    cam.model.faults = Faults(
        ptz_ignore_timeout=True, soap_faults={"RelativeMove": "ter:ActionNotSupported"}
    )
    await control.ptz_step(PtzMove.UP, None, 4)
    pan, tilt, moving = _state(cam)
    assert not moving and pan == 0 and tilt > 0


async def test_preset_refused_while_moving_is_retried(
    cam: SimCamera, control: OnvifControl, caplog: pytest.LogCaptureFixture
) -> None:
    cam.model.faults = Faults(preset_refused_while_moving=True)
    await control.ptz_continuous(ContinuousMove(right=100))
    with caplog.at_level(logging.INFO, logger="agent.camera.ptz"):
        await control.ptz_preset_create("after-stop")
    assert "refused SetPreset while moving" in caplog.text
    assert [p.name for p in cam.model.ptz.presets] == ["after-stop"]
    assert not _state(cam)[2]
