"""The agent's update service (agent/update/service.py): the cloud's `agent_update` request is
checked before anything starts, runs in the background, reports each journal step, and is
refused while another update runs or when the agent has no install root."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.config import ConfigError, from_mapping
from agent.errors import InvalidArgument, NotConfigured
from agent.update import journal as jr
from agent.update.releases import Releases
from agent.update.service import UpdateService
from agent.update.updater import UpdateError
from tests.update_helpers import agent_tree, sign, trusted_root


def _root_with_release(tmp: Path) -> tuple[Path, Path]:
    root, key = trusted_root(tmp)
    for version, release in (("1.0.0", 1), ("1.1.0", 2)):
        sign(tmp / f"{version}.bundle", agent_tree(tmp, version), key, version, release)
    Releases(root).bootstrap(tmp / "1.0.0.bundle")
    return root, tmp / "1.1.0.bundle"


async def test_agent_update_runs_in_the_background_and_reports(tmp_path: Path) -> None:
    root, bundle = await asyncio.to_thread(_root_with_release, tmp_path)
    data = await asyncio.to_thread(bundle.read_bytes)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/agent/v1/updates/x", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cloud = f"wss://127.0.0.1:{port}/agent/v1/endpoint"
    events: list[dict[str, Any]] = []

    async def send(command: str, payload: dict[str, Any]) -> None:
        assert command == "agent_update_progress"
        events.append(payload)

    service = UpdateService(root, origins=lambda: [cloud.replace("wss:", "ws:")])
    service.attach(send)
    url = f"http://127.0.0.1:{port}/agent/v1/updates/x"
    try:
        for bad, error in (
            ({"url": "ftp://127.0.0.1/x"}, InvalidArgument),
            ({"url": "http://127.0.0.2:9/x"}, InvalidArgument),  # not the cloud's host
            ({"url": url, "size": -1}, InvalidArgument),
            ({"url": url, "sha256": "ABC"}, InvalidArgument),
            ({"url": url, "apply": "yes"}, InvalidArgument),
        ):
            with pytest.raises(error):
                await service.command(bad)
        answer = await service.command({"url": url, "size": len(data)})
        assert answer["state"] == "downloading"
        with pytest.raises(UpdateError, match=r"already running|downloading|busy"):
            await service.command({"url": url})
        async with asyncio.timeout(20):
            while not events or events[-1]["state"] != "trial":
                await asyncio.sleep(0.05)
        states = [e["state"] for e in events]
        assert states[0] == "downloading" and "verifying" in states and "installing" in states
        assert events[-1]["version"] == "1.1.0" and "url" not in events[-1]
        assert service.status()["journal"]["state"] == "trial"
        j = await asyncio.to_thread(jr.load, root)
        assert j.state == jr.State.TRIAL and j.source == "cloud"
    finally:
        await runner.cleanup()


async def test_without_an_install_root_updates_are_refused() -> None:
    service = UpdateService(None)
    assert not service.enabled and service.summary() is None
    with pytest.raises(NotConfigured, match="arbiter"):
        await service.command({"url": "http://127.0.0.1/x"})
    await service.run()  # returns at once: nothing to watch


def test_update_config() -> None:
    cfg = from_mapping(
        {
            "update": {
                "url": "https://updates.example.net/index.json",
                "check_interval": 3600,
                "auto_apply": False,
                "hardware": "rpi4",
                "root": "/opt/camera-agent",
            }
        }
    )
    u = cfg.update
    assert u.url == "https://updates.example.net/index.json" and u.check_interval == 3600
    assert not u.auto_apply and u.hardware == "rpi4" and u.root == Path("/opt/camera-agent")
    for bad in (
        {"root": "relative/path"},
        {"url": "ftp://x"},
        {"check_interval": 5},
        {"auto_apply": "yes"},
        {"unknown": 1},
    ):
        with pytest.raises(ConfigError):
            from_mapping({"update": bad})
