"""The agent's ONVIF client: the only module that imports `onvif` and `zeep`.

It wraps onvif-zeep-async, corrects for the camera's clock offset, maps the library's
exceptions once to `agent.errors`, and returns plain dataclasses, never zeep objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import zeep.exceptions
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError

from agent.errors import AgentError, AuthError, ProtocolError, Unavailable

log = logging.getLogger(__name__)

#: Seconds allowed for one ONVIF round trip before the camera counts as unreachable.
REQUEST_TIMEOUT = 10.0

_T = TypeVar("_T")

# Fault subcodes cameras use for bad credentials.
_AUTH_SUBCODES = ("NotAuthorized", "FailedAuthentication", "InvalidSecurity", "Unauthorized")


@dataclass(frozen=True)
class DeviceInfo:
    manufacturer: str
    model: str
    firmware_version: str
    serial_number: str
    hardware_id: str


@dataclass(frozen=True)
class StreamProfile:
    token: str
    name: str
    encoding: str
    width: int
    height: int
    fps: float
    rtsp_uri: str


@dataclass(frozen=True)
class CameraDetails:
    """What one ONVIF session learned about a camera."""

    xaddr: str
    info: DeviceInfo
    profiles: tuple[StreamProfile, ...]
    snapshot_uri: str | None
    ptz: bool
    imaging: bool
    services: dict[str, str] = field(default_factory=dict)


def _fault_text(exc: zeep.exceptions.Fault) -> str:
    parts = [str(exc.message or "").strip()]
    subcodes = getattr(exc, "subcodes", None) or []
    parts.extend(getattr(code, "text", str(code)) for code in subcodes)
    return " ".join(p for p in parts if p) or "SOAP fault"


def map_error(exc: BaseException, where: str) -> AgentError:
    """Translate an onvif/zeep/transport exception into the agent's hierarchy."""
    if isinstance(exc, AgentError):
        return exc
    if isinstance(exc, ONVIFAuthError):
        return AuthError(f"{where}: camera rejected the credentials")
    if isinstance(exc, ONVIFTimeoutError | TimeoutError | asyncio.TimeoutError):
        return Unavailable(f"{where}: timed out")
    if isinstance(exc, zeep.exceptions.Fault):
        text = _fault_text(exc)
        if any(code in text for code in _AUTH_SUBCODES):
            return AuthError(f"{where}: camera rejected the credentials ({text})")
        return ProtocolError(f"{where}: camera answered with a SOAP fault: {text}")
    if isinstance(exc, zeep.exceptions.TransportError):
        if exc.status_code in (401, 403):
            return AuthError(f"{where}: camera rejected the credentials (HTTP {exc.status_code})")
        if 200 <= exc.status_code < 300:  # a 2xx whose body is not SOAP: a camera that lies
            return ProtocolError(f"{where}: camera answered with something that is not SOAP")
        return Unavailable(f"{where}: HTTP {exc.status_code}")
    if isinstance(exc, zeep.exceptions.XMLSyntaxError | zeep.exceptions.XMLParseError):
        return ProtocolError(f"{where}: camera sent invalid XML")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return Unavailable(f"{where}: {type(exc).__name__}: {exc}")
    if isinstance(exc, ONVIFError):
        return ProtocolError(f"{where}: {exc}")
    if isinstance(exc, zeep.exceptions.Error | ValueError | TypeError | AttributeError):
        return ProtocolError(f"{where}: unexpected answer ({type(exc).__name__}: {exc})")
    return AgentError(f"{where}: {type(exc).__name__}: {exc}")


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    """Follow attribute names through a zeep object; None-safe."""
    for name in path:
        if obj is None:
            return default
        obj = getattr(obj, name, None)
    return default if obj is None else obj


class OnvifSession:
    """One authenticated ONVIF session to one camera.

    Use as `async with OnvifSession(host, port, user, password) as cam:`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        *,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self._username = username
        self._password = password
        self._timeout = timeout
        self._cam: ONVIFCamera | None = None

    @property
    def xaddr(self) -> str:
        return f"http://{self.host}:{self.port}/onvif/device_service"

    async def __aenter__(self) -> OnvifSession:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, where: str, aw: Awaitable[_T]) -> _T:
        try:
            return await asyncio.wait_for(aw, self._timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise map_error(exc, where) from exc

    async def connect(self) -> None:
        """Open the session: clock-offset correction, then service addresses."""
        cam = ONVIFCamera(
            self.host, self.port, self._username, self._password, adjust_time=True, no_cache=True
        )
        self._cam = cam
        await self._call("GetServices", cam.update_xaddrs())

    async def close(self) -> None:
        if self._cam is not None:
            cam, self._cam = self._cam, None
            try:
                await cam.close()
            except Exception as exc:  # closing must never mask the real outcome
                log.debug("closing ONVIF session to %s failed: %s", self.host, exc)

    @property
    def camera(self) -> ONVIFCamera:
        if self._cam is None:
            raise Unavailable("ONVIF session is not connected")
        return self._cam

    def has_service(self, namespace_fragment: str) -> bool:
        return any(namespace_fragment in ns for ns in self.camera.xaddrs)

    async def device_info(self) -> DeviceInfo:
        dev = await self._call("devicemgmt", self.camera.create_devicemgmt_service())
        info = await self._call("GetDeviceInformation", dev.GetDeviceInformation())
        return DeviceInfo(
            manufacturer=str(_get(info, "Manufacturer", default="")),
            model=str(_get(info, "Model", default="")),
            firmware_version=str(_get(info, "FirmwareVersion", default="")),
            serial_number=str(_get(info, "SerialNumber", default="")),
            hardware_id=str(_get(info, "HardwareId", default="")),
        )

    async def profiles(self) -> tuple[StreamProfile, ...]:
        media = await self._call("media", self.camera.create_media_service())
        raw = await self._call("GetProfiles", media.GetProfiles())
        result = []
        for prof in raw or []:
            token = str(_get(prof, "token", default=""))
            enc = _get(prof, "VideoEncoderConfiguration")
            setup = {
                "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                "ProfileToken": token,
            }
            uri = await self._call("GetStreamUri", media.GetStreamUri(setup))
            result.append(
                StreamProfile(
                    token=token,
                    name=str(_get(prof, "Name", default=token)),
                    encoding=str(_get(enc, "Encoding", default="")),
                    width=int(_get(enc, "Resolution", "Width", default=0)),
                    height=int(_get(enc, "Resolution", "Height", default=0)),
                    fps=float(_get(enc, "RateControl", "FrameRateLimit", default=0)),
                    rtsp_uri=str(_get(uri, "Uri", default="")),
                )
            )
        return tuple(result)

    async def snapshot_uri(self, profile_token: str) -> str | None:
        media = await self._call("media", self.camera.create_media_service())
        uri = await self._call(
            "GetSnapshotUri", media.GetSnapshotUri({"ProfileToken": profile_token})
        )
        value = _get(uri, "Uri")
        return str(value) if value else None

    async def details(self) -> CameraDetails:
        """Everything discovery reports about a camera, in one call."""
        info = await self.device_info()
        profiles = await self.profiles()
        snapshot = await self.snapshot_uri(profiles[0].token) if profiles else None
        services = {str(ns): str(url) for ns, url in self.camera.xaddrs.items()}
        return CameraDetails(
            xaddr=self.xaddr,
            info=info,
            profiles=profiles,
            snapshot_uri=snapshot,
            ptz=self.has_service("/ptz/"),
            imaging=self.has_service("/imaging/"),
            services=services,
        )
