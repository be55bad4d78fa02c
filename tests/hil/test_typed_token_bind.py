"""A token typed before the agent starts: `camera-agent activate --token T`, then `camera-agent
run`. The agent binds its first online camera to the token's stream and the cloud's streamer
gets its video.

Every part is its own process (simulated cloud, simulated camera, the command-line activation,
the daemon), all on loopback. What happened is read from the simulated cloud's API, and the video
is pulled through the agent from the simulated streamer's port (`sim_rtsp_url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from agent.config import AgentConfig, DiscoveryConfig
from agent.secret import Credentials, Secret
from agent.sim.world import config_toml
from tests.ports import free_port
from tests.soak import AUTH, Consumer, stop_procs
from tests.world import wait_until


def _agent_cmd(*args: str, level: str) -> list[str]:
    return [sys.executable, "-m", "agent", "--log-level", level, *args]


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def _text(path: Path) -> str:
    return path.read_text(errors="replace")


def _written(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


async def _ready_file(path: Path, proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    async def written() -> bool:
        assert proc.poll() is None, _text(log)
        return _written(path)

    await wait_until(written, 60)
    data = json.loads(_text(path))
    assert isinstance(data, dict)
    return data


async def test_typed_token_binds_the_first_online_camera_at_start(tmp_path: Path) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    consumer_task: asyncio.Task[None] | None = None
    try:
        cloud_log, cams_log = tmp_path / "cloud.log", tmp_path / "cams.log"
        procs.append(
            _start(
                _agent_cmd("sim", "cloud", "--port", "0", "--camera-login", "admin:admin",
                           "--ready-file", str(tmp_path / "cloud.json"), level="WARNING"),
                cloud_log,
            )
        )  # fmt: skip
        procs.append(
            _start(
                _agent_cmd("sim", "camera", "--count", "1", "--port", "0", "--rtsp-port", "0",
                           "--no-discovery", "--ready-file", str(tmp_path / "cams.json"),
                           level="WARNING"),
                cams_log,
            )
        )  # fmt: skip
        cloud = await _ready_file(tmp_path / "cloud.json", procs[0], cloud_log)
        cam = (await _ready_file(tmp_path / "cams.json", procs[1], cams_log))["cameras"][0]
        watcher = cloud["watcher_url"]

        async with aiohttp.ClientSession(headers=AUTH) as http:

            async def get(url: str) -> Any:
                async with http.get(url) as r:
                    assert r.status == 200, await r.text()
                    return await r.json()

            async with http.post(f"{watcher}/agent_activation_token", json={"title": "Typed"}) as r:
                assert r.status == 200
                created = await r.json()
            token, name = created["token"], created["stream_name"]

            # The token typed on the command line, before the daemon ever ran (no camera known).
            state = tmp_path / "state"
            done = await asyncio.to_thread(
                subprocess.run,
                _agent_cmd("activate", "--token", token, "--state-dir", str(state),
                           "--activation-url", cloud["activation_url"], level="DEBUG"),
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert f"stream_name={name}" in done.stdout  # the name announced at creation
            assert "activated as agent" in done.stderr  # logged at DEBUG and INFO ...
            assert token not in done.stdout + done.stderr  # ... without the token
            stream = await get(f"{watcher}/streams/{name}")
            assert stream["inputs"] == []  # no camera yet
            agent_id = stream["stats"]["current_agent_id"]

            # The daemon starts with that state and one camera to probe.
            api_port = free_port()
            # Loopback API, no discovery beyond the camera probed on the command line.
            config = tmp_path / "agent.toml"
            settings = AgentConfig(
                state_dir=tmp_path / "state",
                api_host="127.0.0.1",
                api_port=api_port,
                discovery=DiscoveryConfig(multicast=False, mdns=False, interval=30.0),
                default_credentials=(Credentials("admin", Secret("admin")),),
            )
            config.write_text(config_toml(settings), encoding="utf-8")
            run_log = tmp_path / "run.log"
            procs.append(
                _start(
                    _agent_cmd("run", "--config", str(config), "--state-dir", str(state),
                               "--probe", f"127.0.0.1:{cam['port']}",
                               "--api", f"127.0.0.1:{api_port}", level="INFO"),
                    run_log,
                )
            )  # fmt: skip

            async def bound() -> bool:
                assert procs[-1].poll() is None, _text(run_log)
                s = await get(f"{watcher}/streams/{name}")
                return bool(s["inputs"]) and "sim_rtsp_url" in s

            await wait_until(bound, 60)
            stream = await get(f"{watcher}/streams/{name}")
            assert stream["inputs"] == [{"url": cam["rtsp"]["main"], "via": f"agent://{agent_id}"}]
            assert stream["stats"]["current_agent_id"] == agent_id
            shown = await get(f"{watcher}/agent_activation_token/{token}")
            assert shown["stream_name"] == name
            agents = (await get(f"{cloud['central_url']}/agents"))["agents"]
            assert [a["id"] for a in agents] == [agent_id]  # bound to the same agent

            # The streamer gets the camera's video through the agent.
            consumer = Consumer(stream["sim_rtsp_url"])
            consumer_task = asyncio.create_task(consumer.run())
            await wait_until(lambda: consumer.bytes > 20_000, 30)

            async with http.get(f"http://127.0.0.1:{api_port}/api/v1/cameras") as r:
                (camera,) = (await r.json())["cameras"]
        saved = json.loads(_text(state / "activation.json"))
        assert saved["streams"] == [
            {"token": token, "stream_name": name, "camera_id": camera["id"]}
        ]
    finally:
        if consumer_task is not None:
            consumer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer_task
        await asyncio.to_thread(stop_procs, list(reversed(procs)))
    text = _text(tmp_path / "run.log")
    assert f"stream {name}, camera {camera['id']}" in text  # the bind was logged ...
    assert token not in text  # ... without the token
