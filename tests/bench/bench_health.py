"""Cost of health collection: `HealthCollector.collect()` with the real `SystemSampler` and 32
camera dicts, as a fraction of one core at a 10 s interval, against a bare
`psutil.cpu_percent()` + `psutil.virtual_memory()` call measured in the same run.

CPU time is the process's (all threads, so the worker thread that reads /proc and /sys counts).
A second figure is the cost of rendering that snapshot as OpenMetrics (one /metrics scrape).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from agent.health import HealthCollector, LoopLag, SystemPaths, SystemSampler, render
from tests.bench.common import Figure

BENCH = "health"
CAMERAS = 32
INTERVAL = 10.0
ROUNDS = 200
TARGET = 0.01  # cores


def _cameras() -> Sequence[Mapping[str, Any]]:
    now = time.time()
    return [
        {
            "id": f"cam-{i:02d}",
            "name": f"Camera {i}",
            "state": "online" if i % 5 else "unreachable",
            "paused": False,
            "last_seen": now - 1.0,
            "last_video_at": now - 0.04,
            "bitrate_bps": 2_000_000.0 + i,
            "fps": 25.0,
            "keyframe_interval_seconds": 2.0,
            "relay_bytes_out": 10_000_000 * i,
            "reconnects": i % 3,
            "last_error": "" if i % 5 else "connection refused",
        }
        for i in range(CAMERAS)
    ]


def _agent() -> Mapping[str, Any]:
    link = {
        "alive": True,
        "bytes_to_server": 1 << 30,
        "bytes_from_server": 1 << 20,
        "opened_at": 1.0,
        "status_changed_at": 1.0,
        "reconnects": 2,
    }
    return {
        "version": "bench",
        "uptime_seconds": 3600.0,
        "activated": True,
        "endpoint": link,
        "streampoint": link,
        "tunnels": {"opened": 5, "refused": 1, "failed": 0, "bytes_in": 1, "bytes_out": 2},
        "commands": {"run": 10, "failed": 1},
    }


def _cpu_per_call(call: Callable[[], Any], rounds: int) -> float:
    call()  # warm-up
    start = time.process_time()
    for _ in range(rounds):
        call()
    return (time.process_time() - start) / rounds


async def _collect_cost(state_dir: Path) -> tuple[float, dict[str, Any]]:
    sampler = SystemSampler(
        SystemPaths(disks={"state": state_dir, "log": Path(tempfile.gettempdir())})
    )
    lag = LoopLag()
    collector = HealthCollector(system=sampler, agent=_agent, cameras=_cameras, loop_lag=lag)
    lag_task = asyncio.create_task(lag.run(0.5))
    try:
        snapshot = await collector.collect()  # warm-up (thread pool start)
        start = time.process_time()
        for _ in range(ROUNDS):
            snapshot = await collector.collect()
        return (time.process_time() - start) / ROUNDS, snapshot
    finally:
        lag_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag_task


def _baseline() -> None:
    psutil.cpu_percent(None)
    psutil.virtual_memory()


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        per_collect, snapshot = asyncio.run(_collect_cost(Path(tmp)))
    per_base = _cpu_per_call(_baseline, ROUNDS)
    per_render = _cpu_per_call(lambda: render(snapshot), ROUNDS)
    errors = sorted(snapshot["system"]["errors"])
    cores = per_collect / INTERVAL
    return [
        Figure(
            BENCH,
            f"collect() CPU at a {INTERVAL:.0f} s interval, {CAMERAS} cameras",
            cores,
            "cores",
            per_base / INTERVAL,
            "bare psutil.cpu_percent + virtual_memory",
            note=(
                f"{per_collect * 1000:.2f} ms CPU per collect() over {ROUNDS} rounds "
                f"(target < {TARGET} cores: {'met' if cores < TARGET else 'NOT met'}); "
                f"metrics unavailable on this host: {', '.join(errors) or 'none'}"
            ),
        ),
        Figure(
            BENCH,
            f"OpenMetrics render of one snapshot, {CAMERAS} cameras",
            per_render * 1000,
            "ms CPU",
            per_collect * 1000,
            "collect() itself",
            note=f"{len(render(snapshot).splitlines())} lines of exposition",
        ),
    ]
