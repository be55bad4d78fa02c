"""`camera-agent demo`: the whole chain on loopback, in one process, until Ctrl-C.

A simulated cloud (Watcher, Central, activation server, two streampoints) and three simulated
ONVIF cameras start on 127.0.0.1. The mobile app's part is played too: an activation token is
shown as a QR code to the first camera. The real agent daemon starts with no token, finds the
cameras (WS-Discovery), reads the QR code from the camera's video, activates itself and connects
to the cloud; then it binds the other two cameras from their own QR codes. Each camera's video is
pulled the way the cloud streamer does, through the agent's tunnel, and decoded with FFmpeg
(PyAV); the agent's own RTSP server (restream) and local API are exercised as well. The demo then
prints the URLs to open (cloud page, RTSP through the tunnel and from the restream server, local
API) and keeps everything running. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import av

from agent.app import Agent
from agent.config import AgentConfig, DiscoveryConfig, RestreamConfig
from agent.discovery.scan import discover, format_table
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from agent.sim.cloud.app import SimCloud

log = logging.getLogger(__name__)

CLOUD_AUTH = {"Authorization": aiohttp.encode_basic_auth("admin", "admin")}
USERNAME, PASSWORD = "admin", "demo-pass"
RESTREAM_USER = "viewer"
#: Seconds the agent may take for each step (activation, binding a camera, the tunnel).
STEP_TIMEOUT = 60.0


def pull_frames(url: str, frames: int, timeout: float = 15.0) -> tuple[int, int, int, float]:
    """(frames, width, height, seconds) decoded from an RTSP URL (blocking: run in a thread)."""
    start = time.monotonic()
    got = width = height = 0
    with av.open(
        url, options={"rtsp_transport": "tcp", "timeout": "10000000"}, timeout=(timeout, timeout)
    ) as container:
        for frame in container.decode(video=0):
            got, width, height = got + 1, frame.width, frame.height
            if got >= frames or time.monotonic() - start > timeout:
                break
    return got, width, height, time.monotonic() - start


def _free_port(preferred: int) -> int:
    """`preferred` if nothing listens there on loopback, else 0 (any free port)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return 0
    return preferred


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cloud = SimCloud(port=0, streampoints=2, camera_login=(USERNAME, PASSWORD))
        configs = [
            SimCameraConfig(
                host="127.0.0.1",
                username=USERNAME,
                password=PASSWORD,
                name=f"DemoCam-{i + 1}",
                serial=f"DEMO{i + 1:04d}",
            )
            for i in range(args.cameras)
        ]
        # Discovery on an ephemeral port: the demo must not clash with cameras already on 3702.
        self.fleet = SimCameraFleet(configs, discovery_port=0, multicast=False)
        self.http = aiohttp.ClientSession(
            headers=CLOUD_AUTH, timeout=aiohttp.ClientTimeout(total=20)
        )
        self.agent: Agent | None = None
        self.stop = asyncio.Event()
        self.ok = True

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            print(f"!! {what}")
        self.ok = self.ok and ok

    async def json(self, method: str, url: str, body: Any = None) -> Any:
        async with self.http.request(method, url, json=body) as r:
            if r.status >= 300:
                raise RuntimeError(f"{method} {url}: HTTP {r.status}")
            return await r.json(content_type=None)

    async def show_qr(self, cam: SimCamera, title: str) -> str:
        """The mobile app: create a token, show its QR code to a camera."""
        body = await self.json(
            "POST", f"{self.cloud.watcher_url}/agent_activation_token", {"title": title}
        )
        token = str(body["token"])
        async with self.http.get(f"{self.cloud.url}/sim/qr/{token}") as r:
            payload = await r.text()
        async with self.http.put(
            f"http://127.0.0.1:{cam.port}/sim/qr", json={"text": payload}
        ) as r:
            r.raise_for_status()
        print(f"== mobile app: token {token[:8]}... shown as a QR code to {cam.config.name}")
        return token

    async def stream_of(self, token: str) -> dict[str, Any] | None:
        """The Watcher stream record once the token is provisioned and relayed."""
        tok = await self.json("GET", f"{self.cloud.watcher_url}/agent_activation_token/{token}")
        name = tok.get("stream_name")
        if not name:
            return None
        stream: dict[str, Any] = await self.json("GET", f"{self.cloud.watcher_url}/streams/{name}")
        return stream if stream.get("sim_rtsp_url") else None

    async def wait_stream(self, token: str) -> dict[str, Any]:
        t0 = time.monotonic()
        async with asyncio.timeout(STEP_TIMEOUT):
            while (stream := await self.stream_of(token)) is None:  # noqa: ASYNC110 (polling the cloud)
                await asyncio.sleep(0.5)
        print(
            f"   provisioned as stream {stream['name']} via {stream['inputs'][0]['via']} "
            f"({time.monotonic() - t0:.1f} s)"
        )
        return stream

    async def discover(self) -> None:
        port = self.fleet.discovery_port
        assert port is not None
        found = await discover(
            timeout=1.5,
            subnets=["127.0.0.1/32"],
            discovery_port=port,
            multicast=False,
            username=USERNAME,
            password=PASSWORD,
        )
        print(f"== WS-Discovery probe (unicast to 127.0.0.1:{port}) and ONVIF details")
        print(format_table(found))
        self.check(len(found) == len(self.fleet.cameras), "not every camera was discovered")

    def start_agent(self, state: Path) -> asyncio.Task[None]:
        port = self.fleet.discovery_port
        assert port is not None
        cfg = AgentConfig(
            state_dir=state,
            api_host="127.0.0.1",
            api_port=_free_port(8780),
            webrtc_addresses=("127.0.0.1",),
            discovery=DiscoveryConfig(
                multicast=False, mdns=False, subnets=("127.0.0.1/32",), discovery_port=port
            ),
            default_credentials=(Credentials(USERNAME, Secret(PASSWORD)),),
            restream=RestreamConfig(
                host="127.0.0.1", port=_free_port(8554), username=RESTREAM_USER
            ),
        )
        self.agent = Agent(cfg)
        return asyncio.create_task(self.agent.run(self.stop), name="agent")

    async def pull(self, label: str, url: str) -> None:
        try:
            n, w, h, took = await asyncio.to_thread(pull_frames, url, self.args.frames)
        except av.error.FFmpegError as exc:
            self.check(False, f"{label}: {exc}")
            return
        print(f"   {label}: {n} frames {w}x{h} in {took:.1f} s")
        self.check(n >= self.args.frames, f"{label}: only {n} frames")

    async def drive(self, base: str, cam_id: str) -> None:
        onvif = f"{base}/onvif/{cam_id}"
        await self.json("PUT", f"{onvif}/image/brightness", {"value": 80})
        await self.json("PUT", f"{onvif}/ptz", {"move": "RIGHT", "step": 5})
        pos = (await self.json("GET", f"{onvif}/ptz"))["pan_tilt"].get("current_position")
        brightness = (await self.json("GET", f"{onvif}/image"))["brightness"]["current_value"]
        print(f"== local API: brightness set to {brightness}, PTZ moved right to {pos}")
        self.check(brightness == 80 and bool(pos) and pos["x"] > 0, "camera control failed")

    async def run(self) -> int:
        await self.cloud.start()
        await self.fleet.start()
        print(
            f"== simulated cloud (Watcher, Central, activation, streampoints) at {self.cloud.url}/"
        )
        for cam in self.fleet.cameras:
            print(f"== {cam.config.name}: ONVIF {cam.device_url}")
        await self.discover()
        first = await self.show_qr(self.fleet.cameras[0], "Front door")
        with tempfile.TemporaryDirectory(prefix="camera-agent-demo-") as state:
            task = self.start_agent(Path(state))
            agent = self.agent
            assert agent is not None
            try:
                await asyncio.wait_for(agent.ready.wait(), 20)
                base = f"http://127.0.0.1:{agent.api.port}/api/v1"
                print(f"== agent started with no token; local API at {base}/")
                streams = [await self.wait_stream(first)]
                await self.json("POST", f"{base}/activation/scan", {"seconds": 120})
                print("== agent asked (POST /activation/scan) to bind more cameras by QR code")
                for i, cam in enumerate(self.fleet.cameras[1:], start=2):
                    token = await self.show_qr(cam, f"Camera {i}")
                    streams.append(await self.wait_stream(token))
                await self.show_all(base, streams)
                if self.args.once:
                    print("== demo " + ("passed" if self.ok else "FAILED"))
                    return 0 if self.ok else 1
                print("== demo " + ("passed" if self.ok else "FAILED") + "; running until Ctrl-C")
                await self.forever(task)
                return 0 if self.ok else 1
            finally:
                self.stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10)

    async def show_all(self, base: str, streams: list[dict[str, Any]]) -> None:
        agent = self.agent
        assert agent is not None
        assert agent.restream is not None
        restream_pw = (await asyncio.to_thread(agent.state.restream_password)).reveal()
        print("== video through the agent tunnel, pulled as the cloud streamer does (FFmpeg)")
        tunnel_urls: list[str] = []
        for stream in streams:
            url = str(stream["sim_rtsp_url"])
            tunnel_urls.append(url)
            await self.pull(f"{stream['name']} main", url)
            await self.pull(f"{stream['name']} sub ", _with_path(url, "/live/sub"))
        cams = (await self.json("GET", f"{base}/cameras"))["cameras"]
        print("== the agent's own RTSP server (one camera session shared by every viewer)")
        restream_urls: list[str] = []
        for cam in cams:
            url = agent.restream.url(cam["id"]).replace(
                "rtsp://", f"rtsp://{RESTREAM_USER}:{quote(restream_pw, safe='')}@"
            )
            restream_urls.append(url)
        await self.pull("restream main", restream_urls[0])
        await self.drive(base, cams[0]["id"])
        tunnels = agent.relay_status()["tunnels"] or {}
        print(
            f"== tunnels: {tunnels.get('opened', 0)} opened, {tunnels.get('refused', 0)} refused, "
            f"{tunnels.get('bytes_out', 0) / 1e6:.1f} MB camera -> cloud"
        )
        print()
        print(f"Cloud status page:        {self.cloud.url}/")
        root = base.removesuffix("/api/v1")
        print(f"Agent status page:        {root}/   (metrics: {root}/metrics)")
        print(f"Agent local API:          {base}/   (OpenAPI: {base}/openapi.json)")
        print("Through the agent tunnel (what the cloud streamer pulls; try ffplay or VLC):")
        for url in tunnel_urls:
            print(f"   ffplay -rtsp_transport tcp '{url}'")
        print("From the agent's restream server:")
        for url in restream_urls:
            print(f"   ffplay -rtsp_transport tcp '{url}'")

    async def forever(self, task: asyncio.Task[None]) -> None:
        from agent.cli import stop_on_signals

        stop = stop_on_signals()
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        print("\n== stopping")

    async def close(self) -> None:
        await self.http.close()
        await self.fleet.stop()
        await self.cloud.stop()


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cameras", type=int, default=3, help="how many simulated cameras (1-8)")
    p.add_argument("--frames", type=int, default=50, help="video frames to pull per stream")
    p.add_argument(
        "--once", action="store_true", help="exit after the checks instead of running on"
    )


async def run(args: argparse.Namespace) -> int:
    if not 1 <= args.cameras <= 8 or args.frames < 1:
        print("camera-agent demo: --cameras must be 1..8 and --frames positive")
        return 2
    if logging.getLogger().level > logging.DEBUG:
        # Per-session server chatter would drown the demo's own lines.
        for name in ("agent.media", "agent.sim", "agent.api", "agent.app", "agent.cloud"):
            logging.getLogger(name).setLevel(logging.WARNING)
    demo = Demo(args)
    try:
        return await demo.run()
    except (TimeoutError, RuntimeError, aiohttp.ClientError, OSError) as exc:
        print(f"== demo FAILED: {exc or type(exc).__name__}")
        return 1
    finally:
        await demo.close()
