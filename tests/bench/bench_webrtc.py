"""WebRTC live view: what each viewer costs the agent and how soon it sees a picture, against
go2rtc's WHEP.

One simulated camera (1280x720@25 H.264 + PCMU, its own process), the agent (`camera-agent
run`, its own process, activated; tests/bench/hub_procs.py) and go2rtc 1.9.14 (WebRTC on a
loopback UDP port). Viewers are aiortc peers in this process (tests/hil/test_webrtc.py `Viewer`:
receive-only H.264, host candidates on 127.0.0.1) that decode every frame; the same viewers for
both servers, both sent the raw SDP offer (`Content-Type: application/sdp`: the agent's
`POST /api/v1/webrtc/{camera_id}`, go2rtc's `POST /api/webrtc?src=cam`).

- CPU per viewer: the server process's user + system time from /proc over `SECONDS` after
  `WARMUP` with 1 and with 4 viewers, divided by the viewers (every viewer must decode at least
  half the frames of the window).
- Time to the first frame: from sending the offer to the first frame the viewer decoded, median
  of `TRIALS`, each server in turn: "cold" with no camera session open (the server connects to
  the camera first), "joining" while another viewer watches (the session is open).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench import hub_procs as hp
from tests.bench.common import Figure, proc_cpu_seconds
from tests.hil.test_webrtc import Viewer
from tests.peers.go2rtc import go2rtc

BENCH = "webrtc live view"
VIEWERS = (1, 4)
SECONDS = 8.0
WARMUP = 3.0
TRIALS = 3

Offer = Callable[[str], Awaitable[str]]


class _DecodeFailures(logging.Filter):
    """Counts (and keeps out of the output) the viewers' "failed to decode" warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "failed to decode" in record.getMessage():
            self.count += 1
            return False
        return True


FAILURES = _DecodeFailures()


def quiet() -> None:
    """The viewers' and the simulated cloud's chatter out of the benchmark's output."""
    for name in ("aioice", "aiortc", "agent.sim"):
        logging.getLogger(name).setLevel(logging.WARNING)
    receiver = logging.getLogger("aiortc.rtcrtpreceiver")
    if FAILURES not in receiver.filters:
        receiver.addFilter(FAILURES)


def _poster(url: str) -> Offer:
    async def post(offer: str) -> str:
        headers = {"Content-Type": "application/sdp"}
        async with aiohttp.ClientSession() as s, s.post(url, data=offer, headers=headers) as r:
            if r.status not in (200, 201):
                raise RuntimeError(f"offer to {url}: HTTP {r.status}")
            return await r.text()

    return post


class Watching:
    """A viewer that decodes every frame it gets, counting them."""

    def __init__(self) -> None:
        self.viewer = Viewer()
        self.frames = 0
        self.first: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, post: Offer) -> float:
        """Send the offer; the seconds from sending it to the first decoded frame."""
        offer = await self.viewer.offer()
        t0 = time.monotonic()
        await self.viewer.accept(await post(offer))
        self._task = asyncio.create_task(self._count())
        async with asyncio.timeout(20):
            while self.first is None:
                if self._task.done():
                    self._task.result()
                    raise RuntimeError("the viewer's track ended")
                await asyncio.sleep(0.005)
        return self.first - t0

    async def _count(self) -> None:
        track = await self.viewer.track
        while True:
            await track.recv()
            if self.first is None:
                self.first = time.monotonic()
            self.frames += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.viewer.pc.close()


@contextlib.asynccontextmanager
async def _watching(post: Offer, n: int) -> AsyncIterator[list[Watching]]:
    viewers: list[Watching] = []
    try:
        for _ in range(n):
            viewers.append(Watching())
            await viewers[-1].start(post)
        yield viewers
    finally:
        for v in viewers:
            await v.close()


async def _cpu(pid: int, post: Offer, n: int) -> tuple[float, int]:
    """(CPU of `pid` in cores, fewest frames a viewer decoded) with `n` viewers."""
    async with _watching(post, n) as viewers:
        await asyncio.sleep(WARMUP)
        cpu0, f0 = proc_cpu_seconds(pid), [v.frames for v in viewers]
        t0 = time.monotonic()
        await asyncio.sleep(SECONDS)
        cores = (proc_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        got = min(v.frames - f for v, f in zip(viewers, f0, strict=True))
    if got < SECONDS * hp.FPS / 2:
        raise RuntimeError(f"a viewer decoded {got} frames in {SECONDS:g} s")
    return cores, got


async def _first_frame(cam: hp.Camera, post: Offer, joining: bool) -> float:
    await cam.wait_sessions(0, timeout=60)
    async with _watching(post, 1 if joining else 0):
        viewer = Watching()
        try:
            return await viewer.start(post)
        finally:
            await viewer.close()


async def _bench(run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with (
        hp.cloud() as sim_cloud,
        hp.camera(run_dir) as cam,
        hp.agent(run_dir, cam, sim_cloud, linger=0.5) as agent,
        go2rtc(run_dir, cam.url("main"), webrtc=True) as g2,
    ):
        sides = {
            "agent": (agent.pid, _poster(f"{agent.api}/webrtc/{agent.camera_id}")),
            "go2rtc": (g2.pid, _poster(f"{g2.api}/api/webrtc?src=cam")),
        }
        for joining in (False, True):
            times: dict[str, list[float]] = {"agent": [], "go2rtc": []}
            failed = {"agent": 0, "go2rtc": 0}
            for _ in range(TRIALS):
                for name, (_pid, post) in sides.items():
                    before = FAILURES.count
                    times[name].append(await _first_frame(cam, post, joining))
                    failed[name] += FAILURES.count - before
            key = "joining" if joining else "cold"
            out[key], out[f"{key}_failed"] = times, failed
        for n in VIEWERS:
            for name, (pid, post) in sides.items():
                await cam.wait_sessions(0, timeout=60)
                out.setdefault(name, {})[n] = await _cpu(pid, post, n)
    return out


def run() -> list[Figure]:
    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(_bench(Path(tmp)))
    base = "go2rtc 1.9.14 WHEP, same camera and viewers"
    what = "1280x720@25 H.264 passed through, aiortc viewers decoding every frame"
    figures = []
    for n in VIEWERS:
        (a, af), (g, gf) = r["agent"][n], r["go2rtc"][n]
        figures.append(
            Figure(BENCH, f"agent CPU per viewer, {n} WebRTC viewer{'s' * (n > 1)}",
                   a / n, "cores", g / n, base,
                   note=f"{what}; {SECONDS:g} s; whole process: agent {a:.4f} cores, go2rtc "
                   f"{g:.4f}; fewest frames per viewer: agent {af}, go2rtc {gf}")
        )  # fmt: skip
    for key, label in (("cold", "no camera session open"), ("joining", "joining a viewer")):
        a_t, g_t = r[key]["agent"], r[key]["go2rtc"]
        failed = r[f"{key}_failed"]
        figures.append(
            Figure(BENCH, f"offer to first decoded frame, {label}",
                   statistics.median(a_t) * 1000, "ms", statistics.median(g_t) * 1000, base,
                   note=f"median of {TRIALS}; agent "
                   f"{', '.join(f'{t * 1000:.0f}' for t in a_t)} ms, go2rtc "
                   f"{', '.join(f'{t * 1000:.0f}' for t in g_t)} ms; frames the viewers "
                   f"could not decode over the trials (no keyframe yet): agent "
                   f"{failed['agent']}, go2rtc {failed['go2rtc']}")
        )  # fmt: skip
    return figures
