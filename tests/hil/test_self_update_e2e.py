"""The whole self-update on one machine: the real agent, run by the arbiter from an install
root, activated on the simulated cloud with a simulated camera. The cloud pushes a signed
bundle; the agent downloads and installs it beside itself; the arbiter restarts it on the new
release, sees it healthy and commits. A broken release pushed next crash-loops and is rolled
back to the good one. The cloud sees every step and the running version."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.sim.camera.camera import SimCameraConfig
from agent.sim.cloud.app import SimCloud
from agent.update import journal as jr
from agent.update.releases import Releases
from firmware_tools import keys
from firmware_tools.bundle import build
from tests.ports import free_port as _free_port
from tests.world import SimCameraSpec, World

REPO = Path(__file__).resolve().parents[2]
CAM_PW = "upd-pw"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def agent_tree(dst: Path, version: str, *, broken: bool = False) -> Path:
    """A release tree of this very agent, stamped with `version` (a dist-info, as
    `pip install --target` makes)."""
    site = dst / "site"
    shutil.copytree(REPO / "agent", site / "agent", ignore=IGNORE)
    shutil.copytree(REPO / "firmware_tools", site / "firmware_tools", ignore=IGNORE)
    shutil.copytree(REPO / "hw_profiles", site / "hw_profiles", ignore=IGNORE)
    info = site / f"camera_agent-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: camera-agent\nVersion: {version}\n"
    )
    if broken:  # starts, then dies at once: a crash loop
        (site / "agent" / "__main__.py").write_text("raise SystemExit('broken release')\n")
    return dst


def make_bundle(tmp: Path, key: Path, version: str, release: int, *, broken: bool = False) -> Path:
    out = tmp / f"camera-agent-{version}.bundle"
    build(
        out,
        agent_tree(tmp / f"tree-{version}", version, broken=broken),
        key=keys.load_private_key(key),
        product="camera-agent",
        version=version,
        release=release,
    )
    return out


def _on_disk(root: Path) -> tuple[jr.Journal, str | None, int]:
    releases = Releases(root)
    return jr.load(root), releases.current(), releases.counter().get()


def _start_arbiter(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PYTHONPATH")}
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.update.arbiter", *argv],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


async def _until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


class UpdateWorld(World):
    """The simulated cloud and one camera; the agent runs under the arbiter (a subprocess)."""

    async def push_update(self, agent_id: str, bundle: Path) -> dict[str, Any]:
        """The simulated cloud's update call with `bundle`; its 202 answer."""
        status, body = await self.http(
            "POST",
            f"{self.cloud.central_url}/agents/{agent_id}/update",
            data=await asyncio.to_thread(bundle.read_bytes),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert status == 202, body
        return dict(body)

    async def agent_stats(self, agent_id: str) -> dict[str, Any]:
        status, body = await self.http("GET", f"{self.cloud.central_url}/agents/{agent_id}")
        assert status == 200, body
        return dict(body["stats"])


@pytest.fixture
async def world() -> AsyncIterator[UpdateWorld]:
    cam = SimCameraConfig(password=CAM_PW, name="Yard", serial="UPD0001")
    async with UpdateWorld([SimCameraSpec(cam)], cloud=SimCloud(port=0)) as w:
        yield w


async def test_cloud_pushed_update_commits_then_a_broken_one_rolls_back(
    world: UpdateWorld, tmp_path: Path
) -> None:
    w, tmp = world, tmp_path
    keydir = tmp / "keys"
    keys.generate_keypair(keydir)
    root = tmp / "root"
    (root / "trust").mkdir(parents=True)
    shutil.copy(keydir / "public.pem", root / "trust" / "public.pem")
    key = keydir / "private.pem"
    first = await asyncio.to_thread(make_bundle, tmp, key, "1.0.0", 1)
    await asyncio.to_thread(Releases(root).bootstrap, first)

    # Activate with the command line, as an installer would.
    token = await w.new_token("Yard")
    state = tmp / "state"
    activate = [sys.executable, "-m", "agent", "activate", "--token", token,
                "--activation-url", w.cloud.url, "--state-dir", str(state)]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, activate, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    agent_id = done.stdout.split("agent_id=")[1].split()[0]

    cam = w.cameras[0]
    config = tmp / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{state}"\n'
        f'[api]\nlisten = "127.0.0.1:{_free_port()}"\n'
        f'[cloud]\nactivation_url = "{w.cloud.url}"\n'
        "[discovery]\nmulticast = false\nmdns = false\n"
        f'probe = ["127.0.0.1:{cam.port}"]\n'
        f'[[credentials.default]]\nusername = "admin"\npassword = "{CAM_PW}"\n'
        "[health]\ninterval = 2\n"
    )
    log_path = tmp / "arbiter.log"
    timings = {"stable": 2, "deadline": 45, "watchdog": 6, "max-attempts": 2, "poll": 0.3}
    flags = [part for k, v in timings.items() for part in (f"--{k}", str(v))]
    argv = ["--root", str(root), *flags, "--", "run", "--config", str(config)]
    arbiter = await asyncio.to_thread(_start_arbiter, argv, log_path)
    try:

        async def running(version: str) -> bool:
            stats = await w.agent_stats(agent_id)
            alive = (stats.get("endpoint_connection") or {}).get("alive")
            return bool(alive and stats.get("version") == version)

        await _until(lambda: running("1.0.0"), 60, "release 1.0.0 online")

        # The cloud pushes 1.1.0: downloaded, verified, installed, tried, committed.
        body = await w.push_update(
            agent_id, await asyncio.to_thread(make_bundle, tmp, key, "1.1.0", 2)
        )
        assert body["state"] == "downloading" and body["running_version"] == "1.0.0"

        async def update_state(state_name: str, version: str) -> bool:
            stats = await w.agent_stats(agent_id)
            upd = stats.get("update") or {}
            return (await running(version)) and upd.get("state") == state_name

        await _until(lambda: update_state("committed", "1.1.0"), 90, "1.1.0 committed")
        j, current, counter = await asyncio.to_thread(_on_disk, root)
        assert j.state == jr.State.COMMITTED and j.version == "1.1.0"
        assert current == j.target
        assert counter == 2

        # A broken 1.2.0 crash-loops and the arbiter brings 1.1.0 back.
        broken = await asyncio.to_thread(make_bundle, tmp, key, "1.2.0", 3, broken=True)
        await w.push_update(agent_id, broken)
        await _until(lambda: update_state("rolled_back", "1.1.0"), 90, "1.2.0 rolled back")
        j, current, counter = await asyncio.to_thread(_on_disk, root)
        assert j.state == jr.State.ROLLED_BACK and j.attempts >= 2
        assert current == j.previous
        assert counter == 2  # the broken release was never accepted
        shown = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agent", "update", "--root", str(root), "status"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert "rolled_back 1.2.0" in shown.stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            arbiter.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(arbiter.wait, 30)
        except subprocess.TimeoutExpired:
            os.killpg(arbiter.pid, signal.SIGKILL)
            code = await asyncio.to_thread(arbiter.wait, 10)
        log_text = log_path.read_text(errors="replace")
        assert code == 0, log_text[-4000:]
    assert "Traceback" not in log_text.split("broken release")[0], log_text[-4000:]
    assert CAM_PW not in log_text
