"""Soak run (`make soak`, `python -m tests.soak`) and the relay world it shares with the
benchmarks: an agent.sim.world World of processes, N simulated cameras in their own process
(`camera-agent sim camera --count N`), the simulated cloud in this process (its streamer's
loopback RTSP ports included), the agent (`camera-agent run`) in its own process, and one
cheap RTSP consumer per stream that drains the camera's sub stream through the tunnel and
reconnects as a streamer does.

The soak relays 64 cameras for `SOAK_SECONDS` (default 1800) after a minute of warm-up, reboots
a random camera (seeded) every ~20 s, samples the agent's RSS and open files (/proc) and its
asyncio task count (the `tasks` of the health sample it reports to the cloud) every 10 s, and
fails unless memory, files and tasks stay flat and every stream came back after every reboot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from agent.config import AgentConfig
from agent.errors import AgentError
from agent.media.rtsp_client import RtspClient
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.cloud.app import SimCloud
from agent.sim.world import CameraAddresses, ChildProcess, SimCameraSpec, World
from tests.bench.common import proc_rss_mib
from tests.ports import free_port

AUTH = {"Authorization": aiohttp.encode_basic_auth("admin", "admin")}
#: The sub stream every relayed camera is set to.
SUB = {"stream_profile": "SUB_STREAM_1", "encoder": "H264", "resolution": "320x180",
       "framerate": 5, "bitrate": 128, "gov_length": 10}  # fmt: skip
#: Seconds a consumer waits before reconnecting.
RECONNECT_S = 1.0


def stop_procs(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def until(what: str, check: Any, timeout: float = 60.0, every: float = 0.2) -> Any:
    """Poll the coroutine function `check` until it returns something true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(every)
    raise RuntimeError(f"{what}: not reached within {timeout:g} s")


@dataclass
class Consumer:
    """Pulls one RTSP URL over TCP interleaved and drops the bytes; reconnects on failure."""

    url: str
    bytes: int = 0
    connects: int = 0
    last_packet: float = 0.0
    packet_times: list[float] = field(default_factory=list)  # first packet of each session

    async def run(self) -> None:
        while True:
            client = RtspClient(self.url, timeout=5.0, idle_timeout=5.0)
            first = True
            try:
                await client.start()
                self.connects += 1
                async for _, pkt in client.packets():
                    self.bytes += len(pkt.payload)
                    self.last_packet = time.monotonic()
                    if first:
                        self.packet_times.append(self.last_packet)
                        first = False
            except (AgentError, OSError):
                pass
            finally:
                await client.close()
            await asyncio.sleep(RECONNECT_S)

    def alive(self, within: float = 5.0) -> bool:
        return time.monotonic() - self.last_packet < within


