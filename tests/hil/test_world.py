"""The shared world (agent.sim.world): a fleet of every kind in, the agent sees each camera;
everything is stopped on exit, also when the test fails half-way."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.sim.camera.camera import SimCameraConfig
from agent.sim.cloud.app import SimCloud
from tests.peers.onvif_simple_server import PeerUnavailable
from tests.world import (
    RtspCameraSpec,
    SimCameraSpec,
    World,
    onvif_simple_server,
    wait_until,
)

USER, PASSWORD = "admin", "World-pw-1"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ports(world: World) -> list[int]:
    cams = [*world.cameras, *world.rtsp_cameras]
    return [
        world.cloud.port,
        world.agent.api.port,
        *(c.port for c in cams),
        *(c.rtsp_port for c in cams),
    ]


async def test_every_kind_of_camera_comes_online_and_all_stops(tmp_path: Path) -> None:
    fleet = [
        SimCameraSpec(
            SimCameraConfig(username=USER, password=PASSWORD, serial="WLD0001", persona="axis")
        ),
        RtspCameraSpec(SimCameraConfig(username=USER, password=PASSWORD, serial="WLD0002")),
        onvif_simple_server(USER, PASSWORD),
    ]
    world = World(fleet, cloud=SimCloud(), state_dir=tmp_path / "state")
    try:
        async with world:
            agent = await world.start_agent()
            await wait_until(world.online, 30, "three cameras online")
            kinds = sorted((c.kind, c.manufacturer) for c in agent.inventory.cameras())
            assert kinds == [("onvif", "AXIS"), ("onvif", "Yi"), ("rtsp", "")], kinds
            assert len(world.device_urls) == 2
            assert world.peers[0].probe in world.agent_config().discovery.probe
            ports = _ports(world)
            assert all(_listening(p) for p in ports)
    except PeerUnavailable as exc:
        pytest.skip(f"onvif_simple_server cannot be built here: {exc}")
    assert world.agent_task is None
    assert not any(_listening(p) for p in ports)


async def test_a_failing_test_still_stops_the_agent_and_the_cameras(tmp_path: Path) -> None:
    world = World(
        [SimCameraSpec(SimCameraConfig(serial="WLD0003"))],
        cloud=SimCloud(),
        state_dir=tmp_path / "state",
        discovery=True,
    )
    seen: list[int] = []

    async def failing() -> None:
        async with world:
            await world.start_agent()
            await wait_until(world.online, 20, "camera found by WS-Discovery")
            seen.extend(_ports(world))
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await failing()
    task = world.agent_task
    assert task is None and len(seen) == 4  # cloud, API, the camera's ONVIF and RTSP
    assert not any(_listening(p) for p in seen)
