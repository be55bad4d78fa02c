"""`camera-agent demo`: the whole chain on loopback, in one process, until Ctrl-C.

A simulated cloud (Watcher, Central, activation server, two streampoints) and three simulated
ONVIF cameras start on 127.0.0.1. The mobile app's part is played too: an activation token is
shown as a QR code to the first camera. The real agent daemon starts with no token, finds the
cameras (WS-Discovery), reads the QR code from the camera's video, activates itself and connects
to the cloud; then it binds the other two cameras from their own QR codes. Each camera's video is
pulled the way the cloud streamer does, through the agent's tunnel, and decoded with FFmpeg
(PyAV); the agent's own RTSP server (restream) and local API are exercised as well. The demo then
prints the URLs to open (cloud page, RTSP through the tunnel and from the restream server, the
agent's status page and local API; each one fetched first), the agent's state directory and the
commands that inspect it, and keeps everything running. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shlex
import shutil
import socket
import sys
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
#: Seconds each printed URL may take to answer the demo's own check.
URL_CHECK_TIMEOUT = 10.0
#: Paths of the agent's local HTTP server printed for the user (each answers GET with 200).
AGENT_PAGES = ("/", "/metrics")
API_PATHS = ("/api/v1/hello", "/api/v1/cameras", "/api/v1/status", "/api/v1/openapi.json")


def cli_command() -> str:
    """This program as the user can type it again (for the commands the demo prints)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "camera-agent":
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m agent"


def agent_urls(root: str, camera_id: str | None) -> list[tuple[str, str]]:
    """(label, URL) of the agent's pages and local API under `root` (http://HOST:PORT)."""
    urls = [("Agent status page", root + AGENT_PAGES[0]), ("Agent metrics", root + AGENT_PAGES[1])]
    urls += [("Agent local API", root + path) for path in API_PATHS]
    if camera_id is not None:
        urls.append(("Camera control", f"{root}/api/v1/onvif/{camera_id}/image"))
    return urls


def log_command(state: Path) -> str:
    """The command that prints the audit log of the agent whose state is in `state`."""
    return f"{cli_command()} log --state-dir {shlex.quote(str(state))}"


def inspect_commands(state: Path, api_port: int) -> list[str]:
    """The commands that show what the demo's agent did (status, audit log)."""
    where = shlex.quote(str(state))
    status = f"{cli_command()} status --api 127.0.0.1:{api_port} --state-dir {where}"
    return [status, log_command(state)]


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
        state = await asyncio.to_thread(self.state_dir)
        try:
            return await self._run(state)
        finally:
            if self.args.state_dir is None:
                await asyncio.to_thread(shutil.rmtree, state, True)
            else:
                print(f"== the agent's state is kept in {state}; its audit log:")
                print(f"   {log_command(state)}")

    async def _run(self, state: Path) -> int:
        await self.cloud.start()
        await self.fleet.start()
        print(
            f"== simulated cloud (Watcher, Central, activation, streampoints) at {self.cloud.url}/"
        )
        for cam in self.fleet.cameras:
            print(f"== {cam.config.name}: ONVIF {cam.device_url}")
        await self.discover()
        first = await self.show_qr(self.fleet.cameras[0], "Front door")
        task = self.start_agent(state)
        agent = self.agent
        assert agent is not None
        try:
            await asyncio.wait_for(agent.ready.wait(), 20)
            base = f"http://127.0.0.1:{agent.api.port}/api/v1"
            print(f"== agent started with no token; local API at {base}/hello")
            streams = [await self.wait_stream(first)]
            await self.json("POST", f"{base}/activation/scan", {"seconds": 120})
            print("== agent asked (POST /activation/scan) to bind more cameras by QR code")
            for i, cam in enumerate(self.fleet.cameras[1:], start=2):
                token = await self.show_qr(cam, f"Camera {i}")
                streams.append(await self.wait_stream(token))
            await self.show_all(base, streams)
            self.show_state(state, agent.api.port)
            if self.args.once:
                print("== demo " + ("passed" if self.ok else "FAILED"))
                return 0 if self.ok else 1
            print(
                "== demo " + ("passed" if self.ok else "FAILED") + "; running until Ctrl-C",
                flush=True,
            )
            await self.forever(task)
            return 0 if self.ok else 1
        finally:
            self.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)

    def state_dir(self) -> Path:
        """The agent's state directory: --state-dir (new or empty), else a temporary one."""
        if self.args.state_dir is None:
            return Path(tempfile.mkdtemp(prefix="camera-agent-demo-"))
        path = Path(self.args.state_dir).absolute()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(path.iterdir()):
            raise DemoError(f"--state-dir {path} is not empty (the demo starts a new agent)")
        return path

    def show_state(self, state: Path, api_port: int) -> None:
        kept = (
            "kept after the demo"
            if self.args.state_dir is not None
            else "removed when the demo stops; keep it with --state-dir DIR"
        )
        print(f"Agent state directory:    {state}   ({kept})")
        print("Inspect the agent (status, the audit log of camera changes):")
        for command in inspect_commands(state, api_port):
            print(f"   {command}")

    async def check_urls(self, urls: list[tuple[str, str]]) -> None:
        """GET every URL about to be printed: each must answer 200."""
        timeout = aiohttp.ClientTimeout(total=URL_CHECK_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for label, url in urls:
                try:
                    async with http.get(url) as r:
                        status = r.status
                        await r.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.check(False, f"{label} {url}: {exc or type(exc).__name__}")
                    continue
                self.check(status == 200, f"{label} {url}: HTTP {status}")

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
        root = base.removesuffix("/api/v1")
        urls = [("Cloud status page", f"{self.cloud.url}/"), *agent_urls(root, cams[0]["id"])]
        await self.check_urls(urls)
        print()
        shown = ""
        for label, url in urls:
            print(f"{(label + ':') if label != shown else '':25} {url}")
            shown = label
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


class DemoError(Exception):
    """The demo cannot run as asked (message for the user)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cameras", type=int, default=3, help="how many simulated cameras (1-8)")
    p.add_argument("--frames", type=int, default=50, help="video frames to pull per stream")
    p.add_argument(
        "--once", action="store_true", help="exit after the checks instead of running on"
    )
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="keep the agent's state (activation, inventory, audit log) in DIR, new or empty, "
        "after the demo (default: a temporary directory, removed at the end)",
    )


async def run(args: argparse.Namespace) -> int:
    if not 1 <= args.cameras <= 8 or args.frames < 1:
        print("camera-agent demo: --cameras must be 1..8 and --frames positive", file=sys.stderr)
        return 2
    if logging.getLogger().level > logging.DEBUG:
        # Per-session server chatter would drown the demo's own lines.
        for name in ("agent.media", "agent.sim", "agent.api", "agent.app", "agent.cloud"):
            logging.getLogger(name).setLevel(logging.WARNING)
    demo = Demo(args)
    try:
        return await demo.run()
    except DemoError as exc:
        print(f"camera-agent demo: {exc}", file=sys.stderr)
        return 2
    except (TimeoutError, RuntimeError, aiohttp.ClientError, OSError) as exc:
        print(f"== demo FAILED: {exc or type(exc).__name__}")
        return 1
    finally:
        await demo.close()
