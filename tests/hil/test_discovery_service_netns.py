"""The discovery service over real multicast (WS-Discovery probe, Hello, Bye) and mDNS, between
two network namespaces joined by a veth pair (see test_discovery_sim.py for the layout).

Run as a script, this file is the agent side inside namespace B: a DiscoveryService feeding an
Inventory on --interface, answering stdin commands with JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.jsonlines import JsonLinesProcess

PASSWORD = "pw-Netns"
SELF = Path(__file__)


# ---- the agent side, inside namespace B -----------------------------------------------------


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def _role(interface: str) -> None:
    from agent.discovery.inventory import Inventory
    from agent.discovery.records import CameraState
    from agent.discovery.service import DiscoveryService
    from agent.secret import Credentials

    creds = [Credentials("admin", PASSWORD)]
    inventory = Inventory(None, default_credentials=creds, recheck_interval=60.0)
    service = DiscoveryService(
        inventory, interfaces=[interface], interval=600.0, probe_timeout=1.0, mdns=True
    )
    task = asyncio.create_task(service.run())
    while service.rounds < 1:
        await asyncio.sleep(0.05)
    _emit(event="ready", cameras=len(inventory.cameras()))

    def snapshot() -> list[dict[str, Any]]:
        return [c.to_json() for c in inventory.cameras()]

    checks: dict[str, tuple[Any, float]] = {
        "online": (lambda c: c.state is CameraState.ONLINE, 20),
        "mdns": (lambda c: "mdns" in c.sources, 20),
        "unreachable": (lambda c: c.state is CameraState.UNREACHABLE, 10),
    }

    async def until(check: Any, count: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while sum(map(check, inventory.cameras())) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    try:
        while True:
            words = (await asyncio.to_thread(sys.stdin.readline)).split()
            if not words or words[0] == "quit":
                return
            if words[0] == "probe":  # a fresh inventory fed only by one multicast probe
                fresh = Inventory(None, default_credentials=creds)
                prober = DiscoveryService(fresh, interfaces=[interface], mdns=False)
                await prober.probe_once()
                _emit(event="probe", cameras=[c.to_json() for c in fresh.cameras()])
                await fresh.close()
                continue
            check, seconds = checks[words[0]]
            await until(check, int(words[1]), seconds)
            _emit(event=words[0], cameras=snapshot())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await inventory.close()


# ---- the test ----------------------------------------------------------------------------------


def _start_cameras(namespace: str, ready: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "ip", "netns", "exec", namespace, sys.executable, "-m", "agent",
            "--log-level", "WARNING", "sim", "camera", "--host", "10.200.0.1",
            "--port", "8000", "--rtsp-port", "8554", "--count", "2", "--mdns",
            "--password", PASSWORD, "--serial", "NETNS", "--ready-file", str(ready),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def _wait_ready(proc: subprocess.Popen[bytes], ready: Path) -> None:
    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(ready.exists):
        assert proc.poll() is None, "simulated cameras exited"
        assert time.monotonic() < deadline, "simulated cameras did not start"
        await asyncio.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.netns
async def test_multicast_hello_bye_and_mdns(netns: dict[str, str], tmp_path: Path) -> None:
    a, b = netns["a"], netns["b"]
    command = ["ip", "netns", "exec", b, sys.executable, str(SELF), "--interface", "10.200.0.2"]
    role = await JsonLinesProcess.start(*command)
    cameras = None
    try:
        assert await role.read() == {"event": "ready", "cameras": 0}  # first probe: nobody
        ready = tmp_path / "ready.json"
        cameras = await asyncio.to_thread(_start_cameras, a, ready)
        await _wait_ready(cameras, ready)
        # The service probes only every 600 s: these come from the cameras' Hello.
        online = (await role.ask("online 2"))["cameras"]
        assert [c["state"] for c in online] == ["online", "online"], online
        assert sorted(c["xaddr"] for c in online) == [
            f"http://10.200.0.1:{8000 + i}/onvif/device_service" for i in range(2)
        ]
        assert all(c["sources"] == ["wsd"] and c["endpoint_reference"] for c in online)
        # mDNS finds the same cameras (their _http._tcp service answers ONVIF): no duplicates.
        browsed = (await role.ask("mdns 2"))["cameras"]
        assert len(browsed) == 2 and all(c["sources"] == ["mdns", "wsd"] for c in browsed)
        # A multicast probe alone finds them too.
        probed = (await role.ask("probe"))["cameras"]
        assert sorted(c["id"] for c in probed) == sorted(c["id"] for c in online)
        assert all(c["state"] == "online" for c in probed)
        # Bye when the cameras stop.
        await asyncio.to_thread(_stop, cameras)
        left = (await role.ask("unreachable 2"))["cameras"]
        assert [c["state"] for c in left] == ["unreachable", "unreachable"]
        assert sorted(c["id"] for c in left) == sorted(c["id"] for c in online)
    finally:
        await role.close()
        if cameras is not None:
            await asyncio.to_thread(_stop, cameras)


if __name__ != "__main__":
    from tests.hil.test_discovery_sim import netns  # noqa: F401 - the namespace fixture

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", required=True)
    asyncio.run(_role(parser.parse_args().interface))
