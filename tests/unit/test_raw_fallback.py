"""Answers that break the schema (elements out of order or extra ones) lose no values: the
imaging and PTZ readers fall back to the raw XML, as the media readers do.

Against the simulated camera with its `misplaced_xml` switch: GetImagingSettings carries an
extra tt:VideoSourceToken before the settings, GetNodes a MaximumNumberOfPresetTours out of
its place; zeep then leaves the rest of the answer unread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent.camera.models import Range
from agent.camera.onvif import OnvifControl
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from tests.world import onvif_control, sim_camera

USER, PASSWORD = "admin", "raw-Fallback-1"


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    config = SimCameraConfig(
        username=USER, password=PASSWORD, serial="RAW0001", faults={"misplaced_xml": True}
    )
    async with sim_camera(config) as sim:
        yield sim


@pytest.fixture
async def control(cam: SimCamera) -> AsyncIterator[OnvifControl]:
    async with onvif_control(cam, USER, PASSWORD) as ctl:
        yield ctl


async def test_imaging_values_survive_an_extra_element(
    cam: SimCamera, control: OnvifControl
) -> None:
    image = await control.image()
    held = cam.model.imaging.settings
    assert image.brightness is not None and image.contrast is not None
    assert image.brightness.current_value == pytest.approx(held.brightness)
    assert image.brightness.supported_range == Range(0.0, 100.0)
    assert image.ir_cut_filter is not None
    assert image.ir_cut_filter.current_mode.upper() == held.ir_cut_filter.upper()
    # A write reads back through the same fallback.
    await control.set_image_value("brightness", 61)
    assert cam.model.imaging.settings.brightness == pytest.approx(61)
    assert (await control.image()).brightness.current_value == pytest.approx(61)  # type: ignore[union-attr]


async def test_ptz_node_survives_a_misplaced_element(control: OnvifControl) -> None:
    info = await control.ptz()
    assert info.home_supported
    assert info.default_speed is not None
    assert info.max_num_of_presets > 0
    assert info.pan_range == Range(-1.0, 1.0)
    await control.ptz_home_save()  # refused as unsupported when HomeSupported is lost
