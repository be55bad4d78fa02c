"""`camera-agent demo`: the whole chain on loopback, in one process, until Ctrl-C.

A simulated cloud (Watcher, Central, activation server, two streampoints) and three simulated
ONVIF cameras start on 127.0.0.1 (the world of agent.sim.world). The mobile app's part is played
too: an activation token is shown as a QR code to the first camera. The real agent daemon starts
with no token, finds the cameras (WS-Discovery), reads the QR code from the camera's video,
activates itself and connects to the cloud; then it binds the other cameras from their own QR
codes. Each camera's video (its main stream and another one) is pulled the way the cloud
streamer does, through the agent's tunnel, and decoded with FFmpeg (PyAV); the agent's own RTSP
server (restream) and local API are exercised as well, and every camera is watched live over
WebRTC at once, as the agent's console shows it, with the camera sessions the agent holds for
all those consumers (one per stream). The demo then prints the URLs to open (cloud page, RTSP
through the tunnel and from the restream server, the agent's console with a live view of each
camera, and its local API; each one fetched first), the agent's state directory and the
commands that inspect it, and keeps everything running. Nothing leaves the machine.

`--fleet mixed` (`make demo FLEET=mixed`) replaces the three cameras with one simulated camera
per persona of agent.sim.camera.persona (makes with their stream layouts and quirks) and one
camera the agent is given by RTSP URL only (a `[[camera]]` table, no ONVIF). The checks are the
same: every ONVIF camera discovered, every camera bound by its QR code and pulled through the
tunnel (a second stream where the camera has one), camera control on a camera with the imaging
service (and PTZ where one has it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import av

from agent.config import AgentConfig, RestreamConfig
from agent.discovery.scan import discover, format_table
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.persona import PERSONAS
from agent.sim.cloud.app import SimCloud
from agent.sim.world import CameraSpec, RtspCameraSpec, SimCameraSpec, World

log = logging.getLogger(__name__)

USERNAME, PASSWORD = "admin", "demo-pass"
RESTREAM_USER = "viewer"
#: Seconds the agent may take for each step (activation, binding a camera, the tunnel).
STEP_TIMEOUT = 60.0
#: Cameras watched over WebRTC at once (the agent serves 8 WebRTC sessions at most).
LIVE_AT_ONCE = 6
#: Streams decoded at once.
PULL_THREADS = 4
#: Seconds each printed URL may take to answer the demo's own check.
URL_CHECK_TIMEOUT = 10.0
#: Paths of the agent's local HTTP server printed for the user (each answers GET with 200).
AGENT_PAGES = ("/", "/metrics")
API_PATHS = ("/api/v1/hello", "/api/v1/cameras", "/api/v1/status", "/api/v1/openapi.json")


def _camera_label(cam: dict[str, Any]) -> str:
    """A camera as the console titles it (its name, else make and model) and its id's start."""
    make = " ".join(str(cam.get(k) or "") for k in ("manufacturer", "model")).strip()
    return f"{cam.get('name') or make or 'camera'} ({str(cam['id'])[:8]})"


def cli_command() -> str:
    """This program as the user can type it again (for the commands the demo prints)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "camera-agent":
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m agent"


def agent_urls(root: str, camera_id: str | None) -> list[tuple[str, str]]:
    """(label, URL) of the agent's pages and local API under `root` (http://HOST:PORT)."""
    urls = [
        ("Agent console", root + AGENT_PAGES[0]),
        ("Agent metrics", root + AGENT_PAGES[1]),
    ]
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


#: The fleets `--fleet` names.
FLEETS = ("default", "mixed")


def fleet_specs(fleet: str, cameras: int) -> list[CameraSpec]:
    """The demo's cameras: `default` is `cameras` simulated ONVIF cameras; `mixed` is one
    simulated ONVIF camera per persona and one camera the agent gets by RTSP URL only."""
    base = SimCameraConfig(host="127.0.0.1", username=USERNAME, password=PASSWORD)
    if fleet == "default":
        return [
            SimCameraSpec(replace(base, name=f"DemoCam-{i + 1}", serial=f"DEMO{i + 1:04d}"))
            for i in range(cameras)
        ]
    specs: list[CameraSpec] = [
        SimCameraSpec(replace(base, name=f"Demo-{name}", serial=f"DEMO{i + 1:04d}", persona=name))
        for i, name in enumerate(sorted(PERSONAS))
    ]
    specs.append(RtspCameraSpec(replace(base, name="Demo-rtsp", serial="DEMORTSP")))
    return specs


