"""The agent daemon: builds the services in order, owns one TaskGroup, shuts down in order.

Start order: state directory -> inventory (cameras known at boot) -> local API -> background
tasks (inventory re-checks, discovery, cloud: activation/QR scanning and the uplink). Shutdown is
the reverse, bounded by `SHUTDOWN_TIMEOUT`.

`camera-agent run` (`run(args)`) stops on SIGTERM or SIGINT, or when the cloud asks for a
restart, within a deadline that holds whatever a task does (agent/stop.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from agent import __version__, hw
from agent import config as agent_config
from agent import log as agent_log
from agent.api.server import ApiServer, build_app
from agent.audit import AuditLog
from agent.cloud.commands import CommandRunner
from agent.cloud.service import CloudService
from agent.cloud.tunnel_policy import TunnelPolicy, camera_endpoints
from agent.config import AgentConfig
from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraState, xaddr_host
from agent.discovery.service import DiscoveryService
from agent.errors import ConfigError, NotFound
from agent.health.collector import HealthCollector
from agent.health.liveness import CameraLiveness
from agent.health.loop_lag import LoopLag
from agent.health.report import StatsReporter
from agent.health.shed import Shedder, ShedPolicy
from agent.health.system import SystemPaths, SystemSampler
from agent.media.backchannel import talk_targets
from agent.media.hub import SessionHub
from agent.media.push_manager import PushEntry, PushManager
from agent.media.restream import Restreamer
from agent.media.webrtc import WebRtcSessions
from agent.net.memory import tune_allocator
from agent.net.taskgroup import TaskGroup
from agent.proto.mux_frames import TargetKind
from agent.state import StateDir
from agent.stop import EXIT_STOP_TIMEOUT, SHUTDOWN_TIMEOUT, WORKER_PREFIX, Stopper
from agent.sysd.notify import Notifier
from agent.update.journal import root_from_env
from agent.update.service import UpdateService

log = logging.getLogger(__name__)

#: Seconds the local API's requests in flight at the stop get to finish before being cancelled.
REQUEST_GRACE = 1.0
#: Shortest window a camera's bitrate is measured over, seconds.
BITRATE_WINDOW = 1.0
#: Exit status asking the service manager to start the agent again (the cloud's `reboot`).
EXIT_RESTART = 3


class Agent:
    """One running agent. `await run(stop)` serves until `stop` is set."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.state = StateDir(cfg.state_dir)
        self.inventory = Inventory(
            self.state,
            default_credentials=cfg.default_credentials,
            camera_credentials=cfg.camera_credentials,
            rtsp_cameras=cfg.cameras,
        )
        d = cfg.discovery
        self.discovery = DiscoveryService(
            self.inventory,
            interfaces=d.interfaces,
            multicast=d.multicast,
            subnets=d.subnets,
            probes=d.probe,
            discovery_port=d.discovery_port,
            mdns=d.mdns,
            interval=d.interval,
        )
        self.restart_requested = False
        self._stop: asyncio.Event | None = None
        t = cfg.tunnel
        self.cloud = CloudService(
            self.state,
            self.inventory,
            activation_url=cfg.cloud.activation_url,
            activation_hosts=cfg.cloud.activation_hosts,
            ca_file=str(cfg.cloud.ca_file) if cfg.cloud.ca_file else None,
            pin_sha256=cfg.cloud.pin_sha256,
            on_reboot=self._on_reboot,
            tunnel_policy=TunnelPolicy(
                self.inventory.cameras, burst=t.open_burst, rate=t.open_rate
            ),
            tunnel_idle_timeout=t.idle_timeout,
        )
        self.audit = AuditLog(self.state)
        self.commands = CommandRunner(
            self.inventory,
            self.audit,
            self.state,
            logs=self.cloud.logs,
            download_origin=self.cloud.endpoint_origin,
            ssl=lambda: self.cloud.tls_context,
            clock=self.cloud.cloud_time,
        )
        self.cloud.commands = self.commands
        self.cloud.audit = self.audit
        u = cfg.update
        self.updates = UpdateService(
            u.root or root_from_env(),
            index_url=u.url,
            check_interval=u.check_interval,
            auto_apply=u.auto_apply,
            hardware=u.hardware,
            origins=lambda: [self.cloud.endpoint_origin()],
            ssl_context=lambda: self.cloud.tls_context,
        )
        self.updates.attach(self._send_event)
        self.cloud.updates = self.updates
        self.shedder = Shedder(ShedPolicy())  # thresholds from the hardware profile at run()
        self.cloud.qr_allowed = lambda: self.shedder.allows("qr")
        self.notifier = Notifier()  # systemd, or the update arbiter
        self.hub = SessionHub(
            self.inventory,
            limit_of=self._session_limit,
            tunnels_of=self._camera_tunnels,
            linger=cfg.sessions.linger,
        )
        self.cloud.tunnel_policy.on_rtsp = self.hub.make_room
        self.restream: Restreamer | None = None  # built at run(): the password may be generated
        self.push = PushManager(
            _HubSources(self.hub, "push"),
            [PushEntry(p.camera, p.url.reveal(), p.stream) for p in cfg.push],
        )
        self.webrtc = WebRtcSessions(
            ice_addresses=cfg.webrtc_addresses,
            transcode_allowed=lambda: self.shedder.allows("transcode"),
            talk_targets=talk_targets(self.inventory, self.hub),
        )
        app = build_app(
            self.inventory,
            version=__version__,
            token=cfg.api_token,
            cloud=self.cloud,
            webrtc=self.webrtc,
            relay=self.relay_status,
            audit=self.audit,
            metrics=self.metrics,
            health=self.health_summary,
            update=self.updates.status,
            hardware=self.hardware_status,
            shed=self.shedder.denial,
            cors_origins=cfg.cors_origins,
        )
        self._requests: set[asyncio.Task[Any]] = set()  # local API requests in flight
        app.middlewares.append(_tracked(self._requests))
        self.api = ApiServer(app, cfg.api_host, cfg.api_port)
        self.ready = asyncio.Event()
        self.started = time.monotonic()
        self.loop_lag = LoopLag()
        self.system = SystemSampler(
            SystemPaths(
                thermal_zone=cfg.thermal_zone,
                throttled=cfg.throttled_path,
                disks={"state": cfg.state_dir, "log": cfg.log_dir},
            )
        )
        self.hardware: hw.Detection | None = None  # detected at run()
        self.health = HealthCollector(
            system=self.system,
            agent=self._agent_health,
            cameras=self._camera_health,
            loop_lag=self.loop_lag,
        )
        self._relay_seen: dict[str, tuple[int, float]] = {}  # window start: (bytes, time)
        self._bitrate: dict[str, float] = {}
        self._video_at: dict[str, float] = {}
        self.reporter = StatsReporter(
            self._report_sample, self._report_signature, interval=cfg.health_interval
        )
        self.reporter.attach(self._send_event)

    def _session_limit(self, camera_id: str) -> int:
        """The camera's RTSP session budget: a `[[sessions.camera]]` match (id, serial or
        address), else `[sessions] max_sessions`."""
        s = self.cfg.sessions
        if s.per_camera:
            try:
                rec = self.inventory.get(camera_id)
            except NotFound:
                return s.max_sessions
            for key in (rec.id, rec.serial_number, xaddr_host(rec.xaddr)):
                if key and key in s.per_camera:
                    return s.per_camera[key]
        return s.max_sessions

    def _camera_tunnels(self, camera_id: str) -> int:
        """Cloud tunnels open to the camera's RTSP port (each is a session on the camera)."""
        sp = self.cloud.streampoint
        if sp is None:
            return 0
        targets = sp.open_targets()
        if not targets:
            return 0
        try:
            endpoints = camera_endpoints(self.inventory.get(camera_id))
        except NotFound:
            return 0
        return sum(n for key, n in targets.items() if endpoints.get(key) is TargetKind.RTSP)

    def _agent_health(self) -> dict[str, Any]:
        """What the health collector reports about the agent (docs/health.md)."""
        status = self.cloud.status()
        sp = self.cloud.streampoint
        return {
            "version": __version__,
            "uptime_seconds": time.monotonic() - self.started,
            "activated": status["activated"],
            "endpoint": status.get("endpoint"),
            "streampoint": status.get("streampoint"),
            "tunnels": sp.tunnel_status() if sp is not None else None,
            "commands": {"run": self.commands.run_count, "failed": self.commands.failed_count},
            "tasks": len(asyncio.all_tasks()),
        }

    def _camera_health(self) -> list[dict[str, Any]]:
        """Per camera: state and what flows through the agent. The input bitrate is the rate of
        the camera's bytes through the tunnels (the agent does not parse that video); when the
        restream server pulls the camera, its bytes count too."""
        now = time.time()
        restreamed: dict[str, int] = {}
        video: dict[str, dict[str, Any]] = {}  # the main stream's figures when restreamed
        for src in self.hub.sources_status():  # every shared session, whoever consumes it
            cid = str(src.get("camera", ""))
            restreamed[cid] = restreamed.get(cid, 0) + int(src.get("bytes") or 0)
            if src.get("fps") is not None and (src.get("stream") == "main" or cid not in video):
                video[cid] = src
        out = []
        for rec in self.inventory.cameras():
            relayed = sum(self.cloud.tunnel_bytes.get(k, 0) for k in camera_endpoints(rec))
            total = relayed + restreamed.get(rec.id, 0)
            seen = self._relay_seen.get(rec.id)
            if seen is None or total < seen[0]:
                self._relay_seen[rec.id] = (total, now)
                self._bitrate.pop(rec.id, None)
            elif now - seen[1] >= BITRATE_WINDOW:
                # The collector and the cloud reporter both ask; a rate over a few milliseconds
                # between their calls would mean nothing, so a window is at least a second.
                self._bitrate[rec.id] = (total - seen[0]) * 8 / (now - seen[1])
                if total > seen[0]:
                    self._video_at[rec.id] = now
                self._relay_seen[rec.id] = (total, now)
            bitrate = self._bitrate.get(rec.id)
            out.append(
                {
                    "id": rec.id,
                    "name": " ".join(x for x in (rec.manufacturer, rec.model) if x) or rec.id,
                    "state": "paused" if rec.paused else str(rec.state),
                    "paused": rec.paused,
                    "last_seen": rec.last_seen,
                    "last_video_at": video.get(rec.id, {}).get("last_frame_at")
                    or self._video_at.get(rec.id),
                    "bitrate_bps": bitrate,
                    "fps": video.get(rec.id, {}).get("fps"),
                    "keyframe_interval_seconds": video.get(rec.id, {}).get(
                        "keyframe_interval_seconds"
                    ),
                    "relay_bytes_out": relayed,
                    "sessions_held": self.hub.held(rec.id),
                    "max_sessions": self._session_limit(rec.id),
                    "reconnects": rec.failures,
                    "last_error": rec.last_error or rec.reason,
                }
            )
        return out

    async def _report_sample(self) -> dict[str, Any]:
        """For the cloud: the latest host figures with the agent's and cameras' as of now."""
        latest = self.health.latest or await self.health.collect()
        return {
            **latest,
            "ts": time.time(),
            "agent": {**latest.get("agent", {}), **self._agent_health()},
            "cameras": self._camera_health(),
        }

    def _report_signature(self) -> tuple[Any, ...]:
        """What, when it changes, is reported at once."""
        status = self.cloud.status()
        links = tuple(bool((status.get(k) or {}).get("alive")) for k in ("endpoint", "streampoint"))
        cams = tuple(sorted((r.id, str(r.state), r.paused) for r in self.inventory.cameras()))
        return (status["activated"], links, cams)

    async def _send_event(self, command: str, payload: dict[str, Any]) -> None:
        control = self.cloud.control
        if control is None or not control.status().get("alive"):
            raise ConnectionError("the cloud is not connected")
        await control.event(command, payload)

    def health_summary(self) -> dict[str, Any] | None:
        """The latest sample, short: host figures and per-camera video figures by id."""
        latest = self.health.latest
        if latest is None:
            return None
        system = latest.get("system") or {}
        keys = ("state", "last_seen", "last_video_at", "bitrate_bps", "fps",
                "keyframe_interval_seconds", "relay_bytes_out")  # fmt: skip
        host = ("cpu_percent", "load1", "memory", "process_rss_bytes",
                "temperature_celsius", "uptime_seconds", "throttled")  # fmt: skip
        return {
            "ts": latest.get("ts"),
            "system": {k: system.get(k) for k in host},
            "loop_lag_seconds": (latest.get("agent") or {}).get("loop_lag_seconds"),
            "cameras": {
                str(c.get("id")): {k: c.get(k) for k in keys} for c in latest.get("cameras") or []
            },
        }

    async def metrics(self) -> dict[str, Any]:
        """The latest health snapshot (collected now if there is none yet)."""
        return self.health.latest or await self.health.collect()

    def relay_status(self) -> dict[str, Any]:
        """Tunnels, the restream server and push relays, for the status route."""
        sp = self.cloud.streampoint
        return {
            "tunnels": sp.tunnel_status() if sp is not None else None,
            "stats_report": self.reporter.status(),
            "restream": self.restream.status() if self.restream is not None else None,
            "push": self.push.status(),
            "sessions": self.hub.status([r.id for r in self.inventory.cameras()]),
        }

    def _apply_profile(self, detection: hw.Detection) -> None:
        """Settings the hardware profile decides unless the config file does."""
        self.hardware = detection
        p = detection.profile
        log.info("hardware profile %s (%s): %s", p.id, p.name, detection.reason)
        paths = self.system.paths
        if self.cfg.thermal_zone is None and p.thermal.sensor:
            paths = replace(paths, thermal_zone=Path(p.thermal.sensor))
        if self.cfg.throttled_path is None and p.thermal.throttled:
            paths = replace(paths, throttled=Path(p.thermal.throttled))
        self.system.paths = paths
        self.updates.hardware = self.cfg.update.hardware or p.id
        self.cloud.qr_concurrency = p.tuning.qr_concurrency
        self.shedder.policy = ShedPolicy(
            soft_celsius=p.thermal.soft_celsius,
            hard_celsius=p.thermal.hard_celsius,
            cpu_percent=p.tuning.cpu_shed_percent,
        )

    async def _on_shed_level(self, old: int, new: int) -> None:
        if not self.shedder.allows("transcode"):
            await self.webrtc.close_transcoded()  # transcoding goes first, at level 1
        if new >= 2 > old:
            await self.webrtc.close_all()  # live views go first; the relay is never shed

    def hardware_status(self) -> dict[str, Any] | None:
        """The hardware profile for the status route."""
        d = self.hardware
        if d is None:
            return None
        cameras = len(self.inventory.cameras())
        return {
            "id": d.profile.id,
            "name": d.profile.name,
            "reason": d.reason,
            "forced": d.forced,
            "max_cameras": d.profile.max_cameras,
            "over_capacity": cameras > d.profile.max_cameras,
            "shed": self.shedder.status(),
        }

    def _notify_health(self) -> dict[str, str]:
        """Health fields sent with each watchdog ping: the arbiter judges a trial by them."""
        status = self.cloud.status()
        endpoint = status.get("endpoint") or {}
        online = sum(1 for r in self.inventory.cameras() if r.state == CameraState.ONLINE)
        return {
            "X_ACTIVATED": "1" if status.get("activated") else "0",
            "X_CONNECTED": "1" if endpoint.get("alive") else "0",
            "X_CAMERAS": str(online),
        }

    def _on_reboot(self) -> None:
        log.warning("restart requested by the cloud")
        self.restart_requested = True
        if self._stop is not None:
            self._stop.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        agent_log.ring()  # recent lines for the cloud's `logs` call
        await asyncio.to_thread(self.state.ensure)
        await asyncio.to_thread(self.state.remove_stale_temps)
        self._apply_profile(await asyncio.to_thread(hw.detect, force=self.cfg.hardware_profile))
        await self.inventory.load()
        await self.audit.load()
        log.info("%d camera(s) known from %s", len(self.inventory.cameras()), self.state.path)
        status = self.hardware_status()
        if status is not None and status["over_capacity"]:
            log.warning(
                "%d cameras known; the %s profile is sized for %d",
                len(self.inventory.cameras()),
                status["id"],
                status["max_cameras"],
            )
        try:
            await self.api.start()
        except OSError as exc:
            await self.inventory.close()
            raise ConfigError(
                f"local API cannot listen on {self.cfg.api_host}:{self.cfg.api_port}: {exc}"
            ) from None
        log.info("local API on http://%s:%d/api/v1/", self.cfg.api_host, self.api.port)
        try:
            await self._start_hub()
            await self._start_restream()
            async with TaskGroup() as group:
                tasks = [
                    group.create_task(self.inventory.run(), name="inventory"),
                    group.create_task(self.discovery.run(), name="discovery"),
                    group.create_task(self.cloud.run(), name="cloud"),
                    group.create_task(self.push.run(), name="push"),
                    group.create_task(self.loop_lag.run(), name="loop lag"),
                    group.create_task(self.health.run(self.cfg.health_interval), name="health"),
                    group.create_task(self.reporter.run(), name="stats to the cloud"),
                    group.create_task(CameraLiveness(self.inventory).run(), name="liveness"),
                    group.create_task(self.updates.run(), name="updates"),
                    group.create_task(
                        self.shedder.run(
                            lambda: self.health.latest,
                            self.cfg.health_interval,
                            on_level=self._on_shed_level,
                        ),
                        name="load shedding",
                    ),
                    group.create_task(
                        self.notifier.run_watchdog(self._notify_health), name="watchdog"
                    ),
                ]
                self.ready.set()
                self.notifier.ready(f"serving {len(self.inventory.cameras())} camera(s)")
                log.info("camera-agent %s ready", __version__)
                await stop.wait()
                self.notifier.stopping()
                log.info("stopping")
                for task in tasks:
                    task.cancel()
        finally:
            await self._shutdown()

    async def _start_hub(self) -> None:
        """The shared camera sessions: every consumer in the agent reads a camera through them."""
        hub = self.hub
        await hub.start()
        self.inventory.on_paused = self._paused
        self.inventory.local_stream = lambda cid, stream: hub.url("webrtc", cid, stream)
        self.inventory.local_frames = lambda cid: hub.frame_url("snapshot", cid)
        self.cloud.qr_url = lambda rec: hub.frame_url("qr", rec.id)
        log.debug("camera session hub on loopback port %d", hub.port)

    async def _start_restream(self) -> None:
        r = self.cfg.restream
        if r.host is None:
            return
        password = r.password
        if password is None:
            password = await asyncio.to_thread(self.state.restream_password)
        self.restream = Restreamer(
            self.hub,
            host=r.host,
            port=r.port,
            username=r.username,
            password=password.reveal(),
        )
        try:
            await self.restream.start()
        except OSError as exc:
            self.restream = None
            raise ConfigError(f"restream cannot listen on {r.host}:{r.port}: {exc}") from None
        log.info("restream on %s (user %s)", self.restream.url("<camera id>"), r.username)

    def _paused(self, camera_id: str, paused: bool) -> None:
        if paused:
            self.hub.close_camera(camera_id)

    async def _stop_api(self) -> None:
        """Stop the local API; the requests still in flight after `REQUEST_GRACE` are cancelled
        (one waiting on a dead peer would hold the server's own stop for 4 s)."""
        stopping = asyncio.ensure_future(self.api.stop())
        await asyncio.wait([stopping], timeout=REQUEST_GRACE)
        for task in list(self._requests):
            task.cancel()
        await stopping

    async def _shutdown(self) -> None:
        async def close_all() -> None:
            # Side by side: each may wait a grace period for the requests it is serving.
            servers = [self._stop_api(), self.webrtc.close()]
            if self.restream is not None:
                servers.append(self.restream.stop())
            for failed in await asyncio.gather(*servers, return_exceptions=True):
                if isinstance(failed, Exception):
                    log.warning("closing a server failed: %r", failed)
            await self.hub.stop()  # after its consumers: they end on their own first
            await self.inventory.close()

        try:
            await asyncio.wait_for(close_all(), SHUTDOWN_TIMEOUT)
        except TimeoutError:
            log.warning("shutdown took longer than %.0f s; abandoning the rest", SHUTDOWN_TIMEOUT)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from agent.cli import add_camera_arguments, host_port

    p.add_argument(
        "--config", default=None, help="TOML config (default: /etc/camera-agent/agent.toml)"
    )
    p.add_argument(
        "--state-dir", default=None, help="state directory (default: /var/lib/camera-agent)"
    )
    p.add_argument("--activation-url", default=None, help="activation server base URL")
    p.add_argument(
        "--api", type=host_port, default=None, metavar="HOST:PORT", help="local API address"
    )
    add_camera_arguments(p, extra=" (adds to the config file's)")


