"""Cloud commands on cameras (docs/commands.md): validation, per-camera order, deadlines, audit.

`CommandRunner.run(command, payload)` is what the control connection calls for every request it
does not handle itself. Commands for one camera run one at a time in arrival order; different
cameras run in parallel. Errors come out as `CommandError` with the local API's error codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from agent.audit import AuditLog
from agent.camera import firmware_dahua, firmware_isapi, firmware_xm
from agent.cloud import camera_ops
from agent.discovery.inventory import Inventory
from agent.errors import (
    AgentError,
    AuthError,
    InvalidArgument,
    LimitExceeded,
    NotApplied,
    NotConfigured,
    NotFound,
    OnvifNotAvailable,
    ProtocolError,
    Refused,
    Unavailable,
    Unsupported,
)
from agent.net.download import DownloadError, download
from agent.secret import Credentials, Secret
from agent.state import StateDir

log = logging.getLogger(__name__)

#: Seconds each command may take when the request names no deadline.
LIMITS: dict[str, float] = {
    "camera_ptz": 5.0,
    "camera_reboot": 15.0,
    "camera_config_get": 20.0,
    "camera_config_set": 20.0,
    "camera_auth_get": 20.0,
    "camera_auth_set": 20.0,
    "camera_firmware": 600.0,
    "logs": 10.0,
}
#: Commands that change a camera: recorded in the audit log.
CHANGES = frozenset(
    {"camera_ptz", "camera_reboot", "camera_config_set", "camera_auth_set", "camera_firmware"}
)
#: Commands waiting per camera before new ones are refused.
MAX_WAITING = 16
MAX_FIRMWARE = 64 * 1024 * 1024
FIRMWARE_PROTOS = frozenset({"onvif", "iris", "isapi", "dahua", "xm", "sputnik"})
#: Vendor upload drivers; the rest of the firmware flow is the same for every protocol.
_DRIVERS = {
    "isapi": firmware_isapi.upgrade,
    "dahua": firmware_dahua.upgrade,
    "xm": firmware_xm.upgrade,
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 256 * 1024

Event = Callable[[str, dict[str, Any]], Awaitable[None]]


class CommandError(AgentError):
    """A failed command: `code` is the local API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_code(exc: BaseException) -> str:
    """The local API's code for an error (agent/api/errors.py camera_error_response)."""
    if isinstance(exc, CommandError):
        return exc.code
    if isinstance(exc, NotConfigured):
        return "onvif_not_configured"
    if isinstance(exc, AuthError):
        return "onvif_unauthenticated"
    if isinstance(exc, InvalidArgument | NotFound):
        return "onvif_invalid_argument"
    if isinstance(exc, OnvifNotAvailable):  # a plain RTSP camera: no ONVIF at all
        return "onvif_not_available"
    if isinstance(exc, Unsupported):
        return "onvif_unsupported_action"
    if isinstance(exc, NotApplied):
        return "onvif_not_applied"
    if isinstance(exc, Refused):
        return "onvif_refused"
    if isinstance(exc, Unavailable | TimeoutError | LimitExceeded):
        return "temporarily_unavailable"
    if isinstance(exc, ProtocolError):
        return "invalid_request"
    return "internal_error"


def _internal(exc: Exception) -> CommandError:
    """A failure no error code covers: `internal_error`, naming only the exception's class (its
    text may hold an address, a path or worse)."""
    return CommandError("internal_error", f"internal error ({type(exc).__name__})")


@dataclass
class _Queue:
    lock: asyncio.Lock
    waiting: int = 0