class FleetWorld:
    """Cameras and agent in processes of their own (what the figures measure), the cloud in this
    one: an agent.sim.world World of processes; `bind(n)` relays n more cameras, each with a
    consumer."""

    def __init__(self, tmp: Path, cameras: int, *, health_interval: float = 10.0) -> None:
        self.tmp = tmp
        self.count = cameras
        self.health_interval = health_interval
        self.sim = World(
            [SimCameraSpec(SimCameraConfig())] * cameras,
            cloud=SimCloud(port=0, camera_login=("admin", "admin")),
            state_dir=tmp / "state",
            configure=self._configure,
            processes=True,
        )
        self.cams: list[CameraAddresses] = []
        self.cam_ids: list[str] = []  # agent camera id per camera, in camera order
        self.consumers: list[Consumer] = []
        self.agent: ChildProcess | None = None
        self.agent_id: str | None = None
        self.api = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._entered = False

    def _configure(self, cfg: AgentConfig) -> AgentConfig:
        """Discovery every 30 s, health samples every `health_interval`, the default login even
        without cameras, the API on a port of tests.ports."""
        return dataclasses.replace(
            cfg,
            discovery=dataclasses.replace(cfg.discovery, interval=30.0),
            health_interval=self.health_interval,
            default_credentials=(Credentials("admin", Secret("admin")),),
            api_port=cfg.api_port or free_port(),
        )

    @property
    def cloud(self) -> SimCloud:
        return self.sim.cloud

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None
        return self._http

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await self.sim.__aenter__()
        self._entered = True
        self.cams = self.sim.addresses
        self.agent = await self.sim.start_agent_process()
        self.api = self.sim.api
        await until("cameras online in the agent", self._all_online, 120, 0.5)

    async def _all_online(self) -> bool:
        if not self.sim.agent_process.running():
            raise await self.sim.agent_process.failure("the agent exited")
        cams = await self.sim.api_cameras()
        by_port = {urlsplit(c["xaddr"]).port: c for c in cams if c.get("state") == "online"}
        if len(by_port) < self.count:
            return False
        self.cam_ids = [str(by_port[c.port]["id"]) for c in self.cams]
        return True

    @property
    def pid(self) -> int:
        assert self.agent is not None
        return self.agent.pid

    async def token(self, title: str) -> str:
        return await self.sim.new_token(title)

    async def activate(self, camera: int | None) -> str:
        """Bind camera `camera` (an index; None: no camera) with a new token; the stream name."""
        body: dict[str, str] = {"token": await self.token(f"cam {camera}")}
        if camera is not None:
            body["camera_id"] = self.cam_ids[camera]
        async with self.http.post(f"{self.api}/activation", json=body) as r:
            answer = await r.json()
            if r.status != 200:
                raise RuntimeError(f"activation failed: {answer}")
        self.agent_id = str(answer["agent_id"])
        return str(answer["stream_name"])

    async def set_sub(self, camera: int) -> None:
        url = f"{self.api}/onvif/{self.cam_ids[camera]}/stream/encoder"
        async with self.http.put(url, json=SUB) as r:
            if r.status != 200:
                raise RuntimeError(f"encoder settings refused: {await r.text()}")

    async def sub_url(self, name: str, camera: int) -> str | None:
        async with self.http.get(f"{self.cloud.watcher_url}/streams/{name}", headers=AUTH) as r:
            rec = await r.json() if r.status == 200 else {}
        url = rec.get("sim_rtsp_url")
        if not isinstance(url, str):
            return None
        p = urlsplit(url)
        sub = urlsplit(self.cams[camera].rtsp["sub"])
        return str(urlunsplit((p.scheme, p.netloc, sub.path, sub.query, "")))

    async def bind(self, n: int) -> None:
        """Relay the next `n` cameras: sub stream set, a token each, a consumer each."""
        first = len(self.consumers)
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with sem:
                await self.set_sub(i)

        await asyncio.gather(*(one(i) for i in range(first, first + n)))
        for i in range(first, first + n):
            name = await self.activate(i)
            url = await until("sim_rtsp_url", lambda n=name, i=i: self.sub_url(n, i), 30)
            consumer = Consumer(url)
            self.consumers.append(consumer)
            self._tasks.append(asyncio.create_task(consumer.run()))
        await until("every stream flowing", self._flowing, 120, 0.5)

    async def _flowing(self) -> bool:
        return all(c.alive() for c in self.consumers)

    def tasks(self) -> int | None:
        """The agent's asyncio task count from the health sample it last reported."""
        hub = self.cloud.hub
        if hub is None or self.agent_id is None:
            return None
        agent = (hub.live_of(self.agent_id).metrics or {}).get("agent") or {}
        value = agent.get("tasks")
        return value if isinstance(value, int) else None

    def sample(self, t0: float) -> dict[str, Any]:
        return {
            "t": round(time.monotonic() - t0, 1),
            "rss_mib": round(proc_rss_mib(self.pid), 2),
            "fds": open_fds(self.pid),
            "tasks": self.tasks(),
            "alive": sum(c.alive() for c in self.consumers),
        }

    async def reboot(self, camera: int, seconds: float) -> None:
        url = f"http://127.0.0.1:{self.cams[camera].port}/sim/reboot"
        async with self.http.post(url, json={"seconds": seconds}) as r:
            if r.status not in (200, 202, 204):
                raise RuntimeError(f"reboot refused: HTTP {r.status}")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            if self._entered:
                self._entered = False
                await self.sim.__aexit__(None, None, None)
        finally:
            if self._http is not None:
                await self._http.close()