async def run(args: argparse.Namespace) -> int:
    tune_allocator()
    try:
        cfg = agent_config.with_flags(
            agent_config.load(args.config),
            state_dir=args.state_dir,
            api=args.api,
            probe=args.probe,
            subnets=args.subnet,
            username=args.username,
            password=args.password,
            activation_url=args.activation_url,
        )
        agent = Agent(cfg)
    except ConfigError as exc:
        print(f"camera-agent run: {exc}", file=sys.stderr)
        return 2
    workers = ThreadPoolExecutor(thread_name_prefix=WORKER_PREFIX)
    asyncio.get_running_loop().set_default_executor(workers)
    stopper = Stopper(workers)
    stopper.install()
    try:
        task = asyncio.create_task(agent.run(stopper.stop), name="agent")
        if not await stopper.supervise(task):
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("the agent failed", exc_info=task.exception())
            stopper.exit(EXIT_STOP_TIMEOUT)
        try:
            task.result()
        except ConfigError as exc:
            print(f"camera-agent run: {exc}", file=sys.stderr)
            return 2
    finally:
        stopper.uninstall()
    if agent.restart_requested and cfg.reboot_command:
        return await reboot_box(cfg.reboot_command)
    return EXIT_RESTART if agent.restart_requested else 0


class _HubSources:
    """Camera URLs for FFmpeg-based consumers: the hub's loopback URL of the shared session."""

    def __init__(self, hub: SessionHub, kind: str) -> None:
        self._hub = hub
        self._kind = kind

    def upstream_url(self, camera_id: str, stream: str) -> str:
        return self._hub.url(self._kind, camera_id, stream)

    def child_url(self, camera_id: str, stream: str) -> tuple[str, Callable[[], None]]:
        """For a child process: a credential of its own, revoked by the returned call."""
        user, password = self._hub.lease()
        try:
            url = self._hub.url(self._kind, camera_id, stream, credentials=(user, password))
        except BaseException:
            self._hub.release(user)
            raise
        return url, lambda: self._hub.release(user)


def _tracked(requests: set[asyncio.Task[Any]]) -> Middleware:
    """A middleware keeping the tasks of the requests in flight in `requests`."""

    @web.middleware
    async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is None:
            return await handler(request)
        requests.add(task)
        try:
            return await handler(request)
        finally:
            requests.discard(task)

    return track


async def reboot_box(command: tuple[str, ...]) -> int:
    """The cloud's `reboot` when the box may be rebooted: run the configured command after a
    clean stop. If it fails, fall back to restarting the agent (exit status 3)."""
    log.warning("rebooting the box: %s", " ".join(command))
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    except (OSError, TimeoutError) as exc:
        log.warning("reboot command failed: %s; restarting the agent instead", exc)
        return EXIT_RESTART
    if proc.returncode != 0:
        log.warning(
            "reboot command exited %s: %s; restarting the agent instead",
            proc.returncode,
            err.decode(errors="replace").strip()[:200],
        )
        return EXIT_RESTART
    return 0
