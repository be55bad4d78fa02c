"""One simulated camera: the state model wired to its HTTP (ONVIF, snapshot, /sim) and RTSP servers.

`SimCamera` owns its servers and video sources; discovery and mDNS are shared by every camera of
a process and belong to `SimCameraFleet`. A reboot takes every service of the camera away for the
requested time and brings it back on the same ports with a new boot time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from aiohttp import web

from agent.media.rtsp_server import RtspServer
from agent.media.source import MediaSource
from agent.proto.httpauth import HttpAuthenticator
from agent.proto.wsdiscovery import DEVICE, NVT, DiscoveryTarget
from agent.sim.camera import control
from agent.sim.camera.dahua import DahuaUpgrader
from agent.sim.camera.isapi import Isapi
from agent.sim.camera.model import CameraModel, Faults, Profile, url_host
from agent.sim.camera.onvif_http import add_onvif_routes
from agent.sim.camera.persona import get_persona
from agent.sim.camera.sofia import SofiaServer
from agent.sim.camera.speaker import Speaker
from agent.sim.camera.video import EncoderSettings, Overlay, VideoSource

log = logging.getLogger(__name__)

#: Seconds between an accepted reboot request and the services going away (lets the answer out).
REBOOT_GRACE = 0.2
#: Longest reboot the simulator accepts, seconds.
MAX_REBOOT_SECONDS = 3600.0
#: Seconds HTTP handlers get to finish when the camera stops or reboots.
SHUTDOWN_TIMEOUT = 2.0


@dataclass(frozen=True)
class SimCameraConfig:
    """How to start one simulated camera. Port 0 picks a free port (kept across reboots)."""

    host: str = "127.0.0.1"
    port: int = 0
    rtsp_port: int = 0
    sofia_port: int = 0  # XMeye Sofia firmware upgrade (34567 on real cameras)
    username: str = "admin"
    password: str = field(default="admin", repr=False)
    name: str = "SimCam"
    manufacturer: str = "Simulated Optics"
    model: str = "SC-2000"
    serial: str = "SC2000"
    firmware_version: str = "1.0.0"
    location: str = ""
    faults: dict[str, Any] | None = None
    #: A vendor persona (`agent.sim.camera.persona.PERSONAS`): its identity fills the fields
    #: left at their defaults, its quirks go under `faults`.
    persona: str | None = None
    #: RTSP sessions served at once (a SETUP past them gets 453); None: the persona's, or no
    #: cap without a persona; 0: no cap.
    max_sessions: int | None = None
    #: A speaker on the ONVIF audio backchannel; None: the persona's, or one without a persona.
    backchannel: bool | None = None


def encoder_settings(profile: Profile) -> EncoderSettings:
    enc = profile.encoder
    encoding: Literal["H264", "H265"] = "H265" if enc.encoding == "H265" else "H264"
    return EncoderSettings(
        encoding=encoding,
        width=enc.width,
        height=enc.height,
        fps=enc.fps_limit,
        bitrate_kbps=enc.bitrate_kbps,
        gop=enc.gov_length,
    )


class SimCamera:
    """A simulated ONVIF camera. Start with `await start()`, end with `await stop()`."""

    def __init__(
        self,
        config: SimCameraConfig,
        *,
        on_online: Callable[[SimCamera], None] | None = None,
        on_offline: Callable[[SimCamera], None] | None = None,
    ) -> None:
        profiles = None
        if config.persona is not None:
            persona = get_persona(config.persona)
            config = persona.apply(config)
            profiles = persona.profiles()
        self.config = config
        faults = Faults.from_json(config.faults) if config.faults else None
        self.model = CameraModel(
            username=config.username,
            password=config.password,
            name=config.name,
            manufacturer=config.manufacturer,
            model=config.model,
            serial_number=config.serial,
            firmware_version=config.firmware_version,
            host=config.host,
            http_port=config.port,
            rtsp_port=config.rtsp_port,
            location=config.location,
            faults=faults,
            profiles=profiles,
            speaker=config.backchannel is not False,
        )
        #: What the speaker received (None: the camera has none); kept across reboots.
        self.speaker: Speaker | None = Speaker() if config.backchannel is not False else None
        self._max_sessions = config.max_sessions or None
        self.qr_text: str | None = None
        self.online = False
        self._on_online = on_online
        self._on_offline = on_offline
        self._overlay = Overlay(lines=(config.name,))
        self._sources: dict[str, VideoSource] = {}
        self._rtsp: RtspServer | None = None
        self._runner: web.AppRunner | None = None
        self.isapi: Isapi | None = None  # the ISAPI firmware side, rebuilt at each boot
        self.dahua: DahuaUpgrader | None = None  # the Dahua CGI firmware side
        self.sofia: SofiaServer | None = None  # the XMeye Sofia firmware side, on its own port
        self._sofia_port = config.sofia_port
        self._tasks: set[asyncio.Task[None]] = set()
        self._lifecycle = asyncio.Lock()
        self._auth = HttpAuthenticator(f"{config.model} {config.serial}", self._password_of)
        self._stopped = False

    # Addresses.

    @property
    def host(self) -> str:
        return url_host(self.config.host)

    @property
    def port(self) -> int:
        return self.model.http_port

    @property
    def rtsp_port(self) -> int:
        return self.model.rtsp_port

    @property
    def sofia_port(self) -> int:
        return self._sofia_port

    @property
    def device_url(self) -> str:
        return f"http://{self.host}:{self.port}/onvif/device_service"

    def rtsp_url(self, profile_token: str | None = None) -> str:
        """The stream URL of a profile (default: the main one)."""
        prof = self.model.profile(profile_token or self.model.main_profile.token)
        return f"rtsp://{self.host}:{self.rtsp_port}{prof.rtsp_path}"

    def snapshot_url(self, profile_token: str | None = None) -> str:
        token = quote(profile_token or self.model.main_profile.token, safe="")
        return f"http://{self.host}:{self.port}/onvif/snapshot?profile={token}"

    @property
    def rtsp(self) -> RtspServer | None:
        return self._rtsp

    def source(self, profile_token: str) -> VideoSource:
        return self._sources[profile_token]

    def discovery_target(self) -> DiscoveryTarget:
        return DiscoveryTarget(
            endpoint_reference=self.model.endpoint_reference,
            types=(NVT, DEVICE),
            scopes=tuple(uri for uri, _fixed in self.model.scopes()),
            xaddrs=(self.device_url,),
        )

    def describe(self) -> dict[str, Any]:
        """Addresses and identity, as `sim camera --ready-file` writes them."""
        ident = self.model.identity
        return {
            "name": ident.name,
            "serial_number": ident.serial_number,
            "endpoint_reference": self.model.endpoint_reference,
            "device_url": self.device_url,
            "port": self.port,
            "rtsp_port": self.rtsp_port,
            "sofia_port": self.sofia_port,
            "rtsp": {tok: self.rtsp_url(tok) for tok in self.model.profiles},
            "snapshot": self.snapshot_url(),
        }

    # Life cycle.

    async def start(self) -> None:
        async with self._lifecycle:
            await self._bring_up()

    async def stop(self) -> None:
        self._stopped = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._lifecycle:
            await self._bring_down()

    async def reboot(self, seconds: float) -> None:
        """All services gone for `seconds`, then back on the same ports with a new boot time."""
        async with self._lifecycle:
            log.info("%s: rebooting for %.1f s", self.config.name, seconds)
            await self._bring_down()
            await asyncio.sleep(seconds)
            self.model.reboot()
            await self._bring_up()

    async def _bring_up(self) -> None:
        for token, prof in self.model.profiles.items():
            self._sources[token] = VideoSource(
                f"{self.config.name}/{token}",
                encoder_settings(prof),
                self._current_overlay,
                audio=prof.audio,
            )
        rtsp_enabled = any(p.name == "RTSP" and p.enabled for p in self.model.protocols)
        try:
            if rtsp_enabled:
                rtsp = RtspServer(
                    host=self.config.host,
                    port=self.model.rtsp_port,
                    resolve=self._resolve,
                    auth=self._auth,
                    server_name=f"{self.model.identity.model} RTSP/1.0",
                    max_sessions=self._max_sessions,
                    backchannel=self.speaker,
                )
                await rtsp.start()
                rtsp.stall_rtp = self.model.faults.rtp_stall
                self._rtsp = rtsp
                self.model.rtsp_port = rtsp.port
            runner = web.AppRunner(
                self._build_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
            )
            await runner.setup()
            self._runner = runner
            site = web.TCPSite(runner, self.config.host, self.model.http_port, reuse_address=True)
            await site.start()
            self.model.http_port = _bound_port(runner, self.model.http_port)
            self.sofia = SofiaServer(self.model, self, self.config.host, self._sofia_port)
            await self.sofia.start()
            self._sofia_port = self.sofia.port
        except BaseException:
            await self._bring_down()
            raise
        self.online = True
        if self._on_online:
            self._on_online(self)

    async def _bring_down(self) -> None:
        was_online, self.online = self.online, False
        if was_online and self._on_offline:
            self._on_offline(self)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self.isapi is not None:
            await self.isapi.close()
        if self.dahua is not None:
            await self.dahua.close()
        if self.sofia is not None:
            sofia, self.sofia = self.sofia, None
            await sofia.close()
        if self._rtsp is not None:
            rtsp, self._rtsp = self._rtsp, None
            await rtsp.stop()
        sources, self._sources = self._sources, {}
        for src in sources.values():
            await src.close()

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=control.MAX_JSON)
        add_onvif_routes(app, self.model, self)
        self.isapi = Isapi(self.model, self, self._auth)
        self.isapi.routes(app)
        self.dahua = DahuaUpgrader(self.model, self, self._auth)
        self.dahua.routes(app)
        app.router.add_get("/onvif/snapshot", self._snapshot)
        control.add_routes(app, self)
        app.on_response_prepare.append(_server_header)
        return app

    # Media.

    def _password_of(self, username: str) -> str | None:
        user = self.model.user(username)
        return user.password if user else None

    def _resolve(self, path: str) -> MediaSource | None:
        """The profile whose stream URI names `path` (with its query: Dahua's subtype=N and
        Axis' profile=... tell streams apart by query only); without a match by query, the
        first profile with that path (a client that drops the query)."""
        path = "/" + path.lstrip("/")
        wanted = urlsplit(path)
        same_path = None
        for token, prof in self.model.profiles.items():
            uri = urlsplit(prof.rtsp_path)
            if uri.path.rstrip("/") != wanted.path.rstrip("/"):
                continue
            if uri.query == wanted.query:
                return self._sources.get(token)
            same_path = same_path or token
        return self._sources.get(same_path) if same_path is not None else None

    def _current_overlay(self) -> Overlay:
        return self._overlay

    @property
    def video_active(self) -> bool:
        return any(src.running for src in self._sources.values())

    def refresh_overlay(self) -> None:
        """Recompute the burned-in text from the state; called on the event loop."""
        st = self.model.ptz.status(self.model.monotonic())
        ptz = f"PTZ pan {st.pan:+.2f} tilt {st.tilt:+.2f} zoom {st.zoom:.2f}"
        ident = self.model.identity
        rotated = " rot 180" if self.model.video_source.rotate == "ON" else ""
        self._overlay = Overlay(
            lines=(ident.name, ptz, f"{ident.model} fw {ident.firmware_version}{rotated}"),
            qr_text=self.qr_text,
        )

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        result = self._auth.verify(
            request.method, request.path_qs, request.headers.get("Authorization")
        )
        if result.username is None:
            resp = web.Response(status=401, text="401 Unauthorized\n")
            for value in self._auth.challenge(stale=result.stale):
                resp.headers.add("WWW-Authenticate", value)
            return resp
        token = request.query.get("profile", self.model.main_profile.token)
        source = self._sources.get(token)
        if source is None:
            return web.Response(status=404, text=f"no profile {token!r}\n")
        self.refresh_overlay()
        jpeg = await source.snapshot_jpeg()
        return web.Response(body=jpeg, content_type="image/jpeg")

    # Hooks called by the ONVIF services and the /sim control routes.

    def encoder_changed(self, profile_token: str) -> None:
        source = self._sources.get(profile_token)
        if source is not None:
            source.reconfigure(encoder_settings(self.model.profile(profile_token)))

    def schedule_reboot(self, seconds: float) -> None:
        seconds = min(max(seconds, 0.0), MAX_REBOOT_SECONDS)
        self._spawn(self._delayed(REBOOT_GRACE, self.reboot(seconds)))

    def protocols_changed(self) -> None:
        # A real camera moves its servers to the new ports: do the same, after the answer is out.
        self._spawn(self._delayed(REBOOT_GRACE, self.reboot(0.0)))

    def faults_changed(self) -> None:
        if self._rtsp is not None:
            self._rtsp.stall_rtp = self.model.faults.rtp_stall

    @property
    def max_sessions(self) -> int | None:
        """RTSP sessions served at once (None: no cap)."""
        return self._max_sessions

    def set_max_sessions(self, value: int | None) -> None:
        """Change the cap now (open sessions stay; 0 or None: no cap)."""
        self._max_sessions = value or None
        if self._rtsp is not None:
            self._rtsp.max_sessions = self._max_sessions

    def drop_rtsp_sessions(self) -> None:
        if self._rtsp is not None:
            self._rtsp.drop_all_sessions()

    async def _delayed(self, delay: float, work: Coroutine[Any, Any, None]) -> None:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            work.close()
            raise
        await work

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._stopped:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: background work failed: %s", self.config.name, task.exception())


def _bound_port(runner: web.AppRunner, default: int) -> int:
    """The port a site really listens on (the one the OS picked for port 0)."""
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return default


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "sim-camera-httpd"
