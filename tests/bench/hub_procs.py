"""The processes of the shared-session benchmarks (bench_fanout, bench_webrtc, bench_push), each in
a process of its own so that /proc gives each one's CPU and memory apart:

- the simulated camera (`camera-agent sim camera`), its 720p main and 360p sub streams, and its
  session counters (`GET /sim/state` on its ONVIF port: sessions open now and their peak);
- the agent (`camera-agent run --config F`): the camera as a `[[camera]]` table (RTSP only, no
  snapshot URL: snapshots are decoded from the stream), its restream server, `[[push]]` entries
  and WebRTC on loopback; its camera id is the one it derives from the camera URL. It is
  activated with the simulated cloud (in this process), as in the field: an agent that is not
  activated decodes its cameras' pictures all the time looking for an activation QR code;
- go2rtc (AlexxIT/go2rtc 1.9.14, the binary in ../shared/peers/, see its README there) with one
  stream `cam` from the same camera URL: RTSP restream and WebRTC (WHEP) on loopback;
- `ffmpeg -rtsp_transport tcp -i URL -c copy -f null -` readers (the same for either server),
  counting the video packets each received (`-progress`), and `ffmpeg` RTSP receivers in
  listen mode for push targets.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agent.camera.rtsp_only import rtsp_camera_id
from agent.sim.cloud.app import SimCloud
from agent.sim.world import ChildProcess, World, free_loopback_port
from tests.bench.common import proc_cpu_seconds, proc_rss_mib
from tests.world import stop_process

ROOT = Path(__file__).resolve().parents[2]
CAM_USER, CAM_PW = "admin", "bench-cam-pw"
VIEWER_USER, VIEWER_PW = "viewer", "bench-viewer-pw"
START_S = 60.0
#: The camera's main stream: 1280x720 at 25 frames/s (agent/sim/camera/model.py).
FPS = 25


def _write_private(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)


# ---------------------------------------------------------------------------- the camera


@dataclass
class Camera:
    port: int  # ONVIF HTTP (and /sim control)
    main: str  # stream URLs without the login
    sub: str
    username: str = CAM_USER
    password: str = CAM_PW

    def url(self, stream: str = "main") -> str:
        """The stream URL with the camera's login."""
        plain = self.main if stream == "main" else self.sub
        return plain.replace("rtsp://", f"rtsp://{self.username}:{self.password}@", 1)

    async def state(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{self.port}/sim/state") as r,
        ):
            r.raise_for_status()
            answer: dict[str, Any] = await r.json()
            return answer

    async def sessions(self) -> int:
        """RTSP sessions open at the camera now."""
        return int((await self.state())["rtsp_sessions"])

    async def reset_peak(self) -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.delete(f"http://127.0.0.1:{self.port}/sim/sessions") as r,
        ):
            r.raise_for_status()

    async def wait_sessions(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while await self.sessions() != count:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the camera holds {await self.sessions()} sessions, not {count}"
                )
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def camera(run_dir: Path) -> AsyncIterator[Camera]:
    """One simulated camera process (no session cap), stopped on exit."""
    ready = run_dir / "camera.json"
    args = ["sim", "camera", "--port", "0", "--rtsp-port", "0", "--no-discovery"]
    args += ["--username", CAM_USER, "--password", CAM_PW, "--ready-file", str(ready)]
    child = await ChildProcess.start("camera", args, stderr=run_dir / "camera.stderr")
    try:
        info = (await child.ready_file(ready, START_S))["cameras"][0]
        urls = list(dict(info["rtsp"]).values())
        yield Camera(int(info["port"]), str(urls[0]), str(urls[1]))
    finally:
        await child.stop()


# ---------------------------------------------------------------------------- the agent


@dataclass
class AgentProcess:
    process: ChildProcess
    api: str  # http://127.0.0.1:PORT/api/v1
    camera_id: str
    restream_port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def restream_url(self, stream: str = "main") -> str:
        login = f"{VIEWER_USER}:{VIEWER_PW}@"
        return f"rtsp://{login}127.0.0.1:{self.restream_port}/{self.camera_id}/{stream}"

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as s, s.get(self.api + path) as r:
            r.raise_for_status()
            return await r.json()


def _toml_str(value: str) -> str:
    return json.dumps(value)


@contextlib.asynccontextmanager
async def cloud() -> AsyncIterator[World]:
    """The simulated cloud (a world without cameras), for activating the agent."""
    async with World([], cloud=SimCloud(port=0)) as world:
        yield world


