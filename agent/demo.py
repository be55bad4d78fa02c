"""`camera-agent demo`: the whole chain on loopback, end to end, in one process.

It starts simulated cameras on 127.0.0.1, finds them with WS-Discovery, reads their identity and
streams over ONVIF, pulls live video from each with FFmpeg (PyAV) and a JPEG snapshot, then runs
the agent daemon against them and drives a camera through the local API (image setting, PTZ),
and prints what it saw. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av

from agent.app import Agent
from agent.config import AgentConfig, DiscoveryConfig
from agent.discovery.scan import FoundCamera, discover, format_table
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullResult:
    url: str
    frames: int
    width: int
    height: int
    seconds: float
    audio: bool


def pull_frames(url: str, frames: int, timeout: float = 15.0) -> PullResult:
    """Decode `frames` video frames from an RTSP URL with FFmpeg (blocking: run in a thread)."""
    start = time.monotonic()
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(timeout, timeout)) as container:
        vstream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        got = width = height = 0
        for frame in container.decode(vstream):
            got += 1
            width, height = frame.width, frame.height
            if got >= frames or time.monotonic() - start > timeout:
                break
    return PullResult(url, got, width, height, time.monotonic() - start, has_audio)


def _with_credentials(url: str, username: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{username}:{password}@{rest}"


async def _snapshot(url: str, username: str, password: str) -> int:
    auth = aiohttp.DigestAuthMiddleware(username, password)
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(middlewares=(auth,), timeout=timeout) as session,
        session.get(url) as resp,
    ):
        resp.raise_for_status()
        return len(await resp.read())


async def _agent_phase(
    fleet: SimCameraFleet, discovery_port: int, username: str, password: str
) -> bool:
    """Run the agent daemon against the cameras and drive one camera through its local API."""
    with tempfile.TemporaryDirectory(prefix="camera-agent-demo-") as state:
        cfg = AgentConfig(
            state_dir=Path(state),
            api_host="127.0.0.1",
            api_port=0,
            discovery=DiscoveryConfig(
                multicast=False,
                mdns=False,
                subnets=("127.0.0.1/32",),
                discovery_port=discovery_port,
            ),
            default_credentials=(Credentials(username, Secret(password)),),
        )
        agent = Agent(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await asyncio.wait_for(agent.ready.wait(), 20)
            base = f"http://127.0.0.1:{agent.api.port}/api/v1"
            print(f"== agent daemon running, local API at {base}/")
            deadline = time.monotonic() + 20
            cams: list[dict[str, Any]] = []
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
                while time.monotonic() < deadline:
                    async with http.get(f"{base}/cameras") as resp:
                        cams = (await resp.json())["cameras"]
                    if len(cams) == len(fleet.cameras) and all(
                        c["state"] == "online" for c in cams
                    ):
                        break
                    await asyncio.sleep(0.2)
                print(f"   GET /cameras: {len(cams)} camera(s) online in the inventory")
                if not cams:
                    return False
                cam_id = cams[0]["id"]
                onvif = f"{base}/onvif/{cam_id}"
                async with http.put(f"{onvif}/image/brightness", json={"value": 80}) as resp:
                    print(f"   PUT image/brightness 80 -> {resp.status} {await resp.json()}")
                async with http.put(f"{onvif}/ptz", json={"move": "RIGHT", "step": 5}) as resp:
                    print(f"   PUT ptz RIGHT step 5 -> {resp.status}")
                async with http.get(f"{onvif}/ptz") as resp:
                    pos = (await resp.json())["pan_tilt"].get("current_position")
                    print(f"   GET ptz -> position {pos}")
                async with http.get(f"{onvif}/image") as resp:
                    brightness = (await resp.json())["brightness"]["current_value"]
            return bool(brightness == 80 and pos and pos["x"] > 0)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cameras", type=int, default=2, help="how many simulated cameras")
    p.add_argument("--frames", type=int, default=50, help="video frames to pull per stream")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the cameras running after the demo (Ctrl-C to stop)",
    )


async def run(args: argparse.Namespace) -> int:
    if logging.getLogger().level > logging.DEBUG:
        # Per-session server chatter would drown the demo's own lines.
        for name in ("agent.media", "agent.sim", "agent.api", "agent.app"):
            logging.getLogger(name).setLevel(logging.WARNING)
    username, password = "admin", "demo-pass"
    configs = [
        SimCameraConfig(
            host="127.0.0.1",
            port=0,
            rtsp_port=0,
            username=username,
            password=password,
            name=f"DemoCam-{i + 1}",
            serial=f"DEMO{i + 1:04d}",
        )
        for i in range(args.cameras)
    ]
    # Discovery on an ephemeral port: the demo must not clash with cameras already on 3702.
    fleet = SimCameraFleet(configs, discovery_port=0, multicast=False)
    await fleet.start()
    try:
        print(f"== started {len(fleet.cameras)} simulated cameras on 127.0.0.1")
        for cam in fleet.cameras:
            print(f"   {cam.config.name}: {cam.device_url}")
        port = fleet.discovery_port
        assert port is not None
        print(f"== WS-Discovery probe (unicast to 127.0.0.1:{port}) and ONVIF details")
        t0 = time.monotonic()
        cams: list[FoundCamera] = await discover(
            timeout=1.5,
            subnets=["127.0.0.1/32"],
            discovery_port=port,
            multicast=False,
            username=username,
            password=password,
        )
        print(format_table(cams))
        print(f"   {len(cams)} camera(s) in {time.monotonic() - t0:.1f} s")
        ok = len(cams) == len(configs) and all(c.state == "online" for c in cams)
        for found in cams:
            for prof in found.profiles:
                url = _with_credentials(prof["rtsp_uri"], username, password)
                res = await asyncio.to_thread(pull_frames, url, args.frames)
                print(
                    f"== {found.id} {prof['name']}: {res.frames} frames {res.width}x{res.height} "
                    f"in {res.seconds:.1f} s{' + audio' if res.audio else ''}"
                )
                ok = ok and res.frames >= args.frames
            if found.snapshot_uri:
                size = await _snapshot(found.snapshot_uri, username, password)
                print(f"== {found.id} snapshot: {size} bytes of JPEG")
        ok = await _agent_phase(fleet, port, username, password) and ok
        print("== demo " + ("passed" if ok else "FAILED"))
        if args.keep_running:
            print("== cameras keep running; Ctrl-C to stop")
            await asyncio.Event().wait()
        return 0 if ok else 1
    finally:
        await fleet.stop()
