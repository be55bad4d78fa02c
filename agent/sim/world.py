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

With `processes=True` the cameras and the agent run as processes of their own, as in the
field, so that their CPU, memory and open files can be measured apart from the test's:
the simulated cameras as `python -m agent sim camera --count N --ready-file F` (one process per
group of cameras that differ only in name and serial: a persona, a login or faults of their
own make another group; the names and serials of a group are the ones `--count` gives, the
first camera's suffixed), their addresses read from the ready file (`addresses`,
`rtsp_addresses`); the agent as `python -m agent run --config F` with `agent_config()` written
as TOML (`config_toml`), its API on a free loopback port (`start_agent_process()`, which
returns the `ChildProcess`: PID and handle). Peers and the simulated cloud stay in this process.
Children are stopped in reverse order with SIGTERM, then SIGKILL after a grace period, also
when the block fails; their stderr is kept in `STATE_DIR/world/*.stderr` for failure reports.

The benchmarks that use the process mode: bench_commands (camera, agent, and the simulated
cloud started with `start_process`), bench_discovery (the camera process, measured against the
agent's own inventory code in the bench process), bench_memory and bench_activation (through
tests/soak.py `FleetWorld`, which the soak run uses too). bench_sim spawns the simulator
itself because the simulator is what it measures; bench_startup spawns `camera-agent run` by
its own command line because the agent's start-up is what it measures; bench_tunnel and
bench_push start their baselines (socat, ffmpeg, receivers) which are no part of the world.

The daemon (`camera-agent run`) never imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp

from agent.app import Agent
from agent.config import (
    AgentConfig,
    CameraConfig,
    DiscoveryConfig,
    RestreamConfig,
    TunnelConfig,
    UpdateConfig,
)
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from agent.sim.cloud.app import SimCloud

#: Seconds the agent may take to be ready (its API listening) and to stop.
AGENT_START_S = 20.0
AGENT_STOP_S = 15.0
#: Seconds a camera process may take to write its ready file (64 cameras start in a few).
CAMERAS_START_S = 120.0
#: Seconds a child process has between SIGTERM and SIGKILL.
PROCESS_STOP_S = 15.0
#: Lines of a failed child's stderr quoted in the error.
STDERR_LINES = 20


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


@dataclasses.dataclass(frozen=True)
class CameraAddresses:
    """Where one simulated camera answers, as `sim camera --ready-file` writes it."""

    name: str
    serial: str
    device_url: str
    port: int
    rtsp_port: int
    rtsp: Mapping[str, str]  # profile token -> stream URL, the main profile first
    snapshot: str

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> CameraAddresses:
        """One entry of the ready file's `cameras` (or of `SimCamera.describe()`)."""
        return cls(
            name=str(entry["name"]),
            serial=str(entry["serial_number"]),
            device_url=str(entry["device_url"]),
            port=int(entry["port"]),
            rtsp_port=int(entry["rtsp_port"]),
            rtsp={str(k): str(v) for k, v in dict(entry["rtsp"]).items()},
            snapshot=str(entry["snapshot"]),
        )

    @property
    def rtsp_url(self) -> str:
        """The main profile's stream URL."""
        return next(iter(self.rtsp.values()))

    @property
    def second_url(self) -> str | None:
        """The stream URL of the second profile, if the camera has one."""
        urls = list(self.rtsp.values())
        return urls[1] if len(urls) > 1 else None