def agent_toml(
    cam: Camera,
    *,
    cloud_url: str,
    state_dir: Path,
    api_port: int,
    restream_port: int,
    pushes: Sequence[str] = (),
    linger: float = 1.0,
    max_sessions: int = 2,
) -> str:
    """The agent's config file for the benchmarks (it holds logins: write it private)."""
    lines = [
        "[agent]",
        f"state_dir = {_toml_str(str(state_dir))}",
        "[api]",
        f'listen = "127.0.0.1:{api_port}"',
        'webrtc_addresses = ["127.0.0.1"]',
        "[discovery]",
        "multicast = false",
        "mdns = false",
        "[cloud]",
        f"activation_url = {_toml_str(cloud_url)}",
        "[sessions]",
        f"max_sessions = {max_sessions}",
        f"linger = {linger}",
        "[restream]",
        f'listen = "127.0.0.1:{restream_port}"',
        f"username = {_toml_str(VIEWER_USER)}",
        f"password = {_toml_str(VIEWER_PW)}",
        "[[camera]]",
        'name = "Bench"',
        f"rtsp_url = {_toml_str(cam.main)}",
        f"sub_url = {_toml_str(cam.sub)}",
        f"username = {_toml_str(cam.username)}",
        f"password = {_toml_str(cam.password)}",
    ]
    camera_id = rtsp_camera_id(cam.main)
    for url in pushes:
        lines += ["[[push]]", f"camera = {_toml_str(camera_id)}", f"url = {_toml_str(url)}"]
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def agent(
    run_dir: Path,
    cam: Camera,
    sim_cloud: World,
    *,
    pushes: Sequence[str] = (),
    linger: float = 1.0,
    max_sessions: int = 2,
) -> AsyncIterator[AgentProcess]:
    """`camera-agent run` with the camera as a `[[camera]]` table (main and sub), the restream
    server, WebRTC on loopback and one `[[push]]` entry of the main stream per URL of `pushes`;
    activated with `sim_cloud`; yields once the camera is online; stopped on exit."""
    api_port, restream_port = free_loopback_port(), free_loopback_port()
    camera_id = rtsp_camera_id(cam.main)
    state = run_dir / "agent-state"
    state.mkdir(parents=True, exist_ok=True)
    text = agent_toml(
        cam,
        cloud_url=sim_cloud.cloud.url,
        state_dir=state,
        api_port=api_port,
        restream_port=restream_port,
        pushes=pushes,
        linger=linger,
        max_sessions=max_sessions,
    )
    config = run_dir / "agent.toml"
    _write_private(config, text)
    child = await ChildProcess.start(
        "agent", ["run", "--config", str(config)], stderr=run_dir / "agent.stderr"
    )
    proc = AgentProcess(child, f"http://127.0.0.1:{api_port}/api/v1", camera_id, restream_port)
    try:
        deadline = time.monotonic() + START_S
        while not await _online(proc):
            if not child.running():
                raise await child.failure("exited before the camera was online")
            if time.monotonic() > deadline:
                raise await child.failure("the camera is not online")
            await asyncio.sleep(0.2)
        token = await sim_cloud.new_token("bench")
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{proc.api}/activation", json={"token": token}) as r,
        ):
            if r.status != 200:
                raise await child.failure(f"activation: HTTP {r.status}")
        yield proc
    finally:
        await child.stop()


async def _online(proc: AgentProcess) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        body = await proc.get("/cameras")
        cams = body.get("cameras", []) if isinstance(body, dict) else []
        return any(c.get("id") == proc.camera_id and c.get("state") == "online" for c in cams)
    return False


# ---------------------------------------------------------------------------- readers


class Reader:
    """`ffmpeg -rtsp_transport tcp -i URL -c copy -f null -`, its progress in a file."""

    def __init__(self, proc: asyncio.subprocess.Process, progress: Path) -> None:
        self.proc = proc
        self.progress = progress

    def frames(self) -> int:
        """Video packets received so far (the last `frame=` of its progress)."""
        try:
            text = self.progress.read_text(encoding="ascii", errors="replace")
        except OSError:
            return 0
        values = [line[6:].strip() for line in text.splitlines() if line.startswith("frame=")]
        counts = [int(v) for v in values if v.isdigit()]  # the last block may be half written
        return counts[-1] if counts else 0


@contextlib.asynccontextmanager
async def readers(run_dir: Path, urls: Sequence[str]) -> AsyncIterator[list[Reader]]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("the benchmark needs the ffmpeg CLI (apt-get install ffmpeg)")
    out: list[Reader] = []
    try:
        for i, url in enumerate(urls):
            progress = run_dir / f"reader-{i}.progress"
            progress.unlink(missing_ok=True)
            args = [ffmpeg, "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp"]
            args += ["-i", url, "-map", "0", "-c", "copy", "-f", "null", "-"]
            args += ["-progress", str(progress), "-stats_period", "0.5"]
            proc = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            out.append(Reader(proc, progress))
        yield out
    finally:
        await asyncio.gather(*(stop_process(r.proc) for r in out))


@contextlib.asynccontextmanager
async def receivers(count: int) -> AsyncIterator[list[str]]:
    """`count` ffmpeg RTSP receivers in listen mode (null output); yields their URLs."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("the benchmark needs the ffmpeg CLI (apt-get install ffmpeg)")
    procs: list[asyncio.subprocess.Process] = []
    urls = []
    try:
        for _ in range(count):
            url = f"rtsp://127.0.0.1:{free_loopback_port()}/live"
            args = [ffmpeg, "-nostdin", "-loglevel", "error", "-rtsp_flags", "listen"]
            args += ["-listen_timeout", "60", "-i", url, "-c", "copy", "-f", "null", "-"]
            procs.append(
                await asyncio.create_subprocess_exec(
                    *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
                )
            )
            urls.append(url)
        await asyncio.sleep(1.0)
        yield urls
    finally:
        await asyncio.gather(*(stop_process(p) for p in procs))


# ---------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Usage:
    cores: float  # CPU of the measured process, in cores
    rss: float  # MiB at the end
    frames: int  # fewest video packets a reader received over the window


async def measure(pid: int, rs: Sequence[Reader], warmup: float, seconds: float) -> Usage:
    """CPU of process `pid` over `seconds` after `warmup`, while the readers `rs` read; every
    reader must be running and receive at least half the frames the window holds."""
    await asyncio.sleep(warmup)
    cpu0 = proc_cpu_seconds(pid)
    f0 = [r.frames() for r in rs]
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    cpu = proc_cpu_seconds(pid) - cpu0
    took = time.monotonic() - t0
    rss = proc_rss_mib(pid)
    got = [r.frames() - f for r, f in zip(rs, f0, strict=True)]
    if any(r.proc.returncode is not None for r in rs):
        raise RuntimeError("a reader exited during the measurement")
    if rs and min(got) < seconds * FPS / 2:
        raise RuntimeError(f"a reader got {min(got)} frames in {seconds:g} s")
    return Usage(cpu / took, rss, min(got) if got else 0)
