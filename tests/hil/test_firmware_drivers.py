"""Camera firmware drivers (agent/camera/firmware_isapi.py, firmware_dahua.py) against the
camera's ISAPI side: PUT refused with 405 then POST, Digest, status polling, reboot."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.camera import firmware_isapi
from agent.errors import AuthError, InvalidArgument
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.control import state as cam_state
from agent.sim.camera.firmware import build_image
from agent.sim.camera.fleet import SimCameraFleet

PW = "isapi-pw"


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    async with SimCameraFleet(
        [SimCameraConfig(password=PW, name="Hik", serial="HIK1")], discovery_port=None
    ) as fleet:
        yield fleet.cameras[0]


def _image(tmp_path: Path, cam: SimCamera, version: str, *, cut: int = 0) -> tuple[Path, int]:
    data = build_image(version, os.urandom(50_000), model=cam.model.identity.model)
    data = data[: len(data) - cut] if cut else data
    path = tmp_path / f"fw-{version}.bin"
    path.write_bytes(data)
    return path, len(data)


async def test_isapi_upgrade_with_method_fallback(cam: SimCamera, tmp_path: Path) -> None:
    path, size = _image(tmp_path, cam, "5.7.1")
    stages: list[tuple[str, int]] = []

    async def progress(stage: str, percent: int, message: str) -> None:
        stages.append((stage, percent))

    isapi = cam.isapi
    assert isapi is not None
    base = f"http://127.0.0.1:{cam.port}"
    await firmware_isapi.upgrade(base, path, size, "admin", PW, progress)
    assert isapi.methods[:2] == ["PUT", "POST"]  # 405, then the developer guide's method
    assert ("upload", 100) in stages
    async with asyncio.timeout(20):
        while cam_state(cam)["firmware_version"] != "5.7.1":
            await asyncio.sleep(0.1)


async def test_isapi_refusals_change_nothing(cam: SimCamera, tmp_path: Path) -> None:
    async def progress(stage: str, percent: int, message: str) -> None:
        del stage, percent, message

    base = f"http://127.0.0.1:{cam.port}"
    path, size = _image(tmp_path, cam, "6.0.0")
    with pytest.raises(AuthError) as auth:
        await firmware_isapi.upgrade(base, path, size, "admin", "wrong", progress)
    assert "wrong" not in str(auth.value)
    cut, cut_size = _image(tmp_path, cam, "6.0.1", cut=100)
    with pytest.raises(InvalidArgument, match="refused the image"):
        await firmware_isapi.upgrade(base, cut, cut_size, "admin", PW, progress)
    assert cam_state(cam)["firmware_version"] == "1.0.0"


async def test_dahua_upgrade_and_refusals(cam: SimCamera, tmp_path: Path) -> None:
    from agent.camera import firmware_dahua

    seen: list[tuple[str, int]] = []

    async def progress(stage: str, percent: int, message: str) -> None:
        seen.append((stage, percent))

    base = f"http://127.0.0.1:{cam.port}"
    cut, cut_size = _image(tmp_path, cam, "7.0.1", cut=10)
    with pytest.raises(InvalidArgument, match="refused the image"):
        await firmware_dahua.upgrade(base, cut, cut_size, "admin", PW, progress)
    path, size = _image(tmp_path, cam, "7.0.0")
    with pytest.raises(AuthError):
        await firmware_dahua.upgrade(base, path, size, "admin", "nope", progress)
    assert cam_state(cam)["firmware_version"] == "1.0.0"
    await firmware_dahua.upgrade(base, path, size, "admin", PW, progress)
    assert ("upload", 100) in seen
    async with asyncio.timeout(20):
        while cam_state(cam)["firmware_version"] != "7.0.0":
            await asyncio.sleep(0.1)
