"""Absolute PTZ moves against the simulated camera: the control layer (OnvifControl), the
cloud's `move_absolute` and the local API's `PUT .../ptz/position` through a running agent.
Every check reads the camera's own motion model, not the agent's answer."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.api.openapi import openapi_document
from agent.camera.control import OnvifControl
from agent.cloud import camera_ops
from agent.config import AgentConfig
from agent.errors import InvalidArgument, NotApplied, Unsupported
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.model import Faults
from tests.fakes import ApiClient, SpecChecker
from tests.world import SimCameraSpec, World, onvif_control, sim_camera, wait_until

USER, PASSWORD = "admin", "abs-Move-pw"
#: The agent's read-back tolerance: 1 % of a range (generic pan/tilt -1..1, zoom 0..1).
PAN_TOL, ZOOM_TOL = 0.02, 0.01


def _config(**faults: Any) -> SimCameraConfig:
    return SimCameraConfig(username=USER, password=PASSWORD, serial="ABS0001", faults=faults)


def _where(cam: SimCamera) -> tuple[float, float, float, bool]:
    """Pan, tilt, zoom (generic units) and whether the camera moves, from its motion model."""
    s = cam.model.ptz.status(cam.model.monotonic())
    return s.pan, s.tilt, s.zoom, s.pan_tilt_moving or s.zoom_moving


async def _settled(cam: SimCamera) -> tuple[float, float, float]:
    await wait_until(lambda: not _where(cam)[3], 6.0, "the camera at rest")
    pan, tilt, zoom, _moving = _where(cam)
    return pan, tilt, zoom


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    async with sim_camera(_config()) as sim:
        yield sim


@pytest.fixture
async def control(cam: SimCamera) -> AsyncIterator[OnvifControl]:
    async with onvif_control(cam, USER, PASSWORD) as ctl:
        yield ctl


async def test_absolute_move_lands_at_the_target(cam: SimCamera, control: OnvifControl) -> None:
    await control.ptz_absolute(0.3, -0.2, 0.4)
    pan, tilt, zoom, _moving = _where(cam)  # reached within the tolerance when answered
    assert pan == pytest.approx(0.3, abs=PAN_TOL) and tilt == pytest.approx(-0.2, abs=PAN_TOL)
    assert zoom == pytest.approx(0.4, abs=ZOOM_TOL)
    assert await _settled(cam) == pytest.approx((0.3, -0.2, 0.4))
    info = await control.ptz()
    assert info.position == pytest.approx((0.3, -0.2)) and info.zoom_position == 0.4


async def test_out_of_range_is_refused_and_the_camera_stays(
    cam: SimCamera, control: OnvifControl
) -> None:
    await control.ptz_absolute(0.1, 0.1, 0.2)
    before = await _settled(cam)
    for x, y, zoom, message in (
        (1.5, None, None, "x 1.5 is outside the camera's range -1..1"),
        (0.0, -1.01, None, "y -1.01 is outside the camera's range -1..1"),
        (None, None, 1.2, "zoom 1.2 is outside the camera's range 0..1"),
    ):
        with pytest.raises(InvalidArgument) as info:
            await control.ptz_absolute(x, y, zoom)
        assert str(info.value) == message
    pan, tilt, zoom, moving = _where(cam)
    assert (pan, tilt, zoom) == before and not moving


async def test_an_omitted_axis_keeps_its_position(cam: SimCamera, control: OnvifControl) -> None:
    await control.ptz_absolute(0.2, 0.1, 0.3)
    await _settled(cam)
    await control.ptz_absolute(None, -0.1, None)
    assert await _settled(cam) == pytest.approx((0.2, -0.1, 0.3))
    await control.ptz_absolute(None, None, 0.1)  # zoom only
    assert await _settled(cam) == pytest.approx((0.2, -0.1, 0.1))
    await camera_ops.ptz(control, {"camera_id": "c1", "command": "move_absolute", "x": 0.0})
    assert await _settled(cam) == pytest.approx((0.0, -0.1, 0.1))


async def test_degrees_camera_takes_degrees() -> None:
    async with (
        sim_camera(_config(ptz_degrees=True)) as cam,
        onvif_control(cam, USER, PASSWORD) as control,
    ):
        info = await control.ptz()
        assert (info.pan_range.min_val, info.pan_range.max_val) == (-180, 180)
        await control.ptz_absolute(90.0, -45.0, None)  # half of each degree range
        pan, tilt, _zoom = await _settled(cam)
        assert (pan, tilt) == pytest.approx((0.5, -0.5))
        with pytest.raises(InvalidArgument, match=re.escape("outside the camera's range -90..90")):
            await control.ptz_absolute(None, 95.0, None)
        assert (await _settled(cam))[:2] == pytest.approx((0.5, -0.5))


async def test_a_camera_that_ignores_the_move_is_not_applied(
    cam: SimCamera, control: OnvifControl
) -> None:
    await control.ptz_absolute(-0.2, 0.2, 0.3)
    await _settled(cam)
    cam.model.faults = Faults(ignored_ops=("AbsoluteMove",))  # empty success, no move
    t0 = time.monotonic()
    with pytest.raises(NotApplied) as info:
        await control.ptz_absolute(0.6, None, None)
    took = time.monotonic() - t0
    assert info.value.held == pytest.approx({"x": -0.2, "y": 0.2, "zoom": 0.3})
    assert "holds x -0.2, y 0.2, zoom 0.3" in str(info.value)
    assert await _settled(cam) == pytest.approx((-0.2, 0.2, 0.3))
    assert took < 3.0  # given up once the camera stayed idle, not at the move timeout


async def test_a_camera_without_ptz_is_unsupported() -> None:
    async with (
        sim_camera(_config(services_off=["ptz"])) as cam,
        onvif_control(cam, USER, PASSWORD) as control,
    ):
        with pytest.raises(Unsupported):
            await control.ptz_absolute(0.1, 0.1, None)


# --- through the agent's local API --------------------------------------------------------------


def _login(cfg: AgentConfig) -> AgentConfig:
    return replace(cfg, default_credentials=(Credentials(USER, Secret(PASSWORD)),))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[World, ApiClient, str]]:
    async with World(
        [SimCameraSpec(_config())], state_dir=tmp_path / "state", configure=_login
    ) as world:
        agent = await world.start_agent()
        await wait_until(lambda: world.online(1), 20.0, "the camera online")
        client = ApiClient(world.api_root, SpecChecker(openapi_document("test")))
        cid = next(c.id for c in agent.inventory.cameras())
        try:
            yield world, client, f"/api/v1/onvif/{cid}/ptz/position"
        finally:
            await client.close()


async def test_api_moves_the_camera_and_reports_refusals(
    api: tuple[World, ApiClient, str],
) -> None:
    world, client, path = api
    cam = world.fleet.cameras[0]
    ok = await client.call("PUT", path, {"x": 0.5, "y": -0.2, "zoom": 0.1})
    assert (ok.status, ok.json()) == (200, {"status": "ok"})
    assert await _settled(cam) == pytest.approx((0.5, -0.2, 0.1))
    info = (await client.call("GET", path.removesuffix("/position"))).json()
    assert info["pan_tilt"]["current_position"] == pytest.approx({"x": 0.5, "y": -0.2})

    out = await client.call("PUT", path, {"x": 0.5, "zoom": 1.5})
    assert (out.status, out.json()["status"]) == (400, "onvif_invalid_argument")
    assert out.json()["detail"] == "zoom 1.5 is outside the camera's range 0..1"
    nothing = await client.call("PUT", path, {"pan": 0.5})  # unknown fields are ignored
    assert (nothing.status, nothing.json()["status"]) == (400, "onvif_invalid_argument")
    bad = await client.call("PUT", path, {"x": "0.5"})
    assert bad.status == 422 and bad.json()["detail"][0]["loc"] == ["body", "x"]
    assert _where(cam)[:3] == pytest.approx((0.5, -0.2, 0.1))

    cam.model.faults = Faults(ignored_ops=("AbsoluteMove",))
    refused = await client.call("PUT", path, {"x": -0.5})
    assert (refused.status, refused.json()["status"]) == (409, "onvif_not_applied")
    assert "holds x 0.5, y -0.2, zoom 0.1" in refused.json()["detail"]
    assert _where(cam)[:3] == pytest.approx((0.5, -0.2, 0.1))

    audit = world.agent.audit.entries()[-5:]
    assert [(e["command"], e["status"]) for e in audit] == [
        ("PUT /onvif/{camera_id}/ptz/position", s) for s in (200, 400, 400, 422, 409)
    ]
    assert audit[0]["args"] == {"x": 0.5, "y": -0.2, "zoom": 0.1}