class Demo:
    def __init__(self, args: argparse.Namespace, state: Path) -> None:
        self.args = args
        # Discovery on an ephemeral port: the demo must not clash with cameras already on 3702.
        self.world = World(
            fleet_specs(args.fleet, args.cameras),
            cloud=SimCloud(port=0, streampoints=2, camera_login=(USERNAME, PASSWORD)),
            state_dir=state,
            discovery=True,
            configure=self.configure,
        )
        self.stop = asyncio.Event()
        self.ok = True

    @property
    def cloud(self) -> SimCloud:
        return self.world.cloud

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            print(f"!! {what}")
        self.ok = self.ok and ok

    async def json(self, method: str, url: str, body: Any = None) -> Any:
        return await self.world.cloud_json(method, url, body)

    async def show_qr(self, cam: SimCamera, title: str) -> str:
        """The mobile app: create a token, show its QR code to a camera."""
        token = await self.world.new_token(title)
        await self.world.show_qr(cam, token)
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
        port = self.world.discovery_port
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
        self.check(len(found) == len(self.world.cameras), "not every ONVIF camera was discovered")

    def configure(self, cfg: AgentConfig) -> AgentConfig:
        """The demo agent: no token (QR activation), its API and restream server on the usual
        ports when they are free, WebRTC on loopback, and each camera's RTSP session budget as
        the camera caps it (its persona's; by serial number), as a user would configure it."""
        caps = {
            str(cam.describe().get("serial_number") or ""): cam.max_sessions
            for cam in self.world.cameras
            if cam.max_sessions
        }
        return replace(
            cfg,
            api_port=_free_port(8780),
            webrtc_addresses=("127.0.0.1",),
            cloud=replace(cfg.cloud, activation_url=None),
            restream=RestreamConfig(
                host="127.0.0.1", port=_free_port(8554), username=RESTREAM_USER
            ),
            sessions=replace(cfg.sessions, per_camera={k: v for k, v in caps.items() if k}),
        )

    async def pull(self, pulls: list[tuple[str, str]]) -> None:
        """Decode `frames` frames from each (label, RTSP URL), a few at a time, in threads of
        their own (the cameras' encoders use the default executor)."""
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(PULL_THREADS) as pool:
            results = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, pull_frames, url, self.args.frames)
                    for _, url in pulls
                ),
                return_exceptions=True,
            )
        for (label, _), result in zip(pulls, results, strict=True):
            if isinstance(result, av.error.FFmpegError):
                self.check(False, f"{label}: {result}")
                continue
            if isinstance(result, BaseException):
                raise result
            n, w, h, took = result
            print(f"   {label}: {n} frames {w}x{h} in {took:.1f} s")
            self.check(n >= self.args.frames, f"{label}: only {n} frames")

    async def live_views(self, base: str, cams: list[dict[str, Any]]) -> None:
        """Every camera live in WebRTC, as the console shows it (a WHEP offer to the agent),
        all at once; then the camera sessions the agent holds for all its consumers."""
        from aiortc import (
            RTCConfiguration,
            RTCPeerConnection,
            RTCRtpReceiver,
            RTCSessionDescription,
        )

        from agent.media.webrtc_sdp import ice_host_addresses

        print("== live view of every camera in WebRTC (what the console at / shows)")

        peers: list[Any] = []

        async def watch(cam: dict[str, Any]) -> tuple[int, int, int]:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            peers.append(pc)  # closed once the sessions are counted, all viewers running
            got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            def on_track(track: Any) -> None:
                if not got.done():
                    got.set_result(track)

            pc.on("track", on_track)
            # H.264 only, as most browsers (Chromium here) offer: an H.265 camera is then
            # watched on its H.264 sub stream or through the agent's transcoder.
            video = pc.addTransceiver("video", direction="recvonly")
            caps = RTCRtpReceiver.getCapabilities("video")
            codecs = caps.codecs if caps is not None else []
            video.setCodecPreferences(
                [c for c in codecs if c.mimeType.lower() in ("video/h264", "video/rtx")]
            )
            with ice_host_addresses(("127.0.0.1",)):
                await pc.setLocalDescription(await pc.createOffer())
            offer = {"type": "offer", "sdp": pc.localDescription.sdp}
            answer = await self.json("POST", f"{base}/webrtc/{cam['id']}", offer)
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            n, w, h = 0, 0, 0
            async with asyncio.timeout(STEP_TIMEOUT / 2):
                track = await got
                while n < self.args.frames:
                    frame = await track.recv()
                    n, w, h = n + 1, frame.width, frame.height
            return n, w, h

        for start in range(0, len(cams), LIVE_AT_ONCE):
            await self._watch_some(base, cams[start : start + LIVE_AT_ONCE], watch, peers)

    async def _watch_some(
        self,
        base: str,
        cams: list[dict[str, Any]],
        watch: Callable[[dict[str, Any]], Awaitable[tuple[int, int, int]]],
        peers: list[Any],
    ) -> None:
        """Watch `cams` at once; print each one's frames and camera sessions while all run."""
        try:
            results = await asyncio.gather(*(watch(c) for c in cams), return_exceptions=True)
            status = await self.json("GET", f"{base}/status")
        finally:
            await asyncio.gather(*(pc.close() for pc in peers), return_exceptions=True)
            peers.clear()
        sessions = ((status.get("relay") or {}).get("sessions") or {}).get("cameras") or {}
        for cam, result in zip(cams, results, strict=True):
            label = _camera_label(cam)
            if isinstance(result, BaseException):
                self.check(False, f"live view of {label}: {result!r}")
                continue
            n, w, h = result
            held = sessions.get(cam["id"]) or {}
            streams = ", ".join(
                f"{s['stream']} ({', '.join(f'{k} {v}' for k, v in s['consumers'].items())})"
                if s["consumers"]
                else f"{s['stream']} (lingering, no consumer)"
                for s in held.get("streams", [])
                if s["open"]
            )
            print(
                f"   {label}: {n} frames {w}x{h}; camera sessions held "
                f"{held.get('held', 0)} of {held.get('max_sessions')}: {streams}"
            )
            self.check(n >= self.args.frames, f"live view of {label}: only {n} frames")

    async def drive(self, base: str, cam: dict[str, Any]) -> None:
        """Camera control through the local API: brightness, and PTZ when the camera has it."""
        onvif = f"{base}/onvif/{cam['id']}"
        await self.json("PUT", f"{onvif}/image/brightness", {"value": 80})
        brightness = (await self.json("GET", f"{onvif}/image"))["brightness"]["current_value"]
        if not cam["ptz"]:
            print(f"== local API: brightness set to {brightness} (the camera has no PTZ)")
            self.check(brightness == 80, "camera control failed")
            return
        await self.json("PUT", f"{onvif}/ptz", {"move": "RIGHT", "step": 5})
        pos = (await self.json("GET", f"{onvif}/ptz"))["pan_tilt"].get("current_position")
        print(f"== local API: brightness set to {brightness}, PTZ moved right to {pos}")
        self.check(brightness == 80 and bool(pos) and pos["x"] > 0, "camera control failed")

    async def run(self) -> int:
        async with self.world:
            return await self._run()

    async def _run(self) -> int:
        world, state = self.world, self.world.state_dir
        assert state is not None
        print(
            f"== simulated cloud (Watcher, Central, activation, streampoints) at {self.cloud.url}/"
        )
        for cam in world.cameras:
            print(f"== {cam.config.name}: ONVIF {cam.device_url}")
        for cam in world.rtsp_cameras:
            print(f"== {cam.config.name}: RTSP only {cam.rtsp_url('main')}")
        await self.discover()
        first = await self.show_qr(world.cameras[0], "Front door")
        agent = await world.start_agent()
        base = world.api
        print(f"== agent started with no token; local API at {base}/hello")
        streams = [await self.wait_stream(first)]
        await self.json("POST", f"{base}/activation/scan", {"seconds": 120})
        print("== agent asked (POST /activation/scan) to bind more cameras by QR code")
        others = [*world.cameras[1:], *world.rtsp_cameras]
        tokens = [await self.show_qr(cam, f"Camera {i}") for i, cam in enumerate(others, 2)]
        streams += [await self.wait_stream(token) for token in tokens]
        await self.show_all(base, streams)
        self.show_state(state, agent.api.port)
        verdict = "== demo " + ("passed" if self.ok else "FAILED")
        if self.args.once:
            print(verdict)
            return 0 if self.ok else 1
        print(verdict + "; running until Ctrl-C", flush=True)
        task = world.agent_task
        assert task is not None
        await self.forever(task)
        return 0 if self.ok else 1

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

    def other_stream(self, url: str) -> str | None:
        """The RTSP URL of another stream of the camera that streams at `url`, if it has one."""
        for cam in [*self.world.cameras, *self.world.rtsp_cameras]:
            urls = [cam.rtsp_url(token) for token in cam.model.profiles]
            if url in urls:
                return next((u for u in urls if u != url), None)
        return None

    async def show_all(self, base: str, streams: list[dict[str, Any]]) -> None:
        agent = self.world.agent
        assert agent.restream is not None
        restream_pw = (await asyncio.to_thread(agent.state.restream_password)).reveal()
        print("== video through the agent tunnel, pulled as the cloud streamer does (FFmpeg)")
        tunnel_urls: list[str] = []
        pulls: list[tuple[str, str]] = []
        for stream in streams:
            url = str(stream["sim_rtsp_url"])
            tunnel_urls.append(url)
            pulls.append((f"{stream['name']} main", url))
            other = self.other_stream(str(stream["inputs"][0]["url"]))
            if other is None:
                print(f"   {stream['name']}: the camera has one stream only")
            else:
                pulls.append((f"{stream['name']} sub ", _with_path(url, other)))
        await self.pull(pulls)
        cams = (await self.json("GET", f"{base}/cameras"))["cameras"]
        print("== the agent's own RTSP server (one camera session shared by every viewer)")
        restream_urls: list[str] = []
        for cam in cams:
            url = agent.restream.url(cam["id"]).replace(
                "rtsp://", f"rtsp://{RESTREAM_USER}:{quote(restream_pw, safe='')}@"
            )
            restream_urls.append(url)
        await self.pull([("restream main", restream_urls[0])])
        await self.live_views(base, cams)
        # Camera control needs ONVIF (not a camera added by URL) with the imaging service;
        # one with PTZ too when there is one.
        controlled = [cam for cam in cams if cam["kind"] == "onvif" and cam["imaging"]]
        onvif = next((cam for cam in controlled if cam["ptz"]), controlled[0])
        await self.drive(base, onvif)
        tunnels = agent.relay_status()["tunnels"] or {}
        print(
            f"== tunnels: {tunnels.get('opened', 0)} opened, {tunnels.get('refused', 0)} refused, "
            f"{tunnels.get('bytes_out', 0) / 1e6:.1f} MB camera -> cloud"
        )
        root = base.removesuffix("/api/v1")
        urls = [("Cloud status page", f"{self.cloud.url}/"), *agent_urls(root, onvif["id"])]
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