class ChildProcess:
    """One `python -m agent ARGS` child of a world: its handle, its stderr kept in a file."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, stderr: Path) -> None:
        self.name = name
        self.process = process
        self.stderr_path = stderr

    @classmethod
    async def start(
        cls,
        name: str,
        args: Sequence[str],
        *,
        stderr: Path,
        log_level: str = "WARNING",
        env: Mapping[str, str] | None = None,
    ) -> ChildProcess:
        """Start `python -m agent --log-level LEVEL ARGS`, stdout discarded, stderr to the file
        `stderr`."""
        err = await asyncio.to_thread(open, stderr, "wb")
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent", "--log-level", log_level, *args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=None if env is None else dict(env),
            )  # fmt: skip
        finally:
            err.close()  # the child has its own copy
        return cls(name, process, stderr)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process ended (negative: the signal that ended it)."""
        return self.process.returncode

    def running(self) -> bool:
        return self.process.returncode is None

    def stderr_tail(self, lines: int = STDERR_LINES) -> str:
        """The last `lines` lines the process wrote to stderr."""
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def failure(self, what: str) -> RuntimeError:
        """An error naming the process, its exit status and the end of its stderr."""
        tail = await asyncio.to_thread(self.stderr_tail)
        status = "running" if self.running() else f"exit status {self.returncode}"
        text = f"{self.name} (pid {self.pid}, {status}): {what}"
        return RuntimeError(f"{text}\n{tail}" if tail else text)

    async def ready_file(self, path: Path, timeout: float) -> dict[str, Any]:
        """The JSON the process writes to `path` once it serves; RuntimeError when it exits
        first or takes longer than `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(path.exists):
            if not self.running():
                raise await self.failure("exited before it was ready")
            if time.monotonic() > deadline:
                raise await self.failure(f"not ready within {timeout:g} s")
            await asyncio.sleep(0.05)
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        answer = json.loads(text)
        if not isinstance(answer, dict):
            raise await self.failure(f"{path.name} is not a JSON object")
        return answer

    async def stop(self, grace: float = PROCESS_STOP_S) -> bool:
        """SIGTERM, then SIGKILL after `grace` seconds; waits until it is gone. Whether it
        ended within the grace period (or had ended before)."""
        if not self.running():
            await self.process.wait()
            return True
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
            return False
        return True


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now, below the kernel's ephemeral range (which outgoing
    connections take their source ports from), for a server another process will start."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            low = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = max(low, 21000)
    for _ in range(200):
        port = 20000 + secrets.randbelow(top - 20000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port")


def _toml(value: object) -> str:
    """One TOML value: a bool, number, string, path or a list of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # JSON escapes are TOML's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def config_toml(cfg: AgentConfig) -> str:
    """The config file of `cfg`, as `camera-agent run --config` reads it (agent.config): the
    settings a world changes, in full. ValueError for the [tunnel], [restream], [push] and
    [update] settings, which it does not write, when they are not the defaults. The text holds
    the config's logins: write it to a file only its owner reads."""
    for key, default in (("tunnel", TunnelConfig()), ("restream", RestreamConfig()),
                         ("push", ()), ("update", UpdateConfig())):  # fmt: skip
        if getattr(cfg, key) != default:
            raise ValueError(f"config_toml does not write [{key}] settings")
    lines: list[str] = []

    def table(name: str, values: Mapping[str, object]) -> None:
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in values.items() if v is not None)

    agent: dict[str, object] = {"state_dir": cfg.state_dir}
    if cfg.reboot_command:
        agent["reboot_command"] = cfg.reboot_command
    table("agent", agent)
    table("api", {
        "listen": _host_port(cfg.api_host, cfg.api_port),
        "token": cfg.api_token.reveal() if cfg.api_token is not None else None,
        "webrtc_addresses": cfg.webrtc_addresses,
    })  # fmt: skip
    d = cfg.discovery
    table("discovery", {
        "multicast": d.multicast, "mdns": d.mdns, "interfaces": d.interfaces,
        "subnets": d.subnets, "probe": [_host_port(h, p) for h, p in d.probe],
        "interval": d.interval, "discovery_port": d.discovery_port,
    })  # fmt: skip
    c = cfg.cloud
    table("cloud", {
        "activation_url": c.activation_url,
        "activation_hosts": c.activation_hosts or None,
        "ca_file": c.ca_file, "pin_sha256": c.pin_sha256,
    })  # fmt: skip
    table("health", {
        "interval": cfg.health_interval, "thermal_zone": cfg.thermal_zone,
        "throttled": cfg.throttled_path, "log_dir": cfg.log_dir,
    })  # fmt: skip
    if cfg.hardware_profile is not None:
        table("hardware", {"profile": cfg.hardware_profile})
    for login in cfg.default_credentials:
        lines.append("[[credentials.default]]")
        lines.append(f"username = {_toml(login.username)}")
        lines.append(f"password = {_toml(login.password.reveal())}")
    for match, login in cfg.camera_credentials.items():
        lines.append("[[credentials.camera]]")
        lines.append(f"match = {_toml(match)}")
        lines.append(f"username = {_toml(login.username)}")
        lines.append(f"password = {_toml(login.password.reveal())}")
    for cam in cfg.cameras:
        lines.append("[[camera]]")
        entry: dict[str, object] = {
            "rtsp_url": cam.rtsp_url, "name": cam.name or None,
            "sub_url": cam.sub_url, "snapshot_url": cam.snapshot_url,
        }  # fmt: skip
        if cam.credentials is not None:
            entry["username"] = cam.credentials.username
            entry["password"] = cam.credentials.password.reveal()
        lines.extend(f"{k} = {_toml(v)}" for k, v in entry.items() if v is not None)
    return "\n".join(lines) + "\n"


