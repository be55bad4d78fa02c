"""`CloudService`: the agent's cloud side in one owner task.

Not activated: scan the cameras for an activation QR code (and accept `activate()` from the CLI
or local API). Activated: keep the control connection and the data connection it asks for.
`reset` from the endpoint forgets the activation and goes back to waiting.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import gzip
import json
import logging
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from agent import __version__
from agent import log as agent_log
from agent.cloud import activation as act_mod
from agent.cloud.activation import Activation
from agent.cloud.commands import CommandError, error_code
from agent.cloud.control import ControlConnection, ControlHandlers
from agent.cloud.identity import Identity, load_or_create
from agent.cloud.link import TlsPolicy, parse_pin, ssl_context
from agent.cloud.qrscan import QrScanner, Sighting
from agent.cloud.streampoint import Streampoint
from agent.cloud.tunnel_policy import TunnelPolicy
from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraState
from agent.errors import (
    AgentError,
    ConfigError,
    InvalidArgument,
    NotFound,
    ProtocolError,
    Unavailable,
)
from agent.net.backoff import Backoff
from agent.net.taskgroup import TaskGroup
from agent.proto import cloud as codec
from agent.state import StateDir

if TYPE_CHECKING:
    from agent.audit import AuditLog
    from agent.cloud.commands import CommandRunner
    from agent.update.service import UpdateService

log = logging.getLogger(__name__)

#: Longest window for looking for further QR codes after activation, seconds.
MAX_BIND_WINDOW = 3600.0

#: Seconds a new data connection may take to log in before a redirect is refused.
STREAMPOINT_TIMEOUT = 15.0

#: Seconds between looks for a stream activated without a camera and an online camera for it.
UNBOUND_POLL = 1.0
#: Backoff (base and cap, seconds) before asking an unreachable activation server again to
#: bind a camera to a stream activated without one.
UNBOUND_RETRY_BASE = 2.0
UNBOUND_RETRY_CAP = 60.0


class CloudService:
    """Owns identity, activation, QR scanning, control and data connections."""

    def __init__(
        self,
        state: StateDir,
        inventory: Inventory | None = None,
        *,
        activation_url: str | None = None,
        activation_hosts: Sequence[str] = (),
        ca_file: str | None = None,
        pin_sha256: str | None = None,
        serial: str | None = None,
        model: str = "camera-agent",
        on_reboot: Callable[[], None] | None = None,
        qr_window: float | None = None,
        tunnel_policy: TunnelPolicy | None = None,
        tunnel_idle_timeout: float = 60.0,
    ) -> None:
        self.state = state
        self.inventory = inventory
        self._tunnel_idle = tunnel_idle_timeout
        #: Bytes sent through tunnels per camera (host, port), over every data connection.
        self.tunnel_bytes: dict[tuple[str, int], int] = {}
        self.commands: CommandRunner | None = None  # set by the daemon
        self.updates: UpdateService | None = None  # set by the daemon
        self.audit: AuditLog | None = None
        self.tunnel_policy = tunnel_policy or TunnelPolicy(
            lambda: inventory.cameras() if inventory is not None else []
        )
        self.activation_url = activation_url
        #: Hosts a QR code's activation URL may name before activation (empty: any https).
        self.activation_hosts = tuple(activation_hosts)
        self._ca_file = ca_file
        self._pin = parse_pin(pin_sha256)
        # verifying, with no CA yet: _identity() loads the real one in a thread
        self._tls = TlsPolicy(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), self._pin)
        self.serial = serial or ""
        self.model = model
        self._on_reboot = on_reboot
        self._qr_window = qr_window
        self.qr_concurrency: int | None = None  # from the hardware profile
        self.qr_allowed: Callable[[], bool] = lambda: True  # False while load is shed
        #: The URL QR scanning reads a camera from (the shared session); None: the camera's own.
        self.qr_url: Callable[[Any], str | None] | None = None
        self.identity: Identity | None = None
        self.activation: Activation | None = None
        self.control: ControlConnection | None = None
        self.streampoint: Streampoint | None = None
        self.scanner: QrScanner | None = None
        self.last_error = ""
        self._changed = asyncio.Event()
        self._reset = asyncio.Event()
        self._lock = asyncio.Lock()
        self._identity_lock = asyncio.Lock()
        self._bind_until = 0.0
        self._bind_requested = asyncio.Event()

    # ------------------------------------------------------------------ public

    def status(self) -> dict[str, Any]:
        act = self.activation
        return {
            "activated": act is not None,
            "state": "activated" if act is not None else "waiting_for_activation",
            "agent_id": act.agent_id if act else None,
            "server_id": act.server_id if act else None,
            # without their tokens: status feeds API answers and log lines
            "streams": [
                {"stream_name": s.get("stream_name"), "camera_id": s.get("camera_id")}
                for s in (act.streams if act else [])
            ],
            "public_key": self.identity.public_key_b64 if self.identity else None,
            "activation_url": (act.activation_url if act else None) or self.activation_url,
            "endpoint": self.control.status() if self.control else None,
            "streampoint": self.streampoint.status() if self.streampoint else None,
            "qr_scan": self.scanner.status() if self.scanner else None,
            "last_error": self.last_error,
        }

    async def activate(
        self, token: str, activation_url: str | None = None, camera_id: str | None = None
    ) -> Activation:
        """Activate with a token (typed or read from a QR code), binding `camera_id` or the
        first online camera. Raises the ActivationError subclasses, Unavailable, ConfigError."""
        url = activation_url or (self.activation.activation_url if self.activation else None)
        url = url or self.activation_url
        if not url:
            raise ConfigError("no activation URL: set [cloud] activation_url or pass one")
        ident = await self._identity()
        camera = self._camera(camera_id)
        async with self._lock:
            try:
                result = await act_mod.activate(
                    self.state,
                    ident,
                    token,
                    url,
                    serial=self.serial,
                    model=self.model,
                    camera=camera,
                    ssl=self._tls.context if url.startswith("https:") else True,
                )
            except AgentError as exc:
                self.last_error = str(exc)
                raise
            self.last_error = ""
            first = self.activation is None
            self.activation = result
        stream = result.streams[-1]  # never logged whole: it holds the token
        log.info(
            "activated as agent %s: stream %s, camera %s",
            result.agent_id,
            stream.get("stream_name"),
            stream.get("camera_id") or "none yet",
        )
        if first:
            self._changed.set()
        return result

    def scan_for_more(self, seconds: float) -> None:
        """Look for further activation QR codes on the cameras not yet bound, for `seconds`
        (an NVR binds one stream per camera this way). Before activation scanning is always on."""
        self._bind_until = time.monotonic() + max(0.0, min(seconds, MAX_BIND_WINDOW))
        self._bind_requested.set()

    @property
    def scanning_for_more(self) -> bool:
        return time.monotonic() < self._bind_until

    async def run(self) -> None:
        """Serve until cancelled."""
        await self._identity()
        self.activation = await asyncio.to_thread(act_mod.load, self.state)
        try:
            while True:
                self._changed.clear()
                if self.activation is None:
                    await self._waiting()
                else:
                    await self._connected(self.activation)
        finally:
            await self._close_streampoint()

    # ------------------------------------------------------------------ phases

    async def _waiting(self) -> None:
        log.info("not activated: looking for an activation QR code")
        scanner = self._new_scanner()
        async with TaskGroup() as group:
            scan = group.create_task(scanner.run())
            while self.activation is None:
                got = group.create_task(scanner.sightings.get())
                changed = group.create_task(self._changed.wait())
                await asyncio.wait((got, changed), return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if got.done():
                    await self._try_sighting(got.result())
                else:
                    got.cancel()
            scan.cancel()
        self.scanner = None

    async def _try_sighting(self, seen: Sighting) -> None:
        url = seen.payload.url
        if url is not None and not codec.activation_url_allowed(
            url, self.activation_url, hosts=self.activation_hosts
        ):
            log.warning(
                "QR code of camera %s names activation server %s, which is not allowed "
                "(https only, http to loopback or private addresses, [cloud] activation_hosts); "
                "ignored",
                seen.camera_id,
                codec.origin_text(url),
            )
            if self.scanner is not None:
                self.scanner.ignore(seen.payload.token)
            return
        try:
            await self.activate(seen.payload.token, url, seen.camera_id)
        except AgentError as exc:
            log.warning("activation from the QR code of camera %s failed: %s", seen.camera_id, exc)
        if self.scanner is not None and self.activation is None:
            self.scanner.ignore(seen.payload.token)

    async def _connected(self, act: Activation) -> None:
        ident = await self._identity()
        handlers = ControlHandlers(
            streampoint_connect=self._streampoint_connect,
            streampoint_disconnect=self._streampoint_disconnect,
            reset=self._request_reset,
            reboot=self._reboot,
            description=self._description,
            hello=self._hello,
            command=self._command,
        )
        control = ControlConnection(act.endpoint_url, act.agent_id, ident, handlers, tls=self._tls)
        self.control = control
        self._reset.clear()
        try:
            async with TaskGroup() as group:
                conn = group.create_task(control.run())
                reset = group.create_task(self._reset.wait())
                binder = group.create_task(self._bind_loop())
                typed = group.create_task(self._bind_typed())
                await asyncio.wait((conn, reset), return_when=asyncio.FIRST_COMPLETED)
                reset.cancel()
                binder.cancel()
                typed.cancel()
                await control.stop()
        finally:
            self.control = None
            await self._close_streampoint()
        if self._reset.is_set():
            await asyncio.to_thread(act_mod.forget, self.state)
            self.activation = None
            if self.inventory is not None:
                self.inventory.forget_credentials()
            log.warning("the endpoint reset the agent: activation forgotten")

    async def _bind_loop(self) -> None:
        """While asked to, scan the unbound cameras and bind each one whose QR code it sees."""
        while True:
            await self._bind_requested.wait()
            self._bind_requested.clear()
            remaining = self._bind_until - time.monotonic()
            if remaining <= 0:
                continue
            log.info("looking for activation QR codes on unbound cameras for %.0f s", remaining)
            scanner = self._new_scanner(unbound_only=True)
            async with TaskGroup() as group:
                scan = group.create_task(scanner.run())
                try:
                    async with asyncio.timeout(remaining):
                        while True:
                            seen = await scanner.sightings.get()
                            await self._bind_sighting(scanner, seen)
                except TimeoutError:
                    pass
                finally:
                    scan.cancel()
            self.scanner = None

    async def _bind_sighting(self, scanner: QrScanner, seen: Sighting) -> None:
        url = self.bind_url(seen.payload.url)
        if url is not None:
            try:
                await self.activate(seen.payload.token, url, seen.camera_id)
            except AgentError as exc:
                log.warning("binding camera %s from its QR code failed: %s", seen.camera_id, exc)
        scanner.ignore(seen.payload.token)

    def bind_url(self, url: str | None) -> str | None:
        """The activation URL with which a QR code seen by the activated agent may bind a camera
        (`url` from the code, or None when it names none): only the activation server of the
        current activation (same scheme, host and port), so a code held up to a camera can add
        a stream there but never move the agent to another cloud. None, logged, otherwise."""
        act = self.activation
        pinned = (act.activation_url if act is not None else "") or self.activation_url
        if not pinned:
            log.warning(
                "QR code ignored: the activation server of this agent is not known (its "
                "activation was saved without it); set [cloud] activation_url"
            )
            return None
        if url is None:
            return pinned
        if not codec.activation_url_allowed(url, pinned=pinned):
            log.warning(
                "QR code names activation server %s, but this agent is activated on %s: "
                "refused (further cameras bind only on the agent's own activation server)",
                codec.origin_text(url),
                codec.origin_text(pinned),
            )
            return None
        return url

    async def _bind_typed(self) -> None:
        """Bind each stream activated without a camera (a typed token: `activate --token`, or
        the local API while no camera was online) to the first online camera no stream has,
        once there is one. The cloud is told as at activation: the same token again, now with
        the camera (protocol.md 3)."""
        refused: set[str] = set()
        backoff = Backoff(base=UNBOUND_RETRY_BASE, cap=UNBOUND_RETRY_CAP)
        not_before = 0.0
        while True:
            token = self._unbound_token(refused)
            camera = self._free_camera() if token is not None else None
            if token is not None and camera is not None and time.monotonic() >= not_before:
                try:
                    await self.activate(token, None, camera)
                    backoff.reset()
                except NotFound:
                    pass  # the camera went away meanwhile: the next one is taken
                except Unavailable as exc:
                    not_before = time.monotonic() + backoff.next_delay()
                    log.warning("binding camera %s to its stream: %s; will retry", camera, exc)
                except AgentError as exc:
                    refused.add(token)
                    log.warning(
                        "the stream activated without a camera cannot be bound to camera %s: %s",
                        camera,
                        exc,
                    )
            await asyncio.sleep(UNBOUND_POLL)

    def _unbound_token(self, skip: set[str]) -> str | None:
        """The token of the first stream without a camera, unless in `skip`."""
        act = self.activation
        for stream in act.streams if act is not None else []:
            token = stream.get("token")
            if stream.get("camera_id") is None and token and token not in skip:
                return token
        return None

    def _free_camera(self) -> str | None:
        """The first online camera (with a stream profile) that no stream is bound to."""
        act = self.activation
        if self.inventory is None or act is None:
            return None
        bound = {s.get("camera_id") for s in act.streams}
        for rec in self.inventory.cameras():
            if rec.state == CameraState.ONLINE and rec.profiles and rec.id not in bound:
                return rec.id
        return None

    # ------------------------------------------------------------------ handlers

    def _hello(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "agent_type": "router",
            "serial": self.serial,
            "model": self.model,
            **({"update": self.updates.summary()} if self.updates is not None else {}),
        }

    async def _description(self) -> dict[str, Any]:
        ip, mac = await asyncio.to_thread(local_address)
        recs = self.inventory.cameras()[:256] if self.inventory is not None else []
        cams = [
            {
                "id": rec.id,
                "state": str(rec.state),
                "manufacturer": rec.manufacturer,
                "model": rec.model,
                "address": rec.address,
            }
            for rec in recs
        ]
        return {
            "local_ip": ip,
            "mac_address": mac,
            "hostname": socket.gethostname(),
            "cameras": cams,
        }

    async def _command(
        self,
        command: str,
        payload: dict[str, Any],
        event: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> dict[str, Any]:
        if command == "agent_update" and self.updates is not None:
            from agent.update.updater import UpdateError

            try:
                return await self.updates.command(payload)
            except UpdateError as exc:
                raise CommandError("temporarily_unavailable", str(exc)) from None
            except AgentError as exc:
                raise CommandError(error_code(exc), str(exc)[:300]) from None
        if self.commands is None:
            raise ProtocolError(f"unknown command {command[:64]!r}")
        return await self.commands.run(command, payload, event)

    def cloud_time(self) -> float:
        """The cloud's wall clock now (estimated at login on the monotonic clock), so a wrong or
        jumping local clock neither expires nor stretches `deadline_ms`; the local clock before
        the first login."""
        server = self.control.counters.server_time() if self.control is not None else None
        return time.time() if server is None else server

    @property
    def tls_context(self) -> ssl.SSLContext:
        return self._tls.context

    def endpoint_origin(self) -> str | None:
        """Where the cloud serves files for this agent (firmware images): the endpoint's host."""
        return self.activation.endpoint_url if self.activation is not None else None

    async def logs(self) -> dict[str, Any]:
        """The `logs` call's answer (docs/commands.md): recent log lines and the audit log,
        compressed, and signed with the agent's key."""
        act = self.activation
        ident = await self._identity()
        ring = agent_log.ring()
        audit = self.audit.entries(200) if self.audit is not None else []
        blob = json.dumps({"log": ring.lines(), "audit": audit}, separators=(",", ":")).encode()
        packed = base64.b64encode(await asyncio.to_thread(gzip.compress, blob, 6)).decode()
        return {
            "status": "ok",
            "version": __version__,
            "agent_id": act.agent_id if act else "",
            "serial": self.serial,
            "cid": act.agent_id if act else "",
            "mid": self.model,
            "main_url": act.endpoint_url if act else "",
            "meminfo": str(psutil.virtual_memory().available // 1024),
            "buffer_limit": ring.limit,
            "buffer_size": ring.size,
            "a": packed,
            "b": ident.sign_b64(packed.encode()),
        }

    async def _streampoint_connect(self, hostname: str, url: str) -> dict[str, Any]:
        act = self.activation
        if act is None:
            raise InvalidArgument("not activated")
        old = self.streampoint
        if old is not None and old.hostname == hostname and old.url == url:
            return {"hostname": hostname}
        new = Streampoint(
            hostname,
            url,
            act.agent_id,
            await self._identity(),
            tls=self._tls,
            resolver=self.tunnel_policy.resolve,
            idle_timeout=self._tunnel_idle,
            target_bytes=self.tunnel_bytes,
        )
        new.start()
        try:
            await new.wait_ready(STREAMPOINT_TIMEOUT)
        except (ConnectionError, TimeoutError) as exc:
            await new.close()
            await self._event(
                "streampoint_connect_failure", {"hostname": hostname, "reason": str(exc)[:200]}
            )
            raise AgentError(f"streampoint {hostname} unreachable: {exc}") from None
        self.streampoint = new
        await self._event("streampoint_connected", {"hostname": hostname})
        if old is not None:
            await old.close()
            await self._event(
                "streampoint_disconnected", {"hostname": old.hostname, "reason": "redirect"}
            )
        return {"hostname": hostname}

    async def _streampoint_disconnect(self, hostname: str) -> dict[str, Any]:
        sp = self.streampoint
        if sp is None or sp.hostname != hostname:
            raise NotFound(f"not connected to streampoint {hostname}")
        await self._close_streampoint()
        await self._event("streampoint_disconnected", {"hostname": hostname, "reason": "asked"})
        return {}

    async def _request_reset(self) -> None:
        self._reset.set()

    def _reboot(self) -> None:
        log.warning("the endpoint asked for a restart")
        if self._on_reboot is not None:
            asyncio.get_running_loop().call_soon(self._on_reboot)

    # ------------------------------------------------------------------ helpers

    async def _event(self, command: str, payload: dict[str, Any]) -> None:
        if self.control is not None:
            with contextlib.suppress(ConnectionError, AgentError):
                await self.control.event(command, payload)

    async def _close_streampoint(self) -> None:
        sp, self.streampoint = self.streampoint, None
        if sp is not None:
            await sp.close()

    async def _identity(self) -> Identity:
        """The key, loaded (or made) once; also loads the CA bundle and the serial number.
        Callers racing at start-up (the QR scanner, the local API) must get the same key."""
        async with self._identity_lock:
            if self.identity is None:
                self._tls = await asyncio.to_thread(
                    lambda: TlsPolicy(ssl_context(self._ca_file), self._pin)
                )
                if not self.serial:
                    self.serial = await asyncio.to_thread(_machine_serial)
                self.identity = await asyncio.to_thread(load_or_create, self.state)
                if self.identity.created:
                    await asyncio.to_thread(self._drop_orphaned_activation)
            return self.identity

    def _drop_orphaned_activation(self) -> None:
        """A new key was made: an activation kept from before belongs to the lost key and the
        cloud would refuse every connection. Move it aside (kept for examination) so the agent
        waits for activation again. Blocking."""
        path = self.state.file(act_mod.DOCUMENT)
        if path.exists() or path.is_symlink():
            aside = self.state.move_aside(act_mod.DOCUMENT, "its identity key was lost")
            log.error(
                "the agent's identity key was missing or unreadable while it was activated: "
                "activation moved to %s; the agent must be activated again",
                aside.name,
            )

    def _new_scanner(self, *, unbound_only: bool = False) -> QrScanner:
        def cameras() -> list[Any]:
            recs = self.inventory.cameras() if self.inventory is not None else []
            if unbound_only and self.activation is not None:
                bound = {s.get("camera_id") for s in self.activation.streams}
                recs = [r for r in recs if r.id not in bound]
            return recs

        kwargs: dict[str, Any] = {"used_tokens": self._used_tokens}
        if self._qr_window is not None:
            kwargs["window"] = self._qr_window
        if self.qr_concurrency is not None:
            kwargs["concurrency"] = self.qr_concurrency
        kwargs["allowed"] = self.qr_allowed
        if self.qr_url is not None:
            kwargs["url_of"] = self.qr_url
        self.scanner = QrScanner(cameras, **kwargs)
        return self.scanner

    def _used_tokens(self) -> set[str]:
        act = self.activation
        return {str(s.get("token")) for s in act.streams} if act else set()

    def _camera(self, camera_id: str | None) -> dict[str, Any] | None:
        if self.inventory is None:
            return None
        if camera_id is not None:
            return act_mod.camera_payload(self.inventory.get(camera_id))
        for rec in self.inventory.cameras():
            if rec.state == CameraState.ONLINE and rec.profiles:
                return act_mod.camera_payload(rec)
        return None


def local_address() -> tuple[str, str]:
    """The IPv4 address and MAC of the default route's interface (blocking, sends nothing)."""
    iface = _default_interface()
    if not iface:
        return "", ""
    ip = ""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("256s", iface.encode()[:15])
        ip = socket.inet_ntoa(fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)[20:24])
    mac = ""
    with contextlib.suppress(OSError):
        mac = Path(f"/sys/class/net/{iface}/address").read_text().strip()
    return ip, mac


_SIOCGIFADDR = 0x8915


def _default_interface() -> str:
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and "/" not in fields[0]:
            return fields[0]
    return ""


def _machine_serial() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            text = Path(path).read_text().strip()
            if text:
                return text[:64]
    return socket.gethostname()[:64]