class CommandRunner:
    """Runs the endpoint's camera commands and the `logs` call."""

    def __init__(
        self,
        inventory: Inventory,
        audit: AuditLog,
        state: StateDir | None,
        *,
        logs: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        download_origin: Callable[[], str | None] = lambda: None,
        ssl: Callable[[], Any] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._inventory = inventory
        self._clock = clock  # the cloud's wall clock, which `deadline_ms` is on
        self._audit = audit
        self._state = state
        self._logs = logs
        self._origin = download_origin
        self._ssl = ssl
        self._queues: dict[str, _Queue] = {}
        self.run_count = 0  # every command run, failed ones included
        self.failed_count = 0

    async def run(
        self, command: str, payload: Mapping[str, Any], event: Event | None = None
    ) -> dict[str, Any]:
        """Run one command; raises CommandError (with a code) on any failure."""
        self.run_count += 1
        try:
            return await self._run(command, payload, event)
        except CommandError:
            self.failed_count += 1
            raise
        except Exception as exc:  # a fault of ours: logged once, answered without its text
            self.failed_count += 1
            log.exception("command %s failed", command[:64])
            raise _internal(exc) from None

    async def _run(
        self, command: str, payload: Mapping[str, Any], event: Event | None
    ) -> dict[str, Any]:
        started = time.monotonic()
        try:
            limit = _budget(command, payload, self._clock())
            if command == "logs":
                if self._logs is None:
                    raise CommandError("temporarily_unavailable", "logs are not available")
                async with asyncio.timeout(limit):
                    return await self._logs()
            camera_id = _camera_id(payload)
        except CommandError:
            raise
        except TimeoutError:
            raise CommandError("temporarily_unavailable", "deadline exceeded") from None
        error = ""
        try:
            return await self._on_camera(command, camera_id, payload, limit, event, started)
        except CommandError as exc:
            error = str(exc)
            raise
        except Exception as exc:
            error = str(_internal(exc))
            raise
        finally:
            if command in CHANGES:
                args = {k: v for k, v in payload.items() if k not in ("camera_id", "deadline_ms")}
                await self._audit.record(
                    source="cloud", command=command, camera_id=camera_id, args=args, error=error
                )

    async def _on_camera(
        self,
        command: str,
        camera_id: str,
        payload: Mapping[str, Any],
        limit: float,
        event: Event | None,
        started: float,
    ) -> dict[str, Any]:
        try:
            rec = self._inventory.get(camera_id)
        except NotFound:
            raise CommandError("not_found", f"no camera {camera_id}") from None
        if rec.paused:
            raise CommandError("temporarily_unavailable", "camera is paused")
        queue = self._queues.setdefault(camera_id, _Queue(asyncio.Lock()))
        if queue.waiting >= MAX_WAITING:
            raise CommandError("temporarily_unavailable", "busy: too many commands waiting")
        queue.waiting += 1
        try:
            async with asyncio.timeout(limit):
                async with queue.lock:
                    result = await self._do(command, camera_id, payload, event)
        except TimeoutError:
            raise CommandError("temporarily_unavailable", "deadline exceeded") from None
        except CommandError:
            raise
        except AgentError as exc:
            raise CommandError(error_code(exc), str(exc)[:300] or type(exc).__name__) from None
        finally:
            queue.waiting -= 1
            if not queue.waiting:
                self._queues.pop(camera_id, None)
        if command == "camera_firmware":
            result["duration_ms"] = int((time.monotonic() - started) * 1000)
        return result

    async def _do(
        self, command: str, camera_id: str, payload: Mapping[str, Any], event: Event | None
    ) -> dict[str, Any]:
        try:  # the cloud validated too; check again before touching the camera
            if command == "camera_ptz":
                camera_ops.validate_ptz(payload)
            elif command == "camera_config_set":
                config = payload.get("config")
                if not isinstance(config, Mapping):
                    raise InvalidArgument("config: expected an object")
                camera_ops.validate_config(config)
            elif command == "camera_auth_set":
                camera_ops.validate_auth(payload)
            elif command == "camera_firmware":
                _check_firmware(payload)
        except InvalidArgument as exc:
            raise CommandError("invalid_request", str(exc)[:300]) from None
        control = await self._inventory.control(camera_id)
        match command:
            case "camera_ptz":
                return await camera_ops.ptz(control, payload)
            case "camera_reboot":
                await control.reboot()
                return {}
            case "camera_config_get":
                return await camera_ops.camera_config_get(control)
            case "camera_config_set":
                return await camera_ops.camera_config_set(control, payload["config"])
            case "camera_auth_get":
                login, password = self._login(camera_id)
                return await camera_ops.camera_auth_get(control, login, password)
            case "camera_auth_set":
                return await self._auth_set(camera_id, control, payload)
            case "camera_firmware":
                return await self._firmware(camera_id, control, payload, event)
        raise CommandError("invalid_request", f"unknown command {command[:64]!r}")

    def _login(self, camera_id: str) -> tuple[str, str]:
        creds = self._inventory.get(camera_id).credentials
        if creds is None:
            raise NotConfigured("no working credentials known for the camera")
        return creds.username, creds.password.reveal()

    async def _auth_set(
        self, camera_id: str, control: Any, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        login, password = self._login(camera_id)
        auth, new_password, new_port = await camera_ops.camera_auth_set(
            control, login, payload, current_password=password
        )
        if new_password is not None and auth.get("login", login) == login:
            self._inventory.set_credentials(camera_id, Credentials(login, Secret(new_password)))
        if new_port is not None:  # follow the camera to its new port before answering
            await self._inventory.follow_http_port(camera_id, new_port)
        return auth

    async def _firmware(
        self, camera_id: str, control: Any, payload: Mapping[str, Any], event: Event | None
    ) -> dict[str, Any]:
        async def progress(stage: str, percent: int, message: str) -> None:
            if event is not None:
                with contextlib.suppress(ConnectionError, aiohttp.ClientError, AgentError):
                    await event(
                        "camera_firmware_progress",
                        {
                            "camera_id": camera_id,
                            "stage": stage,
                            "percent": max(0, min(100, int(percent))),
                            "message": message[:200],
                        },
                    )

        proto = payload["proto"]
        if proto != "onvif" and proto not in _DRIVERS:
            raise CommandError(
                "onvif_unsupported_action",
                f"firmware protocol {proto!r} is unsupported: there is no public specification"
                f" of the {proto} firmware upgrade protocol",
            )
        path, digest = await self._download(payload, progress)
        try:
            await progress("verify", 0, "checking the image")
            if digest != payload["sha256"]:
                raise CommandError("invalid_request", "the image does not match its sha256")
            send = None
            driver = _DRIVERS.get(proto)
            if driver is not None:
                login, password = self._login(camera_id)
                base = _http_base(self._inventory.get(camera_id).xaddr)
                size = int(payload["size"])

                async def send() -> None:
                    assert driver is not None
                    await driver(base, path, size, login, password, progress)

            try:
                result = await camera_ops.firmware(
                    control,
                    path,
                    int(payload["size"]),
                    progress,
                    send=send,
                    reconnect=lambda: self._inventory.control(camera_id),
                )
            except AgentError as exc:
                await progress("failed", 100, str(exc))
                raise
            await progress("done", 100, f"firmware {result.get('firmware_after', '?')}")
            return result
        finally:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.unlink, path)

    async def _download(
        self, payload: Mapping[str, Any], progress: Callable[[str, int, str], Awaitable[None]]
    ) -> tuple[Path, str]:
        """Fetch the image into the state directory; (path, its SHA-256)."""
        url, size = str(payload["url"]), int(payload["size"])
        origin = self._origin()
        if origin is None or url_origin(url) != url_origin(origin):
            raise CommandError("invalid_request", "the image URL is not on the agent's cloud")
        if self._state is None:
            raise CommandError("temporarily_unavailable", "no state directory for the image")
        await asyncio.to_thread(self._state.ensure)
        path = self._state.file(f"firmware-{os.getpid()}-{time.monotonic_ns()}.bin")
        await progress("download", 0, f"{size} bytes")

        async def step(done: int, total: int | None) -> None:
            await progress("download", 100 * done // (total or size), f"{done} of {size} bytes")

        try:
            result = await download(
                url,
                path,
                expected_size=size,
                max_size=MAX_FIRMWARE,
                ssl=self._ssl() if url.startswith("https:") else True,
                progress=step,
                progress_step=max(1 << 20, size // 10),
            )
        except DownloadError as exc:
            code = "temporarily_unavailable" if exc.retryable else "invalid_request"
            raise CommandError(code, f"image download failed: {exc}") from None
        finally:  # the cloud's image URL is one-time: nothing to resume later
            for leftover in (".part", ".part.json"):
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.unlink, f"{path}{leftover}")
        await progress("download", 100, f"{size} bytes")
        return result.path, result.sha256


def _budget(command: str, payload: Mapping[str, Any], now: float) -> float:
    limit = LIMITS.get(command)
    if limit is None:
        raise CommandError("invalid_request", f"unknown command {command[:64]!r}")
    deadline = payload.get("deadline_ms")
    if deadline is None:
        return limit
    if isinstance(deadline, bool) or not isinstance(deadline, int):
        raise CommandError("invalid_request", "deadline_ms: expected an integer")
    remaining = deadline / 1000 - now
    if remaining <= 0:
        raise CommandError("temporarily_unavailable", "deadline passed")
    return min(limit, remaining)


def _camera_id(payload: Mapping[str, Any]) -> str:
    cid = payload.get("camera_id")
    if not isinstance(cid, str) or not 0 < len(cid) <= 128:
        raise CommandError("invalid_request", "camera_id: expected a camera id")
    return cid


def _check_firmware(payload: Mapping[str, Any]) -> None:
    proto = payload.get("proto")
    if proto not in FIRMWARE_PROTOS:
        raise CommandError("invalid_request", "proto: " + ", ".join(sorted(FIRMWARE_PROTOS)))
    size = payload.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_FIRMWARE:
        raise CommandError("invalid_request", f"size: 1..{MAX_FIRMWARE} bytes")
    sha = payload.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise CommandError("invalid_request", "sha256: 64 lowercase hex digits")
    url = payload.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048:
        raise CommandError("invalid_request", "url: an http(s) URL")


def _http_base(xaddr: str) -> str:
    """scheme://host:port of the camera's ONVIF service (where its vendor APIs live too)."""
    parts = urlsplit(xaddr)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def url_origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, ws(s) counted as http(s); a bad port gives no origin."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return ("", "", None)
    return (scheme, (parts.hostname or "").lower(), port)