def state_dir(given: str | None) -> Path:
    """The agent's state directory: `given` (new or empty), else a temporary one."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix="camera-agent-demo-"))
    path = Path(given).absolute()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise DemoError(f"--state-dir {path} is not empty (the demo starts a new agent)")
    return path


def _with_path(url: str, other: str) -> str:
    """`url` with the path and query of `other`."""
    parts, path = urlsplit(url), urlsplit(other)
    return urlunsplit(parts._replace(path=path.path, query=path.query))


class DemoError(Exception):
    """The demo cannot run as asked (message for the user)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fleet",
        choices=FLEETS,
        default="default",
        metavar="FLEET",
        help="the cameras: default (--cameras simulated ONVIF cameras) or mixed (one simulated "
        "camera per persona, makes with their quirks, and one camera added by RTSP URL only)",
    )
    p.add_argument(
        "--cameras",
        type=int,
        default=3,
        help="how many simulated ONVIF cameras without --fleet mixed (1-8)",
    )
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
    try:
        state = await asyncio.to_thread(state_dir, args.state_dir)
    except DemoError as exc:
        print(f"camera-agent demo: {exc}", file=sys.stderr)
        return 2
    try:
        return await Demo(args, state).run()
    except (TimeoutError, RuntimeError, aiohttp.ClientError, OSError) as exc:
        print(f"== demo FAILED: {exc or type(exc).__name__}")
        return 1
    finally:
        if args.state_dir is None:
            await asyncio.to_thread(shutil.rmtree, state, True)
        else:
            print(f"== the agent's state is kept in {state}; its audit log:")
            print(f"   {log_command(state)}")
