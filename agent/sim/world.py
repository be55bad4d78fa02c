"""One simulated world on loopback: a camera fleet description in, running cameras, an optional
simulated cloud and an optional real agent out, with their addresses; torn down in reverse order.

Used by `camera-agent demo`, the hardware-in-the-loop tests and the benchmarks:

    cameras = [SimCameraSpec(SimCameraConfig(name="Door")), RtspCameraSpec(SimCameraConfig())]
    async with World(cameras, cloud=SimCloud(), state_dir=tmp) as world:
        agent = await world.start_agent()
        token = await world.new_token("Door")
        await world.show_qr(world.cameras[0], token)
        ...

A fleet entry is one of:

- `SimCameraSpec`: a simulated ONVIF camera the agent is pointed at (a probe address, or
  WS-Discovery when the world runs a discovery responder); its config may name a persona;
- `RtspCameraSpec`: a simulated camera the agent only gets by its RTSP URL (a `[[camera]]`
  table), never by its ONVIF address;
- `PeerSpec`: a third-party camera (an external program) started by an async context factory
  that yields its `PeerAddresses`.

The daemon (`camera-agent run`) never imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp

from agent.app import Agent
from agent.config import AgentConfig, CameraConfig, DiscoveryConfig
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from agent.sim.cloud.app import SimCloud

#: Seconds the agent may take to be ready (its API listening) and to stop.
AGENT_START_S = 20.0
AGENT_STOP_S = 15.0


@dataclasses.dataclass(frozen=True)
class SimCameraSpec:
    """A simulated ONVIF camera (its persona, if any, is `config.persona`)."""

    config: SimCameraConfig


@dataclasses.dataclass(frozen=True)
class RtspCameraSpec:
    """A simulated camera given to the agent by RTSP URL only (a `[[camera]]` table)."""

    config: SimCameraConfig
    sub: bool = True  # give the sub stream URL too
    credentials: bool = True  # put the camera's login in the table


@dataclasses.dataclass(frozen=True)
class PeerAddresses:
    """Where a third-party camera answers."""

    name: str
    device_url: str | None = None  # ONVIF device service
    rtsp_url: str | None = None
    username: str = "admin"
    password: str = dataclasses.field(default="admin", repr=False)

    @property
    def probe(self) -> tuple[str, int] | None:
        """The (host, port) of the ONVIF service, for the agent's probe list."""
        if self.device_url is None:
            return None
        parts = urlsplit(self.device_url)
        assert parts.hostname is not None
        return parts.hostname, parts.port or 80


@dataclasses.dataclass(frozen=True)
class PeerSpec:
    """A third-party camera: `start()` runs it for as long as its context is entered."""

    start: Callable[[], AbstractAsyncContextManager[PeerAddresses]]


CameraSpec = SimCameraSpec | RtspCameraSpec | PeerSpec
Configure = Callable[[AgentConfig], AgentConfig]


