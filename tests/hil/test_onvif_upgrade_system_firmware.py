"""UpgradeSystemFirmware fallback: a simulated camera without StartFirmwareUpgrade takes the
image as an MTOM attachment through the agent's ordinary firmware path; a normal camera
still gets StartFirmwareUpgrade."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.camera.onvif import OnvifControl, OnvifSession
from agent.cloud import camera_ops
from agent.errors import AuthError, InvalidArgument
from agent.secret import Credentials
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.firmware import build_image
from agent.sim.camera.fleet import SimCameraFleet
from agent.sim.camera.model import User, UserLevel

USER, PASSWORD = "admin", "legacy-pw"
#: The switch: StartFirmwareUpgrade answers ActionNotSupported (docs/simulator.md).
NO_START = {"soap_faults": {"StartFirmwareUpgrade": "ter:ActionNotSupported"}}
SIM_LOG = "agent.sim.camera.firmware"


@asynccontextmanager
async def _camera(faults: dict[str, Any] | None) -> AsyncIterator[SimCamera]:
    config = SimCameraConfig(username=USER, password=PASSWORD, serial="LEG0001", faults=faults)
    async with SimCameraFleet([config], discovery_port=None) as fleet:
        yield fleet.cameras[0]


async def _control(cam: SimCamera, password: str = PASSWORD) -> OnvifControl:
    session = OnvifSession("127.0.0.1", cam.port, credentials=[Credentials(USER, password)])
    await session.connect()
    return OnvifControl(session)


def _image(tmp_path: Path, cam: SimCamera, version: str, *, cut: int = 0) -> tuple[Path, int]:
    data = build_image(version, os.urandom(300_000), model=cam.model.identity.model)
    data = data[: len(data) - cut] if cut else data
    path = tmp_path / f"fw-{version}.bin"
    path.write_bytes(data)
    return path, len(data)


def _installs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SIM_LOG and "installed" in r.msg]


def _reconnect(cam: SimCamera) -> Callable[[], Any]:
    async def reconnect() -> OnvifControl:
        return await _control(cam)

    return reconnect


async def _progress(stage: str, percent: int, message: str) -> None:
    del stage, percent, message


@pytest.mark.parametrize(
    "faults",
    [
        NO_START,
        # Capabilities unreadable: the agent learns it from the fault, here ter:NotSupported.
        {
            "soap_faults": {
                "StartFirmwareUpgrade": "ter:NotSupported",
                "GetServiceCapabilities": "ter:ActionNotSupported",
            }
        },
    ],
    ids=["capability", "fault"],
)
async def test_upgrade_through_upgrade_system_firmware(
    faults: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SIM_LOG)
    async with _camera(faults) as cam:
        control = await _control(cam)
        try:
            path, size = _image(tmp_path, cam, "3.1.0")
            result = await camera_ops.firmware(
                control, path, size, _progress, reconnect=_reconnect(cam)
            )
        finally:
            await control.close()
        assert (result["firmware_before"], result["firmware_after"]) == ("1.0.0", "3.1.0")
        assert _installs(caplog) == [
            "firmware 3.1.0 installed through UpgradeSystemFirmware, rebooting"
        ]
        fresh = await _control(cam)
        try:
            assert (await fresh.device_info()).firmware_version == "3.1.0"
        finally:
            await fresh.close()


async def test_refusals_change_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SIM_LOG)
    async with _camera(NO_START) as cam:
        control = await _control(cam)
        try:
            bad, bad_size = _image(tmp_path, cam, "4.0.1", cut=500)
            with pytest.raises(InvalidArgument, match="truncated"):
                await control.firmware_upgrade(bad, bad_size)
            other = build_image("4.0.2", b"x" * 1000, model="OTHER-9")
            foreign = tmp_path / "foreign.bin"
            foreign.write_bytes(other)
            with pytest.raises(InvalidArgument, match="model"):
                await control.firmware_upgrade(foreign, len(other))
            # The password changes under the session: the upload is refused as such.
            good, size = _image(tmp_path, cam, "4.0.0")
            cam.model.users[USER] = User(USER, "changed", UserLevel.ADMINISTRATOR)
            with pytest.raises(AuthError) as auth:
                await control.firmware_upgrade(good, size)
            assert PASSWORD not in str(auth.value)
        finally:
            await control.close()
        assert cam.model.identity.firmware_version == "1.0.0"
        assert _installs(caplog) == []


async def test_normal_camera_still_uses_start_firmware_upgrade(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SIM_LOG)
    async with _camera(None) as cam:
        control = await _control(cam)
        try:
            path, size = _image(tmp_path, cam, "2.5.0")
            ticket = await control.session.call("devicemgmt", "GetServiceCapabilities")
            assert ticket.System.HttpFirmwareUpgrade is True
            await control.firmware_upgrade(path, size)
        finally:
            await control.close()
        assert _installs(caplog) == [
            "firmware 2.5.0 installed through StartFirmwareUpgrade, rebooting"
        ]
        assert cam.model.identity.firmware_version == "2.5.0"
