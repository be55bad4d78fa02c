"""The agent's command runner (agent/cloud/commands.py) with a real inventory and simulated
cameras: per-camera order, parallel cameras, deadlines, error codes, audit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.audit import AuditLog, read_entries
from agent.cloud.commands import CommandError, CommandRunner
from agent.discovery.inventory import Inventory
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from agent.state import StateDir

LATENCY = 0.3


@pytest.fixture
async def setup(
    tmp_path: Path,
) -> AsyncIterator[tuple[CommandRunner, Inventory, list[SimCamera], AuditLog]]:
    cams = [SimCameraConfig(name=f"R{i}", serial=f"RUN{i}") for i in range(2)]
    async with SimCameraFleet(cams, discovery_port=None) as fleet:
        state = StateDir(tmp_path / "state")
        await asyncio.to_thread(state.ensure)
        inventory = Inventory(state, default_credentials=(Credentials("admin", Secret("admin")),))
        for cam in fleet.cameras:
            await inventory.offer(cam.device_url, source="probe")
        audit = AuditLog(state)
        runner = CommandRunner(inventory, audit, state)
        try:
            yield runner, inventory, fleet.cameras, audit
        finally:
            await inventory.close()


async def _latency(cam: SimCamera, seconds: float) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.put(f"http://127.0.0.1:{cam.port}/sim/faults", json={"soap_latency": seconds}) as r,
    ):
        assert r.status == 200


def _ids(inventory: Inventory, cams: list[SimCamera]) -> list[str]:
    by_xaddr = {c.xaddr: c.id for c in inventory.cameras()}
    return [by_xaddr[cam.device_url] for cam in cams]


async def test_one_camera_in_order_two_cameras_in_parallel(
    setup: tuple[CommandRunner, Inventory, list[SimCamera], AuditLog],
) -> None:
    runner, inventory, cams, _ = setup
    a, b = _ids(inventory, cams)
    stop = {"command": "stop"}
    for cid in (a, b):  # warm the control connections
        await runner.run("camera_ptz", {"camera_id": cid, **stop})
    for cam in cams:
        await _latency(cam, LATENCY)

    async def timed(*cids: str) -> float:
        t0 = time.monotonic()
        await asyncio.gather(*(runner.run("camera_ptz", {"camera_id": c, **stop}) for c in cids))
        return time.monotonic() - t0

    one = await timed(a)
    same = await timed(a, a, a)
    both = await timed(a, b)
    assert one >= LATENCY
    assert same >= 2.7 * one  # one after the other
    assert both < 1.6 * one  # side by side


async def test_errors_carry_the_local_api_codes(
    setup: tuple[CommandRunner, Inventory, list[SimCamera], AuditLog],
) -> None:
    runner, inventory, cams, audit = setup
    a, _ = _ids(inventory, cams)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("camera_ptz", {"camera_id": "nope", "command": "stop"}, "not_found"),
        ("camera_ptz", {"command": "stop"}, "invalid_request"),
        ("camera_ptz", {"camera_id": a, "command": "move_continuous", "up": 500},
         "invalid_request"),
        ("camera_ptz", {"camera_id": a, "command": "stop", "deadline_ms": 1},
         "temporarily_unavailable"),
        ("camera_ptz", {"camera_id": a, "command": "stop", "deadline_ms": "soon"},
         "invalid_request"),
        ("camera_firmware", {"camera_id": a, "proto": "floppy", "url": "http://x/", "size": 1,
                             "sha256": "0" * 64}, "invalid_request"),
        ("camera_firmware", {"camera_id": a, "proto": "onvif", "url": "http://x/",
                             "size": 1 << 40, "sha256": "0" * 64}, "invalid_request"),
        ("camera_config_set", {"camera_id": a, "config": {"sensor": {"sharpness": -1}}},
         "invalid_request"),
        ("camera_ptz", {"camera_id": a, "command": "goto_preset", "preset": "missing"},
         "onvif_invalid_argument"),
        ("no_such_command", {"camera_id": a}, "invalid_request"),
    ]  # fmt: skip
    for command, payload, code in cases:
        with pytest.raises(CommandError) as err:
            await runner.run(command, payload)
        assert err.value.code == code, (command, payload, err.value)
    inventory.set_paused(a, True)
    with pytest.raises(CommandError) as err:
        await runner.run("camera_reboot", {"camera_id": a})
    assert err.value.code == "temporarily_unavailable" and "paused" in str(err.value)
    # A command slower than its deadline gives up at the deadline.
    inventory.set_paused(a, False)
    await _latency(cams[0], 2.0)
    t0 = time.monotonic()
    with pytest.raises(CommandError) as err:
        await runner.run(
            "camera_ptz",
            {"camera_id": a, "command": "stop", "deadline_ms": int((time.time() + 0.5) * 1000)},
        )
    assert err.value.code == "temporarily_unavailable" and time.monotonic() - t0 < 1.5
    # Changing commands are audited, failures too; reads are not.
    entries = read_entries(audit.path) if audit.path else []
    assert entries == audit.entries()
    commands = [e["command"] for e in entries]
    assert "camera_config_get" not in commands and "no_such_command" not in commands
    assert any(e["result"] == "error" and e["camera_id"] == a for e in entries)


async def test_reset_wipes_camera_credentials_and_ports_follow(
    setup: tuple[CommandRunner, Inventory, list[SimCamera], AuditLog],
) -> None:
    _, inventory, cams, _ = setup
    a, _ = _ids(inventory, cams)
    inventory.set_credentials(a, Credentials("admin", Secret("admin")))
    assert inventory.get(a).credentials is not None
    inventory.forget_credentials()
    assert all(rec.credentials is None for rec in inventory.cameras())
    inventory.set_http_port(a, 8089)
    assert inventory.get(a).xaddr.startswith("http://127.0.0.1:8089/")
