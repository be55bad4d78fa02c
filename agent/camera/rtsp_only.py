"""Cameras added by their RTSP URL, without ONVIF: URL checks, their stable id, the DESCRIBE
that tells whether they are online, and the control that serves snapshots and refuses the rest.

A URL given with `user:password@` is split: the credentials are kept as credentials (stored like
ONVIF ones, never shown) and the URL is kept without them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from agent.camera import snapshot as http_snapshot
from agent.camera.models import (
    ContinuousMove,
    DeviceInfo,
    EncoderRequest,
    ImageInfo,
    NetworkPorts,
    PtzInfo,
    PtzMove,
    PtzZoom,
    Snapshot,
    StreamInfo,
    UserInfo,
)
from agent.errors import InvalidArgument, OnvifNotAvailable, ProtocolError, Unavailable
from agent.media import grab
from agent.media.rtsp_client import RtspClient, track_info
from agent.net.urls import with_credentials
from agent.secret import Credentials, Secret

#: Longest camera URL accepted.
MAX_URL = 1024
#: Longest camera name accepted.
MAX_NAME = 128
#: Port of an rtsp:// URL given without one.
DEFAULT_RTSP_PORT = 554
#: Seconds a DESCRIBE (connect, answer, one authentication round) may take.
DESCRIBE_TIMEOUT = 10.0
#: Prefix of the name hashed into a plain RTSP camera's id.
ID_BASIS = "camera-agent:rtsp:"

NOT_AVAILABLE = "the camera was added by its RTSP URL and has no ONVIF service"


#: Longest user name and password a camera login given by the user may have.
MAX_LOGIN = 128


def login(username: str, password: str) -> Credentials:
    """A camera login given by the user (API body, config, URL). InvalidArgument, whose text
    never holds the password, when either part holds a control character (no camera protocol
    can carry one: SOAP XML refuses them, HTTP and RTSP headers end at them) or is too long."""
    for what, value in (("username", username), ("password", password)):
        if len(value) > MAX_LOGIN:
            raise InvalidArgument(f"{what} is longer than {MAX_LOGIN} characters")
        if not value.isprintable():
            raise InvalidArgument(f"{what} must not contain control characters")
    if not username:
        raise InvalidArgument("username must not be empty")
    return Credentials(username, Secret(password))


def _credentials(username: str | None, password: str | None) -> Credentials | None:
    if username is None:
        return None
    return login(unquote(username), unquote(password or ""))


def split_url(url: object, what: str, schemes: tuple[str, ...]) -> tuple[str, Credentials | None]:
    """(`url` without credentials, the credentials it carried). InvalidArgument, whose text never
    holds the URL's password, when it is not an absolute URL of one of `schemes`."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidArgument(f"{what} must be a non-empty string")
    url = url.strip()
    if len(url) > MAX_URL:
        raise InvalidArgument(f"{what} is longer than {MAX_URL} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidArgument(f"{what} must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        raise InvalidArgument(f"{what} is not a valid URL") from None
    wanted = " or ".join(f"{s}://" for s in schemes)
    if parts.scheme.lower() not in schemes or not host:
        raise InvalidArgument(f"{what} must be a {wanted} URL with a host")
    cred = _credentials(parts.username, parts.password)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, "")), cred


def rtsp_url(url: object, what: str = "rtsp_url") -> tuple[str, Credentials | None]:
    return split_url(url, what, ("rtsp",))


def snapshot_url(url: object, what: str = "snapshot_url") -> tuple[str, Credentials | None]:
    return split_url(url, what, ("http", "https"))


def normalise(url: str) -> str:
    """The form of an RTSP URL (without credentials) its camera id is derived from: scheme and
    host in lower case, the default port written out, no fragment."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    shown = f"[{host}]" if ":" in host else host
    port = parts.port or DEFAULT_RTSP_PORT
    path = parts.path or "/"
    return urlunsplit((parts.scheme.lower(), f"{shown}:{port}", path, parts.query, ""))


def rtsp_camera_id(url: str) -> str:
    """The stable id of the camera whose main stream is `url` (credentials are not part of it,
    so a new password keeps the id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, ID_BASIS + normalise(url)))