# ---------------------------------------------------------------------------------- soak run


@dataclass(frozen=True)
class SoakBounds:
    """What a soak run must show."""

    rss_growth: float = 0.10  # fraction, last quarter vs first quarter after warm-up
    fds_slack: int = 8  # open files, last quarter median over the first's
    tasks_slack: int = 16  # asyncio tasks, same
    recover_s: float = 30.0  # a stream flows again within this after its camera is back


@dataclass
class SoakResult:
    samples: list[dict[str, Any]]
    reboots: list[dict[str, Any]]
    rss_growth: float
    fds_growth: float
    tasks_growth: float | None
    failures: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "rss_growth": self.rss_growth, "fds_growth": self.fds_growth,
            "tasks_growth": self.tasks_growth, "failures": self.failures,
            "reboots": self.reboots, "samples": self.samples,
        }  # fmt: skip


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def quarter_medians(samples: list[dict[str, Any]], key: str) -> tuple[float, float] | None:
    """Medians of `key` over the first and last quarter of `samples` (None: no values)."""
    values = [float(s[key]) for s in samples if s.get(key) is not None]
    if len(values) < 4:
        return None
    q = max(1, len(values) // 4)
    return _median(values[:q]), _median(values[-q:])


def judge(samples: list[dict[str, Any]], reboots: list[dict[str, Any]], count: int,
          bounds: SoakBounds) -> SoakResult:  # fmt: skip
    """Check flat memory, fds and tasks, and that every reboot was recovered from."""
    failures: list[str] = []
    rss = quarter_medians(samples, "rss_mib") or (0.0, 0.0)
    fds = quarter_medians(samples, "fds") or (0.0, 0.0)
    tasks = quarter_medians(samples, "tasks")
    rss_growth = (rss[1] - rss[0]) / rss[0] if rss[0] else 0.0
    if rss_growth >= bounds.rss_growth:
        failures.append(f"RSS grew {rss_growth:.1%} ({rss[0]:.1f} -> {rss[1]:.1f} MiB)")
    if fds[1] - fds[0] > bounds.fds_slack:
        failures.append(f"open files grew {fds[0]:.0f} -> {fds[1]:.0f}")
    if tasks is not None and tasks[1] - tasks[0] > bounds.tasks_slack:
        failures.append(f"asyncio tasks grew {tasks[0]:.0f} -> {tasks[1]:.0f}")
    if tasks is None:
        failures.append("the agent reported no asyncio task count")
    for r in reboots:
        if r["recovered_s"] is None or r["recovered_s"] > bounds.recover_s:
            failures.append(f"camera {r['camera']} rebooted at {r['t']} s: not recovered")
    if samples and samples[-1]["alive"] != count:
        failures.append(f"{samples[-1]['alive']}/{count} streams alive at the end")
    return SoakResult(samples, reboots, rss_growth, fds[1] - fds[0],
                      tasks[1] - tasks[0] if tasks else None, failures)  # fmt: skip


async def soak(tmp: Path, *, cameras: int, seconds: float, reboot_every: float,
               reboot_s: float = 3.0, sample_every: float = 10.0, warmup: float = 60.0,
               seed: int = 1, bounds: SoakBounds | None = None) -> SoakResult:  # fmt: skip
    """Relay `cameras` cameras for `seconds`, rebooting a random one every ~`reboot_every` s."""
    import random

    rng = random.Random(seed)
    world = FleetWorld(tmp, cameras, health_interval=min(10.0, sample_every))
    samples: list[dict[str, Any]] = []
    reboots: list[dict[str, Any]] = []
    try:
        await world.start()
        await world.bind(cameras)
        t0 = time.monotonic()
        next_sample = t0 + warmup
        next_reboot = t0 + rng.uniform(0.8, 1.2) * reboot_every
        end = t0 + warmup + seconds
        while (now := time.monotonic()) < end:
            if now >= next_reboot and now < end - reboot_s - bounds_of(bounds).recover_s / 2:
                cam = rng.randrange(cameras)
                connects = world.consumers[cam].connects
                await world.reboot(cam, reboot_s)
                reboots.append({"camera": cam, "t": round(now - t0, 1), "back_at": now + reboot_s,
                                "connects": connects, "recovered_s": None})  # fmt: skip
                next_reboot = now + rng.uniform(0.8, 1.2) * reboot_every
            if now >= next_sample:
                samples.append(world.sample(t0))
                next_sample += sample_every
            _note_recoveries(world, reboots)
            await asyncio.sleep(0.2)
        deadline = time.monotonic() + bounds_of(bounds).recover_s
        while any(r["recovered_s"] is None for r in reboots) and time.monotonic() < deadline:
            _note_recoveries(world, reboots)
            await asyncio.sleep(0.2)
        samples.append(world.sample(t0))
    finally:
        await world.stop()
    for r in reboots:
        r.pop("back_at", None)
        r.pop("connects", None)
    return judge(samples, reboots, cameras, bounds_of(bounds))


def bounds_of(bounds: SoakBounds | None) -> SoakBounds:
    return bounds or SoakBounds()


def _note_recoveries(world: FleetWorld, reboots: list[dict[str, Any]]) -> None:
    """A reboot is recovered from once its camera's consumer got a packet in a new session
    opened after the camera came back."""
    for r in reboots:
        if r["recovered_s"] is not None:
            continue
        c = world.consumers[r["camera"]]
        after = [t for t in c.packet_times if t >= r["back_at"]]
        if c.connects > r["connects"] and after:
            r["recovered_s"] = round(after[0] - r["back_at"], 2)


def write_report(result: SoakResult, out: Path, title: str) -> None:
    """SOAK.md (the table) and soak.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"Written {time.strftime('%Y-%m-%d %H:%M:%S')}.", "",
             f"- RSS growth (last vs first quarter median): {result.rss_growth:.1%}",
             f"- open files growth: {result.fds_growth:+.0f}",
             f"- asyncio tasks growth: {result.tasks_growth}",
             f"- reboots: {len(result.reboots)}, recovered: "
             f"{sum(r['recovered_s'] is not None for r in result.reboots)}",
             f"- verdict: {'; '.join(result.failures) or 'PASS'}",
             "", "| t (s) | RSS (MiB) | open files | asyncio tasks | streams alive |",
             "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {s['t']} | {s['rss_mib']} | {s['fds']} | {s['tasks']} | {s['alive']} |"
              for s in result.samples]  # fmt: skip
    lines += ["", "| camera | rebooted at (s) | stream back after (s) |", "|---|---|---|"]
    lines += [f"| {r['camera']} | {r['t']} | {r['recovered_s']} |" for r in result.reboots]
    (out / "SOAK.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "soak.json").write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")


def main() -> int:
    import tempfile

    seconds = float(os.environ.get("SOAK_SECONDS", "1800"))
    cameras = int(os.environ.get("SOAK_CAMERAS", "64"))
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(soak(Path(tmp), cameras=cameras, seconds=seconds, reboot_every=20.0))
    title = f"camera-agent soak: {cameras} cameras relayed for {seconds:.0f} s"
    if result.failures:
        # A failed run writes no figures where the docs read them: its record goes to build/.
        write_report(result, Path("build") / "soak-failed", title)
        print("\n".join(result.failures), flush=True)
        print("soak failed: its record is in build/soak-failed/ (bench/SOAK.md unchanged)")
        return 1
    write_report(result, Path("bench"), title)
    print("soak passed; wrote bench/SOAK.md and bench/soak.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
