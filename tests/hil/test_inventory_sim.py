"""The inventory against simulated cameras on loopback, through the real ONVIF client."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from agent.discovery import records
from agent.discovery import session as session_module
from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraRecord, CameraState
from agent.discovery.scan import sweep
from agent.errors import AuthError, NotFound, Unsupported
from agent.secret import Credentials
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from agent.state import StateDir

PASSWORD = "pw-Inv3ntory"
RIGHT = Credentials("admin", PASSWORD)
WRONG = Credentials("admin", "not-the-password")


def config(serial: str, host: str = "127.0.0.1", **extra: object) -> SimCameraConfig:
    return SimCameraConfig(host=host, password=PASSWORD, name=serial, serial=serial, **extra)  # type: ignore[arg-type]


@pytest.fixture
async def fleet() -> AsyncIterator[SimCameraFleet]:
    cams = SimCameraFleet([config(f"INV{i}") for i in range(3)], discovery_port=0, multicast=False)
    await cams.start()
    try:
        yield cams
    finally:
        await cams.stop()


@pytest.fixture(autouse=True)
def fast_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "RETRY_BASE", 0.2)
    monkeypatch.setattr(records, "RETRY_MAX", 0.5)


async def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def discover(inventory: Inventory, fleet: SimCameraFleet) -> list[CameraRecord]:
    assert fleet.discovery_port is not None
    return await sweep(
        inventory, timeout=0.5, unicast=[("127.0.0.1", fleet.discovery_port)], multicast=False
    )


async def test_unicast_discovery_fills_the_inventory(fleet: SimCameraFleet) -> None:
    inventory = Inventory(None, default_credentials=[WRONG, RIGHT])
    try:
        found = await discover(inventory, fleet)
        assert len(found) == 3 and len(inventory.cameras()) == 3
        for cam in fleet.cameras:
            epr = cam.model.endpoint_reference
            rec = inventory.get(str(uuid.UUID(epr[9:])))
            assert rec.state is CameraState.ONLINE, rec.reason
            assert rec.serial_number == cam.config.serial
            assert rec.xaddr == cam.device_url and rec.endpoint_reference == epr
            assert rec.profiles and rec.profiles[0]["rtsp_uri"].startswith("rtsp://127.0.0.1:")
            assert rec.sources == {"wsd"} and rec.last_seen is not None
            assert rec.credentials == RIGHT  # the candidate that worked is remembered
    finally:
        await inventory.close()


async def test_wrong_password_then_new_credentials(
    fleet: SimCameraFleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cam = fleet.cameras[0]
    inventory = Inventory(None, default_credentials=[WRONG], recheck_interval=30.0)
    runner = asyncio.create_task(inventory.run())
    try:
        rec = await inventory.offer(cam.device_url, source="probe")
        assert rec.state is CameraState.UNAUTHORIZED
        assert rec.reason and rec.last_error == rec.reason
        with pytest.raises(AuthError):
            await inventory.control(rec.id)
        inventory.set_credentials(rec.id, RIGHT)
        await wait_for(lambda: rec.state is CameraState.ONLINE)
        assert rec.serial_number == cam.config.serial and rec.credentials == RIGHT
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await inventory.close()
    assert PASSWORD not in caplog.text and WRONG.password.reveal() not in caplog.text


async def test_reboot_goes_unreachable_then_online(fleet: SimCameraFleet) -> None:
    cam = fleet.cameras[1]
    inventory = Inventory(None, default_credentials=[RIGHT], recheck_interval=0.3)
    runner = asyncio.create_task(inventory.run())
    try:
        rec = await inventory.offer(cam.device_url, source="probe")
        assert rec.state is CameraState.ONLINE
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{cam.port}/sim/reboot"
            async with http.post(url, json={"seconds": 1.5}) as response:
                assert response.status == 202
        await wait_for(lambda: rec.state is CameraState.UNREACHABLE, 5)
        assert rec.reason
        await wait_for(lambda: rec.state is CameraState.ONLINE, 10)
        assert rec.failures == 0 and rec.last_error == ""
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await inventory.close()


async def test_camera_that_changes_address_keeps_its_id() -> None:
    inventory = Inventory(None, default_credentials=[RIGHT])
    first = SimCameraFleet([config("MOVER")], discovery_port=0, multicast=False)
    await first.start()
    try:
        (rec,) = await discover(inventory, first)
        old_xaddr = rec.xaddr
    finally:
        await first.stop()
    second = SimCameraFleet([config("MOVER", host="127.0.0.2")], discovery_port=0, multicast=False)
    await second.start()
    try:
        assert second.discovery_port is not None
        again = await inventory.offer(second.cameras[0].device_url, source="probe")
        assert again is rec  # matched by serial number
        assert rec.xaddr != old_xaddr and rec.address == "127.0.0.2"
        assert rec.addresses == ["127.0.0.1", "127.0.0.2"]
        found = await sweep(
            inventory,
            timeout=0.5,
            unicast=[("127.0.0.2", second.discovery_port)],
            multicast=False,
        )
        assert found == [rec] and len(inventory.cameras()) == 1
        assert rec.sources == {"wsd", "probe"} and rec.state is CameraState.ONLINE
    finally:
        await second.stop()
        await inventory.close()


async def test_restart_with_the_same_state_knows_the_cameras(
    fleet: SimCameraFleet, tmp_path: Path
) -> None:
    state = StateDir(tmp_path / "state")
    await asyncio.to_thread(state.ensure)
    first = Inventory(state, default_credentials=[RIGHT])
    try:
        known = {r.id for r in await discover(first, fleet)}
    finally:
        await first.close()
    second = Inventory(state, recheck_interval=30.0)  # no default credentials: stored ones
    await second.load()
    assert {r.id for r in second.cameras()} == known
    assert all(r.state is CameraState.UNREACHABLE and r.profiles for r in second.cameras())
    runner = asyncio.create_task(second.run())
    try:
        await wait_for(lambda: all(r.state is CameraState.ONLINE for r in second.cameras()))
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await second.close()


async def test_garbage_slow_and_absent_cameras_do_not_hold_up_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session_module, "INSPECT_TIMEOUT", 1.5)
    cams = [
        SimCamera(config("GOOD")),
        SimCamera(config("LIAR", faults={"soap_garbage": True})),
        SimCamera(config("SLOW", faults={"soap_latency": 5.0})),
    ]
    for cam in cams:
        await cam.start()
    with __import__("socket").socket() as closed:
        closed.bind(("127.0.0.1", 0))
        absent = f"http://127.0.0.1:{closed.getsockname()[1]}/onvif/device_service"
    inventory = Inventory(None, default_credentials=[RIGHT], timeout=1.0)
    try:
        start = time.monotonic()
        good, liar, slow, gone = await asyncio.gather(
            inventory.offer(cams[0].device_url, source="probe"),
            inventory.offer(cams[1].device_url, source="probe"),
            inventory.offer(cams[2].device_url, source="probe"),
            inventory.offer(absent, source="probe"),
        )
        assert time.monotonic() - start < 4.0
        assert good.state is CameraState.ONLINE
        assert liar.state is CameraState.NOT_ONVIF and liar.reason
        assert slow.state is CameraState.UNREACHABLE and "timed out" in slow.reason
        assert gone.state is CameraState.UNREACHABLE and gone.reason
        assert len(inventory.cameras()) == 4
    finally:
        await inventory.close()
        for cam in cams:
            await cam.stop()


async def test_control_is_cached_per_camera(fleet: SimCameraFleet) -> None:
    inventory = Inventory(None, default_credentials=[RIGHT])
    try:
        with pytest.raises(NotFound):
            await inventory.control("no-such-camera")
        (rec, *_) = await discover(inventory, fleet)
        if session_module.control_factory() is None:
            with pytest.raises(Unsupported):
                await inventory.control(rec.id)
            return
        control = await inventory.control(rec.id)
        assert await inventory.control(rec.id) is control
        info = await control.device_info()
        assert info.serial_number == rec.serial_number
    finally:
        await inventory.close()