def _camera_groups(configs: Sequence[SimCameraConfig]) -> list[list[int]]:
    """Indexes of `configs` grouped by everything but name and serial, in first-seen order:
    one camera process per group."""
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        key = dataclasses.replace(cfg, name="", serial="")
        text = repr((key, key.password, json.dumps(key.faults, sort_keys=True)))
        groups.setdefault(text, []).append(i)
    return list(groups.values())


def _camera_args(cfg: SimCameraConfig, count: int, discovery: bool, ready: Path) -> list[str]:
    """`sim camera` arguments for `count` cameras like `cfg` (named and numbered from it)."""
    default = SimCameraConfig()
    if cfg.location != default.location:
        raise ValueError("camera processes cannot be given a location")
    args = ["sim", "camera", "--count", str(count), "--host", cfg.host,
            "--port", str(cfg.port), "--rtsp-port", str(cfg.rtsp_port),
            "--sofia-port", str(cfg.sofia_port),
            "--username", cfg.username, "--password", cfg.password]  # fmt: skip
    for flag, value, base in (("--name", cfg.name, default.name),
                              ("--serial", cfg.serial, default.serial),
                              ("--manufacturer", cfg.manufacturer, default.manufacturer),
                              ("--model", cfg.model, default.model),
                              ("--firmware-version", cfg.firmware_version,
                               default.firmware_version)):  # fmt: skip
        if value != base:
            args += [flag, value]
    if cfg.persona is not None:
        args += ["--persona", cfg.persona]
    if cfg.faults is not None:
        args += ["--faults", json.dumps(cfg.faults)]
    args += ["--discovery-port", "0", "--no-multicast"] if discovery else ["--no-discovery"]
    return [*args, "--ready-file", str(ready)]


