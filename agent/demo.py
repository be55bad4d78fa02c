"""`camera-agent demo`: the whole chain on loopback, end to end, in one process.

It starts a simulated cloud and simulated cameras on 127.0.0.1, finds the cameras with
WS-Discovery, reads their identity and streams over ONVIF, pulls live video from each with FFmpeg
(PyAV) and a JPEG snapshot; then plays the mobile app (an activation token shown as a QR code to a
camera), starts the agent daemon with no token and shows it activate itself from the QR code and
connect to the cloud, and drives a camera through the local API (image setting, PTZ). Nothing
leaves the machine.
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
from agent.net.urls import with_credentials
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from agent.sim.cloud.app import SimCloud

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


async def _snapshot(url: str, username: str, password: str) -> int:
    auth = aiohttp.DigestAuthMiddleware(username, password)
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(middlewares=(auth,), timeout=timeout) as session,
        session.get(url) as resp,
    ):
        resp.raise_for_status()
        return len(await resp.read())


async def _mobile_app_shows_qr(cloud: SimCloud, cam: SimCamera) -> str:
    """What the mobile app does: create an activation token, show its QR code to a camera."""
    auth = {"Authorization": aiohttp.encode_basic_auth("admin", "admin")}
    async with aiohttp.ClientSession(headers=auth, timeout=aiohttp.ClientTimeout(total=10)) as s:
        async with s.post(
            f"{cloud.watcher_url}/agent_activation_token", json={"title": "Front door"}
        ) as r:
            token = str((await r.json())["token"])
        async with s.get(f"{cloud.url}/sim/qr/{token}") as r:
            payload = await r.text()
        async with s.put(f"http://127.0.0.1:{cam.port}/sim/qr", json={"text": payload}) as r:
            r.raise_for_status()
    print(f"== mobile app: token {token[:8]}..., QR code shown to {cam.config.name}")
    return token


async def _cloud_view(cloud: SimCloud, token: str) -> tuple[str | None, str | None, bool]:
    """(stream name, input `via`, agent alive) as the cloud's APIs report them."""
    auth = {"Authorization": aiohttp.encode_basic_auth("admin", "admin")}
    async with aiohttp.ClientSession(headers=auth, timeout=aiohttp.ClientTimeout(total=10)) as s:
        async with s.get(f"{cloud.watcher_url}/agent_activation_token/{token}") as r:
            name = (await r.json()).get("stream_name") if r.status == 200 else None
        if not name:
            return None, None, False
        async with s.get(f"{cloud.watcher_url}/streams/{name}") as r:
            inputs = (await r.json()).get("inputs") or [{}]
        via = inputs[0].get("via")
        async with s.get(f"{cloud.central_url}/agents") as r:
            agents = (await r.json())["agents"]
    agent_id = (via or "").removeprefix("agent://")
    alive = any(a["id"] == agent_id and a["stats"]["endpoint_connection"]["alive"] for a in agents)
    return name, via, alive


async def _agent_phase(
    fleet: SimCameraFleet, cloud: SimCloud, discovery_port: int, username: str, password: str
) -> bool:
    """Run the agent daemon: it activates from the QR code, then serves its local API."""
    token = await _mobile_app_shows_qr(cloud, fleet.cameras[0])
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
            print(f"== agent daemon started with no token; local API at {base}/")
            t0 = time.monotonic()
            name = via = None
            alive = False
            while time.monotonic() - t0 < 30 and not alive:
                await asyncio.sleep(0.5)
                name, via, alive = await _cloud_view(cloud, token)
            print(
                f"== cloud: token provisioned as stream {name!r}, input via {via}, "
                f"agent connected: {alive} ({time.monotonic() - t0:.1f} s after start)"
            )
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
            return bool(alive and brightness == 80 and pos and pos["x"] > 0)
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
        for name in ("agent.media", "agent.sim", "agent.api", "agent.app", "agent.cloud"):
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
    cloud = SimCloud(port=0)
    await cloud.start()
    print(f"== simulated cloud (Watcher, Central, activation, streampoint) at {cloud.url}/")
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
                url = with_credentials(prof["rtsp_uri"], username, password)
                res = await asyncio.to_thread(pull_frames, url, args.frames)
                print(
                    f"== {found.id} {prof['name']}: {res.frames} frames {res.width}x{res.height} "
                    f"in {res.seconds:.1f} s{' + audio' if res.audio else ''}"
                )
                ok = ok and res.frames >= args.frames
            if found.snapshot_uri:
                size = await _snapshot(found.snapshot_uri, username, password)
                print(f"== {found.id} snapshot: {size} bytes of JPEG")
        ok = await _agent_phase(fleet, cloud, port, username, password) and ok
        print("== demo " + ("passed" if ok else "FAILED"))
        if args.keep_running:
            print(f"== cameras and cloud keep running (status page {cloud.url}/); Ctrl-C to stop")
            await asyncio.Event().wait()
        return 0 if ok else 1
    finally:
        await fleet.stop()
        await cloud.stop()