class World:
    """An async context manager: the cloud (if given), the cameras, the peers; the agent runs
    between `start_agent()` and `stop_agent()` (or the end of the world)."""

    def __init__(
        self,
        fleet: Sequence[CameraSpec],
        *,
        cloud: SimCloud | None = None,
        state_dir: Path | None = None,
        discovery: bool = False,
        configure: Configure | None = None,
    ) -> None:
        """`cloud`: a simulated cloud not started yet, started and stopped by the world.
        `discovery`: the ONVIF cameras answer WS-Discovery (unicast, on a free port) and the
        agent finds them that way instead of by probe addresses. `configure`: changes to every
        agent config the world builds."""
        self._cloud = cloud
        self.state_dir = state_dir
        self.configure = configure
        onvif = [s.config for s in fleet if isinstance(s, SimCameraSpec)]
        rtsp = [s for s in fleet if isinstance(s, RtspCameraSpec)]
        self._rtsp_specs = rtsp
        self._peer_specs = [s for s in fleet if isinstance(s, PeerSpec)]
        self.fleet = SimCameraFleet(onvif, discovery_port=0 if discovery else None, multicast=False)
        self._rtsp_fleet = SimCameraFleet([s.config for s in rtsp], discovery_port=None)
        self.peers: list[PeerAddresses] = []
        self._agent: Agent | None = None
        self._agent_task: asyncio.Task[None] | None = None
        self._agent_stop = asyncio.Event()
        self._exits = contextlib.AsyncExitStack()

    # -- addresses

    @property
    def cloud(self) -> SimCloud:
        """The simulated cloud (a test may swap in another one it runs itself)."""
        if self._cloud is None:
            raise RuntimeError("the world has no cloud")
        return self._cloud

    @cloud.setter
    def cloud(self, cloud: SimCloud) -> None:
        self._cloud = cloud

    @property
    def cameras(self) -> list[SimCamera]:
        """The simulated ONVIF cameras, in fleet order."""
        return self.fleet.cameras

    @property
    def rtsp_cameras(self) -> list[SimCamera]:
        """The simulated cameras the agent gets by RTSP URL only, in fleet order."""
        return self._rtsp_fleet.cameras

    @property
    def discovery_port(self) -> int | None:
        return self.fleet.discovery_port

    @property
    def device_urls(self) -> list[str]:
        """ONVIF device service URLs: simulated cameras, then peers that have one."""
        return [c.device_url for c in self.cameras] + [
            p.device_url for p in self.peers if p.device_url
        ]

    @property
    def agent(self) -> Agent:
        """The agent last started (still readable after it stopped)."""
        if self._agent is None:
            raise RuntimeError("the agent was never started")
        return self._agent

    @property
    def api_root(self) -> str:
        """http://127.0.0.1:PORT of the running agent's local API."""
        return f"http://127.0.0.1:{self.agent.api.port}"

    @property
    def api(self) -> str:
        return self.api_root + "/api/v1"

    # -- lifecycle

    async def __aenter__(self) -> Self:
        try:
            if self._cloud is not None:
                await self._cloud.start()
                self._exits.push_async_callback(self._cloud.stop)
            await self._exits.enter_async_context(self.fleet)
            await self._exits.enter_async_context(self._rtsp_fleet)
            for spec in self._peer_specs:
                self.peers.append(await self._exits.enter_async_context(spec.start()))
            self._exits.push_async_callback(self.stop_agent)
        except BaseException:
            await self._exits.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._exits.aclose()

    # -- the agent

    def credentials(self) -> tuple[Credentials, ...]:
        """Every distinct login of the ONVIF cameras and peers, in fleet order."""
        logins = [(c.config.username, c.config.password) for c in self.cameras]
        logins += [(p.username, p.password) for p in self.peers if p.device_url]
        return tuple(Credentials(u, Secret(p)) for u, p in dict.fromkeys(logins))

    def camera_tables(self) -> tuple[CameraConfig, ...]:
        """The `[[camera]]` tables of the RTSP-only cameras and of peers without ONVIF."""
        tables = [
            CameraConfig(
                rtsp_url=cam.rtsp_url(),
                name=cam.config.name,
                sub_url=_second_stream_url(cam) if spec.sub else None,
                credentials=(
                    Credentials(cam.config.username, Secret(cam.config.password))
                    if spec.credentials
                    else None
                ),
            )
            for spec, cam in zip(self._rtsp_specs, self.rtsp_cameras, strict=True)
        ]
        tables += [
            CameraConfig(
                rtsp_url=p.rtsp_url,
                name=p.name,
                credentials=Credentials(p.username, Secret(p.password)),
            )
            for p in self.peers
            if p.rtsp_url and not p.device_url
        ]
        return tuple(tables)

    def agent_config(self, configure: Configure | None = None) -> AgentConfig:
        """The agent's config for this world: loopback API on a free port, the cameras as probe
        addresses (or discovery), their logins as default credentials, the RTSP-only cameras as
        `[[camera]]` tables, the cloud as activation URL; then the world's `configure`, then
        this call's."""
        if self.discovery_port is not None:
            discovery = DiscoveryConfig(
                multicast=False,
                mdns=False,
                subnets=("127.0.0.1/32",),
                discovery_port=self.discovery_port,
                probe=tuple(p.probe for p in self.peers if p.probe),
            )
        else:
            probes = [("127.0.0.1", c.port) for c in self.cameras]
            probes += [p.probe for p in self.peers if p.probe]
            discovery = DiscoveryConfig(multicast=False, mdns=False, probe=tuple(probes))
        cfg = AgentConfig(
            api_host="127.0.0.1",
            api_port=0,
            discovery=discovery,
            default_credentials=self.credentials(),
            cameras=self.camera_tables(),
        )
        if self.state_dir is not None:
            cfg = dataclasses.replace(cfg, state_dir=self.state_dir)
        if self._cloud is not None:
            cfg = dataclasses.replace(
                cfg, cloud=dataclasses.replace(cfg.cloud, activation_url=self._cloud.url)
            )
        for change in (self.configure, configure):
            if change is not None:
                cfg = change(cfg)
        return cfg

    async def start_agent(
        self, configure: Configure | None = None, *, config: AgentConfig | None = None
    ) -> Agent:
        """Run the real agent (`config`, else `agent_config(configure)`) until `stop_agent()`;
        returns once its API listens."""
        assert self._agent_task is None, "the agent is already running"
        agent = Agent(config if config is not None else self.agent_config(configure))
        self._agent = agent
        self._agent_stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(agent.run(self._agent_stop), name="agent")
        self._agent_task = task
        ready = asyncio.ensure_future(agent.ready.wait())
        try:
            async with asyncio.timeout(AGENT_START_S):
                await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if task.done():
            self._agent_task = None
            task.result()  # the agent's own error
            raise RuntimeError("the agent stopped before it was ready")
        return agent

    @property
    def agent_task(self) -> asyncio.Task[None] | None:
        """The running agent's task (done once `run()` returned by itself)."""
        return self._agent_task

    async def stop_agent(self) -> None:
        """Ask the agent to stop and wait for it; cancelled if it takes longer than
        AGENT_STOP_S. No-op when it does not run."""
        task, self._agent_task = self._agent_task, None
        if task is None:
            return
        self._agent_stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), AGENT_STOP_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise

    def online(self, count: int | None = None) -> bool:
        """Whether `count` cameras (default: every camera of the world) are online in the
        running agent's inventory."""
        want = len(self.cameras) + len(self.rtsp_cameras) + len(self.peers)
        want = want if count is None else count
        return sum(c.state == "online" for c in self.agent.inventory.cameras()) >= want

    # -- the cloud, as the mobile app and the tests use it

    async def http(self, method: str, url: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        """(status, JSON body or text or None) of one request with the cloud's login: `body` as
        JSON, or `data=` and other arguments of aiohttp's request."""
        login = self.cloud.credentials
        auth = aiohttp.encode_basic_auth(login.username, login.password.reveal())
        async with (
            aiohttp.ClientSession(headers={"Authorization": auth}) as session,
            session.request(method, url, **({"json": body} | kw)) as r,
        ):
            text = await r.text()
            try:
                return r.status, await r.json(content_type=None) if text else None
            except ValueError:
                return r.status, text

    async def cloud_json(self, method: str, url: str, body: Any = None) -> Any:
        """The JSON answer of a cloud request that must succeed (RuntimeError otherwise)."""
        status, answer = await self.http(method, url, body)
        if status >= 300:
            raise RuntimeError(f"{method} {url}: HTTP {status}")
        return answer

    async def new_token(self, title: str) -> str:
        """A new activation token from the Watcher, as the mobile app asks for one."""
        body = await self.cloud_json(
            "POST", f"{self.cloud.watcher_url}/agent_activation_token", {"title": title}
        )
        return str(body["token"])

    async def qr_payload(self, token: str) -> str:
        """The text of the QR code the mobile app shows for `token`."""
        return str(await self.cloud_json("GET", f"{self.cloud.url}/sim/qr/{token}"))

    async def show_qr(self, cam: SimCamera, token: str) -> None:
        """Show `token`'s QR code to a simulated camera (burned into its video)."""
        await show_text_qr(cam, await self.qr_payload(token))


async def show_text_qr(cam: SimCamera, text: str) -> None:
    """Burn a QR code of `text` into a simulated camera's video."""
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"http://127.0.0.1:{cam.port}/sim/qr", json={"text": text}) as r,
    ):
        r.raise_for_status()


def _second_stream_url(cam: SimCamera) -> str | None:
    """The stream URL of the camera's second profile, if it has one."""
    main = cam.model.main_profile.token
    others = [token for token in cam.model.profiles if token != main]
    return cam.rtsp_url(others[0]) if others else None
