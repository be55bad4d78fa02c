"""Health samples to the cloud (agent.health.report.StatsReporter): interval, immediate on a
state change, bounded buffer while the cloud is unreachable, oldest first on reconnect."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.health.report import StatsReporter, compact


class Cloud:
    def __init__(self) -> None:
        self.up = False
        self.got: list[dict[str, Any]] = []

    async def send(self, command: str, payload: dict[str, Any]) -> None:
        assert command == "stats"
        if not self.up:
            raise ConnectionError("offline")
        self.got.append(payload)


async def test_buffered_while_offline_then_sent_oldest_first() -> None:
    n = 0
    state = ["online"]

    async def sample() -> dict[str, Any]:
        nonlocal n
        n += 1
        return {"ts": float(n), "system": {"network": {"eth0": {"bytes_sent": 5}}},
                "cameras": [{"id": "c", "state": state[0]}]}  # fmt: skip

    cloud = Cloud()
    reporter = StatsReporter(sample, lambda: state[0], interval=0.05, buffer=5)
    reporter.attach(cloud.send)
    task = asyncio.create_task(reporter.run())
    try:
        await asyncio.sleep(0.6)  # ~12 samples, 5 kept
        assert cloud.got == []
        status = reporter.status()
        assert status["buffered"] == 5 and status["dropped"] >= 5
        cloud.up = True
        async with asyncio.timeout(3):
            while len(cloud.got) < 5:
                await asyncio.sleep(0.01)
        stamps = [p["ts"] for p in cloud.got]
        assert stamps == sorted(stamps)
        assert cloud.got[0]["buffered"] is True and cloud.got[0]["dropped"] >= 5
        assert cloud.got[0]["system"]["network_bytes_sent"] == 5
        # A state change is reported at once, not at the next interval.
        slow = StatsReporter(sample, lambda: state[0], interval=60)
        got: list[dict[str, Any]] = []

        async def keep(command: str, payload: dict[str, Any]) -> None:
            got.append(payload)

        slow.attach(keep)
        other = asyncio.create_task(slow.run())
        await asyncio.sleep(0.1)
        first = len(got)
        state[0] = "unreachable"
        async with asyncio.timeout(3):
            while len(got) == first:
                await asyncio.sleep(0.02)
        assert got[-1]["cameras"][0]["state"] == "unreachable"
        other.cancel()
        await asyncio.gather(other, return_exceptions=True)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_compact_drops_detail_and_caps_cameras() -> None:
    snap = {"ts": 1, "system": {"cpu_percent_per_core": [1, 2], "errors": {"x": "y"}},
            "cameras": [{"id": str(i)} for i in range(500)]}  # fmt: skip
    out = compact(snap)
    assert "cpu_percent_per_core" not in out["system"] and len(out["cameras"]) == 100