class World:
    """An async context manager: the cloud (if given), the cameras, the peers; the agent runs
    between `start_agent()` (`start_agent_process()` with `processes=True`) and `stop_agent()`
    (or the end of the world)."""

    def __init__(
        self,
        fleet: Sequence[CameraSpec],
        *,
        cloud: SimCloud | None = None,
        state_dir: Path | None = None,
        discovery: bool = False,
        configure: Configure | None = None,
        processes: bool = False,
        log_level: str = "WARNING",
    ) -> None:
        """`cloud`: a simulated cloud not started yet, started and stopped by the world.
        `discovery`: the ONVIF cameras answer WS-Discovery (unicast, on a free port) and the
        agent finds them that way instead of by probe addresses. `configure`: changes to every
        agent config the world builds. `processes`: the cameras and the agent run as child
        processes (`state_dir` required; `log_level` is theirs)."""
        self._cloud = cloud
        self.state_dir = state_dir
        self.configure = configure
        self.processes = processes
        self.log_level = log_level
        onvif = [s.config for s in fleet if isinstance(s, SimCameraSpec)]
        rtsp = [s for s in fleet if isinstance(s, RtspCameraSpec)]
        self._onvif_configs = onvif
        self._rtsp_specs = rtsp
        self._peer_specs = [s for s in fleet if isinstance(s, PeerSpec)]
        self._discovery = discovery
        if processes:
            if state_dir is None:
                raise ValueError("a world of processes needs a state_dir")
            if discovery and len(_camera_groups(onvif)) > 1:
                raise ValueError("discovery in a world of processes needs one camera process")
            onvif, rtsp_configs = [], []
        else:
            rtsp_configs = [s.config for s in rtsp]
        self.fleet = SimCameraFleet(onvif, discovery_port=0 if discovery else None, multicast=False)
        self._rtsp_fleet = SimCameraFleet(rtsp_configs, discovery_port=None)
        self.peers: list[PeerAddresses] = []
        self._agent: Agent | None = None
        self._agent_task: asyncio.Task[None] | None = None
        self._agent_stop = asyncio.Event()
        self._exits = contextlib.AsyncExitStack()
        # Process mode.
        self._addresses: list[CameraAddresses] = []
        self._rtsp_addresses: list[CameraAddresses] = []
        self._discovery_port: int | None = None
        self.camera_processes: list[ChildProcess] = []
        self.other_processes: list[ChildProcess] = []  # start_process(), stopped before cameras
        self._agent_process: ChildProcess | None = None
        self._agent_config: AgentConfig | None = None

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
        """The simulated ONVIF cameras, in fleet order (in this process only)."""
        self._in_process("cameras", "addresses")
        return self.fleet.cameras

    @property
    def rtsp_cameras(self) -> list[SimCamera]:
        """The simulated cameras the agent gets by RTSP URL only, in fleet order (in this
        process only)."""
        self._in_process("rtsp_cameras", "rtsp_addresses")
        return self._rtsp_fleet.cameras

    @property
    def addresses(self) -> list[CameraAddresses]:
        """Where the simulated ONVIF cameras answer, in fleet order."""
        if self.processes:
            return self._addresses
        return [CameraAddresses.parse(c.describe()) for c in self.fleet.cameras]

    @property
    def rtsp_addresses(self) -> list[CameraAddresses]:
        """Where the RTSP-only cameras answer, in fleet order."""
        if self.processes:
            return self._rtsp_addresses
        return [CameraAddresses.parse(c.describe()) for c in self._rtsp_fleet.cameras]

    @property
    def discovery_port(self) -> int | None:
        return self._discovery_port if self.processes else self.fleet.discovery_port

    @property
    def device_urls(self) -> list[str]:
        """ONVIF device service URLs: simulated cameras, then peers that have one."""
        return [c.device_url for c in self.addresses] + [
            p.device_url for p in self.peers if p.device_url
        ]

    @property
    def agent(self) -> Agent:
        """The agent last started (still readable after it stopped)."""
        self._in_process("agent", "agent_process")
        if self._agent is None:
            raise RuntimeError("the agent was never started")
        return self._agent

    @property
    def agent_process(self) -> ChildProcess:
        """The agent's process, last started (still readable after it stopped)."""
        if self._agent_process is None:
            raise RuntimeError("the agent process was never started")
        return self._agent_process

    @property
    def api_root(self) -> str:
        """http://127.0.0.1:PORT of the running agent's local API."""
        if self.processes:
            cfg = self._agent_config
            if cfg is None:
                raise RuntimeError("the agent process was never started")
            return f"http://{_host_port(cfg.api_host, cfg.api_port)}"
        return f"http://127.0.0.1:{self.agent.api.port}"

    @property
    def api(self) -> str:
        return self.api_root + "/api/v1"

    def _in_process(self, what: str, instead: str) -> None:
        if self.processes:
            raise RuntimeError(f"world.{what}: the world runs processes, see world.{instead}")

    # -- lifecycle

    async def __aenter__(self) -> Self:
        try:
            if self._cloud is not None:
                await self._cloud.start()
                self._exits.push_async_callback(self._cloud.stop)
            if self.processes:
                self._exits.push_async_callback(self._stop_processes, self.camera_processes)
                await self._start_cameras()
                self._exits.push_async_callback(self._stop_processes, self.other_processes)
            else:
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

    @property
    def run_dir(self) -> Path:
        """STATE_DIR/world: the child processes' config, ready files and stderr."""
        assert self.state_dir is not None
        return self.state_dir / "world"

    async def start_process(
        self, name: str, args: Sequence[str], *, ready_file: Path | None = None
    ) -> tuple[ChildProcess, dict[str, Any]]:
        """Run `python -m agent ARGS` (e.g. `sim cloud ... --ready-file F`) until the end of
        the world, stopped after the agent and before the cameras; with `ready_file`, wait for
        it and return its JSON (else {})."""
        assert self.processes, "start_process needs a world of processes"
        await asyncio.to_thread(self.run_dir.mkdir, parents=True, exist_ok=True)
        child = await ChildProcess.start(
            name, args, stderr=self.run_dir / f"{name}.stderr", log_level=self.log_level
        )
        self.other_processes.append(child)
        info = await child.ready_file(ready_file, CAMERAS_START_S) if ready_file else {}
        return child, info

    async def _start_cameras(self) -> None:
        """One camera process per group of alike cameras, started together; their addresses
        from the ready files."""
        await asyncio.to_thread(self.run_dir.mkdir, parents=True, exist_ok=True)
        kinds: list[tuple[str, list[SimCameraConfig], bool, list[CameraAddresses]]] = [
            ("cameras", self._onvif_configs, self._discovery, self._addresses),
            ("rtsp-cameras", [s.config for s in self._rtsp_specs], False, self._rtsp_addresses),
        ]
        waits = []
        for kind, configs, discovery, out in kinds:
            out.extend([None] * len(configs))  # type: ignore[list-item]  # filled below
            for n, group in enumerate(_camera_groups(configs)):
                ready = self.run_dir / f"{kind}-{n}.json"
                args = _camera_args(configs[group[0]], len(group), discovery, ready)
                child = await ChildProcess.start(
                    f"{kind}-{n}", args, stderr=self.run_dir / f"{kind}-{n}.stderr",
                    log_level=self.log_level,
                )  # fmt: skip
                self.camera_processes.append(child)
                waits.append((child, ready, group, out, discovery))
        for child, ready, group, out, discovery in waits:
            info = await child.ready_file(ready, CAMERAS_START_S)
            cams = info["cameras"]
            if len(cams) != len(group):
                raise await child.failure(f"{len(cams)} cameras instead of {len(group)}")
            for index, entry in zip(group, cams, strict=True):
                out[index] = CameraAddresses.parse(entry)
            if discovery:
                self._discovery_port = int(info["discovery_port"])

    @staticmethod
    async def _stop_processes(children: list[ChildProcess]) -> None:
        """Stop `children` in reverse order (each SIGTERM, then SIGKILL after the grace)."""
        while children:
            await children.pop().stop()

    # -- the agent

    def credentials(self) -> tuple[Credentials, ...]:
        """Every distinct login of the ONVIF cameras and peers, in fleet order."""
        configs = self._onvif_configs if self.processes else [c.config for c in self.cameras]
        logins = [(c.username, c.password) for c in configs]
        logins += [(p.username, p.password) for p in self.peers if p.device_url]
        return tuple(Credentials(u, Secret(p)) for u, p in dict.fromkeys(logins))

    def camera_tables(self) -> tuple[CameraConfig, ...]:
        """The `[[camera]]` tables of the RTSP-only cameras and of peers without ONVIF."""
        tables = [
            CameraConfig(
                rtsp_url=where.rtsp_url,
                name=where.name,
                sub_url=where.second_url if spec.sub else None,
                credentials=(
                    Credentials(spec.config.username, Secret(spec.config.password))
                    if spec.credentials
                    else None
                ),
            )
            for spec, where in zip(self._rtsp_specs, self.rtsp_addresses, strict=True)
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
            probes = [("127.0.0.1", c.port) for c in self.addresses]
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
        self._in_process("start_agent()", "start_agent_process()")
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

    async def start_agent_process(
        self,
        configure: Configure | None = None,
        *,
        config: AgentConfig | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ChildProcess:
        """Run `python -m agent run --config STATE_DIR/world/agent.toml` (`config`, else
        `agent_config(configure)`; API port 0: a free one) until `stop_agent()`; returns once
        its API answers. RuntimeError with the end of its stderr when it exits first."""
        assert self.processes, "start_agent_process needs World(processes=True)"
        assert self._agent_process is None or not self._agent_process.running(), (
            "the agent is already running"
        )
        cfg = config if config is not None else self.agent_config(configure)
        for attempt in range(3):  # another program may take the free port first
            chosen = cfg
            if cfg.api_port == 0:
                port = await asyncio.to_thread(free_loopback_port)
                chosen = dataclasses.replace(cfg, api_port=port)
            path = self.run_dir / "agent.toml"
            await asyncio.to_thread(_write_private, path, config_toml(chosen))
            child = await ChildProcess.start(
                "agent", ["run", "--config", str(path)], stderr=self.run_dir / "agent.stderr",
                log_level=self.log_level, env=env,
            )  # fmt: skip
            self._agent_process, self._agent_config = child, chosen
            try:
                await self._agent_answers(child)
            except RuntimeError as exc:
                await child.stop()
                if cfg.api_port != 0 or attempt == 2 or "cannot listen" not in str(exc):
                    raise
            else:
                return child
        raise AssertionError("unreachable")

    async def _agent_answers(self, child: ChildProcess) -> None:
        deadline = time.monotonic() + AGENT_START_S
        url = self.api + "/hello"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if not child.running():
                    raise await child.failure("exited before its API answered")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as r:
                        if r.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise await child.failure(f"API not answering within {AGENT_START_S:g} s")
                await asyncio.sleep(0.05)

    @property
    def agent_task(self) -> asyncio.Task[None] | None:
        """The running agent's task (done once `run()` returned by itself)."""
        return self._agent_task

    async def stop_agent(self) -> None:
        """Ask the agent to stop and wait for it; cancelled (a process: killed) if it takes
        longer than AGENT_STOP_S, then TimeoutError. No-op when it does not run."""
        if self.processes:
            child = self._agent_process
            if child is not None and not await child.stop(AGENT_STOP_S):
                raise TimeoutError(f"the agent did not stop within {AGENT_STOP_S:g} s")
            return
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
        self._in_process("online()", "process_online()")
        want = len(self.cameras) + len(self.rtsp_cameras) + len(self.peers)
        want = want if count is None else count
        return sum(c.state == "online" for c in self.agent.inventory.cameras()) >= want

    async def api_cameras(self) -> list[dict[str, Any]]:
        """The agent's camera list (`GET /api/v1/cameras`) of the running agent process;
        [] while its API does not answer."""
        headers = {}
        if self._agent_config is not None and self._agent_config.api_token is not None:
            headers["Authorization"] = f"Bearer {self._agent_config.api_token.reveal()}"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.get(self.api + "/cameras", headers=headers) as r,
            ):
                body = await r.json() if r.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError):
            return []
        cams = body.get("cameras") if isinstance(body, dict) else None
        return [c for c in cams if isinstance(c, dict)] if isinstance(cams, list) else []

    async def process_online(self, count: int | None = None) -> bool:
        """`online()` of the agent process, through its API; RuntimeError once it exited."""
        child = self.agent_process
        if not child.running():
            raise await child.failure("the agent exited")
        want = len(self.addresses) + len(self.rtsp_addresses) + len(self.peers)
        want = want if count is None else count
        online = [c for c in await self.api_cameras() if c.get("state") == "online"]
        return len(online) >= want

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

    async def show_qr(self, cam: SimCamera | CameraAddresses, token: str) -> None:
        """Show `token`'s QR code to a simulated camera (burned into its video)."""
        await show_text_qr(cam, await self.qr_payload(token))


async def show_text_qr(cam: SimCamera | CameraAddresses, text: str) -> None:
    """Burn a QR code of `text` into a simulated camera's video."""
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"http://127.0.0.1:{cam.port}/sim/qr", json={"text": text}) as r,
    ):
        r.raise_for_status()


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read (it holds logins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