def authorised(url: str, cred: Credentials | None) -> str:
    """`url` with the credentials in it, for a client library (never logged)."""
    if cred is None:
        return url
    return with_credentials(url, cred.username, cred.password.reveal())


class _Describer(RtspClient):
    """An RTSP client that stops after DESCRIBE."""

    async def describe(self) -> str:
        """The encoding of the first video track ("" if the camera announces none)."""
        try:
            async with asyncio.timeout(self._timeout):
                self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"cannot connect to {self.url}: {exc or 'timeout'}") from None
        answer = await self._request("DESCRIBE", self.url, Accept="application/sdp")
        media, _base, _aggregate = self._presentation(answer)
        for _index, item in media:
            info = track_info(item)
            if info is not None and info.kind == "video":
                return info.encoding
        return ""


async def describe(url: str, cred: Credentials | None, timeout: float = DESCRIBE_TIMEOUT) -> str:
    """DESCRIBE `url` (answering one Digest or Basic challenge with `cred`): the video encoding
    it announces. Raises AuthError, Unavailable, NotFound, Unsupported or ProtocolError, whose
    texts hold the URL without credentials."""
    client = _Describer(authorised(url, cred), timeout=timeout, idle_timeout=timeout)
    try:
        return await client.describe()
    finally:
        await client.close()


@dataclass(frozen=True)
class RtspCamera:
    """What the control of a plain RTSP camera needs: its URLs (without credentials)."""

    main: str
    sub: str | None
    snapshot: str | None
    credentials: Credentials | None
    timeout: float


class RtspOnlyControl:
    """`CameraControl` of a camera that speaks RTSP only: snapshots come from its snapshot URL,
    else are decoded from its smallest stream; every ONVIF command raises OnvifNotAvailable."""

    def __init__(self, camera: RtspCamera, *, frames: Callable[[], str] | None = None) -> None:
        self.camera = camera
        #: The agent's shared session of the camera, for a picture without a snapshot URL.
        self.frames = frames

    async def close(self) -> None:
        """Nothing is held open between commands."""

    async def snapshot(self) -> Snapshot:
        cam = self.camera
        if cam.snapshot:
            return await http_snapshot.fetch(cam.snapshot, cam.credentials, cam.timeout)
        if self.frames is not None:  # the shared session: no extra session on the camera
            url = self.frames()
        else:
            url = authorised(cam.sub or cam.main, cam.credentials)
        jpeg, taken = await asyncio.to_thread(grab.grab_jpeg, url, timeout=cam.timeout)
        if not jpeg.startswith(b"\xff\xd8"):
            raise ProtocolError("snapshot from stream: not a JPEG")
        return Snapshot(jpeg=jpeg, timestamp=taken)

    async def device_info(self) -> DeviceInfo:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def get_network(self) -> NetworkPorts:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def set_network(
        self, *, http: int | None = None, https: int | None = None, rtsp: int | None = None
    ) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def list_users(self) -> list[UserInfo]:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def set_user_password(self, username: str, password: str) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def streams(self) -> list[StreamInfo]:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def set_encoder(self, request: EncoderRequest) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def image(self) -> ImageInfo:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def set_image_value(self, setting: str, value: float) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def set_backlight(self, mode: str) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def set_ir_cut_filter(self, mode: str) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def set_exposure(self, value: float) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def set_wide_dynamic_range(self, mode: str | None, value: float | None) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def set_white_balance(
        self, mode: str | None, cr_gain: float | None, cb_gain: float | None
    ) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def ptz(self) -> PtzInfo:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def ptz_step(self, move: PtzMove | None, zoom: PtzZoom | None, step: int) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def ptz_continuous(self, move: ContinuousMove) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def ptz_absolute(self, x: float | None, y: float | None, zoom: float | None) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def ptz_stop(self) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def ptz_home_save(self) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def ptz_home_apply(self) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def ptz_presets(self) -> list[str]:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def ptz_preset_create(self, name: str) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def ptz_preset_delete(self, name: str) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def ptz_preset_apply(self, name: str) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def image_orientation(self) -> str:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def set_image_orientation(self, orientation: str) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def reboot(self) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)

    async def firmware_upgrade(self, path: Path, size: int) -> None:
        raise OnvifNotAvailable(NOT_AVAILABLE)
