"""The shared world (agent.sim.world): a fleet of every kind in, the agent sees each camera;
everything is stopped on exit, also when the test fails half-way; the same with the cameras and
the agent as processes of their own (the benchmarks' and the soak's world)."""

from __future__ import annotations

import dataclasses
import socket
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from agent.config import AgentConfig, CameraConfig, DiscoveryConfig, TunnelConfig, from_mapping
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.cloud.app import SimCloud
from agent.sim.world import config_toml
from tests.peers.onvif_simple_server import PeerUnavailable
from tests.ports import free_port
from tests.world import (
    CameraSpec,
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
    fleet: list[CameraSpec] = [
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


# -- a world of processes: cameras and agent as child processes, as the benchmarks run them


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _with_api_port(cfg: AgentConfig) -> AgentConfig:
    return dataclasses.replace(cfg, api_port=free_port())


@pytest.mark.parametrize("fail", [False, True], ids=["clean exit", "exception in the block"])
async def test_a_world_of_processes_comes_online_and_leaves_nothing(
    tmp_path: Path, fail: bool
) -> None:
    before = _children()
    login = SimCameraConfig(username=USER, password=PASSWORD, persona="axis")
    world = World(
        [SimCameraSpec(login), SimCameraSpec(dataclasses.replace(login, serial="WLD0010"))],
        cloud=SimCloud(),
        state_dir=tmp_path / "state",
        configure=_with_api_port,
        processes=True,
    )
    pids: set[int] = set()
    ports: list[int] = []

    async def run() -> None:
        async with world:
            agent = await world.start_agent_process()
            await wait_until(world.process_online, 20, "two cameras online in the agent")
            cams = await world.api_cameras()
            assert sorted(c["manufacturer"] for c in cams) == ["AXIS", "AXIS"], cams
            assert len({c["serial_number"] for c in cams}) == 2
            assert len(world.camera_processes) == 1  # one persona, one login: one process
            pids.update(_children() - before)
            assert {agent.pid, world.camera_processes[0].pid} <= pids
            addresses = world.addresses
            ports.extend([world.cloud.port, int(urlsplit(world.api_root).port or 0)])
            ports.extend(p for a in addresses for p in (a.port, a.rtsp_port))
            assert all(_listening(p) for p in ports), ports
            with pytest.raises(RuntimeError, match="world runs processes"):
                _ = world.cameras
            if fail:
                raise ZeroDivisionError

    if fail:
        with pytest.raises(ZeroDivisionError):
            await run()
    else:
        await run()
    assert len(ports) == 6  # cloud, agent API, each camera's ONVIF and RTSP
    assert all(_gone(pid) for pid in pids), [psutil.Process(p) for p in pids if not _gone(p)]
    assert not any(_listening(p) for p in ports)
    assert world.agent_process.returncode == 0  # stopped by SIGTERM, cleanly
    assert all(c.returncode == 0 for c in world.camera_processes) or not world.camera_processes


async def test_a_camera_process_that_fails_is_reported_with_its_stderr(tmp_path: Path) -> None:
    before = _children()
    fleet = [
        SimCameraSpec(SimCameraConfig(persona="axis")),
        SimCameraSpec(SimCameraConfig(persona="no-such-make")),
    ]
    with pytest.raises(RuntimeError, match="exited before it was ready") as caught:
        async with World(fleet, state_dir=tmp_path / "state", processes=True):
            raise AssertionError("the world started")
    assert "no-such-make" in str(caught.value)  # the camera CLI's own message, from its stderr
    assert PASSWORD not in str(caught.value)
    assert _children() <= before  # the camera process that did start is stopped too


def test_the_agent_config_file_reads_back_as_the_same_config(tmp_path: Path) -> None:
    cfg = AgentConfig(
        state_dir=tmp_path / "a state",
        api_host="127.0.0.1",
        api_port=18080,
        discovery=DiscoveryConfig(
            multicast=False, mdns=False, probe=(("127.0.0.1", 8000), ("::1", 8001)), interval=30.0
        ),
        default_credentials=(Credentials(USER, Secret('p"w\\ü')),),
        cameras=(
            CameraConfig(
                "rtsp://127.0.0.1:8554/main",
                "Door",
                "rtsp://127.0.0.1:8554/sub",
                credentials=Credentials("viewer", Secret("v-pw")),
            ),
        ),
        health_interval=2.5,
    )
    text = config_toml(cfg)
    back = from_mapping(tomllib.loads(text))
    assert config_toml(back) == text
    assert (back.state_dir, back.api_port, back.discovery.probe, back.health_interval) == (
        cfg.state_dir, 18080, cfg.discovery.probe, 2.5,
    )  # fmt: skip
    assert back.default_credentials[0].password.reveal() == 'p"w\\ü'
    assert back.cameras[0].credentials is not None
    assert back.cameras[0].credentials.password.reveal() == "v-pw"
    with pytest.raises(ValueError, match=r"\[tunnel\]"):
        config_toml(dataclasses.replace(cfg, tunnel=TunnelConfig(idle_timeout=5.0)))
