"""Round trip of a cloud PTZ command: Watcher API -> simulated cloud -> control connection ->
agent -> ONVIF ContinuousMove on the camera -> back, against the same ContinuousMove sent to the
camera directly (onvif-zeep-async, the camera layer the agent uses) in the same run.

Processes: the simulated camera, the simulated cloud and the agent (`camera-agent run`) each in
their own process, as in the field (an agent.sim.world World of processes); this process is the
cloud's API client. CALLS sequential
calls each way; p50/p99 of the HTTP round trip (which ends after the camera answered).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from agent.config import AgentConfig
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.world import Configure, SimCameraSpec, World
from tests.bench.common import Figure
from tests.ports import free_port

CALLS = 600
AUTH = {"Authorization": aiohttp.encode_basic_auth("admin", "admin")}
BENCH = "cloud commands"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _until(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with_value = await check()
        if with_value:
            return with_value
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{what}: not reached within {timeout} s")


def _activation(url: str) -> Configure:
    def change(cfg: AgentConfig) -> AgentConfig:
        cloud = dataclasses.replace(cfg.cloud, activation_url=url)
        return dataclasses.replace(cfg, cloud=cloud, api_port=free_port())

    return change


async def _measure(tmp: Path) -> tuple[list[float], list[float]]:
    fleet = [SimCameraSpec(SimCameraConfig(username="admin", password="admin"))]
    async with World(fleet, state_dir=tmp / "state", processes=True) as world:
        cloud_ready = tmp / "cloud.json"
        _, cloud = await world.start_process(
            "sim-cloud", ["sim", "cloud", "--port", "0", "--ready-file", str(cloud_ready)],
            ready_file=cloud_ready,
        )  # fmt: skip
        await world.start_agent_process(_activation(str(cloud["url"])))
        api = world.api
        async with aiohttp.ClientSession() as http:
            await _until("camera online", world.process_online)
            async with http.post(
                f"{cloud['watcher_url']}/agent_activation_token", json={"title": "b"}, headers=AUTH
            ) as r:
                token = (await r.json())["token"]
            async with http.post(f"{api}/activation", json={"token": token}) as r:
                name = (await r.json())["stream_name"]
            url = f"{cloud['watcher_url']}/streams/{name}/ptz"
            body = {"command": "move_continuous", "right": 10}

            async def accepted() -> bool:
                async with http.post(url, json=body, headers=AUTH) as r:
                    return r.status in (200, 204)

            await _until("agent answering commands", accepted)
            via_cloud = []
            for _ in range(CALLS):
                t0 = time.perf_counter()
                async with http.post(url, json=body, headers=AUTH) as r:
                    await r.read()
                    if r.status not in (200, 204):
                        raise RuntimeError(f"PTZ call failed: HTTP {r.status}")
                via_cloud.append((time.perf_counter() - t0) * 1000)
            await http.post(url, json={"command": "stop"}, headers=AUTH)
        direct = await _direct(world.addresses[0].port)
        return via_cloud, direct


async def _direct(port: int) -> list[float]:
    from agent.camera.models import ContinuousMove
    from agent.camera.onvif import OnvifControl, OnvifSession
    from agent.secret import Credentials, Secret

    session = OnvifSession("127.0.0.1", port, credentials=[Credentials("admin", Secret("admin"))])
    await session.connect()
    control = OnvifControl(session)
    out = []
    try:
        for _ in range(CALLS):
            t0 = time.perf_counter()
            await control.ptz_continuous(ContinuousMove(right=10))
            out.append((time.perf_counter() - t0) * 1000)
        await control.ptz_stop()
    finally:
        await control.close()
    return out


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        via_cloud, direct = asyncio.run(_measure(Path(tmp)))
    note = (
        f"{CALLS} sequential calls each; cloud p50 {statistics.median(via_cloud):.1f} ms, "
        f"direct p50 {statistics.median(direct):.1f} ms; target p99 < 50 ms"
    )
    return [
        Figure(
            BENCH, "PTZ round trip p99, cloud API -> agent -> camera", _pct(via_cloud, 0.99),
            "ms", _pct(direct, 0.99), "ContinuousMove sent to the camera directly (p99)",
            note=note,
        ),
        Figure(
            BENCH, "PTZ round trip p50, cloud API -> agent -> camera", statistics.median(via_cloud),
            "ms", statistics.median(direct), "ContinuousMove sent to the camera directly (p50)",
        ),
    ]  # fmt: skip
