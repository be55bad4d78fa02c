"""HealthCollector and LoopLag on a real event loop, with the real SystemSampler.

The autouse blockbuster fixture (tests/conftest.py) fails any test in which agent code blocks the
loop, so these tests also check that host metrics are read off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from agent.health import CONTENT_TYPE, HealthCollector, LoopLag, SystemPaths, SystemSampler, render
from agent.health.system import SystemSampler as _Sampler


def _agent() -> Mapping[str, Any]:
    return {
        "version": "9.9",
        "uptime_seconds": 1.0,
        "activated": False,
        "commands": {"run": 1, "failed": 0},
    }


def _cameras() -> list[Mapping[str, Any]]:
    return [
        {"id": f"cam{i}", "state": "online", "fps": 25.0, "relay_bytes_out": i} for i in range(4)
    ]


@contextlib.asynccontextmanager
async def _task(coro: Any) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_collect_runs_system_sample_off_the_loop(tmp_path: Path) -> None:
    lag = LoopLag()
    collector = HealthCollector(
        system=SystemSampler(SystemPaths(disks={"state": tmp_path})),
        agent=_agent,
        cameras=_cameras,
        loop_lag=lag,
    )
    async with _task(lag.run(0.01)):
        await asyncio.sleep(0.05)
        snap = await collector.collect()
    assert collector.latest is snap
    assert not any("Blocking" in e for e in snap["system"]["errors"].values())
    assert snap["system"]["memory"]["total"] > 0
    assert snap["system"]["disks"]["state"]["total"] > 0
    assert snap["agent"]["version"] == "9.9"
    assert 0 <= snap["agent"]["loop_lag_seconds"] < 1
    assert "loop_lag_max_seconds" in snap["agent"]
    assert [c["id"] for c in snap["cameras"]] == ["cam0", "cam1", "cam2", "cam3"]
    assert snap["collect_seconds"] >= 0 and abs(snap["ts"] - time.time()) < 5
    parsed = parse_om(render(snap))  # type: ignore[no-untyped-call]
    families = {f.name: f for f in parsed}
    assert families["camera_agent_camera_up"].samples[0].value == 1
    assert CONTENT_TYPE.startswith("application/openmetrics-text")


async def test_sampling_on_the_loop_would_be_caught() -> None:
    """The check above is real: the sampler called on the loop trips the blocking detector."""
    errors = SystemSampler(SystemPaths()).sample()["errors"]
    assert any("BlockingError" in e for e in errors.values()), errors


async def test_provider_failures_degrade(tmp_path: Path) -> None:
    def broken() -> Mapping[str, Any]:
        raise RuntimeError("agent state gone")

    collector = HealthCollector(system=SystemSampler(SystemPaths()), agent=broken, cameras=_cameras)
    snap = await collector.collect()
    assert snap["agent"] == {} and "agent state gone" in snap["errors"]["agent"]
    assert len(snap["cameras"]) == 4 and snap["system"]["memory"] is not None


class _CountingSampler(_Sampler):
    def __init__(self) -> None:
        super().__init__(SystemPaths())
        self.calls = 0

    def sample(self) -> dict[str, Any]:
        self.calls += 1
        return super().sample()


async def test_run_calls_on_sample_at_the_interval() -> None:
    sampler = _CountingSampler()
    collector = HealthCollector(system=sampler, agent=_agent, cameras=_cameras)
    seen: list[tuple[float, dict[str, Any]]] = []

    async def on_sample(snap: dict[str, Any]) -> None:
        seen.append((time.monotonic(), snap))
        if len(seen) == 2:
            raise RuntimeError("consumer failure must not stop the loop")

    async with _task(collector.run(0.1, on_sample)):
        deadline = time.monotonic() + 5
        while len(seen) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    assert len(seen) >= 5
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
    assert all(0.05 < g < 0.3 for g in gaps), gaps
    assert sum(gaps) / len(gaps) == pytest.approx(0.1, abs=0.04)
    assert collector.latest is seen[-1][1]
    assert sampler.calls == len(seen)


async def test_run_rejects_bad_interval() -> None:
    collector = HealthCollector(system=SystemSampler(SystemPaths()), agent=_agent, cameras=_cameras)
    with pytest.raises(ValueError):
        await collector.run(0)
    assert collector.latest is None


async def test_loop_lag_measures_a_deliberate_block() -> None:
    lag = LoopLag()
    async with _task(lag.run(0.02)):
        await asyncio.sleep(0.1)
        quiet = lag.read_max()
        # Deliberately block the loop from the test itself (not agent code, so allowed).
        time.sleep(0.2)  # noqa: ASYNC251
        await asyncio.sleep(0.1)
        assert 0.15 < lag.max < 0.5
        blocked = lag.read_max()
        assert lag.max == 0.0
    assert 0.15 < blocked < 0.5
    assert quiet < 0.1


async def test_loop_lag_window_resets() -> None:
    lag = LoopLag()
    async with _task(lag.run(0.02)):
        await asyncio.sleep(0.05)
        time.sleep(0.12)  # noqa: ASYNC251 - deliberate block, from the test
        await asyncio.sleep(0.05)
        first = lag.read_max()
        await asyncio.sleep(0.1)
        second = lag.read_max()
    assert first > 0.08
    assert second < first and second < 0.08
    assert lag.samples > 3
