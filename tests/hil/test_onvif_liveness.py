"""Liveness looks past the TCP connect: a camera whose web server still accepts connections but
whose ONVIF service answers junk is shown in error with the reason, and online again once its
GetSystemDateAndTime answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from agent.discovery import records
from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraState
from agent.health import liveness
from agent.health.liveness import CameraLiveness
from agent.net.reach import answers
from agent.secret import Credentials
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.model import Faults

PASSWORD = "pw-L1veness"
RIGHT = Credentials("admin", PASSWORD)


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    camera = SimCamera(SimCameraConfig(password=PASSWORD, name="Alive", serial="LIVE0001"))
    await camera.start()
    try:
        yield camera
    finally:
        await camera.stop()


@pytest.fixture(autouse=True)
def fast_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "RETRY_BASE", 0.2)
    monkeypatch.setattr(records, "RETRY_MAX", 0.5)


async def wait_for(check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_broken_onvif_behind_a_live_port_is_an_error(cam: SimCamera) -> None:
    assert liveness.ONVIF_INTERVAL > liveness.INTERVAL  # the SOAP check is the slower one
    inventory = Inventory(None, default_credentials=[RIGHT], recheck_interval=3600.0)
    rec = await inventory.offer(cam.device_url, source="probe")
    assert rec.state is CameraState.ONLINE, rec.reason
    probe = CameraLiveness(inventory, interval=0.1, onvif_interval=0.3, timeout=1.0)
    tasks = [asyncio.create_task(inventory.run()), asyncio.create_task(probe.run())]
    try:
        await asyncio.sleep(1.0)
        assert rec.state is CameraState.ONLINE, rec.reason  # a healthy camera stays online
        cam.model.faults = Faults.from_json({"soap_garbage": True}, base=cam.model.faults)
        await wait_for(lambda: rec.state is CameraState.ERROR)
        assert "GetSystemDateAndTime" in rec.reason
        assert await answers("127.0.0.1", cam.port, 1.0)  # TCP still connects
        await asyncio.sleep(1.5)  # neither the inventory nor the TCP probe undoes it
        assert rec.state is CameraState.ERROR, rec.reason
        cam.model.faults = Faults()
        await wait_for(lambda: rec.state is CameraState.ONLINE)
        assert rec.reason == "" and rec.id == records.camera_id("", "LIVE0001", "")
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await inventory.close()


async def test_a_soap_fault_still_proves_the_service_lives(cam: SimCamera) -> None:
    inventory = Inventory(None, default_credentials=[RIGHT], recheck_interval=3600.0)
    rec = await inventory.offer(cam.device_url, source="probe")
    cam.model.faults = Faults.from_json({"soap_faults": {"GetSystemDateAndTime": "ter:Action"}})
    probe = CameraLiveness(inventory, interval=0.1, onvif_interval=0.2, timeout=1.0)
    task = asyncio.create_task(probe.run())
    try:
        await asyncio.sleep(1.5)
        assert rec.state is CameraState.ONLINE, rec.reason
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await inventory.close()
