"""The daemon speaks the service manager's notify protocol on a real datagram socket: READY=1
once it serves, WATCHDOG=1 with its health fields at half the watchdog interval from the event
loop (so a stuck loop stops them), STOPPING=1 on the way out."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from agent.app import Agent
from agent.config import AgentConfig, DiscoveryConfig


def _parse(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)


async def test_ready_watchdog_stopping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # pings every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    cfg = AgentConfig(
        state_dir=tmp_path / "state",
        api_host="127.0.0.1",
        api_port=0,
        discovery=DiscoveryConfig(multicast=False, mdns=False),
        webrtc_addresses=("127.0.0.1",),
    )
    agent = Agent(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[tuple[float, dict[str, str]]] = []

    async def receive_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
            except TimeoutError:
                return
            received.append((time.monotonic(), _parse(data)))

    task = asyncio.create_task(agent.run(stop))
    try:
        async with asyncio.timeout(20):
            while not any(m.get("READY") == "1" for _, m in received):
                await receive_for(0.5)
        ready_at = next(t for t, m in received if m.get("READY") == "1")
        assert agent.ready.is_set()
        await receive_for(1.0)
        pings = [(t, m) for t, m in received if m.get("WATCHDOG") == "1" and t > ready_at]
        assert 5 <= len(pings) <= 15, len(pings)
        health = {"X_ACTIVATED": "0", "X_CONNECTED": "0", "X_CAMERAS": "0"}
        assert health.items() <= pings[-1][1].items()

        # A blocked event loop sends nothing: the service manager's watchdog would fire.
        blocked_from = time.monotonic()
        loop.call_soon(time.sleep, 0.6)  # stands for a stuck callback
        await asyncio.sleep(0)
        await receive_for(1.0)
        after = [t for t, m in received if m.get("WATCHDOG") == "1" and t > blocked_from]
        gaps = [b - a for a, b in zip([blocked_from, *after], after, strict=False)]
        assert max(gaps) >= 0.5  # the longest silence covers the blocked stretch
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    await receive_for(0.3)
    assert any(m.get("STOPPING") == "1" for _, m in received)
    sock.close()
